"""The step planner: incident + playbook + clock → the next status and the next intent.

Pure: no kopf, no Kubernetes client, no I/O, time passed in. The engine calls `plan` whenever
something may have changed; it persists `Decision.status` (if it differs), records
`Decision.records` (timeline entry + Event + counter), then carries out `Decision.intent`. The
outcome of an action goes back through `complete`, which returns the next status.

Exactly once: a step is marked `Running` (attempts + 1) in a persisted status *before* its action
runs, and `Succeeded`/`Failed` after. A step found `Running` after a crash is resumed with the same
attempt, and every action is idempotent for a given attempt (see `actions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal

from incident_operator.api.actions import ScaleAction
from incident_operator.api.models import (
    ROLE_TITLES,
    ActionItemCounts,
    Condition,
    EscalationEntry,
    EscalationStatus,
    IncidentSpec,
    IncidentStatus,
    Phase,
    PlaybookProgress,
    PlaybookSpec,
    Roles,
    Severity,
    SeverityChange,
    Step,
    StepState,
    StepStatus,
    TimelineEntry,
)
from incident_operator.api.reasons import TIMELINE_ONLY, ConditionType, Reason
from incident_operator.api.timestamps import format_time
from incident_operator.core import conditions as cond
from incident_operator.core.matching import Selection
from incident_operator.core.phases import Event, advance
from incident_operator.settings.config import SeverityRule


@dataclass(frozen=True)
class AlertState:
    """The alert's last recorded state (from the Incident's annotations)."""

    status: Literal["firing", "resolved"]
    changed_at: datetime


TIMELINE_LIMIT = 100
OPERATOR_ACTOR = "incident-operator"
"""The actor of what the operator itself does (timeline, Events); a person's name otherwise."""
RETRY_BACKOFF_MAX_S = 30
HEALTH_GRACE_S = 300  # after the stabilization window, how long health may take to hold
HEALTH_RECHECK_S = 1

IntentKind = Literal["run-step", "verify-health", "revert-scale"]


@dataclass(frozen=True)
class Intent:
    kind: IntentKind
    step: int = -1  # index into the playbook's steps (run-step, revert-scale)


@dataclass(frozen=True)
class Record:
    """Something worth telling humans: one timeline entry, one Event, one counter increment."""

    reason: Reason
    message: str
    warning: bool = False
    actor: str = OPERATOR_ACTOR
    playbook_counter: Literal["runs", "succeeded", "failed"] | None = None
    """Which counter of the Playbook's status this record increments, if any."""
    channels: tuple[str, ...] = ()
    """Notification channels this record is for in particular (an escalation level's)."""


@dataclass(frozen=True)
class Level:
    """One escalation level as it applies to an incident (its channels that take the namespace)."""

    after: timedelta | None
    """After detection; None: when the response target passes."""
    channels: tuple[str, ...]


def posts_event(record: Record) -> bool:
    """Whether a record is also posted as a Kubernetes Event (every warning and human action is;
    see TIMELINE_ONLY; the operator's own acknowledgement comes with PlaybookStarted and says the
    same thing)."""
    if record.warning or record.actor != "incident-operator":
        return True
    if record.reason == Reason.ACKNOWLEDGED:
        return False
    return record.reason not in TIMELINE_ONLY


