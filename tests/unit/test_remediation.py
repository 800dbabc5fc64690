"""The seed's remediation beyond scale and restart: rollback choice, httpCheck and promQuery
verdicts, Job names, conditional steps (`when`) and the checks the schema cannot express."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from incident_operator.api.actions import Expectation, HttpCheckAction, PromQueryAction
from incident_operator.api.keys import RESTARTED_AT
from incident_operator.api.models import Phase, Severity, StepState
from incident_operator.core import checks, revisions, validation
from incident_operator.core.planner import Intent
from incident_operator.core.revisions import Revision
from incident_operator.settings.config import FileConfig, SeverityRule
from tests.unit.test_planner import TARGET, Run, incident, playbook

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def rev(number: int, cause: str | None = None) -> Revision:
    return Revision(number, f"web-{number:x}", T0 + timedelta(hours=number), cause)


# ----------------------------------------------------------------------------- rollback


def test_rollback_goes_to_the_newest_revision_before_the_current_one() -> None:
    history = [rev(1), rev(3, "v3"), rev(4, "v4 bad")]
    assert revisions.choose(history, current=4, wanted=None) == rev(3, "v3")
    assert revisions.choose(history, current=3, wanted=None) == rev(1)


def test_rollback_to_a_given_revision_or_a_clear_reason_why_not() -> None:
    history = [rev(1), rev(2), rev(5)]
    assert revisions.choose(history, current=5, wanted=1) == rev(1)
    assert revisions.choose(history, current=5, wanted=3) == "revision 3 not found (known: 1, 2, 5)"
    assert revisions.choose([rev(1)], current=1, wanted=None) == "no revision before the current one (1)"
    assert "no rollout history" in str(revisions.choose([], current=1, wanted=None))
    assert revisions.choose(history, current=None, wanted=None) == "the current revision is unknown"


def test_a_replicaset_template_loses_only_its_hash_label_and_the_original_is_untouched() -> None:
    template = {"metadata": {"labels": {"app": "web", "pod-template-hash": "5d8f"}}, "spec": {"x": 1}}
    assert revisions.template_without_hash(template) == {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"x": 1},
    }
    assert template["metadata"]["labels"]["pod-template-hash"] == "5d8f"


def test_rollout_history_for_evidence_is_oldest_first_with_the_current_marked() -> None:
    history = revisions.history([rev(2, "v2"), rev(1, "v1")], current=2)
    assert [(h["revision"], h["current"], h["changeCause"]) for h in history] == [
        (1, False, "v1"),
        (2, True, "v2"),
    ]
    assert history[0]["created"] == "2026-11-27T13:00:00Z"


# ----------------------------------------------------------------------------- httpCheck


def smoke(**extra: Any) -> HttpCheckAction:
    return HttpCheckAction.model_validate(
        {"url": "http://web/v1/upload", "method": "POST", "body": "{}", **extra}
    )


def test_a_smoke_test_needs_the_status_the_text_and_the_latency() -> None:
    check = smoke(expectBodyContains='"stored": true', maxLatencyMs=500)
    assert checks.http_verdict(check, 200, '{"stored": true}', 120) == (True, "HTTP 200 in 120ms")
    assert checks.http_verdict(check, 500, '{"stored": true}', 120) == (
        False,
        "HTTP 500 in 120ms (expected 200)",
    )
    ok, said = checks.http_verdict(check, 200, '{"stored": false}', 120)
    assert not ok
    assert "lacks '\"stored\": true'" in said
    assert checks.http_verdict(check, 200, '{"stored": true}', 730) == (
        False,
        "HTTP 200 in 730ms, slower than 500ms",
    )


# ----------------------------------------------------------------------------- promQuery


def vector(*values: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [1700000000, v]} for m, v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_every_series_must_meet_the_expectation() -> None:
    below = Expectation.model_validate({"op": "<", "value": 0.05})
    ok, said = checks.query_verdict(vector(({"job": "web"}, "0.01"), ({"job": "api"}, "0.02")), below)
    assert ok
    assert said == "2 of 2 series < 0.05"
    ok, said = checks.query_verdict(vector(({"job": "web"}, "0.01"), ({"job": "api"}, "0.2")), below)
    assert not ok
    assert said == "1 of 2 series: 0.2 (expected < 0.05)"  # the offending value, never its labels
    assert "api" not in said


def test_no_data_nan_and_scalars() -> None:
    at_least = Expectation.model_validate({"op": ">=", "value": 1})
    assert checks.query_verdict(vector(), at_least) == (False, "no data (expected >= 1)")
    assert not checks.query_verdict(vector(({}, "NaN")), at_least)[0]
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "3"]}}
    assert checks.query_verdict(scalar, at_least) == (True, "1 of 1 series >= 1")


def test_a_wrong_query_is_an_error_with_prometheus_error_type_only() -> None:
    secret = 'parse error near {tenant="other-team", token="abc"}'
    with pytest.raises(checks.QueryError) as refused:
        checks.samples({"status": "error", "errorType": "bad_data", "error": secret})
    assert str(refused.value) == "Prometheus refused the query (bad_data)"  # never the server's text
    with pytest.raises(checks.QueryError) as odd:
        checks.samples({"status": "error", "errorType": "<b>other-team</b>", "error": secret})
    assert str(odd.value) == "Prometheus refused the query (error)"
    with pytest.raises(checks.QueryError, match="neither an instant vector nor a scalar"):
        checks.samples({"status": "success", "data": {"resultType": "matrix", "result": []}})


def test_a_condition_must_hold_without_a_break() -> None:
    holding = checks.Holding()
    assert holding.observe(True, T0) == timedelta(0)
    assert holding.observe(True, T0 + timedelta(seconds=4)) == timedelta(seconds=4)
    assert holding.observe(False, T0 + timedelta(seconds=5)) == timedelta(0)
    assert holding.observe(True, T0 + timedelta(seconds=6)) == timedelta(0)
    assert holding.observe(True, T0 + timedelta(seconds=9)) == timedelta(seconds=3)


# ----------------------------------------------------------------------------- job


def test_job_names_are_unique_per_attempt_and_fit_a_label_value() -> None:
    assert checks.job_name("alert-1f2e", "pg-isready", "r1", 1) == "alert-1f2e-pg-isready-r1-1"
    long = checks.job_name("a" * 60, "check-the-database", "r2", 3)
    assert len(long) <= 63
    assert long != checks.job_name("a" * 60, "check-the-database", "r2", 4)
    assert long == checks.job_name("a" * 60, "check-the-database", "r2", 3)


def test_a_job_template_that_cannot_run_is_reported_when_the_playbook_is_applied() -> None:
    from tests.unit.test_jobpolicy import RESTRICTED

    def job(template: dict[str, Any]) -> list[str]:
        return validation.problems({"steps": [{"name": "check", "job": {"template": template}}]})[1]

    assert job(RESTRICTED) == []
    assert job({}) == ["step check: job.template.spec: needs a pod spec"]
    pod = RESTRICTED["spec"]
    no_image = {"spec": {**pod, "containers": [{**pod["containers"][0], "image": ""}]}}
    assert job(no_image) == ["step check: job.template.spec.containers[0]: needs a name and an image"]
    assert job({"spec": {**pod, "restartPolicy": "Always"}}) == [
        "step check: job.template.spec.restartPolicy: must be Never or OnFailure for a Job"
    ]


# ----------------------------------------------------------------------------- when


SMOKE = {"name": "smoke", "httpCheck": {"url": "http://web/v1/upload", "method": "POST", "body": "{}"}}
ROLLBACK = {"name": "undo", "rollback": {"target": TARGET}, "when": {"stepFailed": "smoke"}}
NOTIFY_OK = {
    "name": "tell",
    "notify": {"webhook": {"urlSecretRef": {"name": "s", "key": "k"}}, "message": "{title}"},
    "when": {"stepSucceeded": "undo"},
}


def test_a_failed_smoke_test_rolls_back_instead_of_stalling() -> None:
    run = Run(incident(), playbook(SMOKE, ROLLBACK, NOTIFY_OK))
    assert run.plan().intent == Intent("run-step", 0)
    run.complete(Intent("run-step", 0), ok=False, message="HTTP 500 in 12ms (expected 200)")
    assert run.plan().intent == Intent("run-step", 1)  # the failure is a branch: no Stalled
    assert run.condition("Stalled") is None
    run.complete(Intent("run-step", 1), message="rolled back")
    assert run.phase() is Phase.MITIGATING
    assert run.plan().intent == Intent("run-step", 2)  # undo succeeded: tell


def test_a_passing_smoke_test_skips_the_rollback_and_what_depends_on_it() -> None:
    run = Run(incident(), playbook(SMOKE, ROLLBACK, NOTIFY_OK))
    run.plan()
    run.complete(Intent("run-step", 0))
    decision = run.plan()
    assert decision.intent is None
    assert [run.step(i).state for i in (1, 2)] == [StepState.SKIPPED, StepState.SKIPPED]
    assert run.step(1).message == "runs only if step smoke failed; it is Succeeded"
    assert run.step(2).message == "runs only if step undo succeeded; it is Skipped"
    assert run.records.count("StepSkipped") == 2
    assert run.status.monitoringSince == run.now


def test_a_failure_nobody_handles_still_stalls() -> None:
    run = Run(incident(), playbook(SMOKE, {**ROLLBACK, "when": {"stepSucceeded": "smoke"}}))
    run.plan()
    run.complete(Intent("run-step", 0), ok=False, message="HTTP 503")
    run.plan()
    stalled = run.condition("Stalled")
    assert stalled is not None
    assert stalled["reason"] == "StepFailed"


def test_when_must_name_an_earlier_step() -> None:
    later = {**SMOKE, "when": {"stepFailed": "undo"}}
    found = validation.problems({"steps": [later, {**ROLLBACK, "when": {"stepFailed": "nope"}}]})[1]
    assert found == [
        "step smoke: when names 'undo', which is not an earlier step",
        "step undo: when names 'nope', which is not an earlier step",
    ]


# ----------------------------------------------------------------------------- roles, severity


def test_roles_given_and_handed_over_are_timeline_entries_once() -> None:
    run = Run(incident(roles={"techLead": "bob"}))
    run.plan()
    run.plan()
    assert [e.message for e in run.status.timeline or [] if e.type == "RoleAssigned"] == [
        "Technical Lead: bob"
    ]
    run.spec = incident(roles={"techLead": "erin", "comms": "carol"})
    run.plan()
    entries = [(e.message, e.actor) for e in run.status.timeline or [] if e.type == "RoleAssigned"]
    assert entries[1:] == [
        ("Technical Lead: erin (was bob)", "human"),
        ("Communications Lead: carol", "human"),
    ]
    run.spec = incident(roles={"comms": "carol"})
    run.plan()
    assert (run.status.timeline or [])[-1].message == "Technical Lead: nobody (was erin)"


P2_TO_P1 = SeverityRule.model_validate({"from": "P2", "to": "P1", "notMitigatedWithinSeconds": 300})
TARGETS = {Severity.P1: timedelta(minutes=10), Severity.P2: timedelta(hours=1)}


def severity_run(**extra: Any) -> Run:
    run = Run(incident(severity="P2", **extra))
    run.severity_rules = (P2_TO_P1,)
    run.response_targets = TARGETS
    return run


def test_a_p2_not_mitigated_in_five_minutes_is_treated_as_p1() -> None:
    run = severity_run()
    first = run.plan()
    assert first.wake_at == T0 + timedelta(minutes=5)
    assert run.status.acknowledgeBy == T0 + timedelta(minutes=15)  # Run's own response target
    run.now = T0 + timedelta(minutes=5)
    decision = run.plan()
    assert run.status.effectiveSeverity is Severity.P1
    [change] = run.status.severityHistory or []
    assert (change.previous, change.severity, change.at, change.reason) == (
        Severity.P2,
        Severity.P1,
        run.now,
        "not mitigated within 300s",
    )
    assert run.status.acknowledgeBy == T0 + timedelta(minutes=10)  # P1's target, from detection
    assert decision.wake_at == run.now  # plan again at once with P1's policy
    assert run.spec.severity is Severity.P2
    run.now += timedelta(minutes=10)
    run.plan()
    assert len(run.status.severityHistory or []) == 1  # no P1 rule: once


def test_a_mitigated_or_resolved_incident_keeps_its_severity() -> None:
    run = severity_run()
    run.status.mitigatedAt = T0 + timedelta(minutes=1)
    run.plan()
    run.now = T0 + timedelta(hours=1)
    run.plan()
    assert run.status.effectiveSeverity is None


def test_the_response_target_breach_names_the_severity_it_is_treated_as() -> None:
    run = severity_run()
    run.plan()
    run.now = T0 + timedelta(minutes=5)
    run.plan()
    run.now = T0 + timedelta(minutes=10)
    run.plan()
    breached = run.condition("ResponseTargetBreached")
    assert breached is not None
    assert "(P1 response target)" in breached["message"]


def shipped_severity_rules() -> tuple[SeverityRule, ...]:
    """The `severityEscalation` of the install's config (manifests/install/config.yaml)."""
    path = Path(__file__).resolve().parents[2] / "manifests" / "install" / "config.yaml"
    config = yaml.safe_load(yaml.safe_load(path.read_text())["data"]["config.yaml"])
    return FileConfig.model_validate(config).severityEscalation


