"""The breaker's slot of the mutating step a plan starts (`controllers.automation`, `core.breaker`).

Owns the question asked between a plan and its write: does the decision start mutating actions
(a step's first attempt or a retry, not a step found Running after a restart, whose slots were
taken before it was written), how many (one per workload: a step on the incident's own targets
counts each target not done yet), and may it? Refused, the loop plans again with the hold, and
the step waits (`AutomationPaused`, `CircuitOpen` or `StormGuard`; `Stalled`, `ActionsAboveLimit`
for a step no window can hold). The refusal that opened a trip carries one more record,
`AutomationTripped`, from which people are told once per trip. A scale revert after the run
(`revert-scale`) is counted, one action per workload put back, and never refused (not even when
the breaker's state cannot be written: it is logged).

A retry of a step that waits for another incident's workload lock (its last attempt Blocked
TargetBusy) first reads the locks (`still_busy`): while one is still held by another run, the
step is Blocked again at once, naming the holder, with no slot reserved and nothing claimed or
acted on, so a step waiting minutes writes nothing to the breaker's state and takes no slot that
could turn a real action away. Only once its locks look free is it reserved and run; the action's
own claim decides (`controllers.targets.lock`). An attempt that still acted on nothing (Blocked
TargetBusy, a race lost to another claim, or OutOfBounds, the labels read again) gives its slots
back (`release`), and its run's storm-guard slot if the run had not acted before. Also what the
loop's early lock claim (`controllers.targets.EarlyClaim`) asks: whether the breaker held the step
at its last try (`held_by_breaker`). Holds no state.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime

from incident_operator.adapters.kube import ApiException, Kube, api_reason
from incident_operator.api.actions import MUTATING_ACTIONS
from incident_operator.api.base import WorkloadRef
from incident_operator.api.models import IncidentStatus, PlaybookSpec, StepState, StepStatus
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.controllers import targets
from incident_operator.controllers.automation import Breaker
from incident_operator.core import breaker
from incident_operator.core import targets as lock_rules
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

    def expects_refusal(self, before: IncidentStatus, decision: Decision) -> bool:
        """Whether the breaker's copy in this process says the decision's mutating start would
        be refused now (`Breaker.expects_refusal`: a hint, nothing asked)."""
        request = self.reserved(before, decision)
        return request is not None and self.breaker is not None and self.breaker.expects_refusal(request)

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


def waited_busy(before: IncidentStatus, decision: Decision) -> bool:
    """Whether `decision` tries again a step whose last attempt (in `before`, the same run) was
    Blocked waiting for another incident's lock: the step Blocked and the incident Stalled with
    reason TargetBusy."""
    intent, progress, earlier = decision.intent, decision.status.playbook, before.playbook
    if intent is None or intent.kind != "run-step" or progress is None or earlier is None or intent.step < 0:
        return False
    if earlier.runId != progress.runId or intent.step >= len(earlier.steps):
        return False
    if earlier.steps[intent.step].state is not StepState.BLOCKED:
        return False
    return any(
        c.type == ConditionType.STALLED and c.status == "True" and c.reason == Reason.TARGET_BUSY
        for c in before.conditions or []
    )


BREAKER_HOLDS = (Reason.BREAKER_UNAVAILABLE, Reason.ACTIONS_ABOVE_LIMIT)
"""Stalled reasons of a step the breaker holds (besides `AutomationPaused`)."""


def held_by_breaker(before: IncidentStatus) -> bool:
    """Whether the incident says the breaker held its mutating step at the last try: paused
    (`AutomationPaused`: CircuitOpen, StormGuard) or Stalled with BreakerUnavailable or
    ActionsAboveLimit."""
    for c in before.conditions or []:
        if c.status != "True":
            continue
        if c.type == ConditionType.AUTOMATION_PAUSED:
            return True
        if c.type == ConditionType.STALLED and c.reason in BREAKER_HOLDS:
            return True
    return False


def _locked_refs(decision: Decision, playbook: PlaybookSpec) -> list[WorkloadRef]:
    """The workloads the step `decision` starts would lock now (as `controllers.targets.run_step`
    does): its fixed target, or its resolved targets not done yet; none for a step that locks none."""
    intent, progress = decision.intent, decision.status.playbook
    assert intent is not None  # noqa: S101 - callers check
    assert progress is not None  # noqa: S101 - callers check
    status = progress.steps[intent.step]
    step = next((s for s in playbook.steps if s.name == status.name), None)
    if step is None or not step.mutates or step.target is None:
        return []
    if status.targets is None:
        fixed = step.target.fixed
        return [fixed] if fixed is not None else []
    return [t.ref for t in status.targets if t.state != "Succeeded"]


async def still_busy(
    kube: Kube,
    namespace: str,
    before: IncidentStatus,
    decision: Decision,
    *,
    playbook: PlaybookSpec,
    me: targets.Claimant,
    now: datetime,
) -> Outcome | None:
    """The outcome of the step `decision` tries again, decided by reading its workloads' locks,
    when its last attempt waited for another incident's lock (`waited_busy`) and one of them is
    still held by another run (`core.targets.holds_lock`, as the claim judges it): Blocked
    TargetBusy naming the holder, the message the claim would give. Nothing is written: no breaker
    slot, no lock, no action. None: try it (reserve its slots, then its action claims the locks
    and decides): not such a retry, every lock free or this incident's, the holder ranks first
    and waits, maybe through others, for a workload this run holds (the action's claim gives way,
    `controllers.targets.waits_on`), or a lock could not be read."""
    if not waited_busy(before, decision):
        return None
    try:
        for ref in sorted(_locked_refs(decision, playbook), key=lock_rules.key):
            value, _ = await kube.read_lock(namespace, lock_rules.lock_lease(ref))
            if value is None:
                continue
            busy = await targets.held_by(kube, namespace, value, me, now)
            if busy is None:
                continue
            if busy.first and await targets.waits_on(
                kube, namespace, busy.wants, me, now, start=(busy.holder, busy.run)
            ):
                return None  # a circle of waits: the action's claim gives way
            return Outcome(False, targets.busy_message(ref, busy), blocked=Reason.TARGET_BUSY)
    except ApiException as exc:
        logger.info("%s: locks not read before a retry: %s", namespace, api_reason(exc))
    return None