@dataclass
class Decision:
    status: IncidentStatus
    intent: Intent | None = None
    wake_at: datetime | None = None
    records: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class PlanInput:
    spec: IncidentSpec
    status: IncidentStatus
    generation: int | None
    selection: Selection
    response_target: timedelta
    now: datetime
    cooldown_until: datetime | None = None
    cooldown_holder: str | None = None
    """The incident whose run holds the cooldown, if known."""
    alert: AlertState | None = None
    """For incidents opened by an alert: the alert's state as the intake recorded it."""
    forbidden: str | None = None
    """Why the operator may not run the playbook in this namespace (see `access`), or None."""
    access_recheck: timedelta = timedelta(seconds=30)
    """How soon to look again while `forbidden`."""
    busy: bool = False
    """Work of the engine's in flight (notifications being delivered): not settled yet."""
    automation_acknowledges: bool = False
    """Config `acknowledgement.automationCounts`: a playbook starting acknowledges the incident."""
    escalation: tuple[Level, ...] = ()
    """The severity's escalation policy (config), levels in order."""
    repeat_of: str | None = None
    """An earlier incident this one repeats (looked up by the engine; used at detection only)."""
    severity_rules: tuple[SeverityRule, ...] = ()
    """The config's `severityEscalation` rules that apply in the incident's namespace."""
    """Config `severityEscalation`: when the incident is treated as more severe."""
    response_targets: Mapping[Severity, timedelta] = field(default_factory=dict)
    """Every severity's response target (an escalated severity re-targets the deadline)."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


class _Builder:
    """Accumulates status changes and records while planning."""

    def __init__(self, inp: PlanInput) -> None:
        self.inp = inp
        self.now = inp.now
        self.status = inp.status.model_copy(deep=True)
        self.records: list[Record] = []
        self.wake: list[datetime] = []

    @property
    def phase(self) -> Phase:
        return self.status.phase or Phase.DETECTED

    def advance(self, event: Event) -> None:
        after = advance(self.phase, event)
        if after is not self.phase:
            self.status.phase = after

    def condition(self, type_: ConditionType, status: cond.Status, reason: Reason, message: str) -> bool:
        """Set a condition; return True if its status or reason changed."""
        before = cond.find_condition(self._conds(), type_)
        if (
            before
            and before["status"] == status
            and before["reason"] == reason
            and before["message"] == message
            and before.get("observedGeneration") == self.inp.generation
        ):
            return False
        updated = cond.set_condition(
            self._conds(), type_, status, reason, message, generation=self.inp.generation, now=self.now
        )
        self.status.conditions = [Condition.model_validate(c) for c in updated]
        return before is None or before["status"] != status or before["reason"] != reason

    def is_true(self, type_: ConditionType) -> bool:
        return cond.is_true(self._conds(), type_)

    def reason_of(self, type_: ConditionType) -> str | None:
        found = cond.find_condition(self._conds(), type_)
        return None if found is None else str(found["reason"])

    def record(
        self,
        reason: Reason,
        message: str,
        *,
        warning: bool = False,
        actor: str = OPERATOR_ACTOR,
        counter: Literal["runs", "succeeded", "failed"] | None = None,
        channels: tuple[str, ...] = (),
    ) -> None:
        self.records.append(Record(reason, message, warning, actor, counter, channels))
        entries = [
            *(self.status.timeline or []),
            TimelineEntry(time=self.now, type=reason, message=message, actor=actor),
        ]
        self.status.timeline = bound_timeline(entries)

    def decision(self, intent: Intent | None = None) -> Decision:
        wake = min(self.wake) if self.wake else None
        return Decision(self.status, intent, wake, self.records)

    def _conds(self) -> list[cond.ConditionDict]:
        return [c.model_dump(mode="json", exclude_none=True) for c in self.status.conditions or []]


def bound_timeline(entries: list[TimelineEntry]) -> list[TimelineEntry]:
    """Keep at most TIMELINE_LIMIT entries; older ones are folded into one summary, never dropped silently."""
    if len(entries) <= TIMELINE_LIMIT:
        return entries
    overflow = entries[: len(entries) - TIMELINE_LIMIT + 1]
    kept = entries[len(entries) - TIMELINE_LIMIT + 1 :]
    folded = 0
    types: dict[str, int] = {}
    for entry in overflow:
        if entry.type == Reason.SUMMARY and entry.message.startswith("summarised "):
            folded += int(entry.message.split()[1])
            continue
        folded += 1
        types[entry.type] = types.get(entry.type, 0) + 1
    detail = ", ".join(f"{name} x{count}" for name, count in sorted(types.items()))
    summary = TimelineEntry(
        time=overflow[-1].time,
        type=Reason.SUMMARY,
        message=f"summarised {folded} earlier entries up to this time" + (f": {detail}" if detail else ""),
        actor=OPERATOR_ACTOR,
    )
    return [summary, *kept]


def cooldown_until(
    playbook: PlaybookSpec, targets: list[str], last_runs: dict[str, datetime] | None
) -> datetime | None:
    """When the playbook may run again on any of `targets` ('Kind/name'), or None if it may now."""
    if playbook.cooldownSeconds <= 0 or not last_runs:
        return None
    window = timedelta(seconds=playbook.cooldownSeconds)
    ends = [last_runs[t] + window for t in targets if t in last_runs]
    return max(ends) if ends else None


def with_records(status: IncidentStatus, records: list[Record], now: datetime) -> IncidentStatus:
    """`status` with `records` appended to its (bounded) timeline, for records made outside `plan`."""
    new = status.model_copy(deep=True)
    entries = [TimelineEntry(time=now, type=r.reason, message=r.message, actor=r.actor) for r in records]
    new.timeline = bound_timeline([*(new.timeline or []), *entries])
    return new


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), RETRY_BACKOFF_MAX_S))


def plan(inp: PlanInput) -> Decision:
    b = _Builder(inp)
    spec, status, now = inp.spec, b.status, inp.now
    if inp.generation is not None and b.phase is not Phase.CLOSED:
        status.observedGeneration = inp.generation  # this spec has been acted on (see `attention`)

    if status.detectedAt is None:
        status.detectedAt = now
        status.acknowledgeBy = now + inp.response_target
        status.phase = Phase.DETECTED
        b.record(Reason.DETECTED, f"{spec.severity} {spec.category} incident opened: {spec.title}")
        if inp.repeat_of:
            status.repeatOf = inp.repeat_of
            b.record(
                Reason.REPEAT, f"a repeat of incident {inp.repeat_of} (same alert or category, same targets)"
            )

    if b.phase is Phase.CLOSED:
        return b.decision()
    open_items = _track_action_items(b)
    if spec.closed:
        _skip_remaining(b, "the incident was closed before this step ran")
        status.closedAt = now
        b.advance(Event.CLOSED)
        b.condition(
            ConditionType.RECONCILING,
            "False",
            Reason.CLOSED,
            "the incident is closed; it is read-only history",
        )
        b.record(Reason.CLOSED, "post-incident review done; the incident is closed", actor="human")
        if open_items:
            b.record(
                Reason.CLOSED_WITH_OPEN_ACTION_ITEMS,
                f"closed with open action items: {', '.join(open_items)}",
                actor="human",
            )
        return b.decision()

    if spec.commander and not b.is_true(ConditionType.ACKNOWLEDGED):
        _acknowledge(
            b, Reason.COMMANDER_ASSIGNED, f"acknowledged by commander {spec.commander}", actor=spec.commander
        )
    _follow_roles(b)

    playbook = inp.selection.playbook.spec if inp.selection.playbook else None
    if spec.resolution and not b.is_true(ConditionType.RESOLVED):
        _skip_remaining(b, "resolved by a human before this step finished")
        status.resolvedAt = now
        b.advance(Event.HUMAN_RESOLVED)
        b.condition(ConditionType.RESOLVED, "True", Reason.DECLARED_BY_HUMAN, spec.resolution.summary)
        b.condition(ConditionType.RECONCILING, "False", Reason.RESOLVED, "resolved by a human")
        b.condition(ConditionType.STALLED, "False", Reason.RESOLVED, "resolved")
        b.record(Reason.RESOLVED, f"resolved by a human: {spec.resolution.summary}", actor="human")

    _follow_alert(b)

    if b.is_true(ConditionType.RESOLVED):
        return _after_resolution(b, playbook)

    _check_response_target(b)
    _escalate(b)
    _escalate_severity(b)

    if spec.paused:
        if b.condition(ConditionType.RECONCILING, "False", Reason.PAUSED, "automation paused by spec.paused"):
            b.record(Reason.PAUSED, "automation paused by spec.paused", actor="human")
        return b.decision()

    if status.playbook is None:
        return _start_playbook(b, playbook)
    if (
        playbook is None
        or inp.selection.playbook is None
        or inp.selection.playbook.name != status.playbook.name
    ):
        message = f"playbook {status.playbook.name} disappeared during the run"
        if b.condition(ConditionType.STALLED, "True", Reason.PLAYBOOK_NOT_FOUND, message):
            b.record(Reason.STALLED, message, warning=True)
        return b.decision()
    return _run_steps(b, playbook)


def check_deadlines(inp: PlanInput) -> Decision:
    """Only the time-driven part of a plan, for while a waiting step runs (it may wait for many
    minutes): the response target passing unacknowledged is recorded and escalated on time.
    Changes nothing else; the step's outcome is planned as usual when it comes."""
    b = _Builder(inp)
    if b.phase in (Phase.RESOLVED, Phase.CLOSED) or b.is_true(ConditionType.RESOLVED):
        return b.decision()
    _check_response_target(b)
    _escalate(b)
    _escalate_severity(b)
    return b.decision()


