"""Status conditions with metav1.Condition semantics, as pure functions over plain dicts.

`set_condition` updates a condition by `type`: `lastTransitionTime` changes only when `status`
flips, `observedGeneration` is stamped, and the input list is never mutated. The clock is an
argument. Condition types and their reasons are `api.reasons` (documented in the API reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from incident_operator.api.timestamps import format_time

Status = Literal["True", "False", "Unknown"]
ConditionDict = dict[str, Any]


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
        "type": str(type_),  # plain strings, even from a StrEnum (api.reasons)
        "status": status,
        "reason": str(reason),
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
