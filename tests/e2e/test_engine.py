"""The remediation engine on the real local cluster: the seed's playbooks end to end, guardrails,
approvals, pausing, response targets, bad input, and exactly-once steps across a SIGKILL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, OperatorProcess
from tests.e2e.engine_helpers import (
    GROUP,
    TIMEOUT,
    VERSION,
    Scenario,
    assert_gated_playbook_ran_once,
    deploy_ref,
    start_gated_playbook,
)
from tests.httpserver import LocalServer, local_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


@pytest.fixture
def http() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


def test_queue_backlog_scales_workers_to_16_and_resolves(s: Scenario) -> None:
    s.deployment("workers", 2)
    s.playbook(
        "queue-backlog",
        [
            {"name": "scale-workers", "scale": {"target": deploy_ref("workers"), "replicas": 16}},
            {"name": "wait-workers", "waitReady": {"target": deploy_ref("workers")}, "timeoutSeconds": 60},
        ],
        match={"categories": ["performance"]},
    )
    s.incident("backlog", category="performance", targets=[deploy_ref("workers")])

    status = s.wait_phase("backlog", "Resolved")
    assert s.ready_replicas("workers") == 16
    steps = s.steps("backlog")
    assert steps["scale-workers"]["replicasBefore"] == 2
    assert steps["scale-workers"]["replicasAfter"] == 16
    assert all(step["state"] == "Succeeded" and step["attempts"] == 1 for step in steps.values())
    assert "acknowledgedAt" not in status  # a playbook starting is not a person acknowledging
    types = [entry["type"] for entry in status["timeline"]]
    assert types[:3] == ["Detected", "PlaybookStarted", "StepStarted"]
    assert types[-2:] == ["Monitoring", "Resolved"]
    events = s.wait_events(
        "backlog", lambda found: any(e.reason == "Resolved" for e in found), "the Resolved Event"
    )
    reasons = Counter(event.reason for event in events)
    assert reasons["Resolved"] == 1
    # folded: the Normal records of the status writes within a second share one Event, with the
    # last record's reason (PlaybookStarted's own unless the run was done within that second)
    assert reasons["Detected"] == 0
    first = next((e for e in events if e.reason == "PlaybookStarted"), None)
    first = first or next(e for e in events if e.reason == "Resolved")
    assert first.message.startswith(status["timeline"][0]["message"] + " | ")  # Detected rides on it
    for entry in status["timeline"]:  # every outcome is in an Event, its own or the one it was written with
        if entry["type"] in ("StepSucceeded", "Resolved"):
            assert any(entry["message"] in (e.message or "") for e in events), entry
    # Run records are batched per Playbook and written within about a second.
    pb = wait_until(
        lambda: (st := s.get("playbooks", "queue-backlog")["status"]).get("succeeded") and st,
        timeout=TIMEOUT,
        what="the run recorded on the Playbook",
    )
    assert pb["steps"] == 2
    assert "Deployment/workers" in pb["lastRuns"]
    assert (pb["runs"], pb["succeeded"], pb.get("failed", 0)) == (1, 1, 0)


def test_service_outage_collects_restarts_waits_and_checks_health(s: Scenario, http: LocalServer) -> None:
    s.deployment("web", 3)
    before = {
        p.metadata.name for p in s.core.list_namespaced_pod(s.namespace, label_selector="app=web").items
    }
    s.playbook(
        "service-outage",
        [
            {"name": "collect", "collectEvidence": {"selector": {"app": "web"}, "logLines": 50}},
            {"name": "restart-web", "restart": {"target": deploy_ref("web")}},
            {"name": "wait-web", "waitReady": {"target": deploy_ref("web")}, "timeoutSeconds": 60},
            {
                "name": "healthz",
                "httpCheck": {"url": http.url("/healthz"), "intervalSeconds": 1, "successThreshold": 2},
            },
        ],
        match={"severities": ["P1"], "categories": ["availability"]},
    )
    s.incident("outage", severity="P1", targets=[deploy_ref("web")])

    status = s.wait_phase("outage", "Resolved")
    assert [step["state"] for step in s.steps("outage").values()] == ["Succeeded"] * 4
    annotations = s.apps.read_namespaced_deployment("web", s.namespace).spec.template.metadata.annotations
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    after = {p.metadata.name for p in s.core.list_namespaced_pod(s.namespace, label_selector="app=web").items}
    assert not before & after  # every pod was replaced by the rollout
    assert http.hits("/healthz") >= 3  # 2 for the step, 1 for the health re-check after monitoring
    evidence = s.core.read_namespaced_config_map(status["evidenceRef"], s.namespace)
    assert "pods.yaml" in evidence.data
    logs = {k: v for k, v in evidence.data.items() if k.startswith("logs-")}
    assert sorted(logs) == sorted(f"logs-{p}.txt" for p in before)  # kwok serves them (ClusterLogs)
    assert all('upstream unavailable" upstream=postgres:5432' in text for text in logs.values())
    assert evidence.metadata.owner_references[0].name == "outage"
    assert s.condition("outage", "Mitigated")["status"] == "True"


def test_security_incident_isolates_only_after_approval(s: Scenario) -> None:
    s.deployment("api", 2)
    s.playbook(
        "security",
        [
            {"name": "collect", "collectEvidence": {"selector": {"app": "api"}}},
            {"name": "isolate-api", "isolate": {"selector": {"app": "api"}}, "requiresApproval": True},
        ],
        match={"categories": ["security"]},
    )
    s.incident("breach", severity="P1", category="security")

    s.wait_condition("breach", "Reconciling", reason="AwaitingApproval")
    assert s.steps("breach")["isolate-api"]["state"] == "AwaitingApproval"
    assert s.status("breach")["phase"] == "Investigating"
    assert s.networking.list_namespaced_network_policy(s.namespace).items == []

    s.patch_incident("breach", {"approvals": [{"step": "isolate-api", "by": "alice"}], "commander": "alice"})
    s.wait_phase("breach", "Resolved")
    policy = s.networking.read_namespaced_network_policy("breach-isolate", s.namespace)
    assert policy.spec.pod_selector.match_labels == {"app": "api"}
    assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]
    assert not policy.spec.ingress
    assert not policy.spec.egress
    timeline = [(e["type"], e.get("actor")) for e in s.status("breach")["timeline"]]
    assert ("Approved", "alice") in timeline


def test_an_edit_of_the_playbook_never_changes_the_run_in_flight(s: Scenario) -> None:
    """The auditor's bypass: a scale-to-3 step awaits approval; the Playbook is edited to 9; the
    responder approves what they saw. The run executes its pinned snapshot: 3, not 9."""
    s.deployment("cart", 1)
    gated: dict[str, Any] = {
        "name": "scale-cart",
        "requiresApproval": True,
        "scale": {"target": deploy_ref("cart"), "replicas": 3},
    }
    s.playbook("pinned", [gated], match={"severities": ["P3"]})
    s.incident("pin", severity="P3")
    s.wait_condition("pin", "Reconciling", reason="AwaitingApproval")
    pinned = s.status("pin")["playbook"]
    assert pinned["snapshot"]["steps"][0]["scale"]["replicas"] == 3
    generation = s.get("playbooks", "pinned")["metadata"]["generation"]
    assert pinned["generation"] == generation

    edited = {**gated, "scale": {**gated["scale"], "replicas": 9}}
    s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, s.namespace, "playbooks", "pinned", {"spec": {"steps": [edited]}}
    )
    wait_until(
        lambda: s.status("pin")["playbook"].get("newerGeneration") == generation + 1,
        timeout=TIMEOUT,
        what="the run notes the newer Playbook",
    )
    s.patch_incident("pin", {"approvals": [{"step": "scale-cart", "by": "alice", "run": pinned["runId"]}]})
    s.wait_phase("pin", "Resolved")
    assert s.apps.read_namespaced_deployment("cart", s.namespace).spec.replicas == 3
    changed = [e["message"] for e in s.status("pin")["timeline"] if e["type"] == "PlaybookChanged"]
    assert changed == [
        f"playbook pinned changed (generation {generation + 1}): run r1 goes on with generation "
        f"{generation}; the next run uses the newer version"
    ]


def test_a_run_stalled_on_a_failed_step_ends_when_the_playbook_is_fixed(s: Scenario) -> None:
    s.deployment("till", 1)
    s.playbook("typo", [{"name": "scale", "scale": {"target": deploy_ref("tlil"), "replicas": 2}}])
    s.incident("typo", playbookRef={"name": "typo"})
    s.wait_condition("typo", "Stalled", reason="StepFailed")
    fixed = [{"name": "scale", "scale": {"target": deploy_ref("till"), "replicas": 2}}]
    s.custom.patch_namespaced_custom_object(
        GROUP, VERSION, s.namespace, "playbooks", "typo", {"spec": {"steps": fixed}}
    )
    status = s.wait_phase("typo", "Resolved")
    assert status["playbook"]["runId"] == "r2"
    assert s.apps.read_namespaced_deployment("till", s.namespace).spec.replicas == 2
    assert any(
        e["type"] == "PlaybookChanged" and "ended: it was stalled (StepFailed)" in e["message"]
        for e in status["timeline"]
    )


def test_a_step_killed_mid_playbook_runs_exactly_once(
    s: Scenario, http: LocalServer, operator: OperatorProcess
) -> None:
    http.set_status("/gate", 503)  # holds the playbook at the httpCheck step until the test opens it
    generation = start_gated_playbook(s, http.url("/gate"), "crash", replicas=3, gate_timeout=120)
    wait_until(lambda: http.hits("/gate") >= 1, timeout=TIMEOUT, what="the gate polled")
    operator.kill()
    http.set_status("/gate", 200)
    operator.start()

    assert_gated_playbook_ran_once(s, "crash", replicas=3, generation=generation)
    assert len(s.steps("crash")["delete-one"]["pods"]) == 1


def test_paused_incident_waits_then_runs(s: Scenario) -> None:
    s.deployment("svc", 1)
    s.playbook("scale", [{"name": "scale", "scale": {"target": deploy_ref("svc"), "replicas": 2}}])
    s.incident("held", paused=True)
    s.wait_condition("held", "Reconciling", "False", reason="Paused")
    assert s.ready_replicas("svc") == 1
    assert "playbook" not in s.status("held")

    s.patch_incident("held", {"paused": False})
    s.wait_phase("held", "Resolved")
    assert s.ready_replicas("svc") == 2


def test_unacknowledged_incident_breaches_its_response_target(s: Scenario) -> None:
    s.incident("lonely", severity="P4")  # the test operator's P4 target is 3 seconds; no playbook here
    stalled = s.wait_condition("lonely", "Stalled", reason="NoMatchingPlaybook")
    assert "none of 0 playbooks" in stalled["message"]
    s.wait_condition("lonely", "ResponseTargetBreached", reason="AckDeadlinePassed")
    assert s.status("lonely")["phase"] == "Detected"
    assert any(e.reason == "ResponseTargetBreached" and e.type == "Warning" for e in s.events("lonely"))

    s.patch_incident("lonely", {"commander": "bob"})
    s.wait_condition("lonely", "Acknowledged", reason="CommanderAssigned")
    assert s.condition("lonely", "ResponseTargetBreached")["status"] == "True"


def test_human_resolution_reverts_the_scale_change(s: Scenario, http: LocalServer) -> None:
    s.deployment("batch", 2)
    http.set_status("/never", 500)
    s.playbook(
        "revert",
        [
            {"name": "scale", "scale": {"target": deploy_ref("batch"), "replicas": 4}},
            {
                "name": "probe",
                "httpCheck": {"url": http.url("/never"), "intervalSeconds": 1},
                "timeoutSeconds": 300,
            },
        ],
        revertOnResolve=True,
    )
    s.incident("manual")
    s.wait_step("manual", "probe", "Running")
    wait_until(lambda: s.ready_replicas("batch") == 4, timeout=TIMEOUT, what="scaled to 4")

    s.patch_incident("manual", {"resolution": {"summary": "fixed by hand", "rootCause": "bad config"}})
    s.wait_condition("manual", "Resolved", reason="DeclaredByHuman")
    wait_until(lambda: s.ready_replicas("batch") == 2, timeout=TIMEOUT, what="replicas reverted to 2")
    assert s.steps("manual")["scale"]["reverted"] is True

    s.patch_incident("manual", {"closed": True})
    s.wait_phase("manual", "Closed")


def test_guardrails_cap_scaling_and_refuse_restarts_when_too_few_are_ready(s: Scenario) -> None:
    s.deployment("capped", 1)
    s.deployment("stuck", 3, node_selector={"no-such-node": "true"})  # its pods never schedule
    s.playbook(
        "guarded",
        [
            {"name": "scale", "scale": {"target": deploy_ref("capped"), "replicas": 50}},
            {"name": "restart-stuck", "restart": {"target": deploy_ref("stuck")}},
        ],
        guardrails={"maxReplicas": 4, "minReadyPercent": 50},
    )
    s.incident("guard")
    stalled = s.wait_condition("guard", "Stalled", reason="StepFailed")
    assert "minReadyPercent=50" in stalled["message"]
    assert "0/3" in stalled["message"]
    steps = s.steps("guard")
    assert steps["scale"]["replicasAfter"] == 4
    stuck = s.apps.read_namespaced_deployment("stuck", s.namespace)
    assert "kubectl.kubernetes.io/restartedAt" not in (stuck.spec.template.metadata.annotations or {})


def test_bad_references_stall_with_a_reason_and_do_not_affect_other_incidents(s: Scenario) -> None:
    s.deployment("ok", 1)
    s.playbook(
        "missing-target",
        [{"name": "restart", "restart": {"target": deploy_ref("ghost")}}],
        priority=5,
        match={"severities": ["P3"]},
    )
    s.playbook(
        "missing-secret",
        [
            {
                "name": "page",
                "notify": {"webhook": {"urlSecretRef": {"name": "nope", "key": "url"}}, "message": "{title}"},
            }
        ],
        match={"severities": ["P4"]},
    )
    s.playbook(
        "fine",
        [{"name": "scale", "scale": {"target": deploy_ref("ok"), "replicas": 2}}],
        match={"severities": ["P2"]},
    )
    s.incident("no-target", severity="P3")
    s.incident("no-secret", severity="P4")
    s.incident("no-playbook", severity="P1", playbookRef={"name": "does-not-exist"})
    s.incident("healthy", severity="P2")

    assert "Deployment" in s.wait_condition("no-target", "Stalled", reason="StepFailed")["message"]
    assert "not found" in s.wait_condition("no-target", "Stalled", reason="StepFailed")["message"]
    assert "not found" in s.wait_condition("no-secret", "Stalled", reason="Misconfigured")["message"]
    assert (
        "does-not-exist" in s.wait_condition("no-playbook", "Stalled", reason="PlaybookNotFound")["message"]
    )
    s.wait_phase("healthy", "Resolved")
    wait_until(
        lambda: s.get("playbooks", "missing-target")["status"].get("failed") == 1,
        timeout=TIMEOUT,
        what="the failure recorded on the Playbook",
    )
    warnings = [e.reason for e in s.events("no-target") if e.type == "Warning"]
    assert warnings.count("StepFailed") == 1  # no retry storm: one failure, recorded once
    assert s.operator.proc is not None
    assert s.operator.proc.poll() is None


def test_a_playbook_the_schema_cannot_judge_is_marked_invalid(s: Scenario) -> None:
    s.playbook(
        "bad-template",
        [
            {
                "name": "page",
                "notify": {"slack": {"urlSecretRef": {"name": "s", "key": "url"}}, "message": "{secret}"},
            }
        ],
    )
    invalid = s.wait_condition("bad-template", "Invalid", reason="InvalidSpec", kind="playbooks")
    assert "unknown field {secret}" in invalid["message"]
    assert s.condition("bad-template", "Ready", kind="playbooks")["status"] == "False"


def test_notify_posts_the_rendered_message_to_real_webhooks(s: Scenario, http: LocalServer) -> None:
    s.secret("hooks", {"url": http.url("/hook"), "slack": http.url("/slack")}, shared_for="127.0.0.1")
    s.playbook(
        "tell",
        [
            {
                "name": "page",
                "notify": {
                    "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}},
                    "message": "[{severity}] {title} ({phase})",
                },
            },
            {
                "name": "chat",
                "notify": {
                    "slack": {"urlSecretRef": {"name": "hooks", "key": "slack"}},
                    "message": ":rotating_light: {name}: {title}",
                },
            },
        ],
    )
    s.incident("noisy", severity="P2", title="checkout slow")
    s.wait_phase("noisy", "Resolved")
    received = {r["path"]: r for r in http.received()}
    assert len(http.received()) == 2
    hook = received["/hook"]
    assert hook["body"]["message"] == "[P2] checkout slow (Investigating)"
    assert (hook["body"]["incident"], hook["body"]["severity"], hook["body"]["step"]) == (
        "noisy",
        "P2",
        "page",
    )
    assert hook["idempotency_key"].endswith("/page/1")
    assert received["/slack"]["body"] == {"text": ":rotating_light: noisy: checkout slow"}
    assert http.url("/hook") not in str(s.status("noisy"))  # the Secret's URL never lands in status
    assert http.url("/hook") not in s.operator.log()  # nor in the operator's log
    assert all(http.url("/hook") not in (e.message or "") for e in s.events("noisy"))


def test_cooldown_keeps_a_second_incident_from_rerunning_the_playbook(s: Scenario) -> None:
    s.deployment("flappy", 1)
    s.playbook(
        "cool",
        [{"name": "restart", "restart": {"target": deploy_ref("flappy")}}],
        cooldownSeconds=600,
    )
    s.incident("first")
    s.wait_phase("first", "Resolved")
    s.incident("second")
    cooling = s.wait_condition("second", "Reconciling", "False", reason="CooldownActive")
    assert "cooldown until" in cooling["message"]
    assert "playbook" not in s.status("second")
