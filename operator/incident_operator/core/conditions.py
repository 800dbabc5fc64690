"""Status conditions with metav1.Condition semantics, as pure functions over plain dicts.

`set_condition` updates a condition by `type`: `lastTransitionTime` changes only when `status`
flips, `observedGeneration` is stamped, and the input list is never mutated. The clock is an
argument. Condition types and their reasons are documented in `CONDITION_TYPES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]
ConditionDict = dict[str, Any]

# Condition types of an Incident, with the reasons the operator uses (documented API).
CONDITION_TYPES: dict[str, str] = {
    "Acknowledged": "True once a commander is set (reason CommanderAssigned) or a playbook starts "
    "(reason PlaybookStarted).",
    "Mitigated": "True once the first mutating step succeeded (MitigationApplied).",
    "Resolved": "True when health held after the stabilization window (Stabilized) or a human "
    "declared a resolution (DeclaredByHuman).",
    "ResponseTargetBreached": "True when acknowledgeBy passed without acknowledgement (AckDeadlinePassed); "
    "it stays True after a late acknowledgement.",
    "Reconciling": "True while automation works (StepRunning, AwaitingApproval, Monitoring); False when "
    "it does not (Idle, Paused, CooldownActive, Stalled, Resolved, Closed).",
    "Stalled": "True when automation cannot go on without a human: StepFailed (the message names the "
    "step and why, e.g. a missing Deployment or Secret, or a guardrail), PlaybookNotFound, "
    "NoMatchingPlaybook, InvalidPlaybook (changed during the run), HealthNotRestored.",
}


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision and a Z suffix, as the API server writes times.

    A naive datetime is taken to be UTC already.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 time as written by `format_time` or the API server (aware, UTC)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def find_condition(conditions: Sequence[ConditionDict] | None, type_: str) -> ConditionDict | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Sequence[ConditionDict] | None, type_: str) -> bool:
    condition = find_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    conditions: Sequence[ConditionDict] | None,
    type_: str,
    status: Status,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[ConditionDict]:
    """Return a new list with condition `type_` set; others are kept in their order."""
    result = [dict(c) for c in conditions or ()]
    existing = find_condition(result, type_)
    updated: ConditionDict = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    if existing is None:
        result.append(updated)
        return result
    if existing.get("status") == status and "lastTransitionTime" in existing:
        updated["lastTransitionTime"] = existing["lastTransitionTime"]
    existing.clear()
    existing.update(updated)
    return result
