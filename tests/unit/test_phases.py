"""The phase machine: forward only, re-fire reopens Monitoring/Resolved, Closed is final."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from incident_operator.api.models import Phase
from incident_operator.core.phases import ORDER, Event, advance, rank

phases = st.sampled_from(ORDER)
events = st.sampled_from(list(Event))


def test_the_happy_path_visits_every_phase_in_order() -> None:
    seen = [Phase.DETECTED]
    for event in (
        Event.ACKNOWLEDGED,
        Event.DIAGNOSTIC_STEP,
        Event.MUTATING_STEP,
        Event.STEPS_DONE,
        Event.STABILIZED,
        Event.CLOSED,
    ):
        seen.append(advance(seen[-1], event))
    assert seen == list(ORDER)


def test_a_mutating_first_step_skips_investigating_forward() -> None:
    assert advance(Phase.ACKNOWLEDGED, Event.MUTATING_STEP) is Phase.MITIGATING


def test_a_diagnostic_step_after_mitigation_does_not_go_back() -> None:
    assert advance(Phase.MITIGATING, Event.DIAGNOSTIC_STEP) is Phase.MITIGATING


def test_refire_reopens_monitoring_and_resolved_only() -> None:
    assert advance(Phase.MONITORING, Event.REFIRED) is Phase.INVESTIGATING
    assert advance(Phase.RESOLVED, Event.REFIRED) is Phase.INVESTIGATING
    assert advance(Phase.MITIGATING, Event.REFIRED) is Phase.MITIGATING
    assert advance(Phase.CLOSED, Event.REFIRED) is Phase.CLOSED


def test_stabilized_needs_monitoring() -> None:
    assert advance(Phase.MITIGATING, Event.STABILIZED) is Phase.MITIGATING
    assert advance(Phase.MONITORING, Event.STABILIZED) is Phase.RESOLVED


def test_a_human_may_resolve_from_any_open_phase() -> None:
    for phase in ORDER[:-2]:
        assert advance(phase, Event.HUMAN_RESOLVED) is Phase.RESOLVED


@given(phases, events)
def test_no_phase_moves_backwards_except_a_refire(phase: Phase, event: Event) -> None:
    after = advance(phase, event)
    if event is Event.REFIRED and phase in (Phase.MONITORING, Phase.RESOLVED):
        assert after is Phase.INVESTIGATING
    else:
        assert rank(after) >= rank(phase)


@given(st.lists(events, max_size=30))
def test_closed_is_final(sequence: list[Event]) -> None:
    phase = Phase.CLOSED
    for event in sequence:
        phase = advance(phase, event)
    assert phase is Phase.CLOSED


@given(phases, st.lists(events, max_size=30))
def test_only_close_reaches_closed_and_steps_are_never_skipped_backwards(
    start: Phase, sequence: list[Event]
) -> None:
    phase = start
    for event in sequence:
        after = advance(phase, event)
        if after is Phase.CLOSED and phase is not Phase.CLOSED:
            assert event is Event.CLOSED
        if rank(after) < rank(phase):
            assert event is Event.REFIRED
        phase = after


@given(phases, events)
def test_advance_is_idempotent(phase: Phase, event: Event) -> None:
    once = advance(phase, event)
    if event is not Event.REFIRED:
        assert advance(once, event) is once
