"""What an OnCallSchedule's status should say at a moment, and when it changes next. Pure.

The controller (`controllers.oncall`) feeds it the object's spec, status and generation and the
clock; it answers with the status to hold (`current`, `next`, the conditions `Ready` and
`Invalid`, `observedGeneration`), whether that differs from what is written, and when to look
again (the next boundary: the end of the current turn or the start of the next). A spec with
problems gets Ready=False/Invalid=True with reason InvalidSpec and no one on call, and no wake-up:
nothing changes until the spec does. Overrides the computation ignores (`oncall.ignored`: one
naming someone no longer in spec.people, one covering no time) are named in Ready's message
("ignored: override of bob from ...: unknown person bob (not in spec.people)").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import format_time
from incident_operator.core import conditions, oncall

OWNED = ("observedGeneration", "current", "next", "conditions")
RECHECK = timedelta(hours=1)
"""How soon a schedule whose current turn has no end in sight (or that has no next turn) is
looked at again: its search may have stopped at `oncall.SEARCH_BUDGET`."""
"""The keys of status this module decides (others, such as handoffs, are left alone)."""


@dataclass(frozen=True)
class Observed:
    status: dict[str, Any]
    """The owned keys of status as they should be (`current`/`next` None: nobody)."""
    problems: list[str] = field(default_factory=list)
    wake: datetime | None = None
    """When who is on call (or next) changes; None: not within the horizon, or an invalid spec."""

    @property
    def invalid(self) -> bool:
        return bool(self.problems)

    @property
    def message(self) -> str:
        return "; ".join(self.problems)[:1024]


def observe(
    raw_spec: Mapping[str, Any], status: Mapping[str, Any], generation: int | None, now: datetime
) -> Observed:
    """The status the schedule should have at `now`."""
    spec, found = oncall.check(raw_spec)
    skipped = [f"ignored: {why}" for why in oncall.ignored(spec)] if spec is not None else []
    current_conditions = list(status.get("conditions") or [])
    if spec is None or found:
        message = "; ".join([*found, *skipped])[:1024]
        updated = conditions.set_condition(
            current_conditions,
            ConditionType.INVALID,
            "True",
            Reason.INVALID_SPEC,
            message,
            generation=generation,
            now=now,
        )
        updated = conditions.set_condition(
            updated,
            ConditionType.READY,
            "False",
            Reason.INVALID_SPEC,
            message,
            generation=generation,
            now=now,
        )
        return Observed(
            {"observedGeneration": generation, "current": None, "next": None, "conditions": updated}, found
        )
    shift = oncall.on_call(spec, now)
    following = oncall.next_shift(spec, now)
    current: dict[str, Any] | None = None
    wakes: list[datetime] = []
    if shift is not None:
        current = {"person": shift.person, "layer": shift.layer}
        if not oncall.open_ended(shift, now):
            current["until"] = format_time(shift.end)
            wakes.append(shift.end)
    upcoming: dict[str, Any] | None = None
    if following is not None:
        upcoming = {
            "person": following.person,
            "layer": following.layer,
            "from": format_time(following.start),
        }
        wakes.append(following.start)
    if (shift is not None and oncall.open_ended(shift, now)) or following is None:
        wakes.append(now + RECHECK)  # a search may stop at its budget: look again now and then
    message = "; ".join([_summary(shift, following), *skipped])[:1024]
    updated = conditions.set_condition(
        current_conditions,
        ConditionType.INVALID,
        "False",
        Reason.VALID,
        "valid",
        generation=generation,
        now=now,
    )
    updated = conditions.set_condition(
        updated, ConditionType.READY, "True", Reason.VALID, message, generation=generation, now=now
    )
    return Observed(
        {"observedGeneration": generation, "current": current, "next": upcoming, "conditions": updated},
        [],
        min(wakes) if wakes else None,
    )


def _summary(shift: oncall.Shift | None, following: oncall.Shift | None) -> str:
    now = f"{shift.person} ({shift.layer}) is on call" if shift else "nobody is on call"
    then = (
        f"{following.person} ({following.layer}) from {format_time(following.start)}"
        if following
        else "nobody"
    )
    return f"{now}; next: {then}"


def differs(written: Mapping[str, Any], observed: Observed) -> bool:
    """Whether the written status differs from the observed one in the keys this module owns."""
    return any(written.get(key) != observed.status.get(key) for key in OWNED)
