"""Running a step on its workloads: each target exactly once, under a per-workload lock a run holds.

A step that acts on a workload (scale, restart, waitReady, rollback) runs its action once per
target: the fixed one, or each of the incident's targets the planner resolved into the step's
status (`StepStatus.targets`, `core.targets`). Each target has its own state, persisted when it
is done, so a crash or a retry never acts on a done target again; the action's own decisions
(replicas, revision) are kept per target the same way.

A mutating step takes its workloads' locks before it acts: a Lease per workload in its namespace
(`core.targets.lock_lease`, holder `<incident>/<uid>/<run>/<claimed at>`), claimed and given back
with resourceVersion-checked writes, as the cooldown claim is. The run keeps it from its first
mutating action on the workload until the run settles (`core.targets.run_settled`), so no other
incident acts on the workload between the run's steps. A settled run writes nothing: its Lease
stays, naming it, and reads as free from its status (`core.targets.holds_lock`); the next claim
replaces it. So there is one Lease per workload ever acted on (bounded by the workloads, not by
the incidents; retention does not delete them: follow-up).
Only a run that gives way mid-run (a deadlock, a Blocked TargetBusy or OutOfBounds refusal) and
the scale revert give theirs back at once (`release_all`), since a waiter would wait for them.
An incident that finds another's run holding it does not act: the step is Blocked with reason
TargetBusy naming the holder, and tried again shortly; if the holder ranks first (the older
incident) and its run itself waits, directly or through other waiting runs, for a workload the
waiting run holds (each one's Stalled/TargetBusy condition names what it waits for: `waits_on`),
the waiting run gives back what it holds, so runs never wait for each other in a circle; otherwise
it keeps them, and no third incident acts between its steps.
A lock whose holder is gone, resolved, closed or settled (`core.targets.holds_lock`) is taken
over, so a deleted incident never wedges a workload. A run ended on a Playbook edit and
continued by a new run passes its locks to it (`carry`). Under a label selector bound the targets'
labels are read again once the locks are taken (`still_bounded`). A step on a fixed workload may
have its claim started by the loop while its breaker slot is reserved (`EarlyClaim`). Holds no
state between calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Claimant:
    """The run that claims a workload: its incident (name, uid, creation time) and run id."""

    incident: str
    uid: str
    run: str = ""
    created: datetime | None = None

    def owns(self, holder: targets.Holder) -> bool:
        """The lock is this incident's (of this run or an earlier one)."""
        return holder.incident == self.incident and holder.uid == self.uid


@dataclass(frozen=True)
class Busy:
    """Another incident's run holds the workload: `holder` (its name); `first`: it ranks before
    the claimant (`core.targets.goes_first`); `wants`: the workload ('Kind/name') the holder's
    run waits for itself, if any (`core.targets.waits_for`). The claimant gives back what its run
    holds only when the holder ranks first and waits for one of those (a deadlock)."""

    holder: str
    first: bool = False
    wants: str | None = None
    run: str = ""
    """The holder's run id (where `waits_on` starts its chain)."""


def claimant(ctx: actions.ActionContext) -> Claimant:
    progress = ctx.status.playbook if ctx.status is not None else None
    run = progress.runId if progress is not None and progress.runId else ""
    return Claimant(ctx.incident, ctx.incident_uid, run, ctx.incident_created)


async def claim(kube: Kube, namespace: str, ref: WorkloadRef, me: Claimant, now: datetime) -> Busy | None:
    """Take the lock on `ref` for the run `me`: None when it is the run's now (claimed, or held
    already; one an earlier run of the same incident held passes to this one; a claim older than
    `core.targets.LOCK_RENEW` is written again with `now`, so the action about to run holds it for
    `core.targets.LOCK_GRACE` whatever happens to the incident meanwhile), else who holds it."""
    return (await _claim(kube, namespace, ref, me, now)).busy


@dataclass(frozen=True)
class Claimed:
    """What a claim found and left: `busy` (another run holds it), or the date of the claim the
    Lease holds for the run (`at`: now when written, older when it was the run's young claim
    already); `before`: the Lease named this very run before the claim."""

    busy: Busy | None
    at: datetime | None = None
    before: bool = False


