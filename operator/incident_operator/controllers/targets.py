"""Running a step on its workloads: each target exactly once, under a per-workload lock.

A step that acts on a workload (scale, restart, waitReady, rollback) runs its action once per
target: the fixed one, or each of the incident's targets the planner resolved into the step's
status (`StepStatus.targets`, `core.targets`). Each target has its own state, persisted when it
is done, so a crash or a retry never acts on a done target again; the action's own decisions
(replicas, revision) are kept per target the same way.

A mutating step takes the workload's lock first: a Lease in its namespace (`core.targets.lock_lease`,
holder `<incident>/<uid>/<claimed at>`), claimed and released with resourceVersion-checked writes,
as the cooldown claim is. An incident that finds another holding it does not act: the step is
Blocked with reason TargetBusy naming the holder, and tried again shortly. A lock whose holder is
gone, resolved, closed or past its run (`core.targets.holds_lock`) is taken over, so a deleted
incident never wedges a workload. Holds no state between calls.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

from incident_operator.adapters.kube import ApiException, Kube, api_reason, not_found
from incident_operator.api.base import WorkloadRef
from incident_operator.api.models import IncidentSpec, IncidentStatus, PlaybookSpec, StepState, StepStatus
from incident_operator.api.reasons import Reason
from incident_operator.api.targets import TargetStatus
from incident_operator.controllers import actions
from incident_operator.core import targets
from incident_operator.core.planner import Outcome

logger = logging.getLogger(__name__)

LOCK_ATTEMPTS = 5
_CARRIED = ("replicasBefore", "replicasAfter", "revision", "revisionFrom", "revisionName", "pods")
"""What an action decides per target before it acts (kept in the target's status)."""


async def claim(kube: Kube, namespace: str, ref: WorkloadRef, me: str, now: datetime) -> str | None:
    """Take the lock on `ref` for `me` (`<incident>/<uid>`): None when it is ours, else the
    incident holding it."""
    lease = targets.lock_lease(ref)
    for _ in range(LOCK_ATTEMPTS):
        holder, version = await kube.read_lock(namespace, lease)
        if holder is not None and _mine(holder, me):
            return None
        if holder and await _still_held(kube, namespace, holder, now):
            return targets.lock_holder(holder)[0]
        name, _, uid = me.partition("/")
        try:
            await kube.write_lock(namespace, lease, targets.lock_value(name, uid, now), version)
            return None
        except ApiException as exc:
            if exc.status != 409:
                raise
    return "another incident (the lock is contended)"


async def release(kube: Kube, namespace: str, ref: WorkloadRef, me: str) -> None:
    """Give the lock on `ref` back, if `me` holds it."""
    lease = targets.lock_lease(ref)
    for _ in range(LOCK_ATTEMPTS):
        holder, version = await kube.read_lock(namespace, lease)
        if holder is None or not _mine(holder, me):
            return
        try:
            await kube.write_lock(namespace, lease, None, version)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise


def _mine(holder: str, me: str) -> bool:
    name, uid, _ = targets.lock_holder(holder)
    return f"{name}/{uid}" == me


async def _still_held(kube: Kube, namespace: str, holder: str, now: datetime) -> bool:
    try:
        body: dict[str, Any] | None = await kube.get_object(
            "incidents", namespace, targets.lock_holder(holder)[0]
        )
    except ApiException as exc:
        if not not_found(exc):
            raise
        body = None
    return targets.holds_lock(body, holder, now)


async def _on(ctx: actions.ActionContext, ref: WorkloadRef) -> Outcome:
    """The action on one workload, under its lock if it mutates."""
    if not ctx.step.mutates:
        return await actions.run(ctx)
    me = f"{ctx.incident}/{ctx.incident_uid}"
    try:
        holder = await claim(ctx.kube, ctx.namespace, ref, me, ctx.now())
    except ApiException as exc:
        return Outcome(False, f"locking {ref.kind}/{ref.name}: {api_reason(exc)}")
    if holder is not None:
        return Outcome(
            False,
            f"{ref.kind}/{ref.name} is busy: incident {holder} runs a mutating step on it",
            blocked=Reason.TARGET_BUSY,
        )
    try:
        return await actions.run(ctx)
    finally:
        try:
            await release(ctx.kube, ctx.namespace, ref, me)
        except Exception as exc:  # left to the stale-lock rule (this step is no longer Running)
            logger.warning(
                "%s/%s: lock on %s/%s not released: %s", ctx.namespace, ctx.incident, ref.kind, ref.name, exc
            )


def _view(step_status: StepStatus, target: TargetStatus) -> StepStatus:
    """The step's status as the action sees it for one target (its own decisions)."""
    view = step_status.model_copy()
    for name in _CARRIED:
        setattr(view, name, getattr(target, name))
    return view


def _fold(view: StepStatus, target: TargetStatus) -> None:
    for name in _CARRIED:
        setattr(target, name, getattr(view, name))


async def run_step(ctx: actions.ActionContext) -> Outcome:
    """Run the step's action on each of its workloads (or, without one, as it is)."""
    target = ctx.step.target
    resolved = ctx.step_status.targets
    if target is None:
        return await actions.run(ctx)
    if resolved is None:
        fixed = target.fixed
        if fixed is None:  # the planner resolves before it starts a step: not reached
            return Outcome(False, "the step's targets were not resolved")
        return await _on(dataclasses.replace(ctx, target=fixed), fixed)
    said: list[str] = []
    for each in resolved:
        key = f"{each.kind}/{each.name}"
        if each.state == "Succeeded":
            said.append(f"{key}: done before")
            continue
        view = _view(ctx.step_status, each)

        async def persist(view: StepStatus = view, each: TargetStatus = each) -> None:
            _fold(view, each)
            await ctx.persist()

        each.state = "Running"
        each.startedAt = each.startedAt or ctx.now()
        outcome = await _on(
            dataclasses.replace(ctx, target=each.ref, step_status=view, persist=persist), each.ref
        )
        _fold(view, each)
        each.finishedAt, each.message = ctx.now(), outcome.message
        if outcome.blocked is not None:
            each.state = "Pending"
            said_key = outcome.message.startswith(key)
            return outcome if said_key else dataclasses.replace(outcome, message=f"{key}: {outcome.message}")
        if not outcome.ok:
            each.state = "Failed"
            return Outcome(False, f"{key}: {outcome.message}")
        each.state = "Succeeded"
        said.append(f"{key}: {outcome.message}")
        try:  # done, and said so before the next target: a crash never repeats it
            await ctx.persist()
        except ApiException as exc:  # this attempt fails; a retry skips what is done
            return Outcome(False, f"{key} done, but not recorded: {api_reason(exc)}")
    return Outcome(True, "; ".join(said) or "no target")


async def workload_labels(
    kube: Kube, namespace: str, spec: IncidentSpec, status: IncidentStatus, playbook: PlaybookSpec | None
) -> dict[str, dict[str, str] | None]:
    """The labels of the incident's workloads (those the run pinned and those spec.targets names),
    when a step still to resolve is bounded by a label
    selector (`core.targets.needs_labels`); else nothing is read. A workload that cannot be read
    has None: a selector bound refuses it."""
    if playbook is None or not targets.needs_labels(playbook):
        return {}
    progress = status.playbook
    if progress is not None and all(
        s.targets is not None or s.state in (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED)
        for s in progress.steps
    ):
        return {}
    found: dict[str, dict[str, str] | None] = {}
    pinned = progress.targets if progress is not None else None  # the run's pin, then spec.targets
    for ref in [*(pinned or []), *(spec.targets or [])]:
        if targets.key(ref) in found:
            continue
        try:
            found[targets.key(ref)] = await kube.workload_labels(str(ref.kind), ref.name, namespace)
        except ApiException as exc:
            logger.info("%s: labels of %s/%s not read: %s", namespace, ref.kind, ref.name, api_reason(exc))
            found[targets.key(ref)] = None
    return found


def keep_target_states(ran: IncidentStatus, current: IncidentStatus, step: int) -> IncidentStatus:
    """`current` with the per-target states step `step` recorded in `ran` (the status a waiting
    step ran with: the loop goes on from `current`, which a deadline may have changed meanwhile)."""
    if ran.playbook is not None and current.playbook is not None and 0 <= step < len(ran.playbook.steps):
        current.playbook.steps[step].targets = ran.playbook.steps[step].targets
    return current
