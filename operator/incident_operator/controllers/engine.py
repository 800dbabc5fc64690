"""The remediation engine: one loop per Incident that plans, persists, acts and records.

Owns the order of effects, which is what makes every step run exactly once:
1. `planner.plan` computes the next status and intent (pure);
2. the status is patched *before* the action: a step is `Running`. For actions that persist
   their own decision before changing anything, or change nothing (`START_UNWRITTEN_ACTIONS`),
   this write is held and goes out with the action's decision or with the outcome;
3. the action runs (idempotent per attempt, see `actions`);
4. `planner.complete` folds the outcome in; the result is held for the next plan, and both go
   out in one patch, before the next action (so an outcome is always written before anything
   else acts, and a transition with nothing to do in between costs no write of its own).
Each record becomes a timeline entry (inside the status), a counter, and for what people read
in `kubectl describe` a Kubernetes Event (`planner.posts_event`). The loop sleeps until the
planner's next deadline or a change of the Incident or its Playbooks, and survives API errors
with a bounded backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import AccessReviews, ApiException, Kube, api_reason
from incident_operator.adapters.outbound import Outbound
from incident_operator.adapters.runledger import RunRecorder
from incident_operator.api.keys import page_id_annotation
from incident_operator.api.models import (
    CANCELLABLE_ACTIONS,
    MUTATING_ACTIONS,
    START_UNWRITTEN_ACTIONS,
    IncidentSpec,
    IncidentStatus,
    Phase,
    PlaybookSpec,
    PlaybookStatus,
    Severity,
)
from incident_operator.controllers import actions
from incident_operator.controllers.notifier import Notifier
from incident_operator.core import access, alerts, postmortem, repeats, validation
from incident_operator.core.conditions import format_time
from incident_operator.core.matching import Candidate, Selection, select
from incident_operator.core.notices import IncidentView, notices
from incident_operator.core.planner import (
    AlertState,
    Decision,
    Intent,
    Level,
    Outcome,
    PlanInput,
    Record,
    SeverityRule,
    check_deadlines,
    complete,
    cooldown_until,
    effective_severity,
    plan,
    posts_event,
    with_records,
)
from incident_operator.settings import config
from incident_operator.settings.config import OperatorConfig

logger = logging.getLogger(__name__)

IDLE_RECHECK_S = 300.0  # a safety net only: changes and deadlines wake the loop themselves
HEALTH_DEADLINE_S = 30.0
HELD_WRITE_AFTER_S = 2.0  # a held start is written anyway when its action runs longer than this
HEALTH_SETTLE_S = 1.5  # a failing health check is looked at again for this long before it counts
HEALTH_SETTLE_POLL_S = 0.25
FINAL_WRITE_TIMEOUT_S = 5.0  # on the way out, a held status gets this long to be written
ERROR_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

EventPoster = Callable[[Record], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PlaybookEntry:
    name: str
    spec: PlaybookSpec
    status: PlaybookStatus


def parse_playbook(name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> PlaybookEntry | str:
    """A Playbook as the engine uses it, or why it is invalid (it is marked Invalid and never runs)."""
    parsed, found = validation.problems(dict(spec))
    if parsed is None or found:
        return "; ".join(found) or "invalid spec"
    try:
        return PlaybookEntry(name, parsed, PlaybookStatus.model_validate(dict(status)))
    except ValidationError:
        return "unreadable status"


Playbooks = tuple[list[PlaybookEntry], dict[str, str]]
"""The namespace's valid Playbooks, and the invalid ones by name with why."""


def status_patch(old: IncidentStatus, new: IncidentStatus) -> dict[str, Any]:
    """A merge patch from `old` to `new`: changed keys, and explicit nulls for removed ones."""
    before = old.model_dump(mode="json", exclude_none=True)
    after = new.model_dump(mode="json", exclude_none=True)
    patch: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    return patch


