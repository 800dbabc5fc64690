"""The step planner, driven through whole incidents with a clock that the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    Phase,
    PlaybookSpec,
    Severity,
    StepState,
    TimelineEntry,
)
from incident_operator.api.reasons import Reason
from incident_operator.core import pins
from incident_operator.core.conditions import find_condition
from incident_operator.core.matching import Candidate, Selection, select
from incident_operator.core.planner import (
    HEALTH_GRACE_S,
    HEALTH_RECHECK_S,
    TIMELINE_LIMIT,
    AlertState,
    Decision,
    Intent,
    Level,
    Outcome,
    PlanInput,
    bound_timeline,
    check_deadlines,
    complete,
    plan,
)
from incident_operator.settings.config import SeverityRule

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TARGET = {"kind": "Deployment", "name": "web"}
COLLECT = {"name": "collect", "collectEvidence": {"selector": {"app": "web"}}}
SCALE = {"name": "scale", "scale": {"target": TARGET, "replicas": 16}}
RESTART = {"name": "restart", "restart": {"target": TARGET}}


def incident(**extra: Any) -> IncidentSpec:
    return IncidentSpec.model_validate(
        {"title": "web down", "severity": "P1", "category": "availability", **extra}
    )


def playbook(*steps: dict[str, Any], **spec: Any) -> Candidate:
    body = {"steps": list(steps), "stabilizationSeconds": 30, **spec}
    return Candidate("pb", PlaybookSpec.model_validate(body))


class Run:
    """One incident under test: feeds plan/complete with the status the engine would persist."""

    def __init__(
        self, spec: IncidentSpec, *playbooks: Candidate, cooldown_until: datetime | None = None
    ) -> None:
        self.spec = spec
        self.playbooks = list(playbooks)
        self.status = IncidentStatus()
        self.now = T0
        self.cooldown_until = cooldown_until
        self.alert: AlertState | None = None
        self.forbidden: str | None = None
        self.waits_for_slot: str | None = None
        self.records: list[str] = []
        self.automation_acknowledges = False
        self.escalation: tuple[Level, ...] = ()
        self.repeat_of: str | None = None
        self.severity_rules: tuple[SeverityRule, ...] = ()
        self.response_targets: dict[Severity, timedelta] = {}
        self.response_target = timedelta(minutes=15)  # the incident's severity's, as the loop gives it

    def input(self) -> PlanInput:
        selection: Selection = select(self.spec, self.playbooks)
        pinned, live = None, None
        progress = self.status.playbook
        if progress is not None and progress.snapshot is not None:  # as the loop feeds a pinned run
            current = next((c for c in self.playbooks if c.name == progress.name), None)
            pinned = pins.pinned_spec(progress.snapshot, current.spec if current else None)
            if current is not None:
                live = pins.LiveVersion(current.generation, pins.digest(current.spec), current.spec)
        return PlanInput(
            pinned=pinned,
            live=live,
            spec=self.spec,
            status=self.status,
            generation=1,
            selection=selection,
            response_target=self.response_target,
            now=self.now,
            cooldown_until=self.cooldown_until,
            alert=self.alert,
            forbidden=self.forbidden,
            waits_for_slot=self.waits_for_slot,
            access_recheck=timedelta(seconds=30),
            automation_acknowledges=self.automation_acknowledges,
            escalation=self.escalation,
            repeat_of=self.repeat_of,
            severity_rules=self.severity_rules,
            response_targets=self.response_targets,
        )

    def plan(self) -> Decision:
        decision = plan(self.input())
        self.status = decision.status
        self.records += [r.reason for r in decision.records]
        return decision

    def complete(
        self, intent: Intent, ok: bool = True, message: str = "done", blocked: Reason | None = None
    ) -> Decision:
        spec = self.playbooks[0].spec
        decision = complete(self.input(), intent, Outcome(ok, message, blocked), spec)
        self.status = decision.status
        self.records += [r.reason for r in decision.records]
        return decision

    def condition(self, type_: str) -> dict[str, Any] | None:
        return find_condition([c.model_dump(mode="json") for c in self.status.conditions or []], type_)

    def phase(self) -> Phase | None:
        return self.status.phase

    def step(self, index: int) -> Any:
        assert self.status.playbook is not None
        return self.status.playbook.steps[index]


def test_without_a_playbook_the_incident_is_detected_and_stalled() -> None:
    run = Run(incident())
    decision = run.plan()
    assert decision.intent is None
    assert run.phase() is Phase.DETECTED
    assert run.status.acknowledgeBy == T0 + timedelta(minutes=15)
    assert decision.wake_at == T0 + timedelta(minutes=15)
    stalled = run.condition("Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "NoMatchingPlaybook")
    assert run.records == ["Detected", "Stalled"]


@pytest.mark.parametrize(("mitigates", "phase"), [(False, Phase.INVESTIGATING), (True, Phase.MITIGATING)])
def test_a_job_is_mutating_but_mitigates_only_when_it_says_so(mitigates: bool, phase: Phase) -> None:
    job = {"name": "check", "job": {"template": {"spec": {}}, "mitigates": mitigates}}
    candidate = playbook(job)
    run = Run(incident(), candidate)
    step = candidate.spec.steps[0]
    assert step.mutates  # opt-in, approvals, the alert-resolved rule and the breaker count it
    assert step.mitigates is mitigates
    assert run.plan().intent == Intent("run-step", 0)
    assert run.phase() is phase
    run.complete(Intent("run-step", 0), message="Job succeeded")
    mitigated = run.condition("Mitigated")
    assert (mitigated is not None and mitigated["status"] == "True") is mitigates
    assert (run.status.mitigatedAt is not None) is mitigates


def test_a_full_run_moves_through_every_phase() -> None:
    run = Run(incident(), playbook(COLLECT, SCALE))
    first = run.plan()
    assert first.intent == Intent("run-step", 0)
    assert run.phase() is Phase.INVESTIGATING  # Detected -> Investigating: no person acknowledged
    assert run.condition("Acknowledged") is None  # a playbook starting is not an acknowledgement
    assert run.status.acknowledgedAt is None
    assert run.step(0).state is StepState.RUNNING
    assert run.step(0).attempts == 1

    run.now += timedelta(seconds=2)
    run.complete(Intent("run-step", 0))
    second = run.plan()
    assert second.intent == Intent("run-step", 1)
    assert run.phase() is Phase.MITIGATING

    run.complete(Intent("run-step", 1), message="scaled web 3 -> 16")
    assert run.condition("Mitigated")["status"] == "True"
    assert run.status.mitigatedAt == run.now

    monitoring = run.plan()
    assert run.phase() is Phase.MONITORING
    assert monitoring.intent is None
    assert monitoring.wake_at == run.now + timedelta(seconds=30)

    run.now += timedelta(seconds=30)
    verify = run.plan()
    assert verify.intent == Intent("verify-health")
    run.complete(Intent("verify-health"), message="web 16/16 ready")
    assert run.phase() is Phase.RESOLVED
    assert run.condition("Resolved")["reason"] == "Stabilized"
    assert run.plan().intent is None
    assert run.records == [
        "Detected",
        "PlaybookStarted",
        "StepStarted",
        "StepSucceeded",
        "StepStarted",
        "StepSucceeded",
        "Monitoring",
        "Resolved",
    ]


def test_a_running_step_found_after_a_crash_is_resumed_not_restarted() -> None:
    run = Run(incident(), playbook(SCALE))
    run.plan()
    persisted = run.status.model_copy(deep=True)
    run.now += timedelta(minutes=1)
    again = plan(
        PlanInput(incident(), persisted, 1, select(incident(), run.playbooks), timedelta(minutes=15), run.now)
    )
    assert again.intent == Intent("run-step", 0)
    assert again.status == persisted  # nothing to write: same attempt, same start time
    assert again.records == []


def test_planning_twice_changes_nothing_the_second_time() -> None:
    run = Run(incident(), playbook(SCALE))
    run.plan()
    run.complete(Intent("run-step", 0))
    run.plan()
    settled = run.status.model_copy(deep=True)
    decision = run.plan()
    assert decision.status == settled
    assert decision.records == []


def test_retries_back_off_then_the_step_fails_and_stalls() -> None:
    run = Run(incident(), playbook({**RESTART, "retries": 1}))
    run.plan()
    run.complete(Intent("run-step", 0), ok=False, message="deployments.apps web not found")
    assert run.step(0).state is StepState.PENDING
    waiting = run.plan()
    assert waiting.intent is None
    assert waiting.wake_at == run.now + timedelta(seconds=1)
    run.now += timedelta(seconds=1)
    assert run.plan().intent == Intent("run-step", 0)
    assert run.step(0).attempts == 2
    run.complete(Intent("run-step", 0), ok=False, message="deployments.apps web not found")
    assert run.step(0).state is StepState.FAILED
    assert run.plan().intent is None
    stalled = run.condition("Stalled")
    assert stalled is not None
    assert stalled["reason"] == "StepFailed"
    assert "not found" in stalled["message"]
    assert run.records.count("StepRetrying") == 1
    assert run.records.count("StepFailed") == 1


def test_continue_on_failure_goes_on() -> None:
    run = Run(incident(), playbook({**COLLECT, "continueOnFailure": True}, SCALE))
    run.plan()
    run.complete(Intent("run-step", 0), ok=False, message="no logs")
    assert run.plan().intent == Intent("run-step", 1)
    assert run.condition("Stalled") is None


def test_a_step_that_needs_approval_waits_for_it() -> None:
    run = Run(incident(category="security"), playbook(COLLECT, {**SCALE, "requiresApproval": True}))
    run.plan()
    run.complete(Intent("run-step", 0))
    assert run.plan().intent is None
    assert run.step(1).state is StepState.AWAITING_APPROVAL
    assert run.condition("Reconciling")["reason"] == "AwaitingApproval"
    assert run.plan().records == []  # waiting is recorded once

    run.spec = incident(category="security", approvals=[{"step": "scale", "by": "alice"}])
    assert run.plan().intent == Intent("run-step", 1)
    assert "Approved" in run.records
    approved = next(e for e in run.status.timeline or [] if e.type == "Approved")
    assert (approved.actor, approved.message) == ("alice", "step scale approved by alice for run r1")


def test_paused_stops_at_the_step_boundary() -> None:
    run = Run(incident(paused=True), playbook(SCALE))
    decision = run.plan()
    assert decision.intent is None
    assert run.condition("Reconciling")["reason"] == "Paused"
    run.spec = incident()
    assert run.plan().intent == Intent("run-step", 0)


def test_response_target_breach_is_recorded_once_and_survives_late_ack() -> None:
    run = Run(incident(severity="P2"))
    run.plan()
    run.now += timedelta(minutes=16)
    run.plan()
    run.now += timedelta(minutes=1)
    run.plan()
    assert run.records.count("ResponseTargetBreached") == 1
    run.spec = incident(severity="P2", commander="alice")
    run.plan()
    assert run.phase() is Phase.ACKNOWLEDGED
    assert run.condition("ResponseTargetBreached")["status"] == "True"
    assert run.condition("Acknowledged")["reason"] == "CommanderAssigned"


def test_a_human_resolution_reverts_scaling_when_asked() -> None:
    run = Run(incident(), playbook(SCALE, revertOnResolve=True))
    run.plan()
    run.step(0).replicasBefore = 3
    run.step(0).replicasAfter = 16
    run.complete(Intent("run-step", 0))
    run.spec = incident(resolution={"summary": "fixed the queue consumer"})
    decision = run.plan()
    assert run.phase() is Phase.RESOLVED
    assert run.condition("Resolved")["reason"] == "DeclaredByHuman"
    assert decision.intent == Intent("revert-scale", 0)
    run.complete(Intent("revert-scale", 0), message="web 16 -> 3")
    assert run.step(0).reverted is True
    assert run.plan().intent is None


def test_closed_is_read_only_history() -> None:
    run = Run(incident(), playbook(SCALE))
    run.plan()
    run.spec = incident(closed=True)
    run.plan()
    assert run.phase() is Phase.CLOSED
    assert run.status.closedAt == T0
    run.spec = incident(closed=True, commander="late")
    closed = run.status.model_copy(deep=True)
    assert run.plan().status == closed


def test_cooldown_delays_the_playbook() -> None:
    until = T0 + timedelta(minutes=5)
    run = Run(incident(), playbook(SCALE), cooldown_until=until)
    decision = run.plan()
    assert decision.intent is None
    assert decision.wake_at == until
    assert run.condition("Reconciling")["reason"] == "CooldownActive"
    run.now = until
    assert run.plan().intent == Intent("run-step", 0)


def test_health_is_rechecked_for_a_grace_period_then_stalls_for_a_human() -> None:
    run = Run(incident(), playbook(SCALE))
    run.plan()
    run.complete(Intent("run-step", 0))
    run.plan()
    run.now += timedelta(seconds=30)
    assert run.plan().intent == Intent("verify-health")
    waiting = run.complete(Intent("verify-health"), ok=False, message="web 2/16 ready")
    assert waiting.wake_at == run.now + timedelta(seconds=HEALTH_RECHECK_S)
    assert run.condition("Stalled") is None
    assert run.condition("Reconciling")["message"] == "waiting for health: web 2/16 ready"
    assert waiting.records == []
    run.now += timedelta(seconds=HEALTH_GRACE_S)
    assert run.plan().intent == Intent("verify-health")
    run.complete(Intent("verify-health"), ok=False, message="web 2/16 ready")
    assert run.condition("Stalled")["reason"] == "HealthNotRestored"
    assert run.plan().intent is None
    assert run.phase() is Phase.MONITORING


def test_the_timeline_is_bounded_and_summarises_what_it_folds() -> None:
    entries = [TimelineEntry(time=T0, type="StepStarted", message=str(i)) for i in range(TIMELINE_LIMIT + 50)]
    bounded = bound_timeline(entries)
    assert len(bounded) == TIMELINE_LIMIT
    assert bounded[0].type == "Summary"
    assert bounded[0].message.startswith("summarised 51 earlier entries")
    assert bounded[-1].message == str(TIMELINE_LIMIT + 49)
    again = bound_timeline([*bounded, TimelineEntry(time=T0, type="X", message="new")])
    assert again[0].message.startswith("summarised 52 earlier entries")


def test_a_spec_change_restamps_observed_generation_without_a_new_record() -> None:
    run = Run(incident(paused=True), playbook(SCALE))
    run.plan()
    assert run.condition("Reconciling")["observedGeneration"] == 1
    later = PlanInput(
        run.spec, run.status, 2, select(run.spec, run.playbooks), timedelta(minutes=15), run.now
    )
    decision = plan(later)
    reconciling = next(c for c in decision.status.conditions or [] if c.type == "Reconciling")
    assert reconciling.observedGeneration == 2
    assert reconciling.lastTransitionTime == T0
    assert decision.records == []


def alert_run(stabilization: int = 30) -> Run:
    spec = incident(source={"type": "alert", "alertname": "ServiceDown", "fingerprint": "ab"})
    return Run(spec, playbook(SCALE, stabilizationSeconds=stabilization))


def test_an_alert_incident_waits_for_the_alert_then_the_window() -> None:
    run = alert_run()
    run.alert = AlertState("firing", T0)
    run.plan()
    run.complete(Intent("run-step", 0))
    assert run.plan().intent is None
    assert run.phase() is Phase.MONITORING
    run.now += timedelta(minutes=10)
    waiting = run.plan()
    assert waiting.intent is None  # still firing: no resolution however long health holds
    assert run.condition("Reconciling")["message"] == "all steps done; waiting for the alert to resolve"

    run.alert = AlertState("resolved", run.now)
    resolved = run.plan()
    assert "AlertResolved" in run.records
    assert resolved.wake_at == run.now + timedelta(seconds=30)
    run.now += timedelta(seconds=30)
    assert run.plan().intent == Intent("verify-health")


ALERT = {"type": "alert", "alertname": "ServiceDown", "fingerprint": "ab"}


def test_the_alert_resolving_mid_run_skips_the_mutating_steps_not_yet_running() -> None:
    """Robusta #345: the alert resolved, and the remaining steps acted on a recovered service."""
    gated = {**RESTART, "requiresApproval": True}
    run = Run(incident(source=ALERT), playbook(COLLECT, SCALE, gated, stabilizationSeconds=0))
    run.alert = AlertState("firing", T0)
    assert run.plan().intent == Intent("run-step", 0)
    run.alert = AlertState("resolved", T0 + timedelta(seconds=5))  # while evidence is collected
    run.now += timedelta(seconds=5)
    run.complete(Intent("run-step", 0))
    decision = run.plan()
    assert [s.state for s in run.status.playbook.steps] == [
        StepState.SUCCEEDED,
        StepState.SKIPPED,
        StepState.SKIPPED,
    ]
    assert run.step(1).message == (
        "the alert resolved before this mutating step ran (the Playbook's onAlertResolved: Continue runs it)"
    )
    assert run.records.count("StepSkipped") == 2
    assert decision.intent == Intent("verify-health")  # the health check still runs
    run.complete(Intent("verify-health"))
    assert run.phase() is Phase.RESOLVED


