"""Conditions follow metav1.Condition semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from incident_operator.api.timestamps import format_time, parse_time
from incident_operator.core.conditions import find_condition, is_true, set_condition

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def test_a_new_condition_is_appended_with_generation_and_time() -> None:
    out = set_condition([], "Stalled", "True", "StepFailed", "boom", generation=3, now=T0)
    assert out == [
        {
            "type": "Stalled",
            "status": "True",
            "reason": "StepFailed",
            "message": "boom",
            "lastTransitionTime": "2026-11-27T10:00:00Z",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_is_kept_while_status_does_not_flip() -> None:
    first = set_condition([], "Reconciling", "True", "StepRunning", "a", generation=1, now=T0)
    second = set_condition(
        first, "Reconciling", "True", "AwaitingApproval", "b", generation=2, now=T0 + timedelta(1)
    )
    assert second[0]["lastTransitionTime"] == "2026-11-27T10:00:00Z"
    assert second[0]["reason"] == "AwaitingApproval"
    assert second[0]["observedGeneration"] == 2


def test_transition_time_moves_when_status_flips() -> None:
    first = set_condition([], "Reconciling", "True", "StepRunning", "", generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    second = set_condition(first, "Reconciling", "False", "Idle", "", generation=1, now=later)
    assert parse_time(second[0]["lastTransitionTime"]) == later


def test_the_input_is_not_mutated_and_order_is_kept() -> None:
    base = set_condition([], "A", "True", "R", "", generation=1, now=T0)
    base = set_condition(base, "B", "True", "R", "", generation=1, now=T0)
    snapshot = [dict(c) for c in base]
    out = set_condition(base, "A", "False", "R2", "", generation=2, now=T0)
    assert base == snapshot
    assert [c["type"] for c in out] == ["A", "B"]
    assert is_true(out, "B")
    assert not is_true(out, "A")
    assert find_condition(out, "C") is None


def test_times_are_utc_rfc3339() -> None:
    assert format_time(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    eastern = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).astimezone()
    assert format_time(eastern) == "2026-01-02T03:04:05Z"