def effective_severity(spec: IncidentSpec, status: IncidentStatus) -> Severity:
    return status.effectiveSeverity or spec.severity


def _follow_roles(b: _Builder) -> None:
    """Each role given, changed or given up is a timeline entry (status.roles remembers them)."""
    wanted = b.inp.spec.roles or Roles()
    known = b.status.roles or Roles()
    if wanted == known:
        return
    for field_name, title in ROLE_TITLES.items():
        new, old = getattr(wanted, field_name), getattr(known, field_name)
        if new == old:
            continue
        if new:
            was = f" (was {old})" if old else ""
            b.record(Reason.ROLE_ASSIGNED, f"{title}: {new}{was}", actor="human")
        else:
            b.record(Reason.ROLE_ASSIGNED, f"{title}: nobody (was {old})", actor="human")
    b.status.roles = wanted if wanted != Roles() else None


def _escalate_severity(b: _Builder) -> None:
    """Treat the incident as more severe when a rule's time passes without a mitigation (or an
    acknowledgement): status.effectiveSeverity and its history; spec is never rewritten. The
    response deadline moves to the new severity's target (if not acknowledged yet) and the new
    severity's escalation policy applies from its first level (the engine plans again at once)."""
    status, spec = b.status, b.inp.spec
    if status.detectedAt is None:
        return
    current = effective_severity(spec, status)
    since = status.severityHistory[-1].at if status.severityHistory else status.detectedAt
    for rule in b.inp.severity_rules:
        if rule.source != current:
            continue
        if rule.unless == "mitigated" and (
            status.mitigatedAt is not None or b.is_true(ConditionType.MITIGATED)
        ):
            continue
        if rule.unless == "acknowledged" and b.is_true(ConditionType.ACKNOWLEDGED):
            continue
        due = since + rule.within
        if b.now < due:
            b.wake.append(due)
            continue
        reason = f"not {rule.unless} within {int(rule.within.total_seconds())}s"
        status.effectiveSeverity = rule.to
        status.severityHistory = [
            *(status.severityHistory or []),
            SeverityChange(previous=current, severity=rule.to, at=b.now, reason=reason),
        ]
        target = b.inp.response_targets.get(rule.to)
        if target is not None and not b.is_true(ConditionType.ACKNOWLEDGED):
            deadline = status.detectedAt + target
            status.acknowledgeBy = min(status.acknowledgeBy or deadline, deadline)
        if status.escalation is not None:
            status.escalation.level = 0  # the new severity's policy, from its first level
        b.record(Reason.SEVERITY_ESCALATED, f"{current} -> {rule.to}: {reason}", warning=True)
        b.wake.append(b.now)
        return