def test_a_step_awaiting_approval_or_retrying_is_skipped_when_the_alert_resolves() -> None:
    gated = {**SCALE, "requiresApproval": True}
    run = Run(incident(source=ALERT), playbook(gated, stabilizationSeconds=0))
    run.alert = AlertState("firing", T0)
    run.plan()
    assert run.step(0).state is StepState.AWAITING_APPROVAL
    run.alert = AlertState("resolved", T0 + timedelta(seconds=5))
    run.now += timedelta(seconds=5)
    run.plan()
    assert run.step(0).state is StepState.SKIPPED

    retried = Run(incident(source=ALERT), playbook({**RESTART, "retries": 2}, stabilizationSeconds=0))
    retried.alert = AlertState("firing", T0)
    retried.plan()
    retried.complete(Intent("run-step", 0), False, "timed out")
    retried.alert = AlertState("resolved", T0 + timedelta(seconds=1))
    retried.now += timedelta(minutes=1)
    retried.plan()
    assert retried.step(0).state is StepState.SKIPPED
    assert retried.step(0).attempts == 1  # no second attempt on a recovered service


def test_a_playbook_may_keep_acting_after_the_alert_resolves() -> None:
    run = Run(
        incident(source=ALERT), playbook(COLLECT, SCALE, stabilizationSeconds=0, onAlertResolved="Continue")
    )
    run.alert = AlertState("firing", T0)
    run.plan()
    run.alert = AlertState("resolved", T0 + timedelta(seconds=5))
    run.complete(Intent("run-step", 0))
    assert run.plan().intent == Intent("run-step", 1)


