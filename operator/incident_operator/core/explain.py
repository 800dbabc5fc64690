"""Why an incident is where it is: `status.explanation`, computed from what the planner decided. Pure.

Owns the explanation and nothing else: which Playbooks of the namespace were candidates and why
each was chosen, matched, did not match, was not considered or is Invalid (`matching.matches`
decides; this module only says which parts of a `match` held); the run and, for each step,
whether it ran, runs, waits or was skipped and why; what holds automation; what happens next.

It reads the planner's input and decision (`PlanInput`, `Decision`), never decides anything
itself, and says wait reasons generically from the conditions and step states the planner
records (AutomationPaused, Stalled, Reconciling), so a reason added to the planner shows up
here without a change. No time-varying words ("in 20s"): only stamps that are fixed until
something changes, so an unchanged explanation costs no write (`attach` keeps its `at`).
Bounded: at most EXPLANATION_CANDIDATES_MAX candidates, each candidate's and step's words cut
at ITEM_TEXT_MAX, the rest at EXPLANATION_TEXT_MAX.

Also the pure half of `kubectl incident explain --alert`: `replay`, what an alert's incident
would meet, with the same matcher, and what that cannot know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from incident_operator.api.models import (
    EXPLANATION_CANDIDATES_MAX,
    EXPLANATION_TEXT_MAX,
    CandidateVerdict,
    Condition,
    ExplainedCandidate,
    ExplainedHold,
    ExplainedStep,
    Explanation,
    IncidentSpec,
    IncidentStatus,
    Match,
    Phase,
    PlaybookProgress,
    PlaybookSpec,
    Step,
    StepState,
    StepStatus,
    StepVerdict,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import format_time
from incident_operator.core.matching import Candidate, Selection, matches
from incident_operator.core.planner import Decision, PlanInput, backoff
from incident_operator.core.planner.steps import pin_edited

_VERDICT_ORDER = {"Chosen": 0, "Matched": 1, "NotMatched": 2, "NotConsidered": 3, "Invalid": 4}

UNKNOWN_TO_A_REPLAY = (
    "access: whether the namespace opted in (the operator's remediator RoleBinding) is checked by "
    "the operator before each start",
    "cooldowns: the Playbook's cooldown on the incident's targets (claimed on the Playbook at the start)",
    "automation limits: open-incident caps and any circuit breaker or storm guard the operator applies "
    "at the time",
    "watched namespaces and the alert's token: the operator's --namespace flags and which token "
    "Alertmanager sends (a token bound to other namespaces is refused)",
)
"""What `replay` cannot know: decided by the operator when the alert arrives."""


ITEM_TEXT_MAX = 320
"""The longest `why` of one candidate or step: with at most EXPLANATION_CANDIDATES_MAX candidates
and 50 steps, the whole explanation stays within a few tens of kilobytes."""


def cut(text: str, limit: int = EXPLANATION_TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- candidates


def match_checks(match: Match, incident: IncidentSpec) -> tuple[list[str], list[str]]:
    """(the parts of `match` that hold, those that do not), in words; as `matching.matches` reads them."""
    source = incident.source
    labels = (source.labels if source else None) or {}
    alertname = source.alertname if source else None
    held: list[str] = []
    failed: list[str] = []

    def one_of(what: str, value: str | None, allowed: Sequence[str] | None) -> None:
        if allowed is None:
            return
        listed = ", ".join(str(a) for a in allowed)
        if value is not None and value in [str(a) for a in allowed]:
            held.append(f"{what} {value} in [{listed}]")
        elif value is None:
            failed.append(f"no {what} (not an alert's incident); wants one of [{listed}]")
        else:
            failed.append(f"{what} {value} not in [{listed}]")

    one_of("severity", str(incident.severity), match.severities)
    one_of("category", str(incident.category), match.categories)
    one_of("alertname", alertname, match.alertnames)
    for key, wanted in sorted((match.labels or {}).items()):
        found = labels.get(key)
        if found == wanted:
            held.append(f"label {key}={wanted}")
        elif found is None:
            failed.append(f"label {key} missing (wants {wanted})")
        else:
            failed.append(f"label {key}={found}, wants {wanted}")
    return held, failed


def candidates(
    incident: IncidentSpec,
    playbooks: Sequence[Candidate],
    invalid: Mapping[str, str],
    selection: Selection,
) -> tuple[list[ExplainedCandidate], int]:
    """Every Playbook of the namespace and why it was chosen or not; (the first ones, how many more)."""
    chosen = selection.playbook.name if selection.playbook is not None else None
    ref = incident.playbookRef.name if incident.playbookRef is not None else None
    out: list[ExplainedCandidate] = []
    for c in playbooks:
        held, failed = match_checks(c.spec.match, incident)
        fits = matches(c.spec.match, incident)  # the matcher decides; the checks only say why
        said = "; ".join(held) or "no match criteria: matches every incident"
        verdict: CandidateVerdict
        if c.name == chosen:
            why = "named by spec.playbookRef" if ref is not None else f"matches: {said}"
            verdict = "Chosen"
        elif ref is not None:
            verdict, why = "NotConsidered", f"spec.playbookRef names {ref}"
        elif fits:
            verdict, why = "Matched", f"matches ({said}), but {_beaten_by(c, selection)}"
        else:
            verdict = "NotMatched"
            why = "; ".join(failed) or "does not match (the matcher said so; no part of match names why)"
        out.append(
            ExplainedCandidate(
                name=c.name, verdict=verdict, priority=c.spec.priority, why=cut(why, ITEM_TEXT_MAX)
            )
        )
    for name, problem in invalid.items():
        why = cut(f"Invalid, never runs: {problem}", ITEM_TEXT_MAX)
        out.append(ExplainedCandidate(name=name, verdict="Invalid", why=why))
    out.sort(key=lambda e: (_VERDICT_ORDER[e.verdict], -(e.priority or 0), e.name))
    kept = out[:EXPLANATION_CANDIDATES_MAX]
    return kept, len(out) - len(kept)


def _beaten_by(loser: Candidate, selection: Selection) -> str:
    winner = selection.playbook
    if winner is None:
        return "another was chosen"
    if winner.spec.priority > loser.spec.priority:
        return f"{winner.name} has a higher priority ({winner.spec.priority})"
    return f"{winner.name} has the same priority and comes first by name"


# ----------------------------------------------------------------------------- holds


def hold_of(status: IncidentStatus) -> ExplainedHold | None:
    """What holds the incident's automation, as its conditions say (None: nothing, or resolved).
    Generic: AutomationPaused True, else Stalled True, else Reconciling False (Paused, cooldown,
    Forbidden, ... whatever reason), else Reconciling True waiting for approval."""
    conds = {c.type: c for c in status.conditions or []}
    resolved = conds.get(ConditionType.RESOLVED)
    if status.phase in (Phase.RESOLVED, Phase.CLOSED) or (resolved is not None and resolved.status == "True"):
        return None
    for type_ in (ConditionType.AUTOMATION_PAUSED, ConditionType.STALLED):
        found = conds.get(type_)
        if found is not None and found.status == "True":
            return _hold(found)
    reconciling = conds.get(ConditionType.RECONCILING)
    if reconciling is None:
        return None
    if reconciling.status == "False" and reconciling.reason not in (Reason.RESOLVED, Reason.CLOSED):
        return _hold(reconciling)
    if reconciling.status == "True" and reconciling.reason == Reason.AWAITING_APPROVAL:
        return _hold(reconciling)
    return None


def _hold(c: Condition) -> ExplainedHold:
    return ExplainedHold(type=c.type, reason=c.reason, message=cut(c.message or ""))


# ----------------------------------------------------------------------------- steps


def _state_of(steps: Sequence[StepStatus], name: str) -> StepState | None:
    return next((s.state for s in steps if s.name == name), None)


def _when_text(step: Step) -> str | None:
    if step.when is None:
        return None
    return f"runs only if step {step.when.step} {'failed' if step.when.stepFailed else 'succeeded'}"


def _skip_reason(step: Step | None, status: StepStatus, steps: Sequence[StepStatus], inp: PlanInput) -> str:
    """The reason of a Skipped step, from the same facts the planner skipped it on."""
    recorded = getattr(status, "reason", None)  # a step status that records its own reason wins
    if recorded:
        return str(recorded)
    if step is not None and step.when is not None:
        wanted = StepState.FAILED if step.when.stepFailed else StepState.SUCCEEDED
        if _state_of(steps, step.when.step) is not wanted:
            return "ConditionNotMet"
    if step is not None and step.mutates and inp.alert is not None and inp.alert.status == "resolved":
        return str(Reason.ALERT_RESOLVED)
    if inp.spec.closed:
        return str(Reason.CLOSED)
    if inp.spec.resolution is not None:
        return str(Reason.RESOLVED)
    return str(StepState.SKIPPED)


def explain_steps(
    inp: PlanInput,
    steps: Sequence[StepStatus],
    specs: Mapping[str, Step],
    hold: ExplainedHold | None,
    *,
    incident: str,
) -> list[ExplainedStep]:
    out: list[ExplainedStep] = []
    waiting_seen = False  # a step before this one runs or waits: this one comes after it
    for st in steps:
        step = specs.get(st.name)
        recorded = getattr(st, "reason", None)
        message = st.message or None
        verdict: StepVerdict
        reason: str | None = str(recorded) if recorded else None
        why: str | None = message
        if st.state is StepState.SUCCEEDED:
            verdict = "Ran"
        elif st.state is StepState.FAILED:
            verdict, reason = "Failed", reason or str(Reason.STEP_FAILED)
            if step is not None and step.continueOnFailure:
                why = f"{message or 'failed'} (continueOnFailure: the run went on)"
        elif st.state is StepState.SKIPPED:
            verdict, reason = "Skipped", _skip_reason(step, st, steps, inp)
        elif st.state is StepState.RUNNING:
            verdict = "Running"
            since = f" since {format_time(st.startedAt)}" if st.startedAt else ""
            why = f"attempt {st.attempts}{since}" + (f": {message}" if message else "")
            waiting_seen = True
        elif st.state is StepState.AWAITING_APPROVAL:
            verdict, reason = "Waits", reason or str(Reason.AWAITING_APPROVAL)
            why = f"waits for approval: kubectl incident approve {incident} {st.name}"
            waiting_seen = True
        elif st.state is StepState.BLOCKED:
            verdict = "Waits"
            if reason is None:
                reason = hold.reason if hold is not None and hold.type == ConditionType.STALLED else "Blocked"
            if hold is not None and hold.type != ConditionType.STALLED:
                why = f"{message or 'blocked'}; also held: {hold.reason}"
            waiting_seen = waiting_seen or not (step is not None and step.continueOnFailure)
        elif st.state is StepState.PENDING and not waiting_seen:
            waiting_seen = True
            if hold is not None:
                verdict, reason, why = "Waits", reason or hold.reason, hold.message or message
            elif st.attempts > 0 and st.finishedAt is not None:
                retries = step.retries if step is not None else 0
                verdict, reason = "Waits", reason or str(Reason.STEP_RETRYING)
                why = (
                    f"attempt {st.attempts} of {1 + retries} failed: {message or '?'}; next attempt at "
                    f"{format_time(st.finishedAt + backoff(st.attempts))}"
                )
            else:
                verdict = "Pending"
                why = (_when_text(step) if step is not None else None) or "next to run"
        elif st.state is StepState.PENDING:
            verdict = "Pending"
            why = (_when_text(step) if step is not None else None) or "after the steps before it"
        else:  # a state this version does not know: say it as it is
            verdict, reason = "Waits", reason or str(st.state)
            waiting_seen = True
        out.append(
            ExplainedStep(
                name=st.name,
                action=st.action,
                state=str(st.state),
                verdict=verdict,
                reason=reason,
                why=cut(why, ITEM_TEXT_MAX) if why else None,
            )
        )
    return out


# ----------------------------------------------------------------------------- next


def _next(
    inp: PlanInput,
    decision: Decision,
    hold: ExplainedHold | None,
    playbook: PlaybookSpec | None,
    *,
    incident: str,
    namespace: str,
) -> str:
    status = decision.status
    progress = status.playbook
    intent = decision.intent
    resolved = any(c.type == ConditionType.RESOLVED and c.status == "True" for c in status.conditions or [])
    step_name = ""
    if intent is not None and progress is not None and 0 <= intent.step < len(progress.steps):
        step_name = progress.steps[intent.step].name
    if status.phase is Phase.CLOSED:
        return "nothing: the incident is closed (read-only history)"
    if intent is not None and intent.kind == "revert-scale":
        return f"undo the scale of step {step_name} (revertOnResolve)"
    if resolved:
        again = " A re-fire of its alert reopens it." if inp.alert is not None else ""
        return f"nothing more: the incident is resolved; close it after the review.{again}"
    if intent is not None and intent.kind == "run-step":
        return f"step {step_name} ({progress.steps[intent.step].action if progress else '?'}) runs now"
    if intent is not None and intent.kind == "verify-health":
        return "the health check runs now (the stabilization window is over)"
    if inp.spec.paused:
        return f"nothing until a person resumes automation: kubectl incident resume {incident} -n {namespace}"
    if hold is not None:
        return _after_hold(inp, status, hold, incident, namespace)
    if progress is None:
        return "the chosen playbook starts at the next plan"
    for st in progress.steps:
        if st.state is StepState.PENDING and st.attempts > 0 and st.finishedAt is not None:
            return f"step {st.name} is tried again at {format_time(st.finishedAt + backoff(st.attempts))}"
    if status.monitoringSince is not None and playbook is not None:
        if inp.alert is not None and status.alertResolvedAt is None:
            return (
                "all steps done: waiting for the alert to resolve; then health must hold for "
                f"{playbook.stabilizationSeconds}s"
            )
        start = max(status.monitoringSince, status.alertResolvedAt or status.monitoringSince)
        until = start + timedelta(seconds=playbook.stabilizationSeconds)
        return f"all steps done: health is checked from {format_time(until)}, then the incident resolves"
    return "nothing is due; the operator plans again on any change"


def _after_hold(
    inp: PlanInput, status: IncidentStatus, hold: ExplainedHold, incident: str, namespace: str
) -> str:
    reason = hold.reason
    progress = status.playbook
    if reason == Reason.AWAITING_APPROVAL and progress is not None:
        waiting = next((s.name for s in progress.steps if s.state is StepState.AWAITING_APPROVAL), None)
        if waiting is not None:
            command = f"kubectl incident approve {incident} {waiting} -n {namespace}"
            return f"step {waiting} runs once approved: {command}"
    if reason == Reason.COOLDOWN_ACTIVE and inp.cooldown_until is not None:
        return f"the playbook starts when its cooldown ends ({format_time(inp.cooldown_until)})"
    if reason == Reason.FORBIDDEN:
        return (
            f"nothing until the namespace grants the operator access (checked again every "
            f"{int(inp.access_recheck.total_seconds())}s); then it goes on by itself"
        )
    if reason in (Reason.NO_MATCHING_PLAYBOOK, Reason.PLAYBOOK_NOT_FOUND, Reason.INVALID_PLAYBOOK):
        return "no playbook runs: a Playbook created or changed to fit is considered at once"
    if reason == Reason.STEP_FAILED:
        return (
            "nothing automatic: the run is stalled on a failed step; fix the cause and edit the Playbook "
            "(a new run starts with the edit), or resolve the incident"
        )
    if reason == Reason.TARGET_BUSY:
        return (
            "the step is tried again every few seconds and goes on by itself once the run of the "
            "incident holding its workload settles (the message names it)"
        )
    blocked = next((s for s in progress.steps if s.state is StepState.BLOCKED), None) if progress else None
    if blocked is not None and blocked.finishedAt is not None:
        again = format_time(blocked.finishedAt + inp.access_recheck)
        return f"step {blocked.name} is tried again at {again}; " + _until(reason)
    return f"automation waits ({hold.type}: {reason}) and goes on by itself once that clears"


def _until(reason: str) -> str:
    """What a Blocked step waits for, by the reason it waits."""
    if reason == Reason.NO_TARGET:
        return (
            "it waits (NoTarget) until spec.targets names a workload of the kind the step acts on, or "
            "the Playbook is edited (a new run)"
        )
    if reason == Reason.OUT_OF_BOUNDS:
        return (
            "it acts on nothing (OutOfBounds) until a person changes spec.targets (a kind no step "
            "of the run has resolved is read from it again), the workload's labels, or the Playbook's "
            "allowedTargets (an edit ends the run and starts a new one)"
        )
    return f"it waits ({reason}) until a person fixes what its message names"


# ----------------------------------------------------------------------------- the whole


def _pinned_targets(progress: PlaybookProgress, spec: IncidentSpec) -> str:
    """What the run says about the incident's targets it pinned (`status.playbook.targets`)."""
    if progress.targets is None:
        return ""
    pinned = [f"{t.kind}/{t.name}" for t in progress.targets]
    text = f"; it acts on the targets it pinned: {', '.join(pinned)}"
    now = pin_edited(progress.targets, spec.targets)
    if now is not None:
        named = ", ".join(f"{t.kind}/{t.name}" for t in now) or "none"
        text += f" (spec.targets now names {named}: the edit applies from the next run)"
    return text