def _follow_alert(b: _Builder) -> None:
    """Record the alert resolving; reopen a Monitoring/Resolved incident when it fires again."""
    alert, status = b.inp.alert, b.status
    if alert is None:
        return
    if alert.status == "resolved" and status.alertResolvedAt is None:
        status.alertResolvedAt = alert.changed_at
        b.record(Reason.ALERT_RESOLVED, "the alert resolved", actor="alertmanager")
        return
    if (
        alert.status != "firing"
        or status.alertResolvedAt is None
        or alert.changed_at <= status.alertResolvedAt
    ):
        return
    status.alertResolvedAt = None
    status.settled = None
    if b.phase not in (Phase.MONITORING, Phase.RESOLVED) or b.inp.spec.resolution is not None:
        b.record(Reason.ALERT_FIRING, "the alert fired again", warning=True, actor="alertmanager")
        return
    b.advance(Event.REFIRED)
    status.resolvedAt = None
    status.monitoringSince = None
    if status.playbook is not None:  # guardrail budgets span runs: pods deleted so far still count
        deleted = sum(len(step.pods or []) for step in status.playbook.steps)
        status.podsDeleted = (status.podsDeleted or 0) + deleted or None
    status.playbook = None  # the playbook runs again (its cooldown permitting); history stays in the timeline
    b.condition(
        ConditionType.RESOLVED, "False", Reason.REFIRED, "the alert fired again after it had resolved"
    )
    b.condition(ConditionType.STALLED, "False", Reason.REFIRED, "reopened")
    b.record(
        Reason.REFIRED, "the alert fired again: the incident is reopened", warning=True, actor="alertmanager"
    )


