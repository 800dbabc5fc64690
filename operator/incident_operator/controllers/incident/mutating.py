"""The breaker's slot of the mutating step a plan starts (`controllers.automation`, `core.breaker`).

Owns the question asked between a plan and its write: does the decision start a mutating
action (a step's first attempt or a retry, not a step found Running after a restart, whose slot
was taken before it was written), and may it? Refused, the loop plans again with the hold, and
the step waits (`AutomationPaused`, `CircuitOpen` or `StormGuard`). The refusal that opened a trip
carries one more record, `AutomationTripped`, from which people are told once per trip.
Holds no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from incident_operator.api.actions import MUTATING_ACTIONS
from incident_operator.api.models import IncidentStatus, StepState
from incident_operator.api.reasons import Reason
from incident_operator.controllers.automation import Breaker
from incident_operator.core import breaker
from incident_operator.core.planner import AutomationHold, Decision, Record


def mutating_start(before: IncidentStatus, decision: Decision) -> breaker.Request | None:
    """The mutating action `decision` starts, as a breaker request (without its namespace and
    uid), or None: no intent, not a step, not mutating, or a step already Running before this plan."""
    intent, progress = decision.intent, decision.status.playbook
    if intent is None or intent.kind != "run-step" or progress is None or intent.step < 0:
        return None
    step = progress.steps[intent.step]
    if step.action not in MUTATING_ACTIONS or step.state is not StepState.RUNNING:
        return None
    earlier = before.playbook
    if earlier is not None and earlier.runId == progress.runId and intent.step < len(earlier.steps):
        was = earlier.steps[intent.step]
        if was.state is StepState.RUNNING and was.attempts == step.attempts:
            return None  # resumed after a restart: its slot was taken before its start was written
    return breaker.Request("", "", progress.runId or "r1", step.name, step.attempts, progress.name)


@dataclass(frozen=True)
class MutatingSlots:
    breaker: Breaker | None
    namespace: str
    name: str
    uid: str

    async def reserve(
        self, before: IncidentStatus, decision: Decision
    ) -> tuple[AutomationHold | None, list[Record]]:
        """(the hold, the records to add) when the decision's mutating action may not start;
        (None, []) when it may, or starts none."""
        if self.breaker is None:
            return None, []
        wanted = mutating_start(before, decision)
        if wanted is None:
            return None, []
        request = breaker.Request(
            self.namespace, self.uid, wanted.run, wanted.step, wanted.attempt, wanted.playbook
        )
        verdict = await self.breaker.reserve(request)
        if verdict.granted or verdict.reason is None or verdict.retry_at is None:
            return None, []
        hold = AutomationHold(verdict.reason, verdict.message, verdict.retry_at)
        if not verdict.tripped:
            return hold, []
        what = "the storm guard" if verdict.reason == Reason.STORM_GUARD else "the circuit breaker"
        tripped = Record(
            Reason.AUTOMATION_TRIPPED,
            f"{what} tripped ({verdict.scope}) at step {wanted.step} of incident "
            f"{self.namespace}/{self.name}: {verdict.message}",
            warning=True,
        )
        return hold, [tripped]
