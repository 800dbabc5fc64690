"""Planning a playbook run: which step starts, waits or is skipped, monitoring, and each outcome. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from incident_operator.api.actions import ScaleAction
from incident_operator.api.base import WorkloadRef
from incident_operator.api.models import (
    PlaybookProgress,
    PlaybookSpec,
    Step,
    StepState,
    StepStatus,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.targets import MAX_TARGETS, TargetStatus
from incident_operator.api.timestamps import format_time
from incident_operator.core import pins, targets
from incident_operator.core.phases import Event
from incident_operator.core.planner.builder import Builder, acknowledge, backoff
from incident_operator.core.planner.model import (
    BUSY_RECHECK_S,
    BUSY_RECHECK_SLOW_S,
    BUSY_SLOW_AFTER_S,
    HEALTH_GRACE_S,
    HEALTH_RECHECK_S,
    Decision,
    Intent,
    Outcome,
    PlanInput,
)


def start_playbook(b: Builder, playbook: PlaybookSpec | None) -> Decision:
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
    snapshot = pins.snapshot(playbook)
    b.status.playbook = PlaybookProgress(
        name=selection.playbook.name,
        runId=f"r{b.status.runs}",
        generation=selection.playbook.generation,
        digest=pins.digest_of(snapshot),
        snapshot=snapshot,
        steps=[StepStatus(name=s.name, action=s.action) for s in playbook.steps],
    )
    pins.bind_approvals(b.inp.spec, b.status)
    if b.reason_of(ConditionType.STALLED) in (
        Reason.NO_MATCHING_PLAYBOOK,
        Reason.PLAYBOOK_NOT_FOUND,
        Reason.INVALID_PLAYBOOK,
    ):
        b.condition(ConditionType.STALLED, "False", Reason.PLAYBOOK_SELECTED, selection.message)
    b.record(Reason.PLAYBOOK_STARTED, selection.message, counter="runs")
    if b.inp.automation_acknowledges and not b.is_true(ConditionType.ACKNOWLEDGED):
        acknowledge(b, Reason.PLAYBOOK_STARTED, f"acknowledged: playbook {selection.playbook.name} started")
    return run_steps(b, playbook)


def run_steps(b: Builder, playbook: PlaybookSpec) -> Decision:
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
        if state is StepState.BLOCKED and step.continueOnFailure:
            continue  # it never holds the run; its warning said why it did not run
        if state is StepState.BLOCKED:
            retry_at = (step_status.finishedAt or b.now) + _recheck(b)
            if b.now < retry_at:
                b.wake.append(retry_at)
                return b.decision()
        if _alert_resolved_first(b, playbook, step):
            step_status.state = StepState.SKIPPED
            step_status.finishedAt = b.now
            step_status.message = _ALERT_RESOLVED_SKIP
            b.record(Reason.STEP_SKIPPED, f"step {step.name} skipped: {_ALERT_RESOLVED_SKIP}")
            _held_by_breaker(
                b, step, skipped=f"step {step.name} ({step.action}) was skipped: the alert resolved"
            )
            continue
        if step.when is not None and step_status.attempts == 0 and not _condition_met(step, progress.steps):
            step_status.state = StepState.SKIPPED
            step_status.finishedAt = b.now
            step_status.message = _skip_reason(step, progress.steps)
            b.record(Reason.STEP_SKIPPED, f"step {step.name} skipped: {step_status.message}")
            continue
        return _start_step(b, index, step, step_status, playbook)
    return _monitor(b, playbook)


UNBLOCKS = (Reason.MISCONFIGURED, Reason.NO_TARGET, Reason.OUT_OF_BOUNDS, Reason.TARGET_BUSY)
"""Stalls of a Blocked step, cleared once the step runs again."""


def _recheck(b: Builder) -> timedelta:
    """How soon a Blocked step is tried again: soon when it waits for another incident's lock
    (every BUSY_RECHECK_S, then every BUSY_RECHECK_SLOW_S once it has waited BUSY_SLOW_AFTER_S: a
    run may hold it for hours, waiting for an approval)."""
    if b.is_true(ConditionType.STALLED) and b.reason_of(ConditionType.STALLED) == Reason.TARGET_BUSY:
        since = b.transition_of(ConditionType.STALLED)
        if since is not None and b.now - since >= timedelta(seconds=BUSY_SLOW_AFTER_S):
            return timedelta(seconds=BUSY_RECHECK_SLOW_S)
        return timedelta(seconds=BUSY_RECHECK_S)
    return b.inp.access_recheck


def _resolve_targets(b: Builder, step: Step, step_status: StepStatus, playbook: PlaybookSpec) -> bool:
    """Before a step on the incident's own targets starts: which targets it acts on (recorded in
    the step's status, each with its own state), or, none or one outside the bounds, the step
    waits Blocked and nothing is touched. Once recorded, the targets stay those of the step.

    The run's targets are pinned per kind (`status.playbook.targets`, see `_pinned_resolution`):
    a person or alert intake editing spec.targets mid-run never makes a later step of the run act
    on other workloads of a kind an earlier step resolved; the edit applies from the next run."""
    if step_status.targets is not None:
        return True
    resolution = _pinned_resolution(b, step, playbook)
    if resolution is None:
        return True
    if resolution.blocked is None:
        step_status.targets = [TargetStatus(kind=t.kind, name=t.name) for t in resolution.targets]
        return True
    step_status.state = StepState.BLOCKED
    step_status.finishedAt = b.now
    step_status.message = resolution.message
    message = f"step {step.name} cannot run: {resolution.message}"
    if step.continueOnFailure:
        b.record(resolution.blocked, f"{message}; the run goes on (continueOnFailure)", warning=True)
        return False
    if b.condition(ConditionType.STALLED, "True", resolution.blocked, message):
        b.record(Reason.STALLED, message, warning=True)
    b.condition(ConditionType.RECONCILING, "False", resolution.blocked, message)
    b.wake.append(b.now + b.inp.access_recheck)
    return False


def _pinned_resolution(b: Builder, step: Step, playbook: PlaybookSpec) -> targets.Resolution | None:
    """What a step on the incident's targets acts on, against the run's pin of them.

    The rule: the run pins (`status.playbook.targets`) only what its steps resolved, per kind:
    a step of a kind the run pinned acts on the pinned workloads of that kind, whatever
    spec.targets says now, so a run never switches the workloads of a kind it resolved. A step
    of a kind nothing of the run resolved yet (none pinned, or every earlier resolution of it
    refused: NoTarget, OutOfBounds) resolves against spec.targets as it is now, and what it acts
    on is added to the pin: a person fixing spec.targets lets a waiting step go on, and a target
    the run never resolved never holds it. A step on every kind (`fromIncident: {}`) takes the
    pinned workloads of the kinds pinned and spec.targets' of the others. A status written before
    the pin existed resolves like a run that pinned nothing."""
    progress = b.status.playbook
    assert progress is not None  # noqa: S101 - a step belongs to a run
    labels = b.inp.workload_labels
    pinned = list(progress.targets or [])
    kind = step.target.fromIncident.kind if step.target and step.target.fromIncident else None
    kinds = {ref.kind for ref in pinned}
    if kind is not None and kind in kinds:
        source = f"the targets run {progress.runId} pinned"
        return targets.resolve_step(step, pinned, playbook, labels, source)
    named = [ref for ref in b.inp.spec.targets or [] if ref.kind not in kinds]
    if kind is None and pinned:
        source = f"the targets run {progress.runId} pinned, and spec.targets for other kinds"
        resolution = targets.resolve_step(step, [*pinned, *named], playbook, labels, source)
    else:
        resolution = targets.resolve_step(step, b.inp.spec.targets, playbook, labels)
    if resolution is None or resolution.blocked is not None:
        return resolution
    added = [ref for ref in resolution.targets if ref.kind not in kinds]
    if not added:
        return resolution
    if len(pinned) + len(added) > MAX_TARGETS:
        return targets.Resolution(
            blocked=Reason.OUT_OF_BOUNDS,
            message=f"run {progress.runId} would act on more than {MAX_TARGETS} targets: nothing is touched",
        )
    progress.targets = [*pinned, *added]
    b.record(
        Reason.TARGETS_PINNED,
        f"step {step.name}: run {progress.runId} acts on {_named(added)} (spec.targets now) and pins "
        "them: a later step of their kind acts on them; an edit of spec.targets for their kind "
        "applies from the next run",
    )
    return resolution


def pin_edited(pinned: list[WorkloadRef] | None, named: list[WorkloadRef] | None) -> list[WorkloadRef] | None:
    """What spec.targets (`named`) names now of the kinds the run pinned, when it differs from
    the pin (the run goes on with its pin for those kinds); None when it does not."""
    if not pinned:
        return None
    kinds = {ref.kind for ref in pinned}
    now = [ref for ref in named or [] if ref.kind in kinds]
    if {targets.key(r) for r in now} == {targets.key(r) for r in pinned}:
        return None
    return now


def targets_edited(b: Builder) -> None:
    """Say (timeline and Event, once per edit) that spec.targets no longer names, for a kind the
    run in flight pinned, what it pinned: the run goes on acting on its pin for that kind; the
    edit applies from the next run (a kind not pinned is taken from spec.targets as it is)."""
    progress = b.status.playbook
    if progress is None or progress.targets is None:
        return
    now = pin_edited(progress.targets, b.inp.spec.targets)
    if now is None:
        return
    message = (
        f"spec.targets changed during run {progress.runId} (of the kinds it pinned, now {_named(now)}): "
        f"the run goes on acting on its pinned targets ({_named(progress.targets)}); the edit applies "
        "from the next run"
    )
    said = [e.message for e in b.status.timeline or [] if e.type == Reason.TARGETS_CHANGED]
    if not said or said[-1] != message:
        b.record(Reason.TARGETS_CHANGED, message)


def _named(refs: list[WorkloadRef]) -> str:
    return ", ".join(targets.key(r) for r in refs) or "none"


_ALERT_RESOLVED_SKIP = (
    "the alert resolved before this mutating step ran (the Playbook's onAlertResolved: Continue runs it)"
)


def _alert_resolved_first(b: Builder, playbook: PlaybookSpec, step: Step) -> bool:
    """A mutating step not running yet (pending, awaiting approval, blocked, or between attempts)
    whose incident's alert has resolved: it is skipped, unless the Playbook opts out. A re-fire
    starts a new run (see `incident._follow_alert`)."""
    alert = b.inp.alert
    return (
        step.mutates
        and playbook.onAlertResolved == "SkipMutatingSteps"
        and alert is not None
        and alert.status == "resolved"
    )


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


def _start_step(
    b: Builder, index: int, step: Step, step_status: StepStatus, playbook: PlaybookSpec
) -> Decision:
    if not _resolve_targets(b, step, step_status, playbook):
        if step.continueOnFailure:
            return run_steps(b, playbook)  # it holds nothing: the next step
        return b.decision()
    approval = pins.approval_for(b.inp.spec, b.status, step.name)
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
    if _held_by_breaker(b, step):
        return b.decision()
    if approval is not None and step.requiresApproval and step_status.state is StepState.AWAITING_APPROVAL:
        run = b.status.playbook.runId if b.status.playbook else None
        b.record(
            Reason.APPROVED, f"step {step.name} approved by {approval.by} for run {run}", actor=approval.by
        )
    again = step_status.state is StepState.BLOCKED  # tried again quietly: the Stalled condition says why
    step_status.state = StepState.RUNNING
    step_status.attempts += 1
    step_status.startedAt = b.now
    step_status.finishedAt = None
    step_status.message = None
    b.advance(Event.MUTATING_STEP if step.mitigates else Event.DIAGNOSTIC_STEP)
    b.condition(
        ConditionType.RECONCILING, "True", Reason.STEP_RUNNING, f"step {step.name} ({step.action}) running"
    )
    attempt = f" (attempt {step_status.attempts} of {1 + step.retries})" if step_status.attempts > 1 else ""
    if not again:
        b.record(Reason.STEP_STARTED, f"step {step.name}: {step.action} started{attempt}")
    return b.decision(Intent("run-step", index))


def _forbidden(b: Builder) -> bool:
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


BREAKER_REASONS = (Reason.CIRCUIT_OPEN, Reason.STORM_GUARD)
BREAKER_STALLS = (Reason.BREAKER_UNAVAILABLE, Reason.ACTIONS_ABOVE_LIMIT)


@dataclass(frozen=True)
class _BreakerHold:
    """One kind of breaker hold: the condition it sets, the reasons it sets it with, and how it
    is cleared."""

    condition: ConditionType
    reasons: tuple[Reason, ...]
    cleared: Reason


_BREAKER_HOLDS = (
    # Stalled first: while the breaker cannot answer, a pause it said before stays as it was.
    _BreakerHold(ConditionType.STALLED, BREAKER_STALLS, Reason.UNBLOCKED),
    _BreakerHold(ConditionType.AUTOMATION_PAUSED, BREAKER_REASONS, Reason.AUTOMATION_RESUMED),
)


def _cleared_message(reason: str | None, step: Step) -> str:
    if reason == Reason.BREAKER_UNAVAILABLE:
        return "the breaker's state can be read and written again"
    if reason == Reason.ACTIONS_ABOVE_LIMIT:
        return f"step {step.name} ({step.action}) fits the breaker's limits now"
    return f"the breaker let step {step.name} ({step.action}) go on"


def _held_by_breaker(b: Builder, step: Step, *, skipped: str | None = None) -> bool:
    """Hold a mutating step the breaker refused (`inp.automation_hold`); diagnostic steps are
    never held. The circuit breaker or the storm guard (CircuitOpen, StormGuard): AutomationPaused
    with the reason naming the limit. The breaker's state unreadable (BreakerUnavailable, with the
    cause) or a step that can never fit a limit (ActionsAboveLimit): Stalled. Said once (a warning
    timeline entry and Event) when the hold starts or its reason changes; the words follow the
    breaker's (the count, when a slot frees, which limit: a stale "until" misleads); asked again
    at `retry_at`. A step that goes on after such a hold clears it, saying so; so does one
    `skipped` (why, said instead) while held, so no stale hold outlives it."""
    hold = b.inp.automation_hold if step.mutates and skipped is None else None
    for kind in _BREAKER_HOLDS:
        held = b.reason_of(kind.condition) if b.is_true(kind.condition) else None
        if hold is None or hold.reason not in kind.reasons:
            if held in kind.reasons:
                message = skipped or _cleared_message(held, step)
                b.condition(kind.condition, "False", kind.cleared, message)
                b.record(kind.cleared, message)
            continue
        message = f"step {step.name} ({step.action}) waits: {hold.message}"
        if b.condition(kind.condition, "True", hold.reason, message):
            b.record(hold.reason, message, warning=True)
        b.condition(ConditionType.RECONCILING, "False", hold.reason, message)
        b.wake.append(hold.retry_at)
        return True
    return False


def _monitor(b: Builder, playbook: PlaybookSpec) -> Decision:
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


def after_resolution(b: Builder, playbook: PlaybookSpec | None) -> Decision:
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
                and (
                    step_status.replicasBefore is not None
                    or any(t.replicasBefore is not None for t in step_status.targets or [])
                )
                and not step_status.reverted
            ):
                return b.decision(Intent("revert-scale", index))
    if not b.inp.busy and not b.status.settled:
        b.status.settled = True
    return b.decision()


# ----------------------------------------------------------------------------- outcomes


def complete(inp: PlanInput, intent: Intent, outcome: Outcome, playbook: PlaybookSpec) -> Decision:
    """Fold the outcome of an intent into the status (the engine persists the result)."""
    b = Builder(inp)
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
    if outcome.blocked is not None:
        return _blocked(b, step, step_status, outcome)
    if b.is_true(ConditionType.STALLED) and b.reason_of(ConditionType.STALLED) in UNBLOCKS:
        b.condition(ConditionType.STALLED, "False", Reason.UNBLOCKED, f"step {step.name} could run again")
    if outcome.ok:
        step_status.state = StepState.SUCCEEDED
        b.record(Reason.STEP_SUCCEEDED, f"step {step.name}: {outcome.message}")
        if step.mitigates and not b.is_true(ConditionType.MITIGATED):
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


def _blocked(b: Builder, step: Step, step_status: StepStatus, outcome: Outcome) -> Decision:
    """A step that cannot run until a person fixes something: Blocked, not Failed (no `when:
    stepFailed` fires, no attempt is used up); tried again after the access recheck interval.
    A step with continueOnFailure is left Blocked with a warning and the run goes on."""
    assert outcome.blocked is not None  # noqa: S101 - callers check
    step_status.state = StepState.BLOCKED
    step_status.attempts = max(0, step_status.attempts - 1)
    message = f"step {step.name} cannot run: {outcome.message}"
    if step.continueOnFailure:  # it may not hold the run: the run goes on without it
        b.record(outcome.blocked, f"{message}; the run goes on (continueOnFailure)", warning=True)
        return b.decision()
    if b.condition(ConditionType.STALLED, "True", outcome.blocked, message):
        b.record(Reason.STALLED, message, warning=True)
    b.condition(ConditionType.RECONCILING, "False", outcome.blocked, message)
    b.wake.append(b.now + _recheck(b))
    return b.decision()


def _complete_health(b: Builder, outcome: Outcome) -> Decision:
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
    pinned = b.inp.pinned or (b.inp.selection.playbook.spec if b.inp.selection.playbook else None)
    playbook_window = pinned.stabilizationSeconds if pinned is not None else 0
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