async def _claim(kube: Kube, namespace: str, ref: WorkloadRef, me: Claimant, now: datetime) -> Claimed:
    """`claim`, saying what it found and left (`Claimed`: `EarlyClaim` renews and gives back by it)."""
    lease = targets.lock_lease(ref)
    for attempt in range(LOCK_ATTEMPTS):
        if attempt == 0 and not kube.lock_seen(namespace, lease):
            value, version = None, None  # created at once; already there (409): read, decide
        else:
            value, version = await kube.read_lock(namespace, lease)
        mine = False
        if value is not None:
            holder = targets.lock_holder(value)
            mine = me.owns(holder) and holder.run == me.run
            if me.owns(holder):
                if mine and targets.young(holder, now, targets.LOCK_RENEW):
                    return Claimed(None, holder.claimed, before=True)  # older: renewed below
            else:
                busy = await held_by(kube, namespace, value, me, now)
                if busy is not None:
                    return Claimed(busy)
        try:
            await kube.write_lock(
                namespace, lease, targets.lock_value(me.incident, me.uid, now, me.run), version
            )
            return Claimed(None, now, before=mine)
        except ApiException as exc:
            if exc.status != 409:
                raise
    return Claimed(Busy("another incident (the lock is contended)"))


class EarlyClaim:
    """The lock claim of a mutating step on a fixed workload, started by the loop while it
    reserves the step's breaker slot (`controllers.incident.loop`): the two round trips go
    together, one less between an incident and its first action; nothing acts before both are
    held. The step's `lock` takes it (`take`) as it would have claimed; a claim that, when the
    step goes on, is older than `core.targets.LOCK_RENEW` is written again then, so the action
    starts with at least LOCK_GRACE - LOCK_RENEW of the claim's hold left.

    One no step took (the breaker held the step, the plan changed, the iteration failed) is given
    back (`give_back`) unless the Lease named this very run before it (`Claimed.before`: an
    earlier step of the run on the workload, a lock passed on from the run it continues, an
    attempt of the step before a restart): the run holds that one until it settles, and one the
    claim took it does not keep while it waits. One still running when the loop is cancelled is
    cancelled (`drop`); a lock it took holds then as any fresh claim does
    (`core.targets.holds_lock`)."""

    def __init__(self, kube: Kube, namespace: str, ref: WorkloadRef, me: Claimant, now: datetime) -> None:
        self.kube, self.namespace, self.ref, self.me = kube, namespace, ref, me
        self.task: asyncio.Task[Claimed] | None = asyncio.create_task(_claim(kube, namespace, ref, me, now))
        self.task.add_done_callback(actions.retrieved)

    def take(self, ref: WorkloadRef, me: Claimant) -> asyncio.Task[Claimed] | None:
        """The claim of `ref` for `me`, once (None: another workload or run, or taken already)."""
        task = self.task
        if task is None or targets.key(ref) != targets.key(self.ref) or me != self.me:
            return None
        self.task = None
        return task

    async def give_back(self) -> None:
        """Not taken by a step: wait for the claim, and give back a lock it took."""
        task, self.task = self.task, None
        if task is None:
            return
        try:
            claimed = await task
        except Exception as exc:  # nothing written, or not known: it holds at most as a fresh claim
            reason = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
            logger.info("%s/%s: early lock claim failed: %s", self.namespace, self.me.incident, reason)
            return
        if claimed.busy is None and not claimed.before:
            await release_all(self.kube, self.namespace, [self.ref], self.me)

    def drop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()


async def release(kube: Kube, namespace: str, ref: WorkloadRef, me: Claimant) -> None:
    """Give the lock on `ref` back, if `me`'s incident holds it."""
    lease = targets.lock_lease(ref)
    for _ in range(LOCK_ATTEMPTS):
        value, version = await kube.read_lock(namespace, lease)
        if value is None or not me.owns(targets.lock_holder(value)):
            return
        try:
            await kube.write_lock(namespace, lease, None, version)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise


async def release_all(kube: Kube, namespace: str, refs: Sequence[WorkloadRef], me: Claimant) -> None:
    """Give back the locks `me`'s incident holds on `refs` mid-run (a deadlock's give-way, a
    refusal, the scale revert done); best effort (a lock not given back is freed by
    `core.targets.holds_lock` once the run is seen settled). A settled run gives nothing back."""
    for ref in refs:
        try:
            await release(kube, namespace, ref, me)
        except Exception as exc:
            logger.warning(
                "%s/%s: lock on %s/%s not released: %s", namespace, me.incident, ref.kind, ref.name, exc
            )