def _track_action_items(b: _Builder) -> list[str]:
    """Count open and overdue action items into status and `ActionItemsOpen`; return the open ids.
    An item is overdue from the day after its due date (UTC)."""
    items = b.inp.spec.actionItems or []
    if not items:
        if b.status.actionItems is not None:
            b.status.actionItems = None
            b.condition(ConditionType.ACTION_ITEMS_OPEN, "False", Reason.NO_ACTION_ITEMS, "no action items")
        return []
    today = b.now.date()
    open_ids = [item.id for item in items if not item.done]
    overdue = [item.id for item in items if not item.done and item.due is not None and item.due < today]
    b.status.actionItems = ActionItemCounts(open=len(open_ids), overdue=len(overdue))
    if open_ids:
        message = f"{len(open_ids)} of {len(items)} open" + (f", {len(overdue)} overdue" if overdue else "")
        b.condition(
            ConditionType.ACTION_ITEMS_OPEN, "True", Reason.OVERDUE if overdue else Reason.OPEN, message
        )
        dues = [i.due for i in items if not i.done and i.due is not None and i.due >= today]
        if dues:  # wake when the next one becomes overdue
            b.wake.append(datetime.combine(min(dues) + timedelta(days=1), time.min, tzinfo=UTC))
    else:
        b.condition(
            ConditionType.ACTION_ITEMS_OPEN, "False", Reason.ALL_DONE, f"all {len(items)} action items done"
        )
    return open_ids


def _skip_remaining(b: _Builder, message: str) -> None:
    """Steps that have not finished will not run any more: mark them Skipped, with why."""
    progress = b.status.playbook
    for step_status in progress.steps if progress else []:
        if step_status.state in (StepState.PENDING, StepState.RUNNING, StepState.AWAITING_APPROVAL):
            step_status.state = StepState.SKIPPED
            step_status.finishedAt = b.now
            step_status.message = message


def _acknowledge(b: _Builder, reason: Reason, message: str, actor: str = OPERATOR_ACTOR) -> None:
    b.status.acknowledgedAt = b.now
    b.advance(Event.ACKNOWLEDGED)
    b.condition(ConditionType.ACKNOWLEDGED, "True", reason, message)  # a breach, if any, stays recorded
    b.record(Reason.ACKNOWLEDGED, message, actor=actor)


def _escalate(b: _Builder) -> None:
    """Reach each escalation level whose time has come while no person has acknowledged: record
    it (status.escalation, a timeline entry whose notice goes to the level's channels) once."""
    status, levels = b.status, b.inp.escalation
    if not levels or b.is_true(ConditionType.ACKNOWLEDGED) or status.detectedAt is None:
        return
    reached = status.escalation.level if status.escalation is not None else 0
    for number, level in enumerate(levels[reached:], start=reached + 1):
        due = status.acknowledgeBy if level.after is None else status.detectedAt + level.after
        if due is None:
            return
        if b.now < due:
            b.wake.append(due)
            return
        escalation = status.escalation or EscalationStatus()
        escalation.level = number
        escalation.history.append(EscalationEntry(level=number, at=b.now, channels=list(level.channels)))
        status.escalation = escalation
        status.escalations = (status.escalations or 0) + 1
        b.record(
            Reason.ESCALATED,
            f"level {number} of {len(levels)}: {', '.join(level.channels)} (no person has acknowledged)",
            warning=True,
            channels=level.channels,
        )


def _check_response_target(b: _Builder) -> None:
    status = b.status
    if b.is_true(ConditionType.ACKNOWLEDGED) or status.acknowledgeBy is None:
        return
    if b.now >= status.acknowledgeBy:
        if b.condition(
            ConditionType.RESPONSE_TARGET_BREACHED,
            "True",
            Reason.ACK_DEADLINE_PASSED,
            f"not acknowledged by {format_time(status.acknowledgeBy)} "
            f"({effective_severity(b.inp.spec, status)} response target)",
        ):
            severity = effective_severity(b.inp.spec, status)
            b.record(Reason.RESPONSE_TARGET_BREACHED, f"{severity} response target missed", warning=True)
    else:
        b.wake.append(status.acknowledgeBy)