def test_a_severity_rule_takes_only_the_categories_and_alertnames_it_names() -> None:
    """The install's own rule, seed 1.1: ServiceDown (down a minute, P2) is P1 four minutes later."""
    [service_down] = shipped_severity_rules()
    assert (service_down.source, service_down.to, service_down.within) == (
        Severity.P2,
        Severity.P1,
        timedelta(minutes=4),
    )

    def treated_as(**extra: Any) -> Severity | None:
        run = Run(incident(severity="P2", playbookRef={"name": "none-here"}, **extra))
        run.severity_rules = (service_down,)
        run.plan()
        run.now = T0 + timedelta(minutes=4)
        run.plan()
        return run.status.effectiveSeverity

    alert = {"type": "alert", "alertname": "ServiceDown"}
    assert treated_as(source=alert) is Severity.P1
    assert treated_as(source={"type": "alert", "alertname": "QueueBacklog"}) is None
    assert treated_as() is None  # a person's incident: no alertname
    assert treated_as(source=alert, category="data") is None


ALL_TARGETS = {
    Severity.P1: timedelta(minutes=5),
    Severity.P2: timedelta(minutes=15),
    Severity.P3: timedelta(hours=1),
    Severity.P4: timedelta(hours=24),
}


def person_run(severity: str) -> Run:
    run = Run(incident(severity=severity, playbookRef={"name": "none-here"}))
    run.response_targets = ALL_TARGETS
    run.response_target = ALL_TARGETS[Severity(severity)]
    return run


