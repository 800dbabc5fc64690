"""The breaker's slot of the mutating step a plan starts (`controllers.automation`, `core.breaker`).

Owns the question asked between a plan and its write: does the decision start mutating actions
(a step's first attempt or a retry, not a step found Running after a restart, whose slots were
taken before it was written), how many (one per workload: a step on the incident's own targets
counts each target not done yet), and may it? Refused, the loop plans again with the hold, and
the step waits (`AutomationPaused`, `CircuitOpen` or `StormGuard`; `Stalled`, `ActionsAboveLimit`
for a step no window can hold). The refusal that opened a trip carries one more record,
`AutomationTripped`, from which people are told once per trip. A scale revert after the run
(`revert-scale`) is counted, one action per workload put back, and never refused (not even when
the breaker's state cannot be written: it is logged). An attempt that acted on nothing (Blocked
TargetBusy or OutOfBounds) gives its slots back (`release`), and its run's storm-guard slot if the
run had not acted before. Holds no state.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from incident_operator.api.actions import MUTATING_ACTIONS
from incident_operator.api.models import IncidentStatus, StepState, StepStatus
from incident_operator.api.reasons import Reason
from incident_operator.controllers.automation import Breaker
from incident_operator.core import breaker
from incident_operator.core.breaker import Request as BreakerRequest
from incident_operator.core.planner import AutomationHold, Decision, Outcome, Record

logger = logging.getLogger(__name__)

NOTHING_ACTED = (Reason.TARGET_BUSY, Reason.OUT_OF_BOUNDS)
"""Outcomes of a mutating step that acted on no workload (`controllers.targets` decides them
before the first target is touched): the slots its attempt reserved are given back."""


def _workloads(step: StepStatus, *, reverted: bool = False) -> tuple[str, ...] | None:
    """The workloads ('Kind/name') a step on the incident's own targets acts on now: those not
    done yet, or for a revert those it scaled; () for a step with a fixed target (one action);
    None: it acts on none."""
    if step.targets is None:
        return ()
    if reverted:
        chosen = [t for t in step.targets if t.state == "Succeeded" and t.replicasBefore is not None]
    else:
        chosen = [t for t in step.targets if t.state != "Succeeded"]
    return tuple(f"{t.kind}/{t.name}" for t in chosen) or None


def _revert(decision: Decision) -> BreakerRequest | None:
    """The scale revert `decision` starts, as a breaker request that is counted, never refused."""
    intent, progress = decision.intent, decision.status.playbook
    if intent is None or intent.kind != "revert-scale" or progress is None or intent.step < 0:
        return None
    step = progress.steps[intent.step]
    workloads = _workloads(step, reverted=True)
    if workloads is None or (workloads == () and step.replicasBefore is None):
        return None  # nothing to put back
    run = progress.runId or "r1"
    return breaker.Request(
        "", "", run, f"{step.name}/revert", 1, progress.name, True, workloads, restores=True
    )


def mutating_start(before: IncidentStatus, decision: Decision) -> BreakerRequest | None:
    """The mutating actions `decision` starts, as a breaker request (without its namespace and
    uid), or None: no intent, not a step, not mutating, a step already Running before this plan,
    or a step whose targets are all done. `targets`: those of a step on the incident's own
    targets not done yet (each one action). `acted`: an earlier mutating step of this run, or an
    earlier attempt of this one, started (the run holds its storm-guard slot). A scale revert
    (`revert-scale`) is a request that `restores`."""
    revert = _revert(decision)
    if revert is not None:
        return revert
    intent, progress = decision.intent, decision.status.playbook
    if intent is None or intent.kind != "run-step" or progress is None or intent.step < 0:
        return None
    step = progress.steps[intent.step]
    if step.action not in MUTATING_ACTIONS or step.state is not StepState.RUNNING:
        return None
    workloads = _workloads(step)
    if workloads is None:
        return None  # every target done: it acts on none
    earlier = before.playbook
    if earlier is not None and earlier.runId == progress.runId and intent.step < len(earlier.steps):
        was = earlier.steps[intent.step]
        if was.state is StepState.RUNNING and was.attempts == step.attempts:
            return None  # resumed after a restart: its slot was taken before its start was written
    acted = step.attempts > 1 or any(
        other.action in MUTATING_ACTIONS and other.attempts > 0
        for index, other in enumerate(progress.steps)
        if index != intent.step
    )
    run = progress.runId or "r1"
    return breaker.Request("", "", run, step.name, step.attempts, progress.name, acted, workloads)


@dataclass(frozen=True)
class MutatingSlots:
    breaker: Breaker | None
    namespace: str
    name: str
    uid: str

    def reserved(self, before: IncidentStatus, decision: Decision) -> BreakerRequest | None:
        """What `reserve` asked the breaker for (granted, when it returned no hold), to give back
        with `release`; None: nothing (no breaker, no mutating start, or a scale revert)."""
        if self.breaker is None:
            return None
        wanted = mutating_start(before, decision)
        if wanted is None or wanted.restores:
            return None
        return dataclasses.replace(wanted, namespace=self.namespace, uid=self.uid)

    async def release(self, request: BreakerRequest | None, outcome: Outcome) -> None:
        """Give back `request`'s slots when its attempt acted on nothing: Blocked before acting,
        waiting for another incident's lock (TargetBusy) or with its targets out of its bounds
        (OutOfBounds, the labels read again); both are decided before any target is acted on."""
        if self.breaker is None or request is None or outcome.blocked not in NOTHING_ACTED:
            return
        await self.breaker.release(request)

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
        request = dataclasses.replace(wanted, namespace=self.namespace, uid=self.uid)
        verdict = await self.breaker.reserve(request)
        if wanted.restores:  # counted, never refused: a breaker that cannot count it is only logged
            if not verdict.granted:
                logger.warning(
                    "incident %s/%s: scale revert of step %s not counted: %s",
                    self.namespace,
                    self.name,
                    wanted.step,
                    verdict.message,
                )
            return None, []
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
            cluster_wide=breaker.scope_kind(verdict.scope or "") == breaker.CLUSTER,
        )
        return hold, [tripped]