def explain(
    inp: PlanInput,
    decision: Decision,
    playbooks: Sequence[Candidate],
    invalid: Mapping[str, str],
    *,
    incident: str,
    namespace: str,
) -> Explanation:
    """The explanation of `decision`, planned from `inp` over the namespace's `playbooks`."""
    status = decision.status
    selection = inp.selection
    listed, more = candidates(inp.spec, playbooks, invalid, selection)
    progress = status.playbook
    hold = hold_of(status)
    pinned = inp.pinned if progress is not None and inp.pinned is not None else None
    chosen = selection.playbook
    playbook = pinned or (chosen.spec if chosen is not None else None)
    if progress is not None and pinned is None and (chosen is None or chosen.name != progress.name):
        playbook = None  # a run without a copy whose playbook is gone: only its states are known
    specs = {s.name: s for s in playbook.steps} if playbook is not None else {}
    run_text: str | None = None
    if progress is not None:
        states: Sequence[StepStatus] = progress.steps
        gen = f" (generation {progress.generation}, pinned)" if progress.generation is not None else ""
        run_text = f"run {progress.runId or 'r1'} of playbook {progress.name}{gen}"
        if progress.newerGeneration is not None:
            run_text += f"; generation {progress.newerGeneration} is newer and applies from the next run"
        run_text += _pinned_targets(progress, inp.spec)
        if chosen is not None and chosen.name != progress.name:
            run_text += f"; a new run would choose {chosen.name}"
    elif playbook is not None:
        states = [StepStatus(name=s.name, action=s.action) for s in playbook.steps]
        run_text = f"no run yet: playbook {chosen.name if chosen else '?'} would run these steps"
    else:
        states = []
    steps = explain_steps(inp, states, specs, hold, incident=incident)
    return Explanation(
        at=inp.now,
        selection=cut(f"{selection.message} (Playbooks of namespace {namespace} only)"),
        candidates=listed,
        moreCandidates=more or None,
        playbook=progress.name if progress is not None else (chosen.name if chosen else None),
        runId=progress.runId if progress is not None else None,
        generation=progress.generation if progress is not None else None,
        run=cut(run_text) if run_text else None,
        steps=steps,
        hold=hold,
        next=cut(_next(inp, decision, hold, playbook, incident=incident, namespace=namespace)),
    )