def _start_playbook(b: _Builder, playbook: PlaybookSpec | None) -> Decision:
    selection = b.inp.selection
    if playbook is None or selection.playbook is None:
        if b.condition(ConditionType.STALLED, "True", selection.reason, selection.message):
            b.record(
                Reason.STALLED,
                selection.message,
                warning=selection.reason in (Reason.PLAYBOOK_NOT_FOUND, Reason.INVALID_PLAYBOOK),
            )
        b.condition(ConditionType.RECONCILING, "False", Reason.IDLE, selection.message)
        return b.decision()
    if b.inp.cooldown_until is not None and b.now < b.inp.cooldown_until:
        holder = f" (incident {b.inp.cooldown_holder})" if b.inp.cooldown_holder else ""
        message = (
            f"playbook {selection.playbook.name} ran on the same target recently{holder}; "
            f"cooldown until {format_time(b.inp.cooldown_until)}"
        )
        if b.condition(ConditionType.RECONCILING, "False", Reason.COOLDOWN_ACTIVE, message):
            b.record(Reason.COOLDOWN_ACTIVE, message)
        b.wake.append(b.inp.cooldown_until)
        return b.decision()
    if _forbidden(b):
        return b.decision()
    b.status.runs = (b.status.runs or 0) + 1
    b.status.playbook = PlaybookProgress(
        name=selection.playbook.name,
        runId=f"r{b.status.runs}",
        steps=[StepStatus(name=s.name, action=s.action) for s in playbook.steps],
    )
    if b.reason_of(ConditionType.STALLED) in (
        Reason.NO_MATCHING_PLAYBOOK,
        Reason.PLAYBOOK_NOT_FOUND,
        Reason.INVALID_PLAYBOOK,
    ):
        b.condition(ConditionType.STALLED, "False", Reason.PLAYBOOK_SELECTED, selection.message)
    b.record(Reason.PLAYBOOK_STARTED, selection.message, counter="runs")
    if b.inp.automation_acknowledges and not b.is_true(ConditionType.ACKNOWLEDGED):
        _acknowledge(b, Reason.PLAYBOOK_STARTED, f"acknowledged: playbook {selection.playbook.name} started")
    return _run_steps(b, playbook)


def _run_steps(b: _Builder, playbook: PlaybookSpec) -> Decision:
    progress = b.status.playbook
    assert progress is not None  # noqa: S101 - callers set it
    by_name = {s.name: s for s in playbook.steps}
    for index, step_status in enumerate(progress.steps):
        step = by_name.get(step_status.name)
        if step is None:
            message = f"step {step_status.name} was removed from playbook {progress.name} during the run"
            if b.condition(ConditionType.STALLED, "True", Reason.INVALID_PLAYBOOK, message):
                b.record(Reason.STALLED, message, warning=True)
            return b.decision()
        state = step_status.state
        if state in (StepState.SUCCEEDED, StepState.SKIPPED):
            continue
        if state is StepState.FAILED:
            if step.continueOnFailure or _failure_handled(playbook, step.name):
                continue
            message = f"step {step.name} failed: {step_status.message}"
            if b.condition(ConditionType.STALLED, "True", Reason.STEP_FAILED, message):
                b.record(Reason.STALLED, message, warning=True, counter="failed")
            b.condition(ConditionType.RECONCILING, "False", Reason.STALLED, message)
            return b.decision()
        if state is StepState.RUNNING:
            return b.decision(Intent("run-step", index))
        if step.when is not None and step_status.attempts == 0 and not _condition_met(step, progress.steps):
            step_status.state = StepState.SKIPPED
            step_status.finishedAt = b.now
            step_status.message = _skip_reason(step, progress.steps)
            b.record(Reason.STEP_SKIPPED, f"step {step.name} skipped: {step_status.message}")
            continue
        return _start_step(b, index, step, step_status)
    return _monitor(b, playbook)


def _failure_handled(playbook: PlaybookSpec, name: str) -> bool:
    """A later step runs when this one fails (`when.stepFailed`): its failure is a branch, not a stall."""
    return any(s.when is not None and s.when.stepFailed == name for s in playbook.steps)


def _state_of(steps: list[StepStatus], name: str) -> StepState | None:
    return next((s.state for s in steps if s.name == name), None)


def _condition_met(step: Step, steps: list[StepStatus]) -> bool:
    when = step.when
    assert when is not None  # noqa: S101 - callers check
    wanted = StepState.FAILED if when.stepFailed else StepState.SUCCEEDED
    return _state_of(steps, when.step) is wanted


def _skip_reason(step: Step, steps: list[StepStatus]) -> str:
    assert step.when is not None  # noqa: S101
    state = _state_of(steps, step.when.step)
    wanted = "failed" if step.when.stepFailed else "succeeded"
    return f"runs only if step {step.when.step} {wanted}; it is {state or 'absent'}"


