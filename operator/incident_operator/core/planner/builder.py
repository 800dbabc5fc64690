"""Builds one decision: conditions, timeline records, phase moves, wake-ups, the bound timeline. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from incident_operator.api.models import (
    Condition,
    IncidentStatus,
    Phase,
    StepState,
    TimelineEntry,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import parse_time
from incident_operator.core import conditions as cond
from incident_operator.core.paging import Addressee
from incident_operator.core.phases import Event, advance
from incident_operator.core.planner.model import (
    OPERATOR_ACTOR,
    RETRY_BACKOFF_MAX_S,
    TIMELINE_LIMIT,
    Decision,
    Intent,
    PlanInput,
    Record,
)


class Builder:
    """Accumulates status changes and records while planning."""

    def __init__(self, inp: PlanInput) -> None:
        self.inp = inp
        self.now = inp.now
        self.status = inp.status.model_copy(deep=True)
        self.records: list[Record] = []
        self.wake: list[datetime] = []

    @property
    def phase(self) -> Phase:
        return self.status.phase or Phase.DETECTED

    def advance(self, event: Event) -> None:
        after = advance(self.phase, event)
        if after is not self.phase:
            self.status.phase = after

    def condition(self, type_: ConditionType, status: cond.Status, reason: Reason, message: str) -> bool:
        """Set a condition; return True if its status or reason changed."""
        before = cond.find_condition(self._conds(), type_)
        if (
            before
            and before["status"] == status
            and before["reason"] == reason
            and before["message"] == message
            and before.get("observedGeneration") == self.inp.generation
        ):
            return False
        updated = cond.set_condition(
            self._conds(), type_, status, reason, message, generation=self.inp.generation, now=self.now
        )
        self.status.conditions = [Condition.model_validate(c) for c in updated]
        return before is None or before["status"] != status or before["reason"] != reason

    def is_true(self, type_: ConditionType) -> bool:
        return cond.is_true(self._conds(), type_)

    def reason_of(self, type_: ConditionType) -> str | None:
        found = cond.find_condition(self._conds(), type_)
        return None if found is None else str(found["reason"])

    def transition_of(self, type_: ConditionType) -> datetime | None:
        """When the condition last changed status (None: not set, or no time recorded)."""
        found = cond.find_condition(self._conds(), type_)
        stamp = None if found is None else found.get("lastTransitionTime")
        return parse_time(str(stamp)) if stamp else None

    def message_of(self, type_: ConditionType) -> str | None:
        found = cond.find_condition(self._conds(), type_)
        return None if found is None else str(found.get("message") or "")

    def record(
        self,
        reason: Reason,
        message: str,
        *,
        warning: bool = False,
        actor: str = OPERATOR_ACTOR,
        counter: Literal["runs", "succeeded", "failed"] | None = None,
        channels: tuple[str, ...] = (),
        update_at: datetime | None = None,
        person: Addressee | None = None,
        role: str | None = None,
    ) -> None:
        self.records.append(
            Record(
                reason,
                message,
                warning,
                actor,
                counter,
                channels,
                update_at=update_at,
                person=person,
                role=role,
            )
        )
        entries = [
            *(self.status.timeline or []),
            TimelineEntry(time=self.now, type=reason, message=message, actor=actor),
        ]
        self.status.timeline = bound_timeline(entries)

    def decision(self, intent: Intent | None = None) -> Decision:
        wake = min(self.wake) if self.wake else None
        return Decision(self.status, intent, wake, self.records)

    def _conds(self) -> list[cond.ConditionDict]:
        return [c.model_dump(mode="json", exclude_none=True) for c in self.status.conditions or []]


def bound_timeline(entries: list[TimelineEntry]) -> list[TimelineEntry]:
    """Keep at most TIMELINE_LIMIT entries; older ones are folded into one summary, never dropped silently."""
    if len(entries) <= TIMELINE_LIMIT:
        return entries
    overflow = entries[: len(entries) - TIMELINE_LIMIT + 1]
    kept = entries[len(entries) - TIMELINE_LIMIT + 1 :]
    folded = 0
    types: dict[str, int] = {}
    for entry in overflow:
        if entry.type == Reason.SUMMARY and entry.message.startswith("summarised "):
            folded += int(entry.message.split()[1])
            continue
        folded += 1
        types[entry.type] = types.get(entry.type, 0) + 1
    detail = ", ".join(f"{name} x{count}" for name, count in sorted(types.items()))
    summary = TimelineEntry(
        time=overflow[-1].time,
        type=Reason.SUMMARY,
        message=f"summarised {folded} earlier entries up to this time" + (f": {detail}" if detail else ""),
        actor=OPERATOR_ACTOR,
    )
    return [summary, *kept]


def with_records(status: IncidentStatus, records: list[Record], now: datetime) -> IncidentStatus:
    """`status` with `records` appended to its (bounded) timeline, for records made outside `plan`."""
    new = status.model_copy(deep=True)
    entries = [TimelineEntry(time=now, type=r.reason, message=r.message, actor=r.actor) for r in records]
    new.timeline = bound_timeline([*(new.timeline or []), *entries])
    return new


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), RETRY_BACKOFF_MAX_S))


def skip_remaining(b: Builder, message: str) -> None:
    """Steps that have not finished will not run any more: mark them Skipped, with why."""
    progress = b.status.playbook
    for step_status in progress.steps if progress else []:
        if step_status.state in (
            StepState.PENDING,
            StepState.RUNNING,
            StepState.AWAITING_APPROVAL,
            StepState.BLOCKED,
        ):
            step_status.state = StepState.SKIPPED
            step_status.finishedAt = b.now
            step_status.message = message


def acknowledge(b: Builder, reason: Reason, message: str, actor: str = OPERATOR_ACTOR) -> None:
    b.status.acknowledgedAt = b.now
    b.advance(Event.ACKNOWLEDGED)
    b.condition(ConditionType.ACKNOWLEDGED, "True", reason, message)  # a breach, if any, stays recorded
    b.record(Reason.ACKNOWLEDGED, message, actor=actor)
