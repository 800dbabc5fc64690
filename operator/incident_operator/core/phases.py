"""The incident phase machine: Detected → Acknowledged → Investigating → Mitigating → Monitoring
→ Resolved → Closed.

Pure. `advance(phase, event)` is the only way the engine changes a phase. Phases never move
backwards, with one exception: a re-fire of the incident's alert while it is Monitoring or
Resolved reopens it (back to Investigating). `Closed` is final. A human resolution may skip
ahead from any open phase; the phase is for humans and printer columns, the logic reads conditions.
"""

from __future__ import annotations

from enum import StrEnum

from incident_operator.api.models import Phase

ORDER: tuple[Phase, ...] = (
    Phase.DETECTED,
    Phase.ACKNOWLEDGED,
    Phase.INVESTIGATING,
    Phase.MITIGATING,
    Phase.MONITORING,
    Phase.RESOLVED,
    Phase.CLOSED,
)


class Event(StrEnum):
    ACKNOWLEDGED = "Acknowledged"  # a commander was set, or a playbook started
    DIAGNOSTIC_STEP = "DiagnosticStep"  # a step that does not mitigate started (Step.mitigates)
    MUTATING_STEP = "MutatingStep"  # a mitigating step started (Step.mitigates)
    STEPS_DONE = "StepsDone"  # the last step finished; stabilization begins
    STABILIZED = "Stabilized"  # health held for stabilizationSeconds
    HUMAN_RESOLVED = "HumanResolved"  # spec.resolution was set
    REFIRED = "Refired"  # the alert fired again inside the window
    CLOSED = "Closed"  # spec.closed was set


# The phase each event leads to, as a floor: an event never moves a phase backwards.
_TARGET: dict[Event, Phase] = {
    Event.ACKNOWLEDGED: Phase.ACKNOWLEDGED,
    Event.DIAGNOSTIC_STEP: Phase.INVESTIGATING,
    Event.MUTATING_STEP: Phase.MITIGATING,
    Event.STEPS_DONE: Phase.MONITORING,
    Event.STABILIZED: Phase.RESOLVED,
    Event.HUMAN_RESOLVED: Phase.RESOLVED,
    Event.CLOSED: Phase.CLOSED,
}


def rank(phase: Phase) -> int:
    return ORDER.index(phase)


def advance(phase: Phase, event: Event) -> Phase:
    """Return the phase after `event`. Never raises: an event that does not apply is a no-op."""
    if phase is Phase.CLOSED:
        return phase
    if event is Event.REFIRED:
        return Phase.INVESTIGATING if phase in (Phase.MONITORING, Phase.RESOLVED) else phase
    if event is Event.STABILIZED and phase is not Phase.MONITORING:
        return phase  # only a monitored incident stabilizes
    if event is not Event.CLOSED and event is not Event.HUMAN_RESOLVED and phase is Phase.RESOLVED:
        return phase
    target = _TARGET[event]
    return target if rank(target) > rank(phase) else phase


def is_open(phase: Phase) -> bool:
    return phase not in (Phase.RESOLVED, Phase.CLOSED)