def test_a_person_opened_incident_has_no_alert_to_resolve() -> None:
    run = Run(incident(), playbook(COLLECT, SCALE))
    run.plan()
    run.complete(Intent("run-step", 0))
    assert run.plan().intent == Intent("run-step", 1)


def resolved_alert_run() -> Run:
    """An alert incident whose run scaled, whose alert resolved and which is Resolved."""
    run = alert_run(stabilization=0)
    run.alert = AlertState("firing", T0)
    run.plan()
    run.complete(Intent("run-step", 0))
    run.alert = AlertState("resolved", T0 + timedelta(seconds=5))
    run.now += timedelta(seconds=5)
    run.plan()
    run.complete(Intent("verify-health"))
    assert run.phase() is Phase.RESOLVED
    return run


def test_a_refire_reopens_a_resolved_incident_and_reruns_the_playbook() -> None:
    run = resolved_alert_run()

    run.alert = AlertState("firing", T0 + timedelta(minutes=3))
    run.now += timedelta(minutes=3)
    reopened = run.plan()
    assert run.phase() is Phase.INVESTIGATING
    assert "Refired" in run.records
    assert run.condition("Resolved")["reason"] == "Refired"
    assert reopened.intent is None  # the next run is chosen afresh, at once
    assert reopened.wake_at == run.now
    decision = run.plan()
    assert run.phase() is Phase.MITIGATING
    assert decision.intent == Intent("run-step", 0)
    assert run.step(0).attempts == 1  # a fresh run of the playbook


