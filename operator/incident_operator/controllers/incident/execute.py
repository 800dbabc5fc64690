"""Carrying out one intent of an incident's plan: a step's action, a scale revert, a health check.

Owns how an intent runs, not what it decides: the action gets a `working` copy of the status to
record its decision in and `Commit.persist` to write it before acting. A waiting step
(`CANCELLABLE_ACTIONS`) is cancelled when a person resolves or closes the incident meanwhile,
and the response target is still watched while it waits. A held start of a read-only action
that runs longer than HELD_WRITE_AFTER_S is written then, so a long wait shows as Running.
Holds no state between intents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import ApiException, Kube, api_reason
from incident_operator.adapters.outbound import Outbound
from incident_operator.api.actions import CANCELLABLE_ACTIONS, MUTATING_ACTIONS, START_UNWRITTEN_ACTIONS
from incident_operator.api.base import WorkloadRef
from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    PlaybookProgress,
    PlaybookSpec,
    Step,
    StepStatus,
)
from incident_operator.api.timestamps import parse_time
from incident_operator.controllers import actions, targets
from incident_operator.controllers.incident.commit import Commit
from incident_operator.core import targets as core_targets
from incident_operator.core.planner import Intent, Outcome, PlanInput, check_deadlines
from incident_operator.settings.config import JobsConfig, Limits

logger = logging.getLogger(__name__)

HEALTH_DEADLINE_S = 30.0
HELD_WRITE_AFTER_S = 2.0  # a held start is written anyway when its action runs longer than this
HEALTH_SETTLE_S = 1.5  # a failing health check is looked at again for this long before it counts
HEALTH_SETTLE_POLL_S = 0.25


def waits(intent: Intent, status: IncidentStatus) -> bool:
    """A waiting step (it only reads, and may take minutes: CANCELLABLE_ACTIONS)."""
    progress = status.playbook
    if intent.kind != "run-step" or progress is None or intent.step < 0:
        return False
    return progress.steps[intent.step].action in CANCELLABLE_ACTIONS


def mutates(intent: Intent, status: IncidentStatus, playbook: PlaybookSpec) -> bool:
    """Whether carrying out `intent` may take workload locks (a mutating step, a scale revert)."""
    if intent.kind == "revert-scale":
        return True
    progress = status.playbook
    if intent.kind != "run-step" or progress is None or intent.step < 0:
        return False
    return progress.steps[intent.step].action in MUTATING_ACTIONS


def start_unwritten(intent: Intent, status: IncidentStatus, playbook: PlaybookSpec) -> bool:
    """Whether the status that starts `intent` may be held until the action writes (see
    START_UNWRITTEN_ACTIONS); `status` is the planned one (a new run starts in it)."""
    if intent.kind == "verify-health":
        return True  # reads only
    progress = status.playbook
    if intent.kind != "run-step" or progress is None or intent.step < 0:
        return False
    name = progress.steps[intent.step].name
    step = next((s for s in playbook.steps if s.name == name), None)
    return step is not None and step.action in START_UNWRITTEN_ACTIONS


def early_lock_target(intent: Intent, status: IncidentStatus, playbook: PlaybookSpec) -> WorkloadRef | None:
    """The workload whose lock may be claimed while the step's breaker slot is reserved
    (`controllers.targets.EarlyClaim`): that of a mutating step with a fixed target. None: any
    other intent (a step on the incident's own targets claims at its action, as a revert does)."""
    progress = status.playbook
    if intent.kind != "run-step" or progress is None or intent.step < 0:
        return None
    step_status = progress.steps[intent.step]
    if step_status.targets is not None:
        return None
    step = next((s for s in playbook.steps if s.name == step_status.name), None)
    if step is None or step.target is None or not step.mutates:
        return None
    return step.target.fixed


def prefetch_target(intent: Intent, status: IncidentStatus, playbook: PlaybookSpec) -> WorkloadRef | None:
    """The workload whose read may start before the step's lock is taken (`actions.Prefetched`):
    that of a scale step with a fixed target, about to decide its replicas (not resumed after a
    decision was written). None: any other intent."""
    ref = early_lock_target(intent, status, playbook)
    if ref is None or status.playbook is None:
        return None
    step_status = status.playbook.steps[intent.step]
    return ref if step_status.action == "scale" and step_status.replicasAfter is None else None


@dataclass(frozen=True)
class Execution:
    kube: Kube
    outbound: Outbound
    limits: Limits
    namespace: str
    name: str
    uid: str
    body: Mapping[str, Any]  # the live body: a resolution or closing shows up here
    clock: Callable[[], datetime]
    commit: Commit
    wake: Callable[[], asyncio.Event]  # the loop's current wake-up event
    jobs: JobsConfig = field(default_factory=JobsConfig)  # the Job policy (`jobs:` in the config)

    async def run_unless_overtaken(
        self,
        intent: Intent,
        spec: IncidentSpec,
        playbook: PlaybookSpec,
        working: IncidentStatus,
        *,
        write_late: bool = False,
        deadlines: Callable[[], PlanInput] | None = None,
        prefetched: actions.Prefetched | None = None,
        claimed: targets.EarlyClaim | None = None,
    ) -> Outcome | None:
        """Run the intent; a waiting step (waitReady, httpCheck) is cancelled if a human resolves
        or closes the incident meanwhile (returns None), and while it waits the response target
        is still watched (`deadlines` gives the plan input). Mutating actions are short and finish.

        With `write_late` (its start is held), a read-only action that is still running after
        HELD_WRITE_AFTER_S gets its start written then, so that a long wait shows as Running.
        `prefetched`: the read of the workload a scale acts on, already started; `claimed`: the
        claim of the step's lock, already started."""
        task = asyncio.create_task(
            self._execute(intent, spec, playbook, working, prefetched=prefetched, claimed=claimed)
        )
        step = working.playbook.steps[intent.step] if working.playbook and intent.step >= 0 else None
        action = step.action if step is not None else None
        late: asyncio.Task[None] | None = None
        writing_late = asyncio.Event()  # set once the late write has begun: it is let finish
        if write_late and action not in MUTATING_ACTIONS:
            late = asyncio.create_task(self._write_held_later(spec, writing_late))
        try:
            cancellable = action in CANCELLABLE_ACTIONS
            while cancellable and not task.done():
                wake = self.wake()
                wake.clear()
                waiter = asyncio.create_task(wake.wait())
                due = check_deadlines(deadlines()).wake_at if deadlines is not None else None
                timeout = None if due is None else max(0.0, (due - self.clock()).total_seconds())
                await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if task.done():
                    break
                current = self.body.get("spec") or {}
                if current.get("resolution") or current.get("closed"):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return None
                if deadlines is not None:
                    checked = check_deadlines(deadlines())
                    if checked.records:
                        await self.commit.commit(checked, spec)
            outcome = await task
        finally:
            if late is not None:
                if not writing_late.is_set():  # asleep still: not needed; writing: let it finish
                    late.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await late
        return outcome

    async def _write_held_later(self, spec: IncidentSpec, writing: asyncio.Event) -> None:
        await asyncio.sleep(HELD_WRITE_AFTER_S)
        writing.set()
        try:
            await self.commit.write_held(spec)
        except Exception as exc:  # written with the outcome instead
            logger.debug("incident %s/%s: held start not written: %s", self.namespace, self.name, exc)

    async def _settled_health(
        self, spec: IncidentSpec, playbook: PlaybookSpec, progress: PlaybookProgress | None
    ) -> Outcome:
        """Health, looked at again for a moment when it does not hold yet: a replica a step has
        just added is usually ready within a second, and waiting here costs no status write (a
        failed check is written and re-planned a second later)."""
        deadline = time.monotonic() + HEALTH_SETTLE_S
        while True:
            outcome = await actions.verify_health(
                self.kube, self.outbound, self.namespace, spec, playbook, progress=progress
            )
            if outcome.ok or time.monotonic() >= deadline:
                return outcome
            await asyncio.sleep(HEALTH_SETTLE_POLL_S)

    @property
    def created(self) -> datetime | None:
        stamp = (self.body.get("metadata") or {}).get("creationTimestamp")
        try:
            return parse_time(str(stamp)) if stamp else None
        except ValueError:
            return None

    def claimant(self, status: IncidentStatus) -> targets.Claimant:
        """This incident's run in `status`, as a holder of workload locks."""
        run = status.playbook.runId if status.playbook is not None and status.playbook.runId else ""
        return targets.Claimant(self.name, self.uid, run, self.created)

    async def _revert_scale(self, step: Step, step_status: StepStatus, working: IncidentStatus) -> Outcome:
        """The scale revert after the incident resolved, part of its run: under the workloads'
        locks like any mutating action, claimed afresh under the run id `<run>.revert`
        (`core.targets.revert_run`) while the run still holds them (the loop gives them back only
        after the revert), so they hold for the revert although the incident is resolved. A
        workload another incident's run holds meanwhile is not reverted (its run acts on it now);
        the revert is said failed, naming the holder. Given back once it is done."""
        run = self.claimant(working)
        me = dataclasses.replace(run, run=core_targets.revert_run(run.run))
        refs = [
            t.ref
            for t in step_status.targets or []
            if t.replicasBefore is not None and t.state == "Succeeded"
        ]
        fixed = step.target.fixed if step.target is not None else None
        if fixed is not None and step_status.replicasBefore is not None:
            refs.append(fixed)
        try:
            for ref in sorted(refs, key=lambda r: (str(r.kind), r.name)):
                try:
                    busy = await targets.claim(self.kube, self.namespace, ref, me, self.clock())
                except ApiException as exc:
                    return Outcome(False, f"not reverted: locking {ref.kind}/{ref.name}: {api_reason(exc)}")
                if busy is not None:
                    return Outcome(False, f"not reverted: {targets.busy_message(ref, busy)}")
            return await actions.revert_scale(self.kube, self.namespace, step, step_status)
        finally:
            await targets.release_all(self.kube, self.namespace, refs, me)

    async def _execute(
        self,
        intent: Intent,
        spec: IncidentSpec,
        playbook: PlaybookSpec,
        working: IncidentStatus,
        *,
        prefetched: actions.Prefetched | None = None,
        claimed: targets.EarlyClaim | None = None,
    ) -> Outcome:
        """Carry out `intent`; the action may record in `working` (persisted on its request)."""
        if intent.kind == "verify-health":
            try:  # every health request under one overall deadline
                return await asyncio.wait_for(
                    self._settled_health(spec, playbook, working.playbook), timeout=HEALTH_DEADLINE_S
                )
            except TimeoutError:
                return Outcome(False, f"health checks did not finish within {HEALTH_DEADLINE_S:.0f}s")
        progress = working.playbook
        assert progress is not None  # noqa: S101
        step_status = progress.steps[intent.step]
        step = next(s for s in playbook.steps if s.name == step_status.name)
        if intent.kind == "revert-scale":
            return await self._revert_scale(step, step_status, working)
        ctx = actions.ActionContext(
            kube=self.kube,
            outbound=self.outbound,
            limits=self.limits,
            namespace=self.namespace,
            incident=self.name,
            incident_uid=self.uid,
            spec=spec,
            status=working,
            playbook=playbook,
            step=step,
            step_status=step_status,
            now=self.clock,
            persist=lambda: self.commit.persist(working, spec),
            jobs=self.jobs,
            incident_created=self.created,
            prefetched=prefetched,
        )
        outcome = await targets.run_step(ctx, claimed)
        metrics.action_done(step.action, outcome.ok)
        return outcome
