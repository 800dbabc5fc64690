"""Planning an incident: acknowledgement, roles, severity, alerts, action items, escalation. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Literal

from incident_operator.api.models import (
    ROLE_TITLES,
    ActionItemCounts,
    EscalationEntry,
    EscalationStatus,
    IncidentSpec,
    IncidentStatus,
    Phase,
    PlaybookProgress,
    PlaybookSpec,
    Roles,
    RoleTold,
    Severity,
    SeverityChange,
    StepState,
    StepStatus,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import format_time
from incident_operator.core import paging, pins
from incident_operator.core.phases import Event
from incident_operator.core.planner.builder import Builder, acknowledge, skip_remaining
from incident_operator.core.planner.communication import communicate
from incident_operator.core.planner.model import Decision, PlanInput
from incident_operator.core.planner.steps import after_resolution, run_steps, start_playbook, targets_edited


def plan(inp: PlanInput) -> Decision:
    b = Builder(inp)
    spec, status, now = inp.spec, b.status, inp.now
    spec_changed = inp.generation is not None and inp.generation != status.observedGeneration
    if inp.generation is not None and b.phase is not Phase.CLOSED:
        status.observedGeneration = inp.generation  # this spec has been acted on (see `attention`)

    if status.detectedAt is None:
        status.detectedAt = now
        status.declaredSeverity = spec.severity
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
        skip_remaining(b, "the incident was closed before this step ran")
        status.closedAt = now
        b.advance(Event.CLOSED)
        b.condition(
            ConditionType.RECONCILING,
            "False",
            Reason.CLOSED,
            "the incident is closed; it is read-only history",
        )
        b.record(Reason.CLOSED, "post-incident review done; the incident is closed", actor="human")
        _slot_released(b, Reason.CLOSED, "the incident was closed before its automation started")
        if open_items:
            b.record(
                Reason.CLOSED_WITH_OPEN_ACTION_ITEMS,
                f"closed with open action items: {', '.join(open_items)}",
                actor="human",
            )
        return b.decision()

    if spec.commander and not b.is_true(ConditionType.ACKNOWLEDGED):
        acknowledge(
            b, Reason.COMMANDER_ASSIGNED, f"acknowledged by commander {spec.commander}", actor=spec.commander
        )
    _follow_roles(b)
    _tell_roles(b)
    _follow_declared_severity(b)
    if status.playbook is not None:
        pins.bind_approvals(spec, status)

    if spec.resolution and not b.is_true(ConditionType.RESOLVED):
        skip_remaining(b, "resolved by a human before this step finished")
        status.resolvedAt = now
        b.advance(Event.HUMAN_RESOLVED)
        b.condition(ConditionType.RESOLVED, "True", Reason.DECLARED_BY_HUMAN, spec.resolution.summary)
        b.condition(ConditionType.RECONCILING, "False", Reason.RESOLVED, "resolved by a human")
        b.condition(ConditionType.STALLED, "False", Reason.RESOLVED, "resolved")
        b.record(Reason.RESOLVED, f"resolved by a human: {spec.resolution.summary}", actor="human")
        _slot_released(b, Reason.RESOLVED, "the incident was resolved before its automation started")

    had_run = status.playbook is not None
    _follow_alert(b)
    if had_run and status.playbook is None:  # re-fired: the next run is chosen afresh, next plan
        b.wake.append(now)
        return b.decision()

    communicate(b)
    pinned = inp.pinned if status.playbook is not None else None
    playbook = pinned or (inp.selection.playbook.spec if inp.selection.playbook else None)
    if b.is_true(ConditionType.RESOLVED):
        return after_resolution(b, playbook)

    _check_response_target(b)
    _escalate(b)
    _escalate_severity(b)

    if _waits_for_slot(b):
        return b.decision()
    if spec.paused:
        if b.condition(ConditionType.RECONCILING, "False", Reason.PAUSED, "automation paused by spec.paused"):
            b.record(Reason.PAUSED, "automation paused by spec.paused", actor="human")
        return b.decision()

    if status.playbook is None:
        return start_playbook(b, playbook)
    if pinned is not None:
        return _run_pinned(b, pinned, spec_changed)
    if (
        playbook is None
        or inp.selection.playbook is None
        or inp.selection.playbook.name != status.playbook.name
    ):
        message = f"playbook {status.playbook.name} disappeared during the run"
        if b.condition(ConditionType.STALLED, "True", Reason.PLAYBOOK_NOT_FOUND, message):
            b.record(Reason.STALLED, message, warning=True)
        return b.decision()
    return run_steps(b, playbook)


def _waits_for_slot(b: Builder) -> bool:
    """Hold playbook automation while the namespace has more open incidents than its cap and
    this one is not among the first (`openlimit`): AutomationPaused, said once (a timeline entry,
    a warning Event); said again when a slot frees and automation goes on. Everything before
    this point (acknowledgement, roles, resolution, deadlines, escalation) works while it waits."""
    message = b.inp.waits_for_slot
    paused = _paused_by_limit(b)
    if message is None:
        if paused:
            resumed = "a slot under limits.maxOpenIncidentsPerNamespace is free: automation goes on"
            b.condition(ConditionType.AUTOMATION_PAUSED, "False", Reason.AUTOMATION_RESUMED, resumed)
            b.record(Reason.AUTOMATION_RESUMED, resumed)
        return False
    if paused:  # said already: keep its words (the count moves; a write per move would cost a flood)
        message = b.message_of(ConditionType.AUTOMATION_PAUSED) or message
    if b.condition(ConditionType.AUTOMATION_PAUSED, "True", Reason.OPEN_INCIDENT_LIMIT, message):
        b.record(Reason.OPEN_INCIDENT_LIMIT, message, warning=True)
    b.condition(ConditionType.RECONCILING, "False", Reason.OPEN_INCIDENT_LIMIT, message)
    return True


def _paused_by_limit(b: Builder) -> bool:
    return (
        b.is_true(ConditionType.AUTOMATION_PAUSED)
        and b.reason_of(ConditionType.AUTOMATION_PAUSED) == Reason.OPEN_INCIDENT_LIMIT
    )


def _slot_released(b: Builder, reason: Reason, message: str) -> None:
    """An incident that waited for a slot (or the breaker) and was resolved or closed first waits
    no more."""
    if _paused_by_limit(b) or (
        b.is_true(ConditionType.AUTOMATION_PAUSED)
        and b.reason_of(ConditionType.AUTOMATION_PAUSED) in (Reason.CIRCUIT_OPEN, Reason.STORM_GUARD)
    ):
        b.condition(ConditionType.AUTOMATION_PAUSED, "False", reason, message)


ENDS_ON_EDIT = (Reason.STEP_FAILED, Reason.MISCONFIGURED, Reason.OUT_OF_BOUNDS, Reason.NO_TARGET)
"""Stalls a Playbook edit can fix: a run stalled so ends when its Playbook changes (a new run,
with the edit's bounds and steps; a target the run never acted on was never pinned)."""


def _run_pinned(b: Builder, pinned: PlaybookSpec, spec_changed: bool) -> Decision:
    """Go on with the run in flight as it was pinned; say so when the Playbook or playbookRef
    changed meanwhile; end a run stalled on something only an edit fixes once the edit comes."""
    progress, live, spec = b.status.playbook, b.inp.live, b.inp.spec
    assert progress is not None  # noqa: S101 - callers check
    if b.reason_of(ConditionType.STALLED) == Reason.PLAYBOOK_NOT_FOUND and b.is_true(ConditionType.STALLED):
        b.condition(  # a stall of an earlier version: the run has its copy
            ConditionType.STALLED, "False", Reason.PLAYBOOK_SELECTED, f"run {progress.runId} has its copy"
        )
    if live is None:  # deleted: the run goes on with its copy (spec.paused stops automation)
        _say_once(
            b,
            Reason.PLAYBOOK_CHANGED,
            f"playbook {progress.name} was deleted: run {progress.runId} goes on with its pinned copy "
            "(spec.paused stops it)",
        )
    if spec_changed and spec.playbookRef is not None and spec.playbookRef.name != progress.name:
        message = (
            f"playbookRef names {spec.playbookRef.name}: run {progress.runId} of playbook "
            f"{progress.name} goes on; the change applies from the next run"
        )
        _say_once(b, Reason.PLAYBOOK_REF_IGNORED, message, warning=True)
    if (
        live is not None
        and live.spec is not None
        and progress.digest is not None
        and live.digest is not None
        and live.digest != progress.digest
    ):
        stalled = b.reason_of(ConditionType.STALLED) if b.is_true(ConditionType.STALLED) else None
        edited = (
            live.generation is None or progress.generation is None or live.generation != progress.generation
        )
        why_not = _cannot_take_over(progress, live.spec)
        if stalled in ENDS_ON_EDIT and edited and not _running(progress) and why_not is None:
            return _rerun_edited(b, str(stalled), live.generation, live.spec)
        if stalled in ENDS_ON_EDIT and edited and why_not is not None:
            progress.newerGeneration = live.generation
            _say_once(
                b,
                Reason.PLAYBOOK_CHANGED,
                f"playbook {progress.name} changed (generation {live.generation}), but run "
                f"{progress.runId} cannot go on with it: {why_not}; resolve the incident, or the "
                "next run (after a re-fire) uses it",
                warning=True,
            )
        elif progress.newerGeneration != live.generation:  # an Invalid version says so on the Playbook
            progress.newerGeneration = live.generation
            b.record(
                Reason.PLAYBOOK_CHANGED,
                f"playbook {progress.name} changed (generation {live.generation}): run {progress.runId} "
                f"goes on with generation {progress.generation}; the next run uses the newer version",
            )
    targets_edited(b)
    return run_steps(b, pinned)


def _running(progress: PlaybookProgress) -> bool:
    """A step is in flight (resumed after a crash, or a Blocked step tried again): it ends first."""
    return any(s.state is StepState.RUNNING for s in progress.steps)


def _cannot_take_over(old: PlaybookProgress, edited: PlaybookSpec) -> str | None:
    """Why the edited Playbook may not take over a stalled run in place, or None.

    With a cooldown, it may not act on workloads the run did not (their cooldowns were never
    claimed); it may not drop or change a scale step that succeeded while `revertOnResolve` must
    undo it (the replica count to go back to would be lost)."""
    if old.snapshot is None:
        return "the run has no pinned copy"
    pinned = pins.pinned_spec(old.snapshot)
    new_targets = pins.targets(edited) - pins.targets(pinned)
    if new_targets and (pinned.cooldownSeconds or edited.cooldownSeconds):
        return (
            f"the edit acts on workloads the run did not ({', '.join(sorted(new_targets))}), "
            "whose cooldown it never claimed"
        )
    if pinned.revertOnResolve:
        before = {s["name"]: s for s in old.snapshot.steps}
        after = {s["name"]: s for s in pins.snapshot(edited).steps}
        undone = [
            s.name
            for s in old.steps
            if s.state is StepState.SUCCEEDED
            and s.action == "scale"
            and s.replicasBefore is not None
            and after.get(s.name) != before.get(s.name)
        ]
        if undone:
            return f"revertOnResolve must undo scale steps the edit changes or drops ({', '.join(undone)})"
    return None


def _say_once(b: Builder, reason: Reason, message: str, *, warning: bool = False) -> None:
    """Record `message` unless it is the last thing of its kind the timeline says."""
    said = [e.message for e in b.status.timeline or [] if e.type == reason]
    if not said or said[-1] != message:
        b.record(reason, message, warning=warning)


def _rerun_edited(b: Builder, stalled: str, generation: int | None, edited: PlaybookSpec) -> Decision:
    """End the run in flight (stalled on `stalled`) and go on with the edited Playbook in a new run:
    steps that succeeded and are unchanged in the edit stay done; the rest run (again), and
    approvals, which belong to a run, are asked for anew. A step whose `when` names a step that
    runs again runs again too. Not a new Playbook run: its targets were claimed by the run it
    continues (`_cannot_take_over` refuses new ones) and `runs` does not move (its outcome is
    counted as usual). The first step starts at the next plan, with access reviewed for the copy."""
    status = b.status
    old = status.playbook
    assert old is not None  # noqa: S101 - callers check
    before = {s["name"]: s for s in (old.snapshot.steps if old.snapshot else [])}
    done = {s.name: s for s in old.steps if s.state is StepState.SUCCEEDED}
    snapshot = pins.snapshot(edited)
    kept: list[str] = []
    steps: list[StepStatus] = []
    for step, pinned in zip(edited.steps, snapshot.steps, strict=True):
        condition_kept = step.when is None or step.when.step in kept
        if step.name in done and before.get(step.name) == pinned and condition_kept:
            steps.append(done[step.name])
            kept.append(step.name)
        else:
            steps.append(StepStatus(name=step.name, action=step.action))
    redone = [s for s in old.steps if s.name not in kept]
    deleted = sum(s.pods_deleted() for s in redone)  # guardrail budgets span runs
    status.podsDeleted = (status.podsDeleted or 0) + deleted or None
    status.runs = (status.runs or 0) + 1
    run_id = f"r{status.runs}"
    status.playbook = PlaybookProgress(
        name=old.name,
        runId=run_id,
        generation=generation,
        digest=pins.digest_of(snapshot),
        snapshot=snapshot,
        targets=old.targets,  # the run it continues pinned them
        steps=steps,
    )
    status.monitoringSince = None
    unchanged = f", keeping the steps done and unchanged: {', '.join(kept)}" if kept else ""
    message = (
        f"run {old.runId} of playbook {old.name} ended: it was stalled ({stalled}) and the playbook "
        f"changed (generation {generation}); run {run_id} uses the edit{unchanged}"
    )
    b.condition(ConditionType.STALLED, "False", Reason.PLAYBOOK_CHANGED, message)
    b.record(Reason.PLAYBOOK_CHANGED, message)
    b.wake.append(b.now)
    return b.decision()


def check_deadlines(inp: PlanInput) -> Decision:
    """Only the time-driven part of a plan, for while a waiting step runs (it may wait for many
    minutes): the response target passing unacknowledged is recorded and escalated on time.
    Changes nothing else; the step's outcome is planned as usual when it comes."""
    b = Builder(inp)
    if b.phase in (Phase.RESOLVED, Phase.CLOSED) or b.is_true(ConditionType.RESOLVED):
        return b.decision()
    _check_response_target(b)
    _escalate(b)
    _escalate_severity(b)
    communicate(b, announce=False)
    return b.decision()


def effective_severity(spec: IncidentSpec, status: IncidentStatus) -> Severity:
    return status.effectiveSeverity or spec.severity


def _follow_roles(b: Builder) -> None:
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


def _tell_roles(b: Builder) -> None:
    """Tell each role's holder of their role, once (status.rolesTold): a person of the namespace's
    schedules (by `people[].user` or `name`) with an email or Slack id, through `oncall.channels`;
    anyone else is recorded as not told, with why. Not once the incident is resolved (an upgrade
    does not tell the holders of every old incident's roles)."""
    if b.is_true(ConditionType.RESOLVED):
        return
    told = list(b.status.rolesTold or [])
    for role, who in paging.roles_to_tell(b.inp.spec, told):
        title = ROLE_TITLES.get(role, "Incident Commander")
        person = paging.find_person(who, b.inp.namespace, b.inp.schedules)
        if person is None:
            why = f"not in an on-call schedule of {b.inp.namespace}"
        elif not person.reachable:
            why = f"{person.name} has no email or Slack id in {person.schedule}"
        elif not b.inp.tell_channels:
            why = "no oncall.channels configured"
        else:
            why = None
        told.append(
            RoleTold(
                role=role, who=who[: paging.WHO_MAX], person=person.name if person else None, told=why is None
            )
        )
        if why is None and person is not None:
            b.record(
                Reason.ROLE_TOLD,
                f"{who} told they are {title}, through {', '.join(b.inp.tell_channels)}",
                channels=b.inp.tell_channels,
                person=person,
                role=title,
            )
        else:
            b.record(Reason.ROLE_NOT_TOLD, f"{who} not told they are {title}: {why}")
    if len(told) != len(b.status.rolesTold or []):
        b.status.rolesTold = paging.roles_told_kept(told, b.inp.spec)


def _escalate_severity(b: Builder) -> None:
    """Treat the incident as more severe when a rule's time passes without a mitigation (or an
    acknowledgement): status.effectiveSeverity and its history; spec is never rewritten. The
    response deadline moves to the new severity's target (if not acknowledged yet) and the new
    severity's escalation policy applies from its first level (the engine plans again at once)."""
    status, spec = b.status, b.inp.spec
    if status.detectedAt is None:
        return
    current = effective_severity(spec, status)
    since = status.severityHistory[-1].at if status.severityHistory else status.detectedAt
    alertname = spec.source.alertname if spec.source is not None else None
    for rule in b.inp.severity_rules:
        if rule.source != current or not rule.applies_to(spec.category, alertname):
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
        _remember(
            status, SeverityChange(previous=current, severity=rule.to, at=b.now, reason=reason, by="rule")
        )
        target = b.inp.response_targets.get(rule.to)
        if target is not None and not b.is_true(ConditionType.ACKNOWLEDGED):
            deadline = status.detectedAt + target
            status.acknowledgeBy = min(status.acknowledgeBy or deadline, deadline)
        if status.escalation is not None:
            status.escalation.level = 0  # the new severity's policy, from its first level
        b.record(Reason.SEVERITY_ESCALATED, f"{current} -> {rule.to}: {reason}", warning=True)
        b.wake.append(b.now)
        return


SEVERITY_HISTORY_KEPT = 10
"""Entries of status.severityHistory kept (the newest; the schema's maximum)."""


def _remember(status: IncidentStatus, change: SeverityChange) -> None:
    status.severityHistory = [*(status.severityHistory or []), change][-SEVERITY_HISTORY_KEPT:]


def _follow_declared_severity(b: Builder) -> None:
    """A person edited spec.severity: it becomes the severity the incident is treated as (over an
    escalation rule's, until a rule fires again from it), recorded in severityHistory (raised or
    lowered, when) and the timeline. Until someone acknowledges, the response deadline becomes
    detection plus the new severity's target, earlier or later (already passed: breached at
    once), and the new severity's escalation policy applies from its first level."""
    status, spec = b.status, b.inp.spec
    if status.declaredSeverity is None:  # recorded before this field existed: nothing to compare
        status.declaredSeverity = spec.severity
        return
    if spec.severity == status.declaredSeverity or status.detectedAt is None:
        return
    current = status.effectiveSeverity or status.declaredSeverity  # as treated until this edit
    status.declaredSeverity = spec.severity
    status.effectiveSeverity = None
    if spec.severity == current:  # a rule had already brought it there
        return
    direction: Literal["raised", "lowered"] = "raised" if spec.severity < current else "lowered"
    reason = f"{direction} by a person (spec.severity)"
    _remember(
        status,
        SeverityChange(
            previous=current,
            severity=spec.severity,
            at=b.now,
            reason=reason,
            by="person",
            direction=direction,
        ),
    )
    target = b.inp.response_targets.get(spec.severity)
    moved = ""
    if target is not None and not b.is_true(ConditionType.ACKNOWLEDGED):
        status.acknowledgeBy = status.detectedAt + target
        moved = f"; acknowledge by {format_time(status.acknowledgeBy)}"
        if b.now < status.acknowledgeBy and b.is_true(ConditionType.RESPONSE_TARGET_BREACHED):
            b.condition(  # the breach stays in the timeline; the new deadline has not passed
                ConditionType.RESPONSE_TARGET_BREACHED,
                "False",
                Reason.SEVERITY_CHANGED,
                f"{spec.severity} response target: acknowledge by {format_time(status.acknowledgeBy)}",
            )
    if status.escalation is not None:
        status.escalation.level = 0  # the new severity's policy, from its first level
    b.record(
        Reason.SEVERITY_CHANGED,
        f"{current} -> {spec.severity}: {reason}{moved}",
        warning=direction == "raised",
        actor="human",
    )
    b.wake.append(b.now)


def _follow_alert(b: Builder) -> None:
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
        deleted = sum(step.pods_deleted() for step in status.playbook.steps)
        status.podsDeleted = (status.podsDeleted or 0) + deleted or None
    status.playbook = None  # the playbook runs again (its cooldown permitting); history stays in the timeline
    b.condition(
        ConditionType.RESOLVED, "False", Reason.REFIRED, "the alert fired again after it had resolved"
    )
    b.condition(ConditionType.STALLED, "False", Reason.REFIRED, "reopened")
    b.record(
        Reason.REFIRED, "the alert fired again: the incident is reopened", warning=True, actor="alertmanager"
    )


def _track_action_items(b: Builder) -> list[str]:
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


def _escalate(b: Builder) -> None:
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
        person, said = (None, "")
        if level.schedule is not None:  # addressed to whoever is on call in it now
            person, said = paging.on_call_at(level.schedule, b.inp.schedules, b.now)
            said = f"; to {said}" if person is not None else f"; {said}: to the channels' own recipients"
        escalation = status.escalation or EscalationStatus()
        escalation.level = number
        escalation.history.append(
            EscalationEntry(
                level=number,
                at=b.now,
                channels=list(level.channels),
                schedule=level.schedule,
                person=person.name if person is not None else None,
            )
        )
        status.escalation = escalation
        status.escalations = (status.escalations or 0) + 1
        b.record(
            Reason.ESCALATED,
            f"level {number} of {len(levels)}: {', '.join(level.channels)} "
            f"(no person has acknowledged){said}",
            warning=True,
            channels=level.channels,
            person=person,
        )


def _check_response_target(b: Builder) -> None:
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