def test_a_person_raising_p4_to_p1_twenty_minutes_in_moves_the_deadline_and_records_the_breach() -> None:
    run = person_run("P4")
    run.plan()
    assert run.status.declaredSeverity is Severity.P4
    assert run.status.acknowledgeBy == T0 + timedelta(hours=24)
    run.now = T0 + timedelta(minutes=20)
    run.spec = incident(severity="P1", playbookRef={"name": "none-here"})
    decision = run.plan()
    assert run.status.acknowledgeBy == T0 + timedelta(minutes=5)  # detection + P1's target
    [change] = run.status.severityHistory or []
    assert (change.previous, change.severity, change.at, change.by, change.direction) == (
        Severity.P4,
        Severity.P1,
        run.now,
        "person",
        "raised",
    )
    breached = run.condition("ResponseTargetBreached")
    assert breached is not None
    assert breached["status"] == "True"
    assert "(P1 response target)" in breached["message"]
    assert run.records[-2:] == ["SeverityChanged", "ResponseTargetBreached"]
    assert decision.wake_at == run.now  # planned again at once: P1's escalation policy
    run.plan()
    assert run.records.count("SeverityChanged") == 1  # noticed once


def test_a_person_lowering_the_severity_gives_the_later_deadline_and_lifts_a_breach_not_yet_due() -> None:
    run = person_run("P1")
    run.plan()
    run.now = T0 + timedelta(minutes=6)
    run.plan()
    assert run.condition("ResponseTargetBreached")["status"] == "True"
    run.spec = incident(severity="P3", playbookRef={"name": "none-here"})
    run.plan()
    assert run.status.acknowledgeBy == T0 + timedelta(hours=1)
    breached = run.condition("ResponseTargetBreached")
    assert breached is not None
    assert (breached["status"], breached["reason"]) == ("False", "SeverityChanged")
    assert [c.direction for c in run.status.severityHistory or []] == ["lowered"]
    assert run.records.count("ResponseTargetBreached") == 1  # the breach stays in the timeline
    run.now = T0 + timedelta(hours=1)
    run.plan()
    assert run.condition("ResponseTargetBreached")["status"] == "True"
    assert run.records.count("ResponseTargetBreached") == 2


