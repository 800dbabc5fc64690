"""`status.explanation` (core.explain): the candidates and why each was chosen or not, each step of
the run and why it ran, waits or was skipped, what holds automation and what happens next;
driven through the real planner, as the incident loop does, with a clock the test moves."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from incident_operator.api.models import (
    EXPLANATION_CANDIDATES_MAX,
    EXPLANATION_TEXT_MAX,
    Condition,
    Explanation,
    PlaybookSpec,
)
from incident_operator.api.reasons import Reason
from incident_operator.controllers.incident.commit import status_patch
from incident_operator.core.explain import ITEM_TEXT_MAX, attach, explain, hold_of, replay
from incident_operator.core.matching import Candidate, select
from incident_operator.core.planner import AlertState, AutomationHold, Decision, Intent, PlanInput, plan
from tests.unit.test_planner import COLLECT, RESTART, SCALE, T0, Run, incident

ALERT = {"type": "alert", "alertname": "WebDown", "labels": {"team": "shop", "namespace": "shop"}}


def candidate(name: str, *steps: dict[str, Any], **spec: Any) -> Candidate:
    body = {"steps": list(steps or [COLLECT]), "stabilizationSeconds": 30, **spec}
    return Candidate(name, PlaybookSpec.model_validate(body))


class Explained(Run):
    """A `Run` whose plans carry their explanation, as the incident loop attaches it."""

    invalid: dict[str, str] = {}  # noqa: RUF012 - per test, replaced as a whole

    def explained(self, decision: Decision) -> Decision:
        inp = self.input()
        why = explain(inp, decision, self.playbooks, self.invalid, incident="web", namespace="shop")
        return attach(decision, why, inp.status.explanation)

    def explained_from(self, inp: PlanInput) -> Decision:
        decision = plan(inp)
        why = explain(inp, decision, self.playbooks, self.invalid, incident="web", namespace="shop")
        return attach(decision, why, inp.status.explanation)

    def plan(self) -> Decision:
        decision = self.explained(plan(self.input()))
        self.status = decision.status
        return decision

    @property
    def why(self) -> Explanation:
        assert self.status.explanation is not None
        return self.status.explanation

    def verdicts(self) -> dict[str, tuple[str, str | None]]:
        return {s.name: (s.verdict, s.reason) for s in self.why.steps}


# ----------------------------------------------------------------------------- candidates


def test_every_candidate_says_why_it_was_chosen_matched_or_not() -> None:
    spec = incident(severity="P2", source=ALERT)
    run = Explained(
        spec,
        candidate("generic", priority=0),
        candidate("web-down", priority=10, match={"alertnames": ["WebDown"], "severities": ["P1", "P2"]}),
        candidate("only-p1", match={"severities": ["P1"]}),
        candidate("data", match={"categories": ["data"]}),
        candidate("other-team", match={"labels": {"team": "payments", "tier": "db"}}),
    )
    run.invalid = {"broken": "step s: unknown action"}
    run.plan()
    by_name = {c.name: c for c in run.why.candidates}
    assert [c.name for c in run.why.candidates][:2] == ["web-down", "generic"]  # chosen first
    assert by_name["web-down"].verdict == "Chosen"
    assert "alertname WebDown in [WebDown]" in by_name["web-down"].why
    assert "severity P2 in [P1, P2]" in by_name["web-down"].why
    assert by_name["generic"].verdict == "Matched"
    assert "web-down has a higher priority (10)" in by_name["generic"].why
    assert by_name["only-p1"].verdict == "NotMatched"
    assert by_name["only-p1"].why == "severity P2 not in [P1]"
    assert by_name["data"].why == "category availability not in [data]"
    assert by_name["other-team"].why == "label team=shop, wants payments; label tier missing (wants db)"
    assert by_name["broken"].verdict == "Invalid"
    assert "unknown action" in by_name["broken"].why
    assert run.why.playbook == "web-down"
    assert "namespace shop only" in run.why.selection


def test_a_manual_incident_has_no_alertname_and_says_so() -> None:
    run = Explained(incident(), candidate("alerts-only", match={"alertnames": ["WebDown"]}))
    run.plan()
    assert run.why.candidates[0].verdict == "NotMatched"
    assert run.why.candidates[0].why == "no alertname (not an alert's incident); wants one of [WebDown]"
    hold = run.why.hold
    assert hold is not None
    assert hold.reason == Reason.NO_MATCHING_PLAYBOOK
    assert "no playbook runs" in run.why.next
    assert run.why.steps == []


def test_with_a_playbook_ref_the_others_are_not_considered() -> None:
    run = Explained(
        incident(playbookRef={"name": "named"}), candidate("named"), candidate("better", priority=99)
    )
    run.plan()
    verdicts = {c.name: (c.verdict, c.why) for c in run.why.candidates}
    assert verdicts == {
        "named": ("Chosen", "named by spec.playbookRef"),
        "better": ("NotConsidered", "spec.playbookRef names named"),
    }


def test_the_candidates_are_bounded_and_the_rest_counted() -> None:
    many = [candidate(f"pb-{i:02}", match={"severities": ["P4"]}) for i in range(30)]
    run = Explained(incident(), *many)
    run.plan()
    assert len(run.why.candidates) == EXPLANATION_CANDIDATES_MAX
    assert run.why.moreCandidates == 30 - EXPLANATION_CANDIDATES_MAX


# ----------------------------------------------------------------------------- steps and next


def test_a_step_waiting_for_approval_and_the_steps_around_it() -> None:
    gated = {**RESTART, "requiresApproval": True}
    rollback = {**SCALE, "when": {"stepFailed": "restart"}}
    run = Explained(incident(), candidate("pb", COLLECT, gated, rollback))
    first = run.plan()
    assert first.intent == Intent("run-step", 0)
    assert run.verdicts()["collect"] == ("Running", None)
    assert run.why.next == "step collect (collectEvidence) runs now"
    assert run.why.run == "run r1 of playbook pb"

    run.now += timedelta(seconds=1)
    run.complete(Intent("run-step", 0), message="collected 3 pods")
    run.plan()
    assert run.verdicts() == {
        "collect": ("Ran", None),
        "restart": ("Waits", "AwaitingApproval"),
        "scale": ("Pending", None),
    }
    steps = {s.name: s for s in run.why.steps}
    assert steps["collect"].why == "collected 3 pods"
    assert steps["restart"].why == "waits for approval: kubectl incident approve web restart"
    assert steps["scale"].why == "runs only if step restart failed"
    assert run.why.next == "step restart runs once approved: kubectl incident approve web restart -n shop"


def test_a_step_skipped_because_its_condition_did_not_hold_says_so() -> None:
    rollback = {**SCALE, "when": {"stepFailed": "collect"}}
    run = Explained(incident(), candidate("pb", COLLECT, rollback))
    run.plan()
    run.complete(Intent("run-step", 0))
    run.plan()
    assert run.verdicts()["scale"] == ("Skipped", "ConditionNotMet")
    assert "all steps done" in run.why.next


def test_a_cooldown_holds_the_start_and_says_until_when() -> None:
    until = T0 + timedelta(minutes=5)
    run = Explained(incident(), candidate("pb", COLLECT, SCALE, cooldownSeconds=600), cooldown_until=until)
    run.plan()
    assert run.why.runId is None
    assert run.why.run == "no run yet: playbook pb would run these steps"
    assert run.verdicts() == {"collect": ("Waits", "CooldownActive"), "scale": ("Pending", None)}
    assert run.why.next == "the playbook starts when its cooldown ends (2026-11-27T12:05:00Z)"


def test_forbidden_access_holds_the_step_and_names_the_recheck() -> None:
    run = Explained(incident(), candidate("pb", SCALE))
    run.forbidden = "namespace shop has not opted in (RoleBinding incident-operator-remediator)"
    run.plan()
    assert run.verdicts() == {"scale": ("Waits", "Forbidden")}
    assert "opted in" in (run.why.steps[0].why or "")
    assert "checked again every 30s" in run.why.next


def test_a_resolved_alert_skips_a_mutating_step_with_that_reason() -> None:
    run = Explained(incident(source=ALERT), candidate("pb", COLLECT, SCALE))
    run.alert = AlertState("firing", T0)
    run.plan()
    run.alert = AlertState("resolved", T0 + timedelta(seconds=1))
    run.complete(Intent("run-step", 0))
    run.plan()
    assert run.verdicts() == {"collect": ("Ran", None), "scale": ("Skipped", "AlertResolved")}


def test_a_step_waiting_for_another_incidents_lock_says_it_goes_on_by_itself() -> None:
    run = Explained(incident(), candidate("pb", SCALE))
    run.plan()
    busy = "Deployment/web is busy: incident other holds it until its run settles"
    run.complete(Intent("run-step", 0), ok=False, message=busy, blocked=Reason.TARGET_BUSY)
    run.plan()
    assert run.verdicts() == {"scale": ("Waits", "TargetBusy")}
    assert "goes on by itself once the run of the incident holding its workload settles" in run.why.next


def test_a_misconfigured_step_waits_blocked_and_says_when_it_is_tried_again() -> None:
    check = {"name": "smoke", "httpCheck": {"url": "http://10.0.0.1/health"}}
    run = Explained(incident(), candidate("pb", check))
    run.plan()
    run.now += timedelta(seconds=2)
    run.complete(Intent("run-step", 0), ok=False, message="egress denied", blocked=Reason.MISCONFIGURED)
    run.plan()
    assert run.verdicts() == {"smoke": ("Waits", "Misconfigured")}
    assert run.why.next.startswith("step smoke is tried again at 2026-11-27T12:00:32Z")


THEIRS = {"target": {"fromIncident": {"kind": "Deployment"}}}
BOUNDED = {"kinds": ["Deployment"], "names": ["web*"]}


def test_a_step_with_no_target_waits_and_says_what_would_let_it_run() -> None:
    run = Explained(
        incident(), candidate("pb", {"name": "restart", "restart": THEIRS}, allowedTargets=BOUNDED)
    )
    run.plan()
    assert run.verdicts() == {"restart": ("Waits", "NoTarget")}
    [step] = run.why.steps
    assert "names no Deployment target" in (step.why or "")
    assert "until spec.targets names a workload of the kind the step acts on" in run.why.next
    assert "or the Playbook is edited (a new run)" in run.why.next


def test_a_target_outside_the_bounds_waits_naming_the_target_and_the_bound() -> None:
    spec = incident(targets=[{"kind": "Deployment", "name": "payments"}])
    run = Explained(spec, candidate("pb", {"name": "restart", "restart": THEIRS}, allowedTargets=BOUNDED))
    run.plan()
    assert run.verdicts() == {"restart": ("Waits", "OutOfBounds")}
    [step] = run.why.steps
    assert "Deployment/payments is outside allowedTargets.names ['web*']" in (step.why or "")
    assert "acts on nothing (OutOfBounds) until a person changes spec.targets" in run.why.next
    assert "allowedTargets (an edit ends the run and starts a new one)" in run.why.next


def test_a_busy_target_waits_naming_the_holder_and_goes_on_by_itself() -> None:
    spec = incident(targets=[{"kind": "Deployment", "name": "web"}])
    run = Explained(spec, candidate("pb", {"name": "restart", "restart": THEIRS}, allowedTargets=BOUNDED))
    run.plan()
    busy = "Deployment/web is busy: incident other runs a mutating step on it"
    run.complete(Intent("run-step", 0), ok=False, message=busy, blocked=Reason.TARGET_BUSY)
    run.plan()
    assert run.verdicts() == {"restart": ("Waits", "TargetBusy")}
    [step] = run.why.steps
    assert "incident other" in (step.why or "")
    assert "goes on by itself once the run of the incident holding its workload settles" in run.why.next


def test_a_reason_this_version_does_not_know_is_said_as_the_planner_recorded_it() -> None:
    """A circuit breaker, target bounds, ...: whatever condition holds automation is rendered."""
    run = Explained(incident(), candidate("pb", COLLECT, SCALE))
    run.plan()
    run.complete(Intent("run-step", 0))
    run.status.conditions = [
        *(run.status.conditions or []),
        Condition(
            type="AutomationPaused",
            status="True",
            reason="CircuitOpen",
            message="20 mutating actions in 5 minutes in namespace shop (limit 20)",
            lastTransitionTime=T0,
        ),
    ]
    hold = hold_of(run.status)
    assert hold is not None
    assert (hold.type, hold.reason) == ("AutomationPaused", "CircuitOpen")
    inp = run.input()
    why = explain(inp, Decision(run.status), run.playbooks, {}, incident="web", namespace="shop")
    steps = {s.name: s for s in why.steps}
    assert (steps["scale"].verdict, steps["scale"].reason) == ("Waits", "CircuitOpen")
    assert steps["scale"].why == "20 mutating actions in 5 minutes in namespace shop (limit 20)"
    assert (
        why.next == "automation waits (AutomationPaused: CircuitOpen) and goes on by itself once that clears"
    )


def test_a_long_message_is_cut_to_the_bound() -> None:
    run = Explained(incident(), candidate("pb", SCALE))
    run.forbidden = "x" * 5000
    run.plan()
    hold = run.why.hold
    assert hold is not None
    assert len(hold.message) == EXPLANATION_TEXT_MAX
    assert hold.message.endswith("...")
    assert len(run.why.steps[0].why or "") == ITEM_TEXT_MAX


def test_the_largest_explanation_stays_small() -> None:
    """50 steps and 30 candidates, every message as long as the planner could make it."""
    steps = [{"name": f"s{i:02}", "collectEvidence": {"selector": {"app": "web"}}} for i in range(50)]
    many = [
        candidate(f"pb-{i:02}-{'x' * 200}"[:63], *steps, match={"labels": {"k": "v" * 300}})
        for i in range(30)
    ]
    run = Explained(incident(), *many)
    run.forbidden = "y" * 5000
    run.plan()
    assert len(run.why.model_dump_json()) < 48_000


def test_resolved_and_closed_say_nothing_more_happens() -> None:
    run = Explained(incident(), candidate("pb", COLLECT))
    run.plan()
    run.spec = incident(resolution={"summary": "fixed by hand"})
    run.plan()
    assert run.why.hold is None
    assert run.why.next.startswith("nothing more: the incident is resolved")
    run.spec = incident(resolution={"summary": "fixed by hand"}, closed=True)
    run.plan()
    assert run.why.next == "nothing: the incident is closed (read-only history)"


# ----------------------------------------------------------------------------- no extra write


def test_an_unchanged_explanation_keeps_its_time_and_adds_nothing_to_the_patch() -> None:
    run = Explained(incident(), candidate("pb", {**RESTART, "requiresApproval": True}))
    run.plan()
    written = run.status
    assert written.explanation is not None
    assert written.explanation.at == T0
    run.now += timedelta(minutes=3)
    run.plan()  # nothing changed: the same words, the same time
    assert status_patch(written, run.status) == {}
    run.spec = incident(approvals=[{"step": "restart", "by": "alice"}])
    run.plan()
    patch = status_patch(written, run.status)
    assert patch["explanation"]["at"] == "2026-11-27T12:03:00Z"
    assert patch["explanation"]["steps"][0]["verdict"] == "Running"


def test_attach_keeps_the_decision_when_nothing_changed() -> None:
    run = Explained(incident(), candidate("pb", COLLECT))
    decision = run.plan()
    said = decision.status.explanation
    assert said is not None
    again = attach(decision, said.model_copy(update={"at": T0 + timedelta(hours=1)}), said)
    assert again is decision


# ----------------------------------------------------------------------------- replay


def test_a_replay_uses_the_matcher_and_says_what_gates_each_step() -> None:
    spec = incident(severity="P2", source=ALERT)
    playbooks = [
        candidate(
            "web-down",
            COLLECT,
            {**RESTART, "requiresApproval": True},
            match={"alertnames": ["WebDown"]},
        ),
        candidate("db", match={"categories": ["data"]}),
    ]
    selection = select(spec, playbooks, {})
    why = replay(spec, playbooks, {}, selection, incident="alert-abc", namespace="shop", now=T0)
    assert [(c.name, c.verdict) for c in why.candidates] == [("web-down", "Chosen"), ("db", "NotMatched")]
    steps = {s.name: s for s in why.steps}
    assert steps["collect"].why is None  # diagnostic: nothing gates it
    assert steps["restart"].reason == "AwaitingApproval"
    assert steps["restart"].why == (
        "waits for approval (kubectl incident approve alert-abc restart); "
        "mutating: skipped if the alert resolves before it runs"
    )
    assert "open incident alert-abc and start playbook web-down" in why.next
    nothing = replay(
        spec, playbooks[1:], {}, select(spec, playbooks[1:], {}), incident="a", namespace="s", now=T0
    )
    assert nothing.playbook is None
    assert "no playbook would run (NoMatchingPlaybook)" in nothing.next


def test_the_circuit_breakers_hold_shows_on_the_waiting_step_as_the_planner_records_it() -> None:
    """The breaker (another part of issue 21) holds a mutating step through the planner; the
    explanation names its reason and words without knowing about it."""
    message = "20 mutating actions in namespace shop within 300s (automation.maxMutatingActions.perNamespace)"
    run = Explained(incident(), candidate("pb", COLLECT, SCALE))
    run.plan()
    run.complete(Intent("run-step", 0))
    inp = dataclasses.replace(
        run.input(),
        automation_hold=AutomationHold(Reason.CIRCUIT_OPEN, message, T0 + timedelta(minutes=5)),
    )
    decision = run.explained_from(inp)
    why = decision.status.explanation
    assert why is not None
    assert decision.intent is None  # the step waits
    steps = {s.name: s for s in why.steps}
    assert (steps["scale"].verdict, steps["scale"].reason) == ("Waits", "CircuitOpen")
    assert message in (steps["scale"].why or "")
    assert why.hold is not None
    assert (why.hold.type, why.hold.reason) == ("AutomationPaused", "CircuitOpen")
    assert "CircuitOpen" in why.next