def _start_step(b: _Builder, index: int, step: Step, step_status: StepStatus) -> Decision:
    approval = next((a for a in b.inp.spec.approvals or [] if a.step == step.name), None)
    if step.requiresApproval and approval is None:
        if step_status.state is not StepState.AWAITING_APPROVAL:
            step_status.state = StepState.AWAITING_APPROVAL
            b.record(
                Reason.AWAITING_APPROVAL,
                f"step {step.name} ({step.action}) waits for approval in spec.approvals",
            )
        b.condition(
            ConditionType.RECONCILING,
            "True",
            Reason.AWAITING_APPROVAL,
            f"step {step.name} waits for approval",
        )
        return b.decision()
    if step_status.attempts > 0 and step_status.finishedAt is not None:
        retry_at = step_status.finishedAt + backoff(step_status.attempts)
        if b.now < retry_at:
            b.wake.append(retry_at)
            return b.decision()
    if _forbidden(b):
        return b.decision()
    if approval is not None and step.requiresApproval and step_status.state is StepState.AWAITING_APPROVAL:
        b.record(Reason.APPROVED, f"step {step.name} approved by {approval.by}", actor=approval.by)
    step_status.state = StepState.RUNNING
    step_status.attempts += 1
    step_status.startedAt = b.now
    step_status.finishedAt = None
    step_status.message = None
    b.advance(Event.MUTATING_STEP if step.mutates else Event.DIAGNOSTIC_STEP)
    b.condition(
        ConditionType.RECONCILING, "True", Reason.STEP_RUNNING, f"step {step.name} ({step.action}) running"
    )
    attempt = f" (attempt {step_status.attempts} of {1 + step.retries})" if step_status.attempts > 1 else ""
    b.record(Reason.STEP_STARTED, f"step {step.name}: {step.action} started{attempt}")
    return b.decision(Intent("run-step", index))


def _forbidden(b: _Builder) -> bool:
    """Hold the start of a playbook or step while the namespace has not granted what it needs.

    Nothing is attempted (no attempt is used up, no cooldown is stamped); the incident is Stalled
    with reason Forbidden until a later plan finds access granted, which clears it.
    """
    message = b.inp.forbidden
    if message is None:
        if b.reason_of(ConditionType.STALLED) == Reason.FORBIDDEN:
            b.condition(
                ConditionType.STALLED,
                "False",
                Reason.ACCESS_GRANTED,
                "the operator may act in this namespace now",
            )
            b.record(Reason.ACCESS_GRANTED, "the namespace opted in: remediation proceeds")
        return False
    if b.condition(ConditionType.STALLED, "True", Reason.FORBIDDEN, message):
        b.record(Reason.STALLED, message, warning=True)
    b.condition(ConditionType.RECONCILING, "False", Reason.FORBIDDEN, message)
    b.wake.append(b.now + b.inp.access_recheck)
    return True


def _monitor(b: _Builder, playbook: PlaybookSpec) -> Decision:
    status = b.status
    if status.monitoringSince is None:
        status.monitoringSince = b.now
        b.advance(Event.STEPS_DONE)
        b.condition(
            ConditionType.RECONCILING,
            "True",
            Reason.MONITORING,
            f"all steps done; monitoring for {playbook.stabilizationSeconds}s",
        )
        b.record(Reason.MONITORING, f"all steps done; monitoring for {playbook.stabilizationSeconds}s")
    if b.inp.alert is not None and status.alertResolvedAt is None:
        b.condition(
            ConditionType.RECONCILING,
            "True",
            Reason.MONITORING,
            "all steps done; waiting for the alert to resolve",
        )
        return b.decision()  # the intake's annotation change wakes the loop
    start = max(status.monitoringSince, status.alertResolvedAt or status.monitoringSince)
    until = start + timedelta(seconds=playbook.stabilizationSeconds)
    if b.now < until:
        b.wake.append(until)
        return b.decision()
    if b.reason_of(ConditionType.STALLED) == Reason.HEALTH_NOT_RESTORED:
        return b.decision()
    return b.decision(Intent("verify-health"))


def _after_resolution(b: _Builder, playbook: PlaybookSpec | None) -> Decision:
    """Undo scale changes if the playbook says so; then, with nothing left in flight, mark the
    incident settled: its loop may stop until something changes (see `attention`)."""
    progress = b.status.playbook
    if playbook is not None and progress is not None and playbook.revertOnResolve:
        by_name = {s.name: s for s in playbook.steps}
        for index, step_status in enumerate(progress.steps):
            step = by_name.get(step_status.name)
            if (
                step is not None
                and step.scale is not None
                and step_status.state is StepState.SUCCEEDED
                and step_status.replicasBefore is not None
                and not step_status.reverted
            ):
                return b.decision(Intent("revert-scale", index))
    if not b.inp.busy and not b.status.settled:
        b.status.settled = True
    return b.decision()