def test_an_acknowledged_incident_keeps_its_deadline_but_records_the_change() -> None:
    run = person_run("P3")
    run.spec = incident(severity="P3", commander="alice", playbookRef={"name": "none-here"})
    run.plan()
    run.spec = incident(severity="P1", commander="alice", playbookRef={"name": "none-here"})
    run.now = T0 + timedelta(minutes=30)
    run.plan()
    assert run.status.acknowledgeBy == T0 + timedelta(hours=1)
    assert [(c.previous, c.severity) for c in run.status.severityHistory or []] == [
        (Severity.P3, Severity.P1)
    ]
    assert run.condition("ResponseTargetBreached") is None


def test_a_person_wins_over_an_escalation_rule_until_a_rule_fires_again() -> None:
    run = severity_run()  # P2, a rule makes it P1 after 5 min not mitigated
    run.plan()
    run.now = T0 + timedelta(minutes=5)
    run.plan()
    assert run.status.effectiveSeverity is Severity.P1
    run.now = T0 + timedelta(minutes=6)
    run.spec = incident(severity="P3")
    run.plan()
    assert run.status.effectiveSeverity is None  # spec.severity, as the person set it
    assert [(c.by, c.previous, c.severity) for c in run.status.severityHistory or []] == [
        ("rule", Severity.P2, Severity.P1),
        ("person", Severity.P1, Severity.P3),
    ]
    run.spec = incident(severity="P2")  # back to P2: the P2 rule counts from this change
    run.now = T0 + timedelta(minutes=7)
    run.plan()
    run.now = T0 + timedelta(minutes=11)
    run.plan()
    assert run.status.effectiveSeverity is None
    run.now = T0 + timedelta(minutes=12)
    run.plan()
    assert run.status.effectiveSeverity is Severity.P1


