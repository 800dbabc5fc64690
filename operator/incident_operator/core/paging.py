"""Who a page, a handoff or a role is addressed to, and whether mail may go to them. Pure.

- `Addressee`: a person of an OnCallSchedule with their contact methods, as notices carry them.
- `on_call_at`: the person an escalation level naming a schedule addresses at the moment it fires
  (`core.oncall.on_call`), or why nobody is (no such schedule, invalid, nobody on call): then the
  level's channels go to their own recipients and the timeline says so.
- `mail_allowed` (config `oncall.allowedEmailDomains`) and `mail_budget` (config
  `oncall.maxMailsPerPersonPerHour`, the sends of the last hour to one address passed in: the
  controller keeps them in the schedules' `status.mailsSent`, and `mails_kept` says which of them
  a schedule's status keeps: bounded, and never fewer than the limit needs per address).
- `due_handoff`: the turn to announce now (the current one, when the schedule's `status.handoffs`
  has no record of it and it does not merely go on with the turn last announced: an edit that
  moves the start of the same person's turn tells nobody again; an open-ended record's `until`
  bounds nothing, see `continues`).
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
MAILS_KEPT = 1000
"""`status.mailsSent` keeps at most this many (the CRD's maxItems)."""
WHO_MAX = ROLE_HOLDER_MAX
"""The longest holder name `status.rolesTold` keeps (the CRD refuses a longer one; one stored before
that limit is kept cut, never refused)."""


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


def mail_key(email: str) -> str:
    """The address a rate limit counts by: the same mailbox whatever the schedule or name it is
    listed under (domains are case-insensitive; the local part is taken so too, as mail systems do)."""
    return email.strip().lower()


Sent = tuple[datetime, str, str]
"""One mail sent: (when, the person's name in the schedule, the address as `mail_key` gives it)."""


def mails_kept(sent: Iterable[Sent], now: datetime, per_hour: int, cap: int = MAILS_KEPT) -> list[Sent]:
    """What a schedule's `status.mailsSent` keeps of `sent`, oldest first: the sends of the last
    hour, per address only the newest `per_hour` (more never changes what the limit allows: a
    budget is spent at `per_hour`), then the newest `cap`. Only what is written is cut: the count
    in the process's memory is not, so within the process the limit never counts fewer."""
    newest: dict[str, list[Sent]] = {}
    for entry in sorted(sent, key=lambda e: (e[0], e[1], e[2]), reverse=True):
        if now - HOUR < entry[0] <= now and len(newest.setdefault(entry[2], [])) < per_hour:
            newest[entry[2]].append(entry)
    kept = sorted((e for entries in newest.values() for e in entries), key=lambda e: (e[0], e[1], e[2]))
    return kept[-cap:] if cap > 0 else []


def due_handoff(spec: OnCallScheduleSpec, handoffs: Sequence[OnCallHandoff], now: datetime) -> Shift | None:
    """The current turn if it is to be announced now, else None. Not when a record has its person
    and start, nor when it only goes on with the turn last announced (`continues`): an edit that
    moves its start (a handoff time changed, an override of the same person adjacent) does not
    tell them again."""
    shift = oncall.on_call(spec, now)
    if shift is None:
        return None
    for record in handoffs:
        if record.person == shift.person and record.at == shift.start:
            return None
    if handoffs and continues(spec, handoffs[-1], shift):
        return None
    return shift


def continues(spec: OnCallScheduleSpec, last: OnCallHandoff, shift: Shift) -> bool:
    """Whether `shift` only goes on with the turn `last` announced: the same person, and nobody
    else on call in between, either by the record (the turn starts before the announced one was
    to end, `until`) or by the schedule as it is now (that person on call throughout from the
    announced start to this one's, no gap: a turn that comes back after a gap is a new one).

    An open-ended record (`until` HORIZON or more past its start: the search stopped there, see
    `oncall.open_ended`) bounds nothing: its `until` is HORIZON past the moment it was recorded,
    when its person was on call. Then the turn goes on only if it started by that moment or its
    person was on call throughout from that moment to its start (someone else's turn in between,
    recorded or not, makes it a new one)."""
    if last.person != shift.person:
        return False
    if last.at >= shift.start:
        return True
    if last.until is not None and last.until - last.at >= oncall.HORIZON:
        seen = last.until - oncall.HORIZON
        return shift.start <= seen or oncall.on_call_throughout(spec, shift.person, seen, shift.start)
    if last.until is not None and shift.start <= last.until:
        return True
    return oncall.on_call_throughout(spec, shift.person, last.at, shift.start)


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


ROLES_TOLD_KEPT = 64
"""`status.rolesTold` keeps at most this many (the CRD's maxItems)."""


def roles_told_kept(
    told: Sequence[RoleTold], spec: IncidentSpec, cap: int = ROLES_TOLD_KEPT
) -> list[RoleTold]:
    """`told` cut to `cap`, in order: the entries of the spec's current role holders always stay
    (dropping one would tell that person again at the next plan), then the newest of the rest."""
    current = {(role, who[:WHO_MAX]) for role, who in role_holders(spec)}
    keep = {i for i, t in enumerate(told) if (t.role, t.who) in current}
    room = max(0, cap - len(keep))
    others = [i for i in range(len(told)) if i not in keep]
    keep |= set(others[len(others) - room :] if room else [])
    return [t for i, t in enumerate(told) if i in keep]