def test_a_namespace_that_did_not_opt_in_stalls_as_forbidden_until_it_does() -> None:
    run = Run(incident(), playbook(SCALE, RESTART))
    run.forbidden = "may not patch deployments/scale.apps in namespace shop: RoleBinding missing"
    held = run.plan()
    assert held.intent is None
    assert run.status.playbook is None  # nothing started: no run counted, no cooldown stamped
    assert held.wake_at == T0 + timedelta(seconds=30)
    stalled = run.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "Forbidden")
    assert "RoleBinding" in stalled["message"]
    assert run.condition("Reconciling")["reason"] == "Forbidden"
    assert run.records == ["Detected", "Stalled"]

    run.now += timedelta(seconds=30)
    run.plan()  # still forbidden: nothing new to record, no retry storm
    assert run.records == ["Detected", "Stalled"]

    run.forbidden = None
    run.now += timedelta(seconds=30)
    started = run.plan()
    assert started.intent == Intent("run-step", 0)
    assert run.condition("Stalled")["reason"] == "AccessGranted"
    assert run.condition("Stalled")["status"] == "False"
    assert run.step(0).attempts == 1
    assert "AccessGranted" in run.records


WAITS = (
    "automation waits: namespace shop has 3 open incidents, more than limits.maxOpenIncidentsPerNamespace (2)"
)