def test_severity_history_keeps_the_newest_ten_whatever_people_do() -> None:
    run = person_run("P4")
    run.plan()
    for i in range(15):
        run.now += timedelta(minutes=1)
        run.spec = incident(severity="P1" if i % 2 == 0 else "P4", playbookRef={"name": "none-here"})
        run.plan()
    history = run.status.severityHistory or []
    assert len(history) == 10
    assert history[-1].at == run.now
    assert run.records.count("SeverityChanged") == 15


def test_an_incident_recorded_before_declared_severity_existed_is_not_taken_for_a_change() -> None:
    run = person_run("P2")
    run.plan()
    run.status.declaredSeverity = None  # as stored by an older operator
    run.spec = incident(severity="P2", playbookRef={"name": "none-here"})
    run.plan()
    assert run.status.declaredSeverity is Severity.P2
    assert "SeverityChanged" not in run.records


def test_a_rollback_after_a_restart_goes_back_to_the_previous_version() -> None:
    v1 = {"spec": {"containers": [{"image": "web:1"}]}}
    v2 = {"spec": {"containers": [{"image": "web:2"}]}}
    restarted = {"metadata": {"annotations": {RESTARTED_AT: "2026-11-27T12:00:00Z"}}, **v2}
    history = [
        Revision(1, "web-1", None, None, fingerprint=revisions.fingerprint(v1)),
        Revision(2, "web-2", None, "deploy v2", fingerprint=revisions.fingerprint(v2)),
        Revision(3, "web-3", None, "deploy v2", fingerprint=revisions.fingerprint(restarted)),
    ]
    assert revisions.fingerprint(v2) == revisions.fingerprint(restarted)
    choice = revisions.choose(history, current=3, wanted=None)
    assert isinstance(choice, Revision)
    assert choice.name == "web-1"
    assert revisions.choose(history[1:], current=3, wanted=None) == (
        "every earlier revision runs what revision 3 runs (only restarts since)"
    )


