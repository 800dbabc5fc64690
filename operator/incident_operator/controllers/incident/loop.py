"""Driving one incident: plan, commit or hold, act, fold the outcome in; sleep; survive errors.

Owns the order of one iteration (see the package docstring) and the loop around it: wake-ups
(a change of the Incident or its Playbooks, the planner's next deadline), the bounded backoff
after an error, and the last write of what is held when asked to stop. Its only state is
`wake`, the event the supervisor sets; the incident's status is `commit`'s (`Commit.current`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import AccessReviews, ApiException, Kube, api_reason
from incident_operator.adapters.outbound import Outbound
from incident_operator.adapters.runledger import RunRecorder
from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase, PlaybookProgress
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import utc_now
from incident_operator.controllers import actions, targets
from incident_operator.controllers.automation import Breaker
from incident_operator.controllers.incident.commit import Commit
from incident_operator.controllers.incident.eventhold import HOLD_S, EventPoster
from incident_operator.controllers.incident.execute import (
    Execution,
    early_lock_target,
    mutates,
    prefetch_target,
    start_unwritten,
    waits,
)
from incident_operator.controllers.incident.inputs import (
    History,
    Inputs,
    OpenInNamespace,
    PlaybookEntry,
    Playbooks,
    index_behind,
    pinned_run,
)
from incident_operator.controllers.incident.ledger import RunLedger, starts_run
from incident_operator.controllers.incident.mutating import (
    MutatingSlots,
    held_by_breaker,
    still_busy,
    waited_busy,
)
from incident_operator.controllers.incident.slots import StartedRuns
from incident_operator.controllers.notifier import Notifier
from incident_operator.controllers.people import ScheduleBook
from incident_operator.core import pins
from incident_operator.core.explain import attach, explain
from incident_operator.core.matching import Selection, select
from incident_operator.core.planner import (
    AutomationHold,
    Decision,
    Outcome,
    PlanInput,
    Record,
    complete,
    plan,
    with_records,
)
from incident_operator.core.targets import run_settled, run_workloads
from incident_operator.settings.config import OperatorConfig

logger = logging.getLogger(__name__)

IDLE_RECHECK_S = 300.0  # a safety net only: changes and deadlines wake the loop themselves
ERROR_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
INDEX_CATCHUP_S = 1.0  # the Playbook index is behind the API: plan again by then (its event wakes sooner)
INDEX_CATCHUP_TRIES = 5  # ... at most this many times in a row, then the stall is told anyway
INDEX_LISTING_TIMEOUT_S = 2.0  # a listing slower than this changes nothing: the plan goes on
NO_PLAYBOOK = (Reason.NO_MATCHING_PLAYBOOK, Reason.PLAYBOOK_NOT_FOUND)
GIVE_BACK_TIMEOUT_S = 5.0  # an early lock claim not used by a failed iteration is given back within this


class IncidentLoop:
    """Reconciles one Incident until it is Closed or the operator stops."""

    def __init__(
        self,
        *,
        kube: Kube,
        outbound: Outbound,
        config: OperatorConfig,
        namespace: str,
        name: str,
        uid: str,
        body: Mapping[str, Any],
        playbooks: Callable[[], Playbooks],
        post_event: EventPoster,
        clock: Callable[[], datetime] = utc_now,
        open_incidents: metrics.OpenIncidents | None = None,
        notifier: Notifier | None = None,
        access_reviews: AccessReviews | None = None,
        run_records: RunRecorder | None = None,
        history: History | None = None,
        open_in_namespace: OpenInNamespace | None = None,
        started_runs: StartedRuns | None = None,
        breaker: Breaker | None = None,
        backoff: tuple[float, ...] = ERROR_BACKOFF_S,
        schedules: ScheduleBook | None = None,
        event_hold_s: float = HOLD_S,
        list_playbooks: Callable[[str], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self.namespace, self.name = namespace, name
        self.body = body  # kopf's live view: spec changes show up here
        self.playbooks, self.clock = playbooks, clock
        self.backoff = backoff  # seconds to wait after the 1st, 2nd, ... failed iteration in a row
        self.wake = asyncio.Event()
        self.may_hold_locks = True  # a run may hold workload locks (after a restart: it may)
        self.index_waits = 0  # plans in a row that waited for the Playbook index (`_index_behind`)
        self.list_playbooks = list_playbooks or functools.partial(kube.list_objects, "playbooks")
        self.planned: Callable[[], None] = lambda: None  # `run`'s: a plan's decision is written
        self.inputs = Inputs(
            config,
            namespace,
            name,
            body,
            clock,
            history,
            access_reviews,
            open_in_namespace,
            started_runs,
            schedules,
        )
        self.ledger = RunLedger(kube, namespace, name, clock, run_records)
        self.slots = MutatingSlots(breaker, namespace, name, uid)
        self.commit = Commit(
            kube=kube,
            namespace=namespace,
            name=name,
            uid=uid,
            body=body,
            clock=clock,
            post_event=post_event,
            ledger=self.ledger,
            wake=self._wake_up,
            open_incidents=open_incidents,
            notifier=notifier,
            event_hold_s=event_hold_s,
        )
        self.execution = Execution(
            kube,
            outbound,
            config.file.limits,
            namespace,
            name,
            uid,
            body,
            clock,
            self.commit,
            lambda: self.wake,
            config.file.jobs,
        )

    def _note_settled(self, spec: IncidentSpec) -> None:
        """Once the run settles (`core.targets.run_settled`: resolved, closed, stopped on a failed
        step, or no mutating step left), it holds its workload locks no longer. Nothing is written:
        its lock Leases stay, naming the run, and read as free from its status
        (`core.targets.holds_lock`); the next claim replaces them. An incident waiting for one
        goes on at its next try."""
        if self.may_hold_locks and run_settled(spec, self.status):
            self.may_hold_locks = False

    async def _carry_locks(self, before: PlaybookProgress | None) -> None:
        """A run ended on a Playbook edit and continued by a new run (`core.planner`'s
        `_rerun_edited`: same Playbook, new run id, the done steps kept): the locks the ended run
        holds are written again under the new run id, so they stay held (a lock of a run the
        holder no longer runs is free a minute after its claim)."""
        after = self.status.playbook
        if (
            not self.may_hold_locks
            or before is None
            or after is None
            or before.snapshot is None
            or before.name != after.name
            or before.runId == after.runId
        ):
            return
        refs = run_workloads(pins.pinned_spec(before.snapshot), before)
        if refs:
            me = self.execution.claimant(self.status)
            await targets.carry(self.execution.kube, self.namespace, refs, me, self.clock())

    def _wake_up(self) -> None:
        self.wake.set()  # the event of the moment: `run` replaces it with the supervisor's

    @property
    def status(self) -> IncidentStatus:
        """The status the loop plans from (ahead of the API's while a decision is held)."""
        return self.commit.current

    @property
    def finished(self) -> bool:
        """Closed: nothing will ever be left to do."""
        return self.status.phase is Phase.CLOSED

    def concerned_by(self, playbook: str) -> bool:
        """Whether a change of Playbook `playbook` may matter: it runs that one, or none yet (a new
        or changed Playbook may be the one that matches)."""
        progress = self.status.playbook
        return progress is None or progress.name == playbook

    async def run(
        self, stopped: Callable[[], bool], wake: asyncio.Event, planned: Callable[[], None] = lambda: None
    ) -> None:
        """Plan and act until `stopped()`; `planned()` once each plan has written its decision
        (before a step acts) or failed (the supervisor's admission of new loops waits for the
        first)."""
        self.planned = planned
        try:
            await self._run(stopped, wake)
        finally:  # stopped, closed or cancelled: what waits to be posted goes now
            self.commit.events.flush()

    async def _run(self, stopped: Callable[[], bool], wake: asyncio.Event) -> None:
        self.wake = wake
        errors = 0
        unreadable = False
        while not stopped():
            wake.clear()
            try:
                again, wake_at = await self.iterate()
            except asyncio.CancelledError:
                raise
            except ValidationError as exc:  # a spec or status the models refuse: wait for a change
                self.planned()
                if not unreadable:
                    problem = (
                        f"the incident cannot be read: {exc.error_count()} problems, first at "
                        + ".".join(map(str, exc.errors()[0]["loc"]))
                    )
                    logger.warning("incident %s/%s: %s", self.namespace, self.name, problem)
                    self.commit.events.add([Record(Reason.INVALID_SPEC, problem, warning=True)])
                unreadable = True
                await self._sleep(wake, stopped, IDLE_RECHECK_S)
                continue
            except Exception as exc:  # API errors, lost connections, anything: back off, never die
                self.planned()
                delay = self.backoff[min(errors, len(self.backoff) - 1)]
                errors += 1
                reason = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
                logger.warning(
                    "incident %s/%s: %s; retrying in %ss", self.namespace, self.name, reason, delay
                )
                if not isinstance(exc, ApiException):
                    logger.debug("incident %s/%s: traceback", self.namespace, self.name, exc_info=True)
                await self._sleep(wake, stopped, delay, interruptible=False)
                continue
            else:
                errors, unreadable = 0, False
                self.planned()
            if self.status.phase is Phase.CLOSED:
                return
            if again:
                continue  # an intent ran: plan again at once
            timeout = IDLE_RECHECK_S if wake_at is None else (wake_at - self.clock()).total_seconds()
            await self._sleep(wake, stopped, max(0.0, min(timeout, IDLE_RECHECK_S)))
        await self.commit.write_held_before_exit(self.inputs.spec)

    async def _sleep(
        self, wake: asyncio.Event, stopped: Callable[[], bool], seconds: float, *, interruptible: bool = True
    ) -> None:
        if stopped() or seconds <= 0:
            return
        if not interruptible:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)

    async def _index_behind(self, spec: IncidentSpec, selection: Selection, playbooks: Playbooks) -> bool:
        """Whether to wait for the Playbook index before this plan: the incident has no run and
        would be told that no Playbook is there (NoMatchingPlaybook, PlaybookNotFound) while the
        API lists one the index lacks. Incidents and Playbooks come by separate watches, so a
        Playbook applied just before its incident (one `kubectl apply` of both, a GitOps sync)
        may reach the operator after it; told as a stall, it would warn for nothing. Asked once
        per stall to be told (one listing), waited for at most INDEX_CATCHUP_TRIES plans in a
        row (the Playbook's event wakes the loop); a listing that fails or takes longer than
        INDEX_LISTING_TIMEOUT_S leaves the plan as is (the incident is not kept from being
        recorded and people told behind a slow API server). With a `playbookRef`, only that
        Playbook is looked for. The operator shares listings between loops (`PlaybookListings`)."""
        status = self.status
        if selection.playbook is not None:
            self.index_waits = 0
        stalled = next((c for c in status.conditions or [] if c.type == ConditionType.STALLED), None)
        if (
            status.playbook is not None
            or selection.playbook is not None
            or selection.reason not in NO_PLAYBOOK
            or status.phase in (Phase.RESOLVED, Phase.CLOSED)
            or (stalled is not None and stalled.status == "True" and stalled.reason == selection.reason)
            or self.index_waits >= INDEX_CATCHUP_TRIES
        ):
            return False
        try:
            listed = await asyncio.wait_for(self.list_playbooks(self.namespace), INDEX_LISTING_TIMEOUT_S)
        except Exception as exc:  # an unanswered check changes nothing
            reason = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
            logger.info("incident %s/%s: Playbooks not listed (%s)", self.namespace, self.name, reason)
            return False
        ref = spec.playbookRef.name if spec.playbookRef is not None else None
        behind = index_behind(listed, playbooks, only=ref)
        if not behind:
            self.index_waits = 0
            return False
        self.index_waits += 1
        logger.info(
            "incident %s/%s: waiting for Playbook %s to reach the index",
            self.namespace,
            self.name,
            ", ".join(behind),
        )
        return True

    async def _still_busy(self, decision: Decision, chosen: PlaybookEntry | None) -> Outcome | None:
        """The Blocked outcome of a retry whose slots would be reserved (`MutatingSlots.reserved`)
        while a workload lock it waited for is still another run's (`mutating.still_busy`)."""
        if chosen is None or self.slots.reserved(self.status, decision) is None:
            return None
        execution = self.execution
        return await still_busy(
            execution.kube,
            self.namespace,
            self.status,
            decision,
            playbook=chosen.spec,
            me=execution.claimant(decision.status),
            now=self.clock(),
        )

    def _explained(
        self, decide: Callable[[PlanInput], Decision], inp: PlanInput, *, playbooks: Playbooks
    ) -> Decision:
        """`decide(inp)` with its `status.explanation` (`core.explain`): it goes out with the
        decision's own status patch, and only when it says something new."""
        entries, invalid = playbooks
        decision = decide(inp)
        why = explain(
            inp,
            decision,
            [e.candidate for e in entries],
            invalid,
            incident=self.name,
            namespace=self.namespace,
        )
        return attach(decision, why, inp.status.explanation)

    async def iterate(self) -> tuple[bool, datetime | None]:
        """Plan once and carry out the intent. Returns (plan again at once, else when to plan next)."""
        spec = self.inputs.spec()
        ran_before = self.status.playbook  # the run in flight, if a Playbook edit ends it
        await self.commit.commit_late_records(spec)
        entries, invalid = self.playbooks()
        selection = select(spec, [e.candidate for e in entries], invalid)
        if await self._index_behind(spec, selection, (entries, invalid)):
            return False, self.clock() + timedelta(seconds=INDEX_CATCHUP_S)
        run = pinned_run(self.status, (entries, invalid))
        if run is not None:  # the run in flight executes what it pinned (even if the Playbook is gone)
            chosen: PlaybookEntry | None = run.entry
        else:
            chosen = next(
                (e for e in entries if selection.playbook and e.name == selection.playbook.name), None
            )
        cooldown, holder = self.ledger.cooldown(spec, chosen, self.status)
        # One that said it waits and still does is asked no access review; any other is asked
        # once, after the review, with no await before the plan and its claim (see `slots`): of
        # two incidents that want the last slot at once, one gets it. The event that frees a
        # slot wakes the one waiting for it.
        slot = functools.partial(self.inputs.waits_for_slot, has_playbook=chosen is not None)
        held = slot(self.status) if self.inputs.said_it_waits(self.status) else None
        forbidden = None if held else await self.inputs.access_problem(spec, chosen, self.status.phase)
        waiting = held or slot(self.status)
        labels = await targets.workload_labels(
            self.execution.kube, self.namespace, spec, self.status, chosen.spec if chosen else None
        )

        def plan_input(
            status: IncidentStatus | None = None,
            *,
            until: datetime | None = cooldown,
            held_by: str | None = None,
            hold: AutomationHold | None = None,
        ) -> PlanInput:
            current = self.status if status is None else status
            busy = self.commit.busy
            built = self.inputs.build(
                spec,
                selection,
                current,
                cooldown=until,
                holder=held_by,
                forbidden=forbidden,
                busy=busy,
                waits_for_slot=waiting,
                run=pinned_run(current, (entries, invalid)),
                labels=labels,
            )
            return built if hold is None else dataclasses.replace(built, automation_hold=hold)

        explained = functools.partial(self._explained, playbooks=(entries, invalid))
        decision = explained(plan, plan_input(held_by=holder))
        self.inputs.note_run(self.status, decision.status)
        claimed = False
        if chosen is not None and chosen.spec.cooldownSeconds > 0 and starts_run(decision):
            # The cooldown is claimed on the Playbook before anything acts, atomically: of two
            # incidents that want the same target at once, exactly one gets it.
            assert decision.status.playbook is not None  # noqa: S101 - a run just started
            taken = await self.ledger.claim(chosen, spec, decision.status.playbook.runId or "r1")
            if taken is not None:
                until, by = taken
                decision = explained(plan, plan_input(until=until, held_by=by))
                self.inputs.note_run(self.status, decision.status)
            claimed = taken is None
        # A mutating action takes a slot of the circuit breaker and the storm guard before it
        # starts (in the API, like the cooldown claim); refused, the step waits (see `mutating`).
        # A retry of a step waiting for another incident's lock still held takes none: it is
        # Blocked again from a read of the locks, its start never written (`still_busy`).
        early = self._prefetch(decision, chosen)  # a scale's read goes on meanwhile,
        locking = self._claim_early(decision, chosen)  # and the step's lock claim
        try:
            busy = await self._still_busy(decision, chosen)
            hold, tripped = (
                (None, []) if busy is not None else await self.slots.reserve(self.status, decision)
            )
            reserved = self.slots.reserved(self.status, decision) if hold is None and busy is None else None
            if hold is not None:
                decision = explained(plan, plan_input(held_by=holder, hold=hold))
                if tripped:
                    decision.status = with_records(decision.status, tripped, self.clock())
                    decision.records += tripped
                self.inputs.note_run(self.status, decision.status)
            if decision.intent is None:
                if locking is not None:  # held by the breaker (or its plan changed): its lock goes back
                    await locking.give_back()
                await self.commit.commit(decision, spec, counts=(chosen, claimed))
                await self._carry_locks(ran_before)
                self._note_settled(spec)
                return False, decision.wake_at
            assert chosen is not None  # noqa: S101 - an intent always comes from a playbook
            unwritten = busy is not None or start_unwritten(decision.intent, decision.status, chosen.spec)
            if unwritten:
                self.commit.hold(decision, counts=(chosen, claimed))
            else:
                await self.commit.commit(decision, spec, counts=(chosen, claimed))
            if decision.intent.kind != "revert-scale":  # the revert holds them until it is done
                self._note_settled(spec)
            self.may_hold_locks = self.may_hold_locks or mutates(
                decision.intent, decision.status, chosen.spec
            )
            working = self.status.model_copy(deep=True)
            self.planned()  # the decision is written: what follows may be a long step
            outcome = busy or await self.execution.run_unless_overtaken(
                decision.intent,
                spec,
                chosen.spec,
                working,
                write_late=unwritten,
                deadlines=plan_input,
                prefetched=early,
                claimed=locking,
            )
            if outcome is None:
                return True, None  # a human resolved or closed the incident meanwhile: plan again
            await self.slots.release(reserved, outcome)  # acted on nothing: its slots go back
            if waits(
                decision.intent, working
            ):  # it changed nothing but its targets' states; a deadline may have
                working = targets.keep_target_states(
                    working, self.status.model_copy(deep=True), decision.intent.step
                )
            intent, spec_of_run = decision.intent, chosen.spec
            after = explained(lambda inp: complete(inp, intent, outcome, spec_of_run), plan_input(working))
            self.commit.hold(after, counts=(chosen, False))
            if after.wake_at is not None:  # e.g. health not held yet: write now, check again then
                await self.commit.write_held(spec)
                return False, after.wake_at
            return True, None  # plan again at once; the outcome is written with that plan
        except Exception:
            if locking is not None:  # not taken (a write failed before the step ran): back, bounded
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(locking.give_back(), GIVE_BACK_TIMEOUT_S)
            raise
        finally:
            if early is not None:
                early.discard()  # not taken: held, busy, or not the step that acts
            if locking is not None:
                locking.drop()  # still running: the loop is cancelled

    def _claim_early(self, decision: Decision, chosen: PlaybookEntry | None) -> targets.EarlyClaim | None:
        """The claim of the lock of the workload a mutating step is about to act on, started now:
        it goes on while the breaker's slot is reserved (`targets.EarlyClaim`). Not for a retry
        waiting for another incident's lock (it reads the lock first: `still_busy`), nor for a
        step the breaker held at its last try (`held_by_breaker`) or that the breaker's copy in
        this process says it would hold: no lock taken only to be given back, try after try,
        while a step waits."""
        if decision.intent is None or chosen is None or waited_busy(self.status, decision):
            return None
        ref = early_lock_target(decision.intent, decision.status, chosen.spec)
        if ref is None or held_by_breaker(self.status) or self.slots.expects_refusal(self.status, decision):
            return None
        execution = self.execution
        me = execution.claimant(decision.status)
        return targets.EarlyClaim(execution.kube, self.namespace, ref, me, self.clock())

    def _prefetch(self, decision: Decision, chosen: PlaybookEntry | None) -> actions.Prefetched | None:
        """The read of the workload a scale step is about to decide on, started now: it goes on
        while the breaker's slot is reserved and the lock taken (`actions.Prefetched`)."""
        if decision.intent is None or chosen is None or waited_busy(self.status, decision):
            return None  # a retry waiting for a lock reads the lock first (`still_busy`), not this
        ref = prefetch_target(decision.intent, decision.status, chosen.spec)
        return None if ref is None else actions.Prefetched(self.execution.kube, self.namespace, ref)
