"""Who a page, a handoff or a role is addressed to, and whether mail may go to them. Pure.

- `Addressee`: a person of an OnCallSchedule with their contact methods, as notices carry them.
- `on_call_at`: the person an escalation level naming a schedule addresses at the moment it fires
  (`core.oncall.on_call`), or why nobody is (no such schedule, invalid, nobody on call): then the
  level's channels go to their own recipients and the timeline says so.
- `mail_allowed` (config `oncall.allowedEmailDomains`) and `mail_budget` (config
  `oncall.maxMailsPerPersonPerHour`, the sends of the last hour passed in: the controller keeps
  them in the schedule's `status.mailsSent`).
- `due_handoff`: the turn to announce now (the current one, when the schedule's `status.handoffs`
  has no record of it).
- `find_person` and `roles_to_tell`: a role's holder in the schedules of the incident's namespace
  (by `people[].user`, then by `name`), and the role assignments not yet told
  (`status.rolesTold`).

Time is passed in; schedules come in as a mapping of `NAMESPACE/NAME` to their parsed spec, or to
why they cannot be used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from incident_operator.api.models import (
    ROLE_HOLDER_MAX,
    IncidentSpec,
    OnCallHandoff,
    OnCallPerson,
    OnCallScheduleSpec,
    RoleTold,
)
from incident_operator.core import oncall
from incident_operator.core.oncall import Shift

Schedules = Mapping[str, OnCallScheduleSpec | str]
"""Schedules by `NAMESPACE/NAME`: the spec, or why it cannot be used (invalid: its problems)."""

ROLES = ("commander", "techLead", "comms", "customerSuccess")
HOUR = timedelta(hours=1)
HANDOFFS_KEPT = 20
"""`status.handoffs` keeps this many, newest last (the CRD's maxItems)."""


@dataclass(frozen=True)
class Addressee:
    """A person of a schedule, as a notice addresses them."""

    schedule: str
    """`NAMESPACE/NAME` of the schedule they were found in."""
    name: str
    email: str | None = None
    slackId: str | None = None
    opsgenieUser: str | None = None
    pagerdutyUser: str | None = None
    user: str | None = None

    @classmethod
    def of(cls, schedule: str, person: OnCallPerson) -> Addressee:
        return cls(
            schedule,
            person.name,
            person.email,
            person.slackId,
            person.opsgenieUser,
            person.pagerdutyUser,
            person.user,
        )

    @property
    def reachable(self) -> bool:
        """Whether they have a contact a handoff or role notice can use (email or Slack)."""
        return bool(self.email or self.slackId)


def schedule_key(ref: str, namespace: str) -> str:
    """`NAMESPACE/NAME` of a level's `schedule` (a bare name is in the incident's namespace)."""
    return ref if "/" in ref else f"{namespace}/{ref}"


def on_call_at(key: str, schedules: Schedules, at: datetime) -> tuple[Addressee | None, str]:
    """Who the schedule `key` has on call at `at`; or None and why not (for the timeline)."""
    found = schedules.get(key)
    if found is None:
        return None, f"schedule {key} not found"
    if isinstance(found, str):
        return None, f"schedule {key} is invalid ({found})"[:300]
    try:
        shift = oncall.on_call(found, at)
    except (ValueError, LookupError) as exc:  # problems() should have caught it; never crash a plan
        return None, f"schedule {key} cannot be read ({exc})"[:300]
    if shift is None:
        return None, f"schedule {key} has nobody on call"
    person = oncall.person(found, shift.person)
    if person is None:
        return None, f"schedule {key}: {shift.person} is not in its people"
    return Addressee.of(key, person), f"{shift.person} on call in {key}"


def mail_allowed(email: str | None, domains: Sequence[str]) -> bool:
    """Whether mail may go to `email`: its domain is one of `domains` or under one (none: never)."""
    if not email or email.count("@") != 1:
        return False
    local, domain = email.rsplit("@", 1)
    domain = domain.lower().rstrip(".")
    if not local or any(c in email for c in "\r\n,;<> \t\"'"):
        return False
    return any(domain == d or domain.endswith("." + d) for d in domains)


def recent(sent: Iterable[datetime], now: datetime) -> list[datetime]:
    """The sends within the last hour (older ones no longer count), oldest first."""
    return sorted(t for t in sent if now - HOUR < t <= now)


def mail_budget(sent: Iterable[datetime], now: datetime, per_hour: int) -> int:
    """How many more mails a person may get now (0: the limit of the last hour is reached)."""
    return max(0, per_hour - len(recent(sent, now)))


def due_handoff(spec: OnCallScheduleSpec, handoffs: Sequence[OnCallHandoff], now: datetime) -> Shift | None:
    """The current turn if it was not announced yet (no record of its person and start), else None."""
    shift = oncall.on_call(spec, now)
    if shift is None:
        return None
    for record in handoffs:
        if record.person == shift.person and record.at == shift.start:
            return None
    return shift


def recorded(handoffs: Sequence[OnCallHandoff], entry: OnCallHandoff) -> list[OnCallHandoff]:
    """`handoffs` with `entry` appended, the oldest dropped beyond HANDOFFS_KEPT."""
    return [*handoffs, entry][-HANDOFFS_KEPT:]


def find_person(who: str, namespace: str, schedules: Schedules) -> Addressee | None:
    """The person `who` (a Kubernetes username or a schedule person's name) in the valid schedules
    of `namespace`, in name order: first by `people[].user`, then by `name`."""
    mine = sorted(
        (key, spec)
        for key, spec in schedules.items()
        if key.startswith(f"{namespace}/") and not isinstance(spec, str)
    )
    for field in ("user", "name"):
        for key, spec in mine:
            assert not isinstance(spec, str)  # noqa: S101 - filtered above
            for person in spec.people:
                if getattr(person, field) == who:
                    return Addressee.of(key, person)
    return None


def role_holders(spec: IncidentSpec) -> list[tuple[str, str]]:
    """(role, holder) of every role the spec gives (commander first)."""
    holders = [("commander", spec.commander)]
    if spec.roles is not None:
        holders += [(role, getattr(spec.roles, role)) for role in ROLES[1:]]
    return [(role, who.strip()) for role, who in holders if who and who.strip()]


def roles_to_tell(spec: IncidentSpec, told: Sequence[RoleTold]) -> list[tuple[str, str]]:
    """The (role, holder) pairs of the spec nobody told yet (each pair is told once, ever)."""
    done = {(t.role, t.who) for t in told}
    return [(role, who) for role, who in role_holders(spec) if (role, who[:WHO_MAX]) not in done]


WHO_MAX = ROLE_HOLDER_MAX
"""The longest holder name `status.rolesTold` keeps (the CRD refuses a longer one; one stored before
that limit is kept cut, never refused)."""