class FakeKube:
    """Just what `rollback` reads and writes; records the patches."""

    def __init__(self, history: Any) -> None:
        self.history = history
        self.patches: list[Any] = []

    async def rollout_history(self, kind: str, name: str, namespace: str) -> Any:
        return self.history

    async def patch_workload(self, kind: str, name: str, namespace: str, body: Any) -> None:
        self.patches.append(body)


def test_a_rollback_rerun_after_a_crash_goes_to_the_revision_decided_before_it() -> None:
    """The decision (which ReplicaSet) is persisted before the patch; a re-run after a crash
    patches to that ReplicaSet's template, even though its revision number moved on meanwhile."""
    from incident_operator.adapters.kube import RolloutHistory
    from incident_operator.api.models import IncidentSpec, PlaybookSpec, StepStatus
    from incident_operator.controllers import actions

    v1 = {"spec": {"containers": [{"image": "web:1"}]}}
    v2 = {"spec": {"containers": [{"image": "web:2"}]}}
    before = RolloutHistory(
        [rev(1), Revision(2, "web-2", T0, "v2", fingerprint="b")],
        current=2,
        restores={"web-1": v1, "web-2": v2},
    )
    playbook = PlaybookSpec.model_validate({"steps": [{"name": "undo", "rollback": {"target": TARGET}}]})
    persisted: list[tuple[int | None, str | None]] = []

    def context(kube: FakeKube, status: StepStatus) -> Any:
        async def persist() -> None:
            persisted.append((status.revision, status.revisionName))

        return actions.ActionContext(
            kube=kube,
            outbound=None,
            limits=None,
            namespace="shop",
            incident="outage",
            incident_uid="uid",
            spec=IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "availability"}),
            status=None,
            playbook=playbook,
            step=playbook.steps[0],
            step_status=status,
            now=lambda: T0,
            persist=persist,
        )

    import asyncio

    status = StepStatus(name="undo", action="rollback", attempts=1, startedAt=T0)
    first = FakeKube(before)
    outcome = asyncio.run(actions.rollback(context(first, status)))
    assert outcome.ok, outcome
    assert persisted == [(1, "web-1")]  # written before the patch
    assert first.patches == [[{"op": "replace", "path": "/spec/template", "value": v1}]]

    # The crash came after the patch: the Deployment now runs revision 3 (web-1's ReplicaSet).
    after = RolloutHistory(
        [Revision(2, "web-2", T0, "v2", fingerprint="b"), Revision(3, "web-1", T0, None, fingerprint="a")],
        current=3,
        restores={"web-1": v1, "web-2": v2},
    )
    again = FakeKube(after)
    outcome = asyncio.run(actions.rollback(context(again, status)))
    assert outcome.ok
    assert persisted == [(1, "web-1")]  # no new decision
    assert again.patches == [[{"op": "replace", "path": "/spec/template", "value": v1}]]  # same target


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://web.shop.svc:8080/healthz", True),
        ("https://prom.shop.svc", True),
        ("http://web/users/a@b?x=1", True),  # an @ after the host is part of the path
        ("http://user:pass@web/healthz", False),
        ("http://web@attacker.example/", False),
        ("http://prom.shop.svc/admin#", False),
        ("http://web/x?y=1#z", False),
    ],
)
def test_a_step_url_has_no_credentials_and_no_fragment(url: str, allowed: bool) -> None:
    for model, extra in (
        (HttpCheckAction, {}),
        (PromQueryAction, {"query": "up", "expect": {"op": ">", "value": 0}}),
    ):
        if allowed:
            model.model_validate({"url": url, **extra})
        else:
            with pytest.raises(ValidationError, match="without user:password@ and without a #fragment"):
                model.model_validate({"url": url, **extra})