def _starts_run(decision: Decision) -> bool:
    return any(r.playbook_counter == "runs" for r in decision.records)


@functools.cache
def _severity_rules(rules: tuple[config.SeverityRule, ...], namespace: str) -> tuple[SeverityRule, ...]:
    """The config's severity rules that apply in `namespace`, as the planner takes them (computed
    once per config and namespace, not on every plan)."""
    return tuple(
        SeverityRule(r.source, r.to, r.within, r.unless)
        for r in rules
        if not r.namespaces or namespace in r.namespaces
    )


@functools.cache
def _response_targets(targets: config.ResponseTargets) -> Mapping[Severity, timedelta]:
    return MappingProxyType({s: getattr(targets, str(s)) for s in Severity})


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
        history: Callable[[repeats.RepeatKey], list[repeats.Seen]] | None = None,
    ) -> None:
        self.kube, self.outbound, self.config = kube, outbound, config
        self.namespace, self.name, self.uid = namespace, name, uid
        self.body = body  # kopf's live view: spec changes show up here
        self.playbooks = playbooks
        self.post_event = post_event
        self.clock = clock
        self.open_incidents = open_incidents
        self.notifier = notifier
        self.access_reviews = access_reviews
        self.run_records = run_records
        self.history = history  # earlier incidents by repeat key (a kopf index in the operator)
        self.postmortem_digest: str | None = None  # of the post-mortem last written (or refused)
        self.forbidden: str | None = None  # why the namespace does not let the playbook run, if it does not
        self.pending: list[Record] = []  # records made outside the loop (failed notifications)
        self.in_flight: set[asyncio.Task[None]] = set()  # notifications being delivered
        self.status = IncidentStatus.model_validate(dict(body.get("status") or {}))
        self.saved = self.status  # what the API has; `status` may be ahead of it (held)
        self.held: list[Record] = []  # records of the held status, posted when it is written
        self.uncounted: list[tuple[Decision, PlaybookEntry | None, bool]] = []  # counted once written
        self.writing_late = False  # a held start is being written while its action runs
        self.commit_lock = asyncio.Lock()  # a waiting step's deadline check may write meanwhile
        self.wake = asyncio.Event()

    @property
    def finished(self) -> bool:
        """Closed: nothing will ever be left to do."""
        return self.status.phase is Phase.CLOSED

    def concerned_by(self, playbook: str) -> bool:
        """Whether a change of Playbook `playbook` may matter: it runs that one, or none yet (a new
        or changed Playbook may be the one that matches)."""
        progress = self.status.playbook
        return progress is None or progress.name == playbook

    async def run(self, stopped: Callable[[], bool], wake: asyncio.Event) -> None:
        self.wake = wake
        errors = 0
        unreadable = False
        while not stopped():
            wake.clear()
            try:
                again, wake_at = await self.iterate()
                errors, unreadable = 0, False
            except asyncio.CancelledError:
                raise
            except ValidationError as exc:  # a spec or status the models refuse: wait for a change
                if not unreadable:
                    problem = (
                        f"the incident cannot be read: {exc.error_count()} problems, first at "
                        + ".".join(map(str, exc.errors()[0]["loc"]))
                    )
                    logger.warning("incident %s/%s: %s", self.namespace, self.name, problem)
                    self.post_event(Record("InvalidSpec", problem, warning=True))
                unreadable = True
                await self._sleep(wake, stopped, IDLE_RECHECK_S)
                continue
            except Exception as exc:  # API errors, lost connections, anything: back off, never die
                delay = ERROR_BACKOFF_S[min(errors, len(ERROR_BACKOFF_S) - 1)]
                errors += 1
                reason = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
                logger.warning(
                    "incident %s/%s: %s; retrying in %ss", self.namespace, self.name, reason, delay
                )
                if not isinstance(exc, ApiException):
                    logger.debug("incident %s/%s: traceback", self.namespace, self.name, exc_info=True)
                await self._sleep(wake, stopped, delay, interruptible=False)
                continue
            if self.status.phase is Phase.CLOSED:
                return
            if again:
                continue  # an intent ran: plan again at once
            timeout = IDLE_RECHECK_S if wake_at is None else (wake_at - self.clock()).total_seconds()
            await self._sleep(wake, stopped, max(0.0, min(timeout, IDLE_RECHECK_S)))
        await self._write_held_before_exit()

    async def _write_held_before_exit(self) -> None:
        """Stopping with an outcome not yet written: write it (bounded), so a restart does not run
        the step again; if that fails the step is resumed as after a crash."""
        if not self.dirty:
            return
        try:
            spec = IncidentSpec.model_validate(dict(self.body.get("spec") or {}))
            await asyncio.wait_for(self._write_held(spec), timeout=FINAL_WRITE_TIMEOUT_S)
        except Exception as exc:  # on the way out: log, never raise
            logger.warning("incident %s/%s: last status not written: %s", self.namespace, self.name, exc)

    @property
    def dirty(self) -> bool:
        """Whether the loop holds status or records the API has not seen yet."""
        return bool(self.held) or self.status is not self.saved

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

    # ------------------------------------------------------------------ one iteration

    def _input(
        self,
        spec: IncidentSpec,
        selection: Selection,
        cooldown: datetime | None,
        status: IncidentStatus | None = None,
        holder: str | None = None,
    ) -> PlanInput:
        current = status if status is not None else self.status
        severity = effective_severity(spec, current)
        targets = self.config.file.responseTargets
        return PlanInput(
            spec=spec,
            status=current,
            generation=self.body.get("metadata", {}).get("generation"),
            selection=selection,
            response_target=getattr(targets, str(severity)),
            now=self.clock(),
            cooldown_until=cooldown,
            cooldown_holder=holder,
            alert=self._alert(spec),
            forbidden=self.forbidden,
            busy=bool(self.in_flight or self.pending),
            access_recheck=timedelta(seconds=self.config.file.access.recheckSeconds),
            automation_acknowledges=self.config.file.acknowledgement.automationCounts,
            escalation=self._escalation(severity),
            repeat_of=self._repeat_of() if self.status.detectedAt is None else None,
            severity_rules=_severity_rules(self.config.file.severityEscalation, self.namespace),
            response_targets=_response_targets(targets),
        )

    def _escalation(self, severity: Severity) -> tuple[Level, ...]:
        """The severity's escalation levels, each with its channels that take this namespace
        (a level left with none does not apply here)."""
        notifications = self.config.file.notifications
        policy = notifications.escalation.get(severity)
        if policy is None:
            return ()
        scopes = {c.name: c.namespaces for c in notifications.channels}
        levels = []
        for level in policy.levels:
            channels = tuple(
                n for n in level.channels if n in scopes and (not scopes[n] or self.namespace in scopes[n])
            )
            after = None if level.afterSeconds is None else timedelta(seconds=level.afterSeconds)
            if channels:
                levels.append(Level(after, channels))
        return tuple(levels)

    def _repeat_of(self) -> str | None:
        key = repeats.key_of(self.body.get("spec") or {})
        if key is None or self.history is None:
            return None
        window = timedelta(days=self.config.file.repeats.windowDays)
        return repeats.previous(self.name, self.clock(), self.history(key), window)

    def _alert(self, spec: IncidentSpec) -> AlertState | None:
        if spec.source is None or str(spec.source.type) != "alert":
            return None
        return alerts.alert_state(dict(self.body.get("metadata", {}).get("annotations") or {}))

    async def iterate(self) -> tuple[bool, datetime | None]:
        """Plan once and carry out the intent. Returns (plan again at once, else when to plan next)."""
        spec = IncidentSpec.model_validate(dict(self.body.get("spec") or {}))
        if self.pending:
            records, self.pending = self.pending, []
            await self._commit(
                Decision(with_records(self.status, records, self.clock()), records=records), spec
            )
        entries, invalid = self.playbooks()
        selection = select(spec, [Candidate(e.name, e.spec) for e in entries], invalid)
        chosen = next((e for e in entries if selection.playbook and e.name == selection.playbook.name), None)
        cooldown, holder = None, None
        if chosen is not None and self.status.playbook is None:
            targets = self._targets(spec, chosen)
            cooldown = cooldown_until(chosen.spec, targets, chosen.status.lastRuns)
            holders = chosen.status.lastRunBy or {}
            holder = next((holders[t].split("/")[0] for t in targets if t in holders), None)
        self.forbidden = await self._access_problem(spec, chosen)
        decision = plan(self._input(spec, selection, cooldown, holder=holder))
        claimed = False
        if chosen is not None and chosen.spec.cooldownSeconds > 0 and _starts_run(decision):
            # The cooldown is claimed on the Playbook before anything acts, atomically: of two
            # incidents that want the same target at once, exactly one gets it.
            assert decision.status.playbook is not None  # noqa: S101 - a run just started
            held = await self._claim(chosen, spec, decision.status.playbook.runId or "r1")
            if held is not None:
                until, holder = held
                decision = plan(self._input(spec, selection, until, holder=holder))
            claimed = held is None
        if decision.intent is None:
            await self._commit(decision, spec, counts=(chosen, claimed))
            return False, decision.wake_at
        assert chosen is not None  # noqa: S101 - an intent always comes from a playbook
        unwritten = self._start_unwritten(decision.intent, decision.status, chosen.spec)
        if unwritten:
            self._hold(decision, counts=(chosen, claimed))
        else:
            await self._commit(decision, spec, counts=(chosen, claimed))
        working = self.status.model_copy(deep=True)
        outcome = await self._execute_unless_overtaken(
            decision.intent,
            spec,
            chosen.spec,
            working,
            write_late=unwritten,
            deadlines=lambda: self._input(spec, selection, cooldown),
        )
        if outcome is None:
            return True, None  # a human resolved or closed the incident meanwhile: plan again
        if self._waits(decision.intent, working):
            working = self.status.model_copy(deep=True)  # a waiting step changed nothing; a deadline may have
        after = complete(
            self._input(spec, selection, cooldown, working), decision.intent, outcome, chosen.spec
        )
        self._hold(after, counts=(chosen, False))
        if after.wake_at is not None:  # e.g. health not held yet: write now, check again then
            await self._write_held(spec)
            return False, after.wake_at
        return True, None  # plan again at once; the outcome is written with that plan

    @staticmethod
    def _waits(intent: Intent, status: IncidentStatus) -> bool:
        """A waiting step (it only reads, and may take minutes: CANCELLABLE_ACTIONS)."""
        progress = status.playbook
        if intent.kind != "run-step" or progress is None or intent.step < 0:
            return False
        return progress.steps[intent.step].action in CANCELLABLE_ACTIONS

    @staticmethod
    def _start_unwritten(intent: Intent, status: IncidentStatus, playbook: PlaybookSpec) -> bool:
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

    def _hold(self, decision: Decision, *, counts: tuple[PlaybookEntry | None, bool]) -> None:
        """Keep a decision in memory, to be written with the next one (see the module's order)."""
        self.status = decision.status
        self.held.extend(decision.records)
        self.uncounted.append((decision, *counts))

    async def _write_held(self, spec: IncidentSpec) -> None:
        if self.dirty:
            await self._commit(Decision(self.status), spec)

    async def _access_problem(self, spec: IncidentSpec, chosen: PlaybookEntry | None) -> str | None:
        """Why the chosen playbook may not run here (a permission the namespace did not grant)."""
        if (
            self.access_reviews is None
            or chosen is None
            or self.status.phase in (Phase.RESOLVED, Phase.CLOSED)
        ):
            return None
        needed = access.required(spec, chosen.spec)
        try:
            denied = await self.access_reviews.denied(self.namespace, needed, time.monotonic())
        except Exception as exc:  # unknown: let the actions try, and report what they meet
            logger.warning("incident %s/%s: access review failed: %s", self.namespace, self.name, exc)
            return None
        if not denied:
            return None
        username = await self.access_reviews.username()
        return access.forbidden_message(
            self.namespace, denied, username, self.config.file.access.remediatorBinding
        )

    async def _commit(
        self,
        decision: Decision,
        spec: IncidentSpec,
        *,
        counts: tuple[PlaybookEntry | None, bool] | None = None,
    ) -> None:
        """Write `decision` together with whatever is held: one status patch, then its Events,
        counters, Playbook run records and notices (only once the patch succeeded: a failed
        write keeps everything held for the next attempt)."""
        async with self.commit_lock:
            await self._commit_locked(decision, spec, counts)

    async def _commit_locked(
        self,
        decision: Decision,
        spec: IncidentSpec,
        counts: tuple[PlaybookEntry | None, bool] | None,
    ) -> None:
        old = self.saved
        records = [*self.held, *decision.records]
        new = decision.status
        found = []
        view = IncidentView(
            self.namespace,
            self.name,
            spec,
            new.phase or Phase.DETECTED,
            self._page_ids(),
            new.effectiveSeverity,
        )
        if self.notifier is not None and records:
            found = notices(old, new, records, view)
            if new.settled and not old.settled and self.notifier.would_send(found, view):
                new = new.model_copy(update={"settled": None})  # settles once they are delivered
        new, refused = await self._write_postmortem(spec, new)
        records += refused
        patch = status_patch(old, new)
        if patch:
            await self.kube.patch_incident_status(self.namespace, self.name, patch)
            metrics.observe_transition(spec, old, new)
        self.saved = self.status = new
        self.held = []
        uncounted, self.uncounted = self.uncounted, []
        if counts is not None:
            uncounted.append((decision, *counts))
        for record in records:
            if posts_event(record):
                self.post_event(record)
            if record.reason == "ResponseTargetBreached":
                metrics.breach(spec)
        if self.open_incidents is not None:
            self.open_incidents.update(self.uid, spec, new.phase)
        for counted, chosen, claimed in uncounted:
            await self._count(counted, chosen, spec, claimed=claimed)
        if self.notifier is not None and found:
            for task in self.notifier.send_all(found, view, self._notification_failed):
                self.in_flight.add(task)
                task.add_done_callback(self._notice_done)

    async def _write_postmortem(
        self, spec: IncidentSpec, new: IncidentStatus
    ) -> tuple[IncidentStatus, list[Record]]:
        """Once resolved and until closed, keep the post-mortem draft's ConfigMap up to date (it is
        written before the status that names it). Written again only when its text changes; a
        refusal (e.g. the namespace has not opted in) is recorded once per text, never retried."""
        if new.phase not in (Phase.RESOLVED, Phase.CLOSED) or self.saved.phase is Phase.CLOSED:
            return new, []
        text = postmortem.render(self.namespace, self.name, spec, new, self.clock())
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self.postmortem_digest:
            return new, []
        self.postmortem_digest = digest
        name = postmortem.configmap_name(self.name)
        try:
            await self.kube.write_owned_configmap(
                self.namespace, name, {"postmortem.md": text}, self.name, self.uid
            )
        except ApiException as exc:
            if new.postmortemRef is not None:
                return new, []  # an earlier draft stands; said already or not worth a warning
            record = Record("PostmortemNotWritten", f"ConfigMap {name}: {api_reason(exc)}", warning=True)
            return with_records(new, [record], self.clock()), [record]
        if new.postmortemRef != name:
            new = new.model_copy(update={"postmortemRef": name})
        return new, []

    def _page_ids(self) -> dict[str, str]:
        """Statuspage incident ids recorded on the Incident, by channel."""
        prefix = page_id_annotation("")
        annotations = (self.body.get("metadata") or {}).get("annotations") or {}
        return {k.removeprefix(prefix): str(v) for k, v in annotations.items() if k.startswith(prefix)}

    def _notice_done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.wake.set()  # may settle now

    def _notification_failed(self, message: str) -> None:
        self.pending.append(Record("NotificationFailed", message, warning=True))
        self.wake.set()

    async def _persist(self, working: IncidentStatus, spec: IncidentSpec) -> None:
        """Persist what an action recorded it is about to do, before it does it (with the held
        start of its step, if any)."""
        await self._commit(Decision(working.model_copy(deep=True)), spec)

    def _targets(self, spec: IncidentSpec, chosen: PlaybookEntry) -> list[str]:
        return [f"{r.kind}/{r.name}" for r in actions.workload_targets(spec, chosen.spec)] or ["*"]

    async def _claim(
        self, chosen: PlaybookEntry, spec: IncidentSpec, run_id: str
    ) -> tuple[datetime, str] | None:
        """Claim the playbook's cooldown on every target for this run (counting the run), or say who
        holds it: None when claimed (or already ours, e.g. after a crash), else (until, holder).

        A GET then a PATCH carrying the resourceVersion: a concurrent claim makes it fail (409)
        and the claim is decided again on the fresh status.
        """
        targets = self._targets(spec, chosen)
        me = f"{self.name}/{run_id}"
        for _ in range(5):
            current = await self.kube.get_playbook(self.namespace, chosen.name)
            raw = current.get("status") or {}
            holders: dict[str, str] = dict(raw.get("lastRunBy") or {})
            if all(holders.get(t) == me for t in targets):
                return None
            last_runs = PlaybookStatus.model_validate({"lastRuns": raw.get("lastRuns")}).lastRuns
            until = cooldown_until(chosen.spec, targets, last_runs)
            if until is not None and self.clock() < until:
                holder = next((holders[t] for t in targets if t in holders), "another incident/")
                return until, holder.split("/")[0]
            stamp = format_time(self.clock())
            patch = {
                "runs": int(raw.get("runs") or 0) + 1,
                "lastRun": stamp,
                "lastRuns": dict.fromkeys(targets, stamp),
                "lastRunBy": dict.fromkeys(targets, me),
            }
            try:
                await self.kube.patch_playbook_status(
                    self.namespace,
                    chosen.name,
                    patch,
                    resource_version=current["metadata"]["resourceVersion"],
                )
                return None
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise ApiException(status=409, reason="Conflict: cooldown claim contended 5 times")

    async def _count(
        self, decision: Decision, chosen: PlaybookEntry | None, spec: IncidentSpec, *, claimed: bool = False
    ) -> None:
        """Record a run on the Playbook: counters, and on a start the cooldown stamps per target
        (unless `claimed` before acting, which counted the run and stamped already).

        Added to the shared `RunRecorder`, which writes each Playbook's tally about once a
        second (optimistic concurrency), so a thousand incidents on one Playbook do not fight
        over its status.
        """
        counters = [
            r.playbook_counter
            for r in decision.records
            if r.playbook_counter and not (claimed and r.playbook_counter == "runs")
        ]
        if not counters or chosen is None:
            return
        extra: dict[str, Any] = {}
        if "runs" in counters:
            stamp = format_time(self.clock())
            targets = self._targets(spec, chosen)
            run_id = decision.status.playbook.runId if decision.status.playbook else None
            extra = {
                "lastRun": stamp,
                "lastRuns": dict.fromkeys(targets, stamp),
                "lastRunBy": dict.fromkeys(targets, f"{self.name}/{run_id or 'r1'}"),
            }
        if self.run_records is not None:
            self.run_records.add(self.namespace, chosen.name, counters, extra)
            return
        recorder = RunRecorder(self.kube)  # no shared recorder (tests): write at once
        recorder.add(self.namespace, chosen.name, counters, extra)
        await recorder.flush()

    async def _execute_unless_overtaken(
        self,
        intent: Intent,
        spec: IncidentSpec,
        playbook: PlaybookSpec,
        working: IncidentStatus,
        *,
        write_late: bool = False,
        deadlines: Callable[[], PlanInput] | None = None,
    ) -> Outcome | None:
        """Run the intent; a waiting step (waitReady, httpCheck) is cancelled if a human resolves
        or closes the incident meanwhile (returns None), and while it waits the response target
        is still watched (`deadlines` gives the plan input). Mutating actions are short and finish.

        With `write_late` (its start is held), a read-only action that is still running after
        HELD_WRITE_AFTER_S gets its start written then, so that a long wait shows as Running."""
        task = asyncio.create_task(self._execute(intent, spec, playbook, working))
        step = working.playbook.steps[intent.step] if working.playbook and intent.step >= 0 else None
        action = step.action if step is not None else None
        late: asyncio.Task[None] | None = None
        if write_late and action not in MUTATING_ACTIONS:
            late = asyncio.create_task(self._write_held_later(spec))
        try:
            cancellable = action in CANCELLABLE_ACTIONS
            while cancellable and not task.done():
                self.wake.clear()
                waiter = asyncio.create_task(self.wake.wait())
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
                        await self._commit(checked, spec)
            outcome = await task
        finally:
            if late is not None:
                if not self.writing_late:  # asleep still: not needed; writing: let it finish
                    late.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await late
        return outcome

    async def _write_held_later(self, spec: IncidentSpec) -> None:
        await asyncio.sleep(HELD_WRITE_AFTER_S)
        self.writing_late = True
        try:
            await self._write_held(spec)
        except Exception as exc:  # written with the outcome instead
            logger.debug("incident %s/%s: held start not written: %s", self.namespace, self.name, exc)
        finally:
            self.writing_late = False

    async def _settled_health(self, spec: IncidentSpec, playbook: PlaybookSpec) -> Outcome:
        """Health, looked at again for a moment when it does not hold yet: a replica a step has
        just added is usually ready within a second, and waiting here costs no status write (a
        failed check is written and re-planned a second later)."""
        deadline = time.monotonic() + HEALTH_SETTLE_S
        while True:
            outcome = await actions.verify_health(self.kube, self.outbound, self.namespace, spec, playbook)
            if outcome.ok or time.monotonic() >= deadline:
                return outcome
            await asyncio.sleep(HEALTH_SETTLE_POLL_S)

    async def _execute(
        self, intent: Intent, spec: IncidentSpec, playbook: PlaybookSpec, working: IncidentStatus
    ) -> Outcome:
        """Carry out `intent`; the action may record in `working` (persisted on its request)."""
        if intent.kind == "verify-health":
            try:  # every health request under one overall deadline
                return await asyncio.wait_for(self._settled_health(spec, playbook), timeout=HEALTH_DEADLINE_S)
            except TimeoutError:
                return Outcome(False, f"health checks did not finish within {HEALTH_DEADLINE_S:.0f}s")
        progress = working.playbook
        assert progress is not None  # noqa: S101
        step_status = progress.steps[intent.step]
        step = next(s for s in playbook.steps if s.name == step_status.name)
        if intent.kind == "revert-scale":
            return await actions.revert_scale(self.kube, self.namespace, step, step_status)
        ctx = actions.ActionContext(
            kube=self.kube,
            outbound=self.outbound,
            limits=self.config.file.limits,
            namespace=self.namespace,
            incident=self.name,
            incident_uid=self.uid,
            spec=spec,
            status=working,
            playbook=playbook,
            step=step,
            step_status=step_status,
            now=self.clock,
            persist=lambda: self._persist(working, spec),
        )
        outcome = await actions.run(ctx)
        metrics.action_done(step.action, outcome.ok)
        return outcome