def attach(decision: Decision, explanation: Explanation, previous: Explanation | None) -> Decision:
    """`decision` with `explanation` in its status; when it says what `previous` said, `previous`
    as it is (same `at`): an unchanged explanation changes no byte of the status."""
    if previous is not None and explanation.model_copy(update={"at": previous.at}) == previous:
        explanation = previous
    if decision.status.explanation == explanation:
        return decision
    status = decision.status.model_copy(update={"explanation": explanation})
    return replace(decision, status=status)


# ----------------------------------------------------------------------------- replay of an alert


def replay(
    spec: IncidentSpec,
    playbooks: Sequence[Candidate],
    invalid: Mapping[str, str],
    selection: Selection,
    *,
    incident: str,
    namespace: str,
    now: datetime,
) -> Explanation:
    """What the incident an alert opens would meet here, before the operator's own checks: the
    candidates (the same matcher), the chosen playbook's steps and what gates each; nothing of
    access, cooldowns or limits (see UNKNOWN_TO_A_REPLAY)."""
    listed, more = candidates(spec, playbooks, invalid, selection)
    chosen = selection.playbook
    steps: list[ExplainedStep] = []
    if chosen is not None:
        for step in chosen.spec.steps:
            gates = []
            if step.requiresApproval:
                gates.append(f"waits for approval (kubectl incident approve {incident} {step.name})")
            if step.when is not None:
                gates.append(_when_text(step) or "")
            if step.mutates and chosen.spec.onAlertResolved == "SkipMutatingSteps":
                gates.append("mutating: skipped if the alert resolves before it runs")
            steps.append(
                ExplainedStep(
                    name=step.name,
                    action=step.action,
                    state=str(StepState.PENDING),
                    verdict="Pending",
                    reason=str(Reason.AWAITING_APPROVAL) if step.requiresApproval else None,
                    why=cut("; ".join(gates), ITEM_TEXT_MAX) if gates else None,
                )
            )
        next_text = (
            f"the operator would open incident {incident} and start playbook {chosen.name}, if the "
            "namespace opted in, no cooldown applies and no automation limit holds it"
        )
    else:
        next_text = f"the operator would open incident {incident}; no playbook would run ({selection.reason})"
    return Explanation(
        at=now,
        selection=cut(f"{selection.message} (Playbooks of namespace {namespace} only)"),
        candidates=listed,
        moreCandidates=more or None,
        playbook=chosen.name if chosen is not None else None,
        run=cut(f"replay: playbook {chosen.name} would run these steps") if chosen is not None else None,
        steps=steps,
        next=cut(next_text),
    )