async def carry(kube: Kube, namespace: str, refs: Sequence[WorkloadRef], me: Claimant, now: datetime) -> None:
    """Write again, under `me`'s run id, the locks on `refs` an earlier run of `me`'s incident
    holds (a run ended on a Playbook edit and continued by `me.run`, which keeps its done steps:
    the locks stay held, not free as another run's); a lock not the incident's is left alone.
    Best effort, resourceVersion-checked: one not carried is claimed again at the run's next
    mutating action."""
    for ref in refs:
        lease = targets.lock_lease(ref)
        try:
            value, version = await kube.read_lock(namespace, lease)
            if value is None:
                continue
            holder = targets.lock_holder(value)
            if me.owns(holder) and holder.run != me.run:
                await kube.write_lock(
                    namespace, lease, targets.lock_value(me.incident, me.uid, now, me.run), version
                )
        except ApiException as exc:
            logger.warning(
                "%s/%s: lock on %s/%s not carried to run %s: %s",
                namespace,
                me.incident,
                ref.kind,
                ref.name,
                me.run,
                api_reason(exc),
            )


async def held_by(kube: Kube, namespace: str, value: str, me: Claimant, now: datetime) -> Busy | None:
    """Who holds a lock whose Lease names `value`, when another incident's run holds it still
    (`core.targets.holds_lock`, judged from the holder's body as the API returns it); None: it is
    `me`'s incident's, or free. Reads only."""
    holder = targets.lock_holder(value)
    if me.owns(holder):
        return None
    body = await _holder(kube, namespace, holder.incident)
    if not targets.holds_lock(body, value, now):
        return None
    assert body is not None  # noqa: S101 - a gone holder holds nothing
    return Busy(
        holder.incident,
        targets.goes_first(body, holder.incident, me.created, me.incident),
        targets.waits_for(body),
        holder.run,
    )


async def _holder(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] | None = await kube.get_object("incidents", namespace, name)
    except ApiException as exc:
        if not not_found(exc):
            raise
        body = None
    return body


WAIT_CHAIN = 8
"""How many waiting runs `waits_on` follows; a longer chain of distinct runs is taken for a circle
through the claimant (giving way is safe: the run only waits longer)."""


async def waits_on(
    kube: Kube, namespace: str, wants: str | None, me: Claimant, now: datetime, *, start: tuple[str, str]
) -> bool:
    """Whether the run `start` (incident, run id), which waits for workload `wants` ('Kind/name'),
    waits, directly or through other waiting runs, for a workload `me`'s incident holds: follows
    the locks' holders and what each waits for (`core.targets.waits_for`), remembering the runs
    seen. True only when a hop reaches `me` (or the chain is longer than WAIT_CHAIN distinct
    runs). False when the chain ends in a run that does not wait (it goes on, then settles), in a
    free lock, or comes back to a run already seen (`start` itself, say, holding the workload its
    stale condition still names, or a circle of others that `me` is not part of): no deadlock
    of `me`'s, nothing to give back."""
    seen = {start}
    for _ in range(WAIT_CHAIN):
        if wants is None or "/" not in wants:
            return False
        kind, name = wants.split("/", 1)
        try:
            ref = WorkloadRef.model_validate({"kind": kind, "name": name})
        except ValueError:
            return False
        value, _ = await kube.read_lock(namespace, targets.lock_lease(ref))
        if value is None:
            return False  # free: the waiting run takes it at its next try
        holder = targets.lock_holder(value)
        if me.owns(holder):
            return True
        if (holder.incident, holder.run) in seen:
            return False  # a circle that does not go through `me` (or a stale condition)
        seen.add((holder.incident, holder.run))
        body = await _holder(kube, namespace, holder.incident)
        if body is None or not targets.holds_lock(body, value, now):
            return False
        wants = targets.waits_for(body)
    return True


def busy_message(ref: WorkloadRef, busy: Busy) -> str:
    return f"{ref.kind}/{ref.name} is busy: incident {busy.holder} holds it until its run settles"


