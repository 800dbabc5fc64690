"""The communication cadence of seed 4.2: updates due, the overdue reminder, public updates announced. Pure.

Two rules, both recorded in `status.communication` so that each holds exactly once across
restarts (a record committed with the status write, as every notice is):

- **Cadence** (config `communication.updateEvery`, per severity the incident is treated as): from
  detection until Resolved, an update (any entry of `spec.updates`, public or not) is due
  `updateEvery` after the newest one, or after detection when there is none. When it is not there
  in time: condition `UpdateOverdue=True` and ONE reminder (record `UpdateOverdue`, notice
  `updateOverdue`, addressed to the communications lead, else the commander), remembered by the due
  time it was for (`remindedFor`). The reminder goes to the channels subscribed to `updateOverdue`
  and, as a role is told, to its addressee: found in the namespace's on-call schedules (by
  `people[].user`, then `name`) and reachable (email or Slack id), through `oncall.channels`;
  when they cannot be, the reminder's timeline text says why. The next update clears the
  condition (`UpdatePublished`) and starts the next period, which may remind once again.
  Resolved (or no cadence for the severity) clears it too. Acknowledgement does not restart the
  clock: users wait for news from detection.
- **Public updates**: each entry of `spec.updates` with `public: true` newer than the last one
  announced (`lastPublished`) is recorded once (`PublicUpdate`, notice `update`, which statuspage
  channels take), also after the incident resolved (the final "resolved" update). The updates
  already there when the operator first plans an incident are not announced one by one: the
  `opened` notice (or, after an upgrade, the page as it was) carries them. Newer is by the
  update's `time`: an update written with a time before the newest one announced (a backdated
  entry) shows on the page but is not announced on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from incident_operator.api.models import CommunicationStatus, Phase, StatusUpdate
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import format_time
from incident_operator.core import paging
from incident_operator.core.paging import Addressee
from incident_operator.core.planner.builder import Builder

PHASE_WORDS = {
    Phase.DETECTED: "investigating",
    Phase.ACKNOWLEDGED: "investigating",
    Phase.INVESTIGATING: "investigating",
    Phase.MITIGATING: "identified",
    Phase.MONITORING: "monitoring",
    Phase.RESOLVED: "resolved",
    Phase.CLOSED: "resolved",
}
"""The status word of an update that names none: the incident's phase's (as the status page says)."""
CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the operator's clock an update's time may be and still count as published now
(the writer's clock may run ahead); one dated further ahead is announced once its time has come."""
NONE_YET = datetime(1970, 1, 1, tzinfo=UTC)
"""`lastPublished` of an incident that had no public update when first planned: any that comes is new."""