def test_an_incident_over_the_namespace_cap_is_recorded_and_its_automation_waits_until_a_slot_frees() -> None:
    run = Run(incident(), playbook(SCALE, RESTART))
    run.waits_for_slot = WAITS
    held = run.plan()
    assert held.intent is None
    assert run.status.playbook is None  # nothing started: no run, no attempt, no cooldown
    assert run.status.detectedAt == T0  # recorded, with its deadline
    paused = run.condition("AutomationPaused")
    assert (paused["status"], paused["reason"], paused["message"]) == ("True", "OpenIncidentLimit", WAITS)
    assert run.condition("Reconciling")["reason"] == "OpenIncidentLimit"
    assert run.records == ["Detected", "OpenIncidentLimit"]
    assert [r.warning for r in held.records if r.reason == "OpenIncidentLimit"] == [True]

    run.waits_for_slot = WAITS.replace("3 open", "7 open")  # more came: said once, in its first words
    run.now += timedelta(seconds=30)
    assert run.plan().intent is None
    assert run.records == ["Detected", "OpenIncidentLimit"]
    assert run.condition("AutomationPaused")["message"] == WAITS

    run.waits_for_slot = None  # an older one resolved
    run.now += timedelta(seconds=30)
    started = run.plan()
    assert started.intent == Intent("run-step", 0)
    resumed = run.condition("AutomationPaused")
    assert (resumed["status"], resumed["reason"]) == ("False", "AutomationResumed")
    assert run.records[-3:] == ["AutomationResumed", "PlaybookStarted", "StepStarted"]
    run.plan()
    assert run.records.count("AutomationResumed") == 1


def test_while_automation_waits_people_deadlines_and_escalation_still_work() -> None:
    run = Run(incident(severity="P2"), playbook(SCALE))
    run.waits_for_slot = WAITS
    run.escalation = (Level(timedelta(minutes=5), ("pager",)),)
    run.plan()
    run.now += timedelta(minutes=16)
    assert run.plan().intent is None
    assert "Escalated" in run.records
    assert "ResponseTargetBreached" in run.records
    run.spec = incident(severity="P2", commander="alice")
    run.plan()
    assert run.condition("Acknowledged")["reason"] == "CommanderAssigned"
    assert run.status.playbook is None
    assert run.condition("AutomationPaused")["status"] == "True"

    run.spec = incident(severity="P2", commander="alice", resolution={"summary": "fixed by hand"})
    run.plan()
    assert run.phase() is Phase.RESOLVED
    released = run.condition("AutomationPaused")
    assert (released["status"], released["reason"]) == ("False", "Resolved")
    assert run.status.playbook is None  # never ran


def test_the_cap_holds_a_run_in_flight_too_and_it_goes_on_where_it_stopped() -> None:
    """Only when the cap is lowered below the runs in flight (the operator restarted with a
    smaller limit): the run stops at the step boundary, like spec.paused."""
    run = Run(incident(), playbook(SCALE, RESTART))
    run.complete(run.plan().intent or Intent("run-step", 0))
    run.waits_for_slot = WAITS
    assert run.plan().intent is None
    assert run.step(1).state is StepState.PENDING
    run.waits_for_slot = None
    assert run.plan().intent == Intent("run-step", 1)
    assert run.step(1).attempts == 1


def test_access_revoked_mid_run_holds_the_next_step_without_using_an_attempt() -> None:
    run = Run(incident(), playbook(SCALE, RESTART))
    run.complete(run.plan().intent or Intent("run-step", 0))
    run.forbidden = "may not patch deployments.apps in namespace shop"
    held = run.plan()
    assert held.intent is None
    assert run.step(1).state is StepState.PENDING
    assert run.step(1).attempts == 0
    assert run.condition("Stalled")["reason"] == "Forbidden"


def test_a_refire_starts_a_new_run_and_keeps_the_pods_deleted_so_far() -> None:
    kill = {"name": "kill", "deletePods": {"selector": {"app": "web"}, "max": 2}}
    run = Run(incident(source={"type": "alert", "alertname": "ServiceDown"}), playbook(kill))
    run.alert = AlertState("firing", T0)
    run.plan()
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r1"
    run.step(0).pods = ["web-a", "web-b"]
    run.complete(Intent("run-step", 0))
    run.alert = AlertState("resolved", T0 + timedelta(seconds=5))
    run.now += timedelta(seconds=10)
    run.plan()
    run.now += timedelta(seconds=30)
    run.complete(Intent("verify-health"))
    assert run.phase() is Phase.RESOLVED

    run.alert = AlertState("firing", run.now + timedelta(seconds=1))
    run.now += timedelta(seconds=2)
    run.plan()
    decision = run.plan()
    assert "Refired" in run.records
    assert run.status.podsDeleted == 2  # the budget spans runs
    assert run.status.runs == 2
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r2"
    assert decision.intent == Intent("run-step", 0)