# ----------------------------------------------------------------------------- outcomes


def complete(inp: PlanInput, intent: Intent, outcome: Outcome, playbook: PlaybookSpec) -> Decision:
    """Fold the outcome of an intent into the status (the engine persists the result)."""
    b = _Builder(inp)
    if intent.kind == "verify-health":
        return _complete_health(b, outcome)
    progress = b.status.playbook
    assert progress is not None  # noqa: S101 - an intent always has a playbook
    step_status = progress.steps[intent.step]
    step = next(s for s in playbook.steps if s.name == step_status.name)
    if intent.kind == "revert-scale":
        step_status.reverted = True
        b.record(
            Reason.SCALE_REVERTED if outcome.ok else Reason.SCALE_REVERT_FAILED,
            f"step {step.name}: {outcome.message}",
            warning=not outcome.ok,
        )
        return b.decision()
    step_status.finishedAt = b.now
    step_status.message = outcome.message
    if outcome.ok:
        step_status.state = StepState.SUCCEEDED
        b.record(Reason.STEP_SUCCEEDED, f"step {step.name}: {outcome.message}")
        if step.mutates and not b.is_true(ConditionType.MITIGATED):
            b.status.mitigatedAt = b.now
            b.condition(
                ConditionType.MITIGATED,
                "True",
                Reason.MITIGATION_APPLIED,
                f"step {step.name} ({step.action}) succeeded",
            )
        return b.decision()
    if step_status.attempts < 1 + step.retries:
        step_status.state = StepState.PENDING
        tries = f"attempt {step_status.attempts} of {1 + step.retries}"
        b.record(Reason.STEP_RETRYING, f"step {step.name}: {tries} failed: {outcome.message}", warning=True)
        return b.decision()
    step_status.state = StepState.FAILED
    b.record(Reason.STEP_FAILED, f"step {step.name} failed: {outcome.message}", warning=True)
    return b.decision()


def _complete_health(b: _Builder, outcome: Outcome) -> Decision:
    if outcome.ok:
        b.status.resolvedAt = b.now
        b.advance(Event.STABILIZED)
        b.condition(ConditionType.RESOLVED, "True", Reason.STABILIZED, outcome.message)
        b.condition(
            ConditionType.RECONCILING, "False", Reason.RESOLVED, "health held for the stabilization window"
        )
        b.record(Reason.RESOLVED, f"resolved: {outcome.message}", counter="succeeded")
        return b.decision()
    since = b.status.monitoringSince or b.now
    playbook_window = b.inp.selection.playbook.spec.stabilizationSeconds if b.inp.selection.playbook else 0
    give_up = since + timedelta(seconds=playbook_window + HEALTH_GRACE_S)
    if b.now < give_up:
        b.condition(
            ConditionType.RECONCILING, "True", Reason.MONITORING, f"waiting for health: {outcome.message}"
        )
        b.wake.append(b.now + timedelta(seconds=HEALTH_RECHECK_S))
        return b.decision()
    message = f"health not restored {HEALTH_GRACE_S}s after the stabilization window: {outcome.message}"
    if b.condition(ConditionType.STALLED, "True", Reason.HEALTH_NOT_RESTORED, message):
        b.record(Reason.STALLED, message, warning=True, counter="failed")
    return b.decision()


# ----------------------------------------------------------------------------- action decisions


def scale_decision(before: int, params: ScaleAction, caps: list[int | None]) -> tuple[int, int]:
    """(replicas after, replicas wanted before capping) for a scale step from `before`: absolute
    `replicas` or `delta`, then capped by the step's `max`, the playbook's and the operator's caps.
    Shared by the action and by `kubectl incident plan`."""
    wanted = params.replicas if params.replicas is not None else before + (params.delta or 0)
    limits = [c for c in (params.max, *caps) if c is not None]
    return max(0, min([wanted, *limits])), wanted


def pods_to_delete(pods: list[tuple[str, bool]], only_unready: bool, budget: int) -> list[str]:
    """Which pods (name, ready) a deletePods step deletes: unready ones first, then by name,
    at most `budget`; with `only_unready`, no ready pod. Shared by the action and the plugin."""
    candidates = [p for p in pods if not p[1]] if only_unready else list(pods)
    candidates.sort(key=lambda p: (p[1], p[0]))
    return [name for name, _ in candidates[: max(0, budget)]]