async def lock(
    ctx: actions.ActionContext, refs: Sequence[WorkloadRef], early: EarlyClaim | None = None
) -> Outcome | None:
    """Before a mutating step acts: the run takes the lock of each of `refs` (in name order) and
    keeps it until it settles. None: all are the run's; else the step waits, TargetBusy naming
    the holder, or it could not ask. Only when the holder ranks first and itself waits, directly
    or through others, for a workload this run holds (a deadlock: `waits_on`) does this run give
    back all it holds; otherwise it keeps its locks, so no third incident acts between its steps.
    Read-only steps take no lock. `early`: a claim of one of them the loop already started."""
    if not ctx.step.mutates:
        return None
    me = claimant(ctx)
    for ref in sorted(refs, key=targets.key):
        pending = early.take(ref, me) if early is not None else None
        try:
            if pending is None:
                busy = await claim(ctx.kube, ctx.namespace, ref, me, ctx.now())
            else:
                claimed = await pending
                busy = claimed.busy
                if busy is None and (claimed.at is None or ctx.now() - claimed.at >= targets.LOCK_RENEW):
                    busy = await claim(ctx.kube, ctx.namespace, ref, me, ctx.now())  # renewed now
        except ApiException as exc:
            return Outcome(False, f"locking {ref.kind}/{ref.name}: {api_reason(exc)}")
        if busy is None:
            continue
        if busy.first and await waits_on(
            ctx.kube, ctx.namespace, busy.wants, me, ctx.now(), start=(busy.holder, busy.run)
        ):
            # the holder's run waits (through others, maybe) for this one: give way, or all wait for ever
            held = {targets.key(r): r for r in [*targets.run_workloads(ctx.playbook, _progress(ctx)), *refs]}
            await release_all(ctx.kube, ctx.namespace, list(held.values()), me)
        return Outcome(False, busy_message(ref, busy), blocked=Reason.TARGET_BUSY)
    return None


def _progress(ctx: actions.ActionContext) -> Any:
    return ctx.status.playbook if ctx.status is not None else None


async def still_bounded(ctx: actions.ActionContext, refs: Sequence[WorkloadRef]) -> Outcome | None:
    """Right before a mutating step on the incident's own targets acts (its locks taken): under a
    label selector bound, each target's labels are read again, since they may have changed since
    the step resolved. One refused and the step acts on none, waiting OutOfBounds as at
    resolution; the refused ones' locks are given back."""
    bounds = ctx.playbook.allowedTargets
    target = ctx.step.target
    if (
        not ctx.step.mutates
        or target is None
        or target.fromIncident is None
        or bounds is None
        or bounds.selector is None
    ):
        return None
    refused: list[tuple[WorkloadRef, str]] = []
    for ref in refs:
        try:
            labels: dict[str, str] | None = await ctx.kube.workload_labels(
                str(ref.kind), ref.name, ctx.namespace
            )
        except ApiException as exc:
            logger.info(
                "%s: labels of %s/%s not read: %s", ctx.namespace, ref.kind, ref.name, api_reason(exc)
            )
            labels = None
        why = targets.refusal(ref, bounds, {targets.key(ref): labels})
        if why is not None:
            refused.append((ref, why))
    if not refused:
        return None
    await release_all(ctx.kube, ctx.namespace, [ref for ref, _ in refused], claimant(ctx))
    return Outcome(False, targets.refused_message(refused), blocked=Reason.OUT_OF_BOUNDS)


async def _guarded(
    ctx: actions.ActionContext, refs: Sequence[WorkloadRef], early: EarlyClaim | None
) -> Outcome | None:
    return await lock(ctx, refs, early) or await still_bounded(ctx, refs)


def _view(step_status: StepStatus, target: TargetStatus) -> StepStatus:
    """The step's status as the action sees it for one target (its own decisions)."""
    view = step_status.model_copy()
    for name in _CARRIED:
        setattr(view, name, getattr(target, name))
    return view


def _fold(view: StepStatus, target: TargetStatus) -> None:
    for name in _CARRIED:
        setattr(target, name, getattr(view, name))


async def run_step(ctx: actions.ActionContext, early: EarlyClaim | None = None) -> Outcome:
    """Run the step's action on each of its workloads (or, without one, as it is); `early`: the
    claim of its lock the loop started (`EarlyClaim`)."""
    target = ctx.step.target
    resolved = ctx.step_status.targets
    if target is None:
        return await actions.run(ctx)
    if resolved is None:
        fixed = target.fixed
        if fixed is None:  # the planner resolves before it starts a step: not reached
            return Outcome(False, "the step's targets were not resolved")
        waiting = await _guarded(ctx, [fixed], early)
        return waiting or await actions.run(dataclasses.replace(ctx, target=fixed))
    waiting = await _guarded(ctx, [each.ref for each in resolved if each.state != "Succeeded"], early)
    if waiting is not None:
        return waiting
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
        outcome = await actions.run(
            dataclasses.replace(ctx, target=each.ref, step_status=view, persist=persist)
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