def test_a_resolved_incident_settles_once_nothing_is_in_flight() -> None:
    run = Run(incident(resolution={"summary": "fixed by hand"}), playbook(SCALE))
    busy = PlanInput(**{**run.input().__dict__, "busy": True})
    decision = plan(busy)
    assert decision.status.phase is Phase.RESOLVED
    assert not decision.status.settled  # a notice is still being delivered
    run.status = decision.status
    run.plan()
    assert run.status.settled is True


def test_with_automation_counting_a_playbook_start_acknowledges_as_before() -> None:
    run = Run(incident(), playbook(COLLECT))
    run.automation_acknowledges = True
    run.plan()
    assert run.condition("Acknowledged")["reason"] == "PlaybookStarted"
    assert run.status.acknowledgedAt == T0
    assert run.records[:3] == ["Detected", "PlaybookStarted", "Acknowledged"]


def test_a_p1_that_automation_works_on_breaches_and_escalates_without_a_person() -> None:
    run = Run(incident(severity="P1"), playbook({"name": "wait", "httpCheck": {"url": "http://x/"}}))
    run.escalation = (Level(None, ("pager", "team-lead")),)
    assert run.plan().intent == Intent("run-step", 0)
    run.now += timedelta(minutes=15)
    run.plan()  # the step is still running: nobody acknowledged
    assert run.condition("ResponseTargetBreached")["status"] == "True"
    assert run.records.count("Escalated") == 1
    assert run.status.escalations == 1
    run.now += timedelta(minutes=5)
    run.plan()
    assert run.records.count("Escalated") == 1  # once per breach, not per plan
    run.spec = incident(severity="P1", commander="alice")
    run.plan()
    assert run.condition("Acknowledged")["reason"] == "CommanderAssigned"
    assert run.phase() is Phase.INVESTIGATING  # phases stay monotonic: no step back to Acknowledged


def test_an_incident_automation_resolves_in_time_never_breaches() -> None:
    run = Run(incident(severity="P1"), playbook(COLLECT, stabilizationSeconds=0))
    run.escalation = (Level(None, ("pager",)),)
    run.plan()
    run.complete(Intent("run-step", 0))
    assert run.plan().intent == Intent("verify-health")
    run.complete(Intent("verify-health"), message="healthy")
    assert run.phase() is Phase.RESOLVED
    run.now += timedelta(hours=2)
    run.plan()
    assert run.condition("ResponseTargetBreached") is None
    assert "Escalated" not in run.records


def test_a_repeat_is_marked_at_detection() -> None:
    run = Run(incident())
    run.repeat_of = "db-down-1"
    run.plan()
    assert run.status.repeatOf == "db-down-1"
    assert run.records[:2] == ["Detected", "Repeat"]
    run.repeat_of = "something-else"  # looked up again later: detection is not repeated
    run.plan()
    assert run.status.repeatOf == "db-down-1"


def test_action_items_are_counted_overdue_wakes_and_closing_with_open_ones_is_recorded() -> None:
    items = [
        {"id": "pool-alert", "title": "alert on the connection pool", "owner": "bob", "due": "2026-11-28"},
        {"id": "runbook", "title": "update the runbook", "done": True},
    ]
    run = Run(incident(actionItems=items, resolution={"summary": "pool raised"}))
    decision = run.plan()
    assert run.status.actionItems is not None
    assert (run.status.actionItems.open, run.status.actionItems.overdue) == (1, 0)
    assert run.condition("ActionItemsOpen")["reason"] == "Open"
    assert decision.wake_at == datetime(2026, 11, 29, tzinfo=UTC)  # the day after it is due
    run.now = datetime(2026, 11, 29, 0, 0, 1, tzinfo=UTC)
    run.plan()
    assert run.status.actionItems.overdue == 1
    assert run.condition("ActionItemsOpen")["reason"] == "Overdue"
    run.spec = incident(actionItems=items, resolution={"summary": "pool raised"}, closed=True)
    run.plan()
    assert run.phase() is Phase.CLOSED
    assert run.records[-2:] == ["Closed", "ClosedWithOpenActionItems"]
    assert "pool-alert" in run.status.timeline[-1].message


def test_all_action_items_done_clears_the_condition() -> None:
    done = [{"id": "a", "title": "x", "done": True}]
    run = Run(incident(actionItems=done))
    run.plan()
    assert run.condition("ActionItemsOpen")["status"] == "False"
    assert run.status.actionItems is not None
    assert run.status.actionItems.open == 0


def test_while_a_step_waits_only_the_deadline_is_checked() -> None:
    run = Run(incident(severity="P1"), playbook({"name": "wait", "httpCheck": {"url": "http://x/"}}))
    run.escalation = (Level(None, ("pager",)),)
    first = run.plan()
    assert first.intent == Intent("run-step", 0)
    early = check_deadlines(run.input())
    assert early.wake_at == T0 + timedelta(minutes=15)  # when to look again
    assert early.records == []
    run.now += timedelta(minutes=15)
    due = check_deadlines(run.input())
    assert [r.reason for r in due.records] == ["ResponseTargetBreached", "Escalated"]
    assert due.intent is None  # the running step is left alone
    assert due.status.playbook == run.status.playbook