def human_duration(value: timedelta) -> str:
    """`1h30m`, `15m`, `45s`: a duration as people say it."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def update_word(update: StatusUpdate, phase: Phase | None) -> str:
    """The status word an update announces: its own, else its incident's phase's."""
    return update.status or PHASE_WORDS[phase or Phase.DETECTED]


def _second(moment: datetime) -> datetime:
    """`moment` to the second: the due time, and so `remindedFor`, the same whatever precision the
    detection time was kept at (the API keeps fractions; `format_time` cuts them)."""
    return moment.replace(microsecond=0)


def public_updates(updates: list[StatusUpdate] | None) -> list[StatusUpdate]:
    """The updates marked `public: true`, oldest first."""
    return sorted((u for u in updates or [] if u.public), key=lambda u: u.time)


def communicate(b: Builder, *, announce: bool = True) -> None:
    """Apply both rules to the decision being built (`announce`: the public-update rule too; the
    deadline-only plan of a waiting step checks the cadence alone)."""
    status = b.status
    if status.detectedAt is None or b.phase is Phase.CLOSED:
        return
    before = status.communication
    comm = before.model_copy() if before is not None else CommunicationStatus()
    if announce:
        _announce(b, comm, first=before is None)
    _cadence(b, comm)
    status.communication = None if comm == CommunicationStatus() else comm


def _announce(b: Builder, comm: CommunicationStatus, *, first: bool) -> None:
    public = public_updates(b.inp.spec.updates)
    if first or comm.lastPublished is None:  # what is there already is on the page, or opens it
        # an update dated in the future counts as published now (it must not switch later ones off)
        comm.lastPublished = min(public[-1].time, b.now + CLOCK_SKEW) if public else NONE_YET
        return
    # an update dated further ahead than the clocks may differ waits for its time (announced at the
    # first pass after it): announcing it now with its date as lastPublished would switch every later
    # announcement off (and clamping it would announce it again at each pass)
    last, latest = comm.lastPublished, b.now + CLOCK_SKEW
    for update in (u for u in public if (last is None or u.time > last) and u.time <= latest):
        word = update_word(update, b.phase)
        b.record(
            Reason.PUBLIC_UPDATE,
            f"public update ({word}): {update.message[:300]}",
            actor="human",
            update_at=update.time,
        )
        comm.lastPublished = update.time


def _addressee(b: Builder) -> str:
    spec = b.inp.spec
    if spec.roles is not None and spec.roles.comms:
        return f"{spec.roles.comms} (communications lead)"
    if spec.commander:
        return f"{spec.commander} (commander; no communications lead is named)"
    return "the response team (no communications lead or commander is named)"


def _reached(b: Builder) -> tuple[Addressee | None, str]:
    """The person the reminder is told to (the communications lead, else the commander), or None
    and why nobody is ("" when no role is named: the text already says so)."""
    spec = b.inp.spec
    who = (spec.roles.comms if spec.roles is not None else None) or spec.commander
    who = who.strip() if who else None
    if not who:
        return None, ""
    person = paging.find_person(who, b.inp.namespace, b.inp.schedules)
    if person is None:
        return None, f"{who} not told: not in an on-call schedule of {b.inp.namespace}"
    if not person.reachable:
        return None, f"{who} not told: {person.name} has no email or Slack id in {person.schedule}"
    if not b.inp.tell_channels:
        return None, f"{who} not told: no oncall.channels configured"
    return person, f"{person.name} told through {', '.join(b.inp.tell_channels)}"


def _cadence(b: Builder, comm: CommunicationStatus) -> None:
    status, spec = b.status, b.inp.spec
    severity = status.effectiveSeverity or spec.severity
    every = b.inp.update_every.get(severity)
    resolved = b.is_true(ConditionType.RESOLVED) or b.phase in (Phase.RESOLVED, Phase.CLOSED)
    if resolved or every is None:
        comm.nextUpdateBy = None
        if b.is_true(ConditionType.UPDATE_OVERDUE):
            why = "the incident is resolved" if resolved else f"no update cadence for {severity}"
            b.condition(
                ConditionType.UPDATE_OVERDUE, "False", Reason.RESOLVED if resolved else Reason.IDLE, why
            )
        return
    assert status.detectedAt is not None  # noqa: S101 - checked by the caller
    # an update dated in the future counts as published now: it must not push the deadline out
    last = _second(min(b.now, max([status.detectedAt, *(u.time for u in spec.updates or [])])))
    due = last + every
    comm.nextUpdateBy = due
    if b.now < due:
        b.wake.append(due)
        if b.is_true(ConditionType.UPDATE_OVERDUE):
            message = f"update published at {format_time(last)}; the next is due by {format_time(due)}"
            b.condition(ConditionType.UPDATE_OVERDUE, "False", Reason.UPDATE_PUBLISHED, message)
            b.record(Reason.UPDATE_PUBLISHED, message, actor="human")
        return
    since = "the last update" if last != status.detectedAt else "detection"
    message = (
        f"no update for {human_duration(every)} or more ({severity}: an update every "
        f"{human_duration(every)}); the last was {since} at {format_time(last)}, the next was due by "
        f"{format_time(due)}"
    )
    b.condition(ConditionType.UPDATE_OVERDUE, "True", Reason.UPDATE_OVERDUE, message)
    if comm.remindedFor != due:
        comm.remindedFor = due
        person, told = _reached(b)
        b.record(
            Reason.UPDATE_OVERDUE,
            f"update overdue, to {_addressee(b)}: {message}; publish one (kubectl incident update)"
            + (f" ({told})" if told else ""),
            warning=True,
            channels=b.inp.tell_channels if person is not None else (),
            person=person,
        )
