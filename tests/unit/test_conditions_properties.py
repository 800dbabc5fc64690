"""Properties of `set_condition` (metav1.Condition semantics) over generated sequences of updates.

Each property applies a generated sequence of updates to a generated starting list (distinct
types, as the API server keeps them) and checks every step against the one before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_operator.api.timestamps import format_time
from incident_operator.core.conditions import ConditionDict, Status, set_condition

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
TYPES = ("Acknowledged", "Mitigated", "Resolved", "Reconciling", "Stalled")
STATUSES: tuple[Status, ...] = ("True", "False", "Unknown")
EXAMPLES = settings(max_examples=100, deadline=None)


@dataclass(frozen=True)
class Update:
    type_: str
    status: Status
    reason: str
    message: str
    generation: int | None
    now: datetime

    def apply(self, conditions: list[ConditionDict]) -> list[ConditionDict]:
        return set_condition(
            conditions,
            self.type_,
            self.status,
            self.reason,
            self.message,
            generation=self.generation,
            now=self.now,
        )


updates = st.builds(
    Update,
    type_=st.sampled_from(TYPES),
    status=st.sampled_from(STATUSES),
    reason=st.sampled_from(("A", "B", "C")),
    message=st.sampled_from(("", "m1", "m2")),
    generation=st.none() | st.integers(1, 5),
    # seconds apart, so that a new lastTransitionTime is visibly a different one
    now=st.integers(0, 3600).map(lambda s: T0 + timedelta(seconds=s)),
)


@st.composite
def starting_lists(draw: st.DrawFn) -> list[ConditionDict]:
    types = draw(st.lists(st.sampled_from(TYPES), unique=True, max_size=3))
    result = []
    for type_ in types:
        condition: ConditionDict = {
            "type": type_,
            "status": draw(st.sampled_from(STATUSES)),
            "reason": "Initial",
            "message": "",
            "lastTransitionTime": format_time(T0 - timedelta(days=1)),
        }
        if draw(st.booleans()):
            condition["observedGeneration"] = 0
        result.append(condition)
    return result


def run(start: list[ConditionDict], sequence: list[Update]) -> list[tuple[list[ConditionDict], Update]]:
    """Apply `sequence`; return each resulting list with the update that made it."""
    steps = []
    current = start
    for update in sequence:
        current = update.apply(current)
        steps.append((current, update))
    return steps


def by_type(conditions: list[ConditionDict], type_: str) -> ConditionDict | None:
    return next((c for c in conditions if c["type"] == type_), None)


@EXAMPLES
@given(starting_lists(), st.lists(updates, max_size=25))
def test_at_most_one_condition_per_type(start: list[ConditionDict], sequence: list[Update]) -> None:
    for conditions, _ in run(start, sequence):
        types = [c["type"] for c in conditions]
        assert len(types) == len(set(types))


@EXAMPLES
@given(starting_lists(), st.lists(updates, max_size=25))
def test_transition_time_changes_only_when_status_changes(
    start: list[ConditionDict], sequence: list[Update]
) -> None:
    before = start
    for conditions, update in run(start, sequence):
        old, new = by_type(before, update.type_), by_type(conditions, update.type_)
        assert new is not None
        if old is not None and old["status"] == update.status:
            assert new["lastTransitionTime"] == old["lastTransitionTime"]
        else:
            assert new["lastTransitionTime"] == format_time(update.now)
        before = conditions


@EXAMPLES
@given(starting_lists(), st.lists(updates, max_size=25))
def test_status_reason_message_and_generation_take_the_latest_values(
    start: list[ConditionDict], sequence: list[Update]
) -> None:
    for conditions, update in run(start, sequence):
        new = by_type(conditions, update.type_)
        assert new is not None
        assert (new["status"], new["reason"], new["message"]) == (
            update.status,
            update.reason,
            update.message,
        )
        assert new.get("observedGeneration") == update.generation


@EXAMPLES
@given(starting_lists(), st.lists(updates, max_size=25))
def test_other_types_are_untouched_and_order_is_kept(
    start: list[ConditionDict], sequence: list[Update]
) -> None:
    before = start
    for conditions, update in run(start, sequence):
        old_types = [c["type"] for c in before]
        expected = old_types if update.type_ in old_types else [*old_types, update.type_]
        assert [c["type"] for c in conditions] == expected
        for old in before:
            if old["type"] != update.type_:
                assert by_type(conditions, old["type"]) == old
        before = conditions


@EXAMPLES
@given(starting_lists(), st.lists(updates, max_size=25), updates)
def test_an_update_applied_twice_equals_once_and_never_mutates_its_input(
    start: list[ConditionDict], sequence: list[Update], last: Update
) -> None:
    conditions = run(start, sequence)[-1][0] if sequence else start
    snapshot = [dict(c) for c in conditions]
    once = last.apply(conditions)
    assert conditions == snapshot
    assert last.apply(once) == once
    later = Update(
        last.type_, last.status, last.reason, last.message, last.generation, last.now + timedelta(1)
    )
    assert later.apply(once) == once  # the same again later: nothing moves, not even the time