def test_escalation_levels_follow_their_delays_until_a_person_acknowledges() -> None:
    """P1: on-call at once, the team lead after 15 min, management after 30 min."""
    run = Run(incident(severity="P1"), playbook({"name": "wait", "httpCheck": {"url": "http://x/"}}))
    run.escalation = (
        Level(timedelta(0), ("oncall",)),
        Level(timedelta(minutes=15), ("team-lead",)),
        Level(timedelta(minutes=30), ("management",)),
    )
    first = run.plan()
    assert run.status.escalation is not None
    assert run.status.escalation.level == 1  # at once
    escalated = [r for r in first.records if r.reason == "Escalated"]
    assert [r.channels for r in escalated] == [("oncall",)]
    assert first.wake_at == T0 + timedelta(minutes=15)  # the next level (before the 15 min target? equal)
    run.now += timedelta(minutes=14)
    assert check_deadlines(run.input()).status.escalation.level == 1
    run.now = T0 + timedelta(minutes=15)
    due = check_deadlines(run.input())
    assert [r.reason for r in due.records] == ["ResponseTargetBreached", "Escalated"]
    assert due.records[-1].channels == ("team-lead",)
    run.status = due.status
    run.now = T0 + timedelta(minutes=20)
    run.spec = incident(severity="P1", commander="alice")
    run.plan()  # a person acknowledges: no level after this one
    run.now = T0 + timedelta(minutes=45)
    late = check_deadlines(run.input())
    assert not [r for r in late.records if r.reason == "Escalated"]
    assert run.status.escalation is not None
    assert [(e.level, e.channels) for e in run.status.escalation.history] == [
        (1, ["oncall"]),
        (2, ["team-lead"]),
    ]
    assert run.status.escalations == 2


def test_levels_missed_while_the_operator_was_away_are_all_recorded_once() -> None:
    run = Run(incident(severity="P2"))
    run.escalation = (Level(timedelta(minutes=5), ("a",)), Level(timedelta(minutes=10), ("b",)))
    run.plan()
    run.now += timedelta(hours=1)
    run.plan()
    run.plan()
    assert run.records.count("Escalated") == 2


# ----------------------------------------------------------------------------- blocked steps


def test_a_misconfigured_step_is_blocked_not_failed_and_runs_again_once_fixed() -> None:
    notify = {
        "name": "tell",
        "notify": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}, "message": "m"},
    }
    fallback = {
        "name": "fallback",
        "when": {"stepFailed": "tell"},
        **{k: v for k, v in SCALE.items() if k != "name"},
    }
    run = Run(incident(), playbook(notify, fallback))
    assert run.plan().intent == Intent("run-step", 0)
    decision = run.complete(Intent("run-step", 0), False, "Secret hook is not shared", Reason.MISCONFIGURED)
    assert run.step(0).state is StepState.BLOCKED
    assert run.step(0).attempts == 0  # no attempt used up
    stalled = run.condition("Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "Misconfigured")
    assert stalled["message"] == "step tell cannot run: Secret hook is not shared"
    assert decision.wake_at == T0 + timedelta(seconds=30)
    # until the recheck, nothing runs (the stepFailed branch least of all)
    assert run.plan().intent is None
    assert run.step(1).state is StepState.PENDING
    run.now = T0 + timedelta(seconds=30)
    records_before = len(run.records)
    assert run.plan().intent == Intent("run-step", 0)
    assert "StepStarted" not in run.records[records_before:]  # tried again quietly
    run.complete(Intent("run-step", 0), True, "notified")
    stalled = run.condition("Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("False", "Unblocked")
    assert run.step(0).state is StepState.SUCCEEDED
    assert run.step(0).attempts == 1
    run.plan()
    assert run.step(1).state is StepState.SKIPPED  # the failure branch never fired


def test_a_misconfigured_step_that_may_fail_does_not_hold_the_run() -> None:
    notify = {
        "name": "tell",
        "continueOnFailure": True,
        "notify": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}, "message": "m"},
    }
    run = Run(incident(), playbook(notify, SCALE))
    assert run.plan().intent == Intent("run-step", 0)
    run.complete(
        Intent("run-step", 0), False, "Secret shop/hook (urlSecretRef) not found", Reason.MISCONFIGURED
    )
    assert run.step(0).state is StepState.BLOCKED
    assert run.records[-1] == "Misconfigured"
    assert run.condition("Stalled") is None
    assert run.plan().intent == Intent("run-step", 1)  # the run went on


# ----------------------------------------------------------------------------- pinned runs


def test_after_a_refire_the_new_run_uses_the_playbook_as_it_is_now() -> None:
    """The run r1 pinned scale-to-16; the Playbook is edited (a gate added, 2 replicas) before the
    alert fires again: r2 runs the edit, gate included, never r1's copy."""
    run = resolved_alert_run()
    gated = {**SCALE, "requiresApproval": True, "scale": {"target": TARGET, "replicas": 2}}
    run.playbooks = [Candidate("pb", playbook(gated).spec, generation=2)]

    run.alert = AlertState("firing", T0 + timedelta(minutes=3))
    run.now += timedelta(minutes=3)
    run.plan()
    decision = run.plan()
    assert decision.intent is None  # the new gate holds
    progress = run.status.playbook
    assert progress is not None
    assert progress.runId == "r2"
    assert progress.generation == 2
    assert progress.snapshot is not None
    assert progress.snapshot.steps[0]["scale"]["replicas"] == 2
    assert progress.snapshot.steps[0]["requiresApproval"] is True
    assert run.step(0).state is StepState.AWAITING_APPROVAL


def test_a_deleted_playbook_does_not_stop_the_run_in_flight() -> None:
    run = Run(incident(), playbook(SCALE, RESTART))
    run.complete(run.plan().intent or Intent("run-step", 0))
    run.playbooks = []  # deleted
    decision = run.plan()
    assert decision.intent == Intent("run-step", 1)  # its pinned copy goes on
    said = [e.message for e in run.status.timeline or [] if e.type == "PlaybookChanged"]
    assert said == ["playbook pb was deleted: run r1 goes on with its pinned copy (spec.paused stops it)"]
    run.plan()
    assert run.records.count("PlaybookChanged") == 1  # said once


def test_a_run_stalled_on_a_failed_step_goes_on_with_the_edit_keeping_unchanged_done_steps() -> None:
    broken = {"name": "restart", "restart": {"target": {"kind": "Deployment", "name": "ghost"}}}
    run = Run(incident(), playbook(SCALE, broken))
    run.complete(run.plan().intent or Intent("run-step", 0))
    run.complete(run.plan().intent or Intent("run-step", 1), ok=False, message="Deployment ghost not found")
    run.plan()
    assert run.condition("Stalled")["reason"] == "StepFailed"
    run.playbooks = [Candidate("pb", playbook(SCALE, RESTART).spec, generation=2)]
    edited = run.plan()
    assert edited.intent is None
    assert edited.wake_at == run.now
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r2"
    assert [s.state for s in run.status.playbook.steps] == [StepState.SUCCEEDED, StepState.PENDING]
    stalled = run.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("False", "PlaybookChanged")
    assert run.plan().intent == Intent("run-step", 1)  # the fixed step; scale is not done twice


def stalled_on_ghost(*first: dict[str, Any], **spec: Any) -> Run:
    """`first` steps succeed, then a restart of a Deployment that does not exist fails: Stalled."""
    ghost = {"name": "restart", "restart": {"target": {"kind": "Deployment", "name": "ghost"}}}
    run = Run(incident(), Candidate("pb", playbook(*first, ghost, **spec).spec, generation=1))
    for index in range(len(first)):
        run.complete(run.plan().intent or Intent("run-step", index))
    run.complete(run.plan().intent or Intent("run-step", len(first)), ok=False, message="not found")
    run.plan()
    assert run.condition("Stalled")["reason"] == "StepFailed"
    return run


def edit(run: Run, *steps: dict[str, Any], generation: int = 2, **spec: Any) -> None:
    run.playbooks = [Candidate("pb", playbook(*steps, **spec).spec, generation=generation)]


def test_an_edit_does_not_take_over_a_run_with_a_cooldown_on_workloads_it_never_claimed() -> None:
    run = stalled_on_ghost(SCALE, cooldownSeconds=600)
    elsewhere = {"name": "restart", "restart": {"target": {"kind": "Deployment", "name": "payments"}}}
    edit(run, SCALE, elsewhere, cooldownSeconds=600)
    assert run.plan().intent is None
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r1"  # still the stalled run
    said = [e.message for e in run.status.timeline or [] if e.type == "PlaybookChanged"]
    assert said == [
        "playbook pb changed (generation 2), but run r1 cannot go on with it: the edit acts on workloads "
        "the run did not (Deployment/payments), whose cooldown it never claimed; resolve the incident, "
        "or the next run (after a re-fire) uses it"
    ]
    run.plan()
    assert run.records.count("PlaybookChanged") == 1  # said once


def test_an_edit_does_not_take_over_when_revert_on_resolve_would_lose_what_to_revert_to() -> None:
    run = stalled_on_ghost(SCALE, revertOnResolve=True)
    run.step(0).replicasBefore = 2  # what the scale action records before it acts
    edit(run, {**SCALE, "scale": {"target": TARGET, "replicas": 8}}, RESTART, revertOnResolve=True)
    run.plan()
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r1"
    assert (
        "revertOnResolve must undo scale steps the edit changes or drops (scale)"
        in (run.status.timeline or [])[-1].message
    )


def test_an_edit_waits_for_a_step_in_flight_and_ignores_a_version_with_the_same_generation() -> None:
    run = stalled_on_ghost(SCALE)
    edit(run, SCALE, RESTART, generation=1)  # same generation: not an edit (a digest of another version)
    run.plan()
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r1"
    run.step(1).state = StepState.RUNNING  # e.g. resumed after a crash
    edit(run, SCALE, RESTART, generation=2)
    assert run.plan().intent == Intent("run-step", 1)  # the step in flight goes on first
    assert run.status.playbook.runId == "r1"


def test_a_step_whose_condition_runs_again_runs_again_too() -> None:
    check = {"name": "check", "httpCheck": {"url": "http://web.shop/healthz"}}
    after = {**SCALE, "when": {"stepSucceeded": "check"}}
    run = stalled_on_ghost(check, after)
    edit(run, {**check, "httpCheck": {"url": "http://web.shop/readyz"}}, after, RESTART)
    run.plan()
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r2"
    assert [s.state for s in run.status.playbook.steps] == [StepState.PENDING] * 3
