"""The seed's remediation on the local cluster: a smoke test (POST with headers from a Secret,
body text and latency bound) that fails rolls the Deployment back to its previous revision
(`when: stepFailed`), with the rollout history in the evidence; Jobs run from a pod template,
owned by the incident, and a Job that cannot finish fails the step with the Job's reason."""

from __future__ import annotations

import time

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import Cluster, LocalServer, OperatorProcess
from tests.e2e.engine_helpers import CHECK_POD, GROUP, TIMEOUT, Scenario, deploy_ref
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

CHANGE_CAUSE = "kubernetes.io/change-cause"


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def image_of(s: Scenario, name: str) -> str:
    deployment = s.apps.read_namespaced_deployment(name, s.namespace)
    return str(deployment.spec.template.spec.containers[0].image)


def deploy_version(s: Scenario, name: str, version: int) -> None:
    """A new rollout of `name` (a new ReplicaSet, the next revision), with its change-cause."""
    s.apps.patch_namespaced_deployment(
        name,
        s.namespace,
        {
            "metadata": {"annotations": {CHANGE_CAUSE: f"deploy {name} v{version}"}},
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "image": f"registry.example/{name}:{version}"}]}
                }
            },
        },
    )
    wait_until(
        lambda: (
            s.apps.read_namespaced_deployment(name, s.namespace).metadata.annotations.get(
                "deployment.kubernetes.io/revision"
            )
            == str(version)
        ),
        timeout=60,
        what=f"{name} at revision {version}",
    )


def test_a_failed_smoke_test_rolls_back_to_the_previous_revision(s: Scenario, receivers: LocalServer) -> None:
    s.deployment("web", 2)
    deploy_version(s, "web", 2)
    upload = f"/v1/upload-{s.namespace}"
    receivers.set_status(upload, 500)
    s.secret("smoke-headers", {"X-Api-Key": "k-123"}, shared_for="127.0.0.1")
    s.playbook(
        "outage",
        [
            {"name": "evidence", "collectEvidence": {"selector": {"app": "web"}, "logLines": 0}},
            {
                "name": "smoke",
                "httpCheck": {
                    "url": receivers.url(upload),
                    "method": "POST",
                    "body": '{"file": "smoke.txt"}',
                    "headersSecretRef": {"name": "smoke-headers"},
                    "expectBodyContains": "ok",
                    "maxLatencyMs": 2000,
                    "intervalSeconds": 1,
                },
                "timeoutSeconds": 3,
            },
            {"name": "undo", "rollback": {"target": deploy_ref("web")}, "when": {"stepFailed": "smoke"}},
            {"name": "wait", "waitReady": {"target": deploy_ref("web")}, "timeoutSeconds": 60},
        ],
    )
    s.incident("outage-1", targets=[deploy_ref("web")], playbookRef={"name": "outage"})

    s.wait_step("outage-1", "undo", "Succeeded")
    receivers.set_status(upload, 200)  # the previous version uploads again
    s.wait_phase("outage-1", "Resolved")  # the health check after Monitoring repeats the smoke test
    steps = s.steps("outage-1")
    assert steps["smoke"]["state"] == "Failed"
    assert "HTTP 500" in steps["smoke"]["message"], steps["smoke"]
    undo = steps["undo"]
    assert undo["state"] == "Succeeded", undo
    assert (undo["revisionFrom"], undo["revision"]) == (2, 1)
    assert "from revision 2 to revision 1" in undo["message"]
    assert image_of(s, "web") == "registry.example/web:1"
    annotations = s.apps.read_namespaced_deployment("web", s.namespace).metadata.annotations
    assert annotations["deployment.kubernetes.io/revision"] == "3"  # revision 1's ReplicaSet, reused

    sent = receivers.received_at(upload)
    assert sent
    assert {(r["method"], r["headers"].get("X-Api-Key"), r["body"]["file"]) for r in sent} == {
        ("POST", "k-123", "smoke.txt")
    }
    assert sent[0]["headers"]["Content-Type"] == "application/json"

    evidence = s.core.read_namespaced_config_map(s.status("outage-1")["evidenceRef"], s.namespace).data
    history = yaml.safe_load(evidence["rollout-history.yaml"])["Deployment/web"]
    assert history["currentRevision"] == 2
    assert [(r["revision"], r["changeCause"], r["current"]) for r in history["revisions"]] == [
        (1, None, False),
        (2, "deploy web v2", True),
    ]
    assert "metrics API (metrics.k8s.io) does not answer" in evidence["unavailable.txt"]
    timeline = [e["type"] for e in s.status("outage-1")["timeline"]]
    assert "StepFailed" in timeline
    assert "Stalled" not in timeline


def test_a_passing_smoke_test_skips_the_rollback(s: Scenario, receivers: LocalServer) -> None:
    s.deployment("api", 1)
    deploy_version(s, "api", 2)
    path = f"/v1/upload-{s.namespace}"
    receivers.set_body(path, b'{"stored": true}')
    s.playbook(
        "outage",
        [
            {
                "name": "smoke",
                "httpCheck": {
                    "url": receivers.url(path),
                    "method": "POST",
                    "body": "x",
                    "contentType": "text/plain",
                    "expectBodyContains": '"stored": true',
                },
            },
            {"name": "undo", "rollback": {"target": deploy_ref("api")}, "when": {"stepFailed": "smoke"}},
        ],
    )
    s.incident("ok-1", playbookRef={"name": "outage"})
    s.wait_phase("ok-1", "Resolved")
    steps = s.steps("ok-1")
    assert steps["smoke"]["state"] == "Succeeded"
    assert (steps["undo"]["state"], steps["undo"]["message"]) == (
        "Skipped",
        "runs only if step smoke failed; it is Succeeded",
    )
    assert image_of(s, "api") == "registry.example/api:2"


def test_a_rollback_without_history_fails_clearly(s: Scenario) -> None:
    s.deployment("fresh", 1)
    s.playbook("undo", [{"name": "undo", "rollback": {"target": deploy_ref("fresh")}}])
    s.incident("fresh-1", playbookRef={"name": "undo"})
    failed = s.wait_step("fresh-1", "undo", "Failed")
    assert failed["message"] == "Deployment fresh: no revision before the current one (1)"
    s.wait_condition("fresh-1", "Stalled", reason="StepFailed")


def test_a_job_runs_from_its_template_owned_by_the_incident(s: Scenario) -> None:
    s.playbook(
        "db-check",
        [
            {"name": "pg-isready", "job": {"template": CHECK_POD, "timeoutSeconds": 60}},
            {
                "name": "stuck",
                "job": {
                    "template": {"spec": {**CHECK_POD["spec"], "nodeSelector": {"no-such": "node"}}},
                    "timeoutSeconds": 2,
                },
                "timeoutSeconds": 30,
            },
        ],
    )
    started = time.monotonic()
    s.incident("db-1", playbookRef={"name": "db-check"}, category="data")
    done = s.wait_step("db-1", "pg-isready", "Succeeded")
    job_name = done["job"]
    assert job_name == "db-1-pg-isready-r1-1"
    assert done["message"].startswith(f"Job {job_name} succeeded; log: ")
    assert done["message"].endswith('level=error msg="upstream unavailable" upstream=postgres:5432')
    job = s.cluster.run_kubectl("get", "job", job_name, "-n", s.namespace, "-o", "yaml")
    body = yaml.safe_load(job.stdout)
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["apiVersion"]) == ("Incident", "db-1", f"{GROUP}/v1alpha1")
    assert body["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert body["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert body["spec"]["template"]["metadata"]["labels"]["incident-operator.dev/incident"] == "db-1"
    assert body["spec"]["activeDeadlineSeconds"] == 60
    assert body["spec"]["backoffLimit"] == 0

    failed = s.wait_step("db-1", "stuck", "Failed")
    assert "DeadlineExceeded" in failed["message"], failed
    assert "; log unavailable: " in failed["message"]  # its pod never ran
    assert time.monotonic() - started < 30  # failed on the Job's deadline, not the step's timeout
    assert s.status("db-1")["phase"] == "Investigating"  # a check Job is not a mitigation


def test_a_job_in_flight_is_found_again_after_an_operator_crash(
    s: Scenario, operator: OperatorProcess
) -> None:
    """SIGKILL while a Job step waits: the restarted operator finds the same Job (named from the
    run, step and attempt) and waits for it; no second Job, no second attempt."""
    gate = f"incident-operator.dev/gate-{s.namespace}"
    held = {"spec": {**CHECK_POD["spec"], "nodeSelector": {gate: "open"}}}  # unschedulable until opened
    s.playbook("held-job", [{"name": "check", "job": {"template": held, "timeoutSeconds": 120}}])
    s.incident("crash-job", playbookRef={"name": "held-job"})
    batch = client.BatchV1Api(s.cluster.api)
    jobs = wait_until(
        lambda: batch.list_namespaced_job(s.namespace).items, timeout=TIMEOUT, what="the step's Job"
    )
    operator.kill()
    operator.start()
    node = client.CoreV1Api(s.cluster.api)
    node.patch_node("kwok-node-0", {"metadata": {"labels": {gate: "open"}}})
    try:
        done = s.wait_step("crash-job", "check", "Succeeded")
    finally:
        node.patch_node("kwok-node-0", {"metadata": {"labels": {gate: None}}})
    assert [j.metadata.name for j in batch.list_namespaced_job(s.namespace).items] == [jobs[0].metadata.name]
    assert (done["job"], done["attempts"]) == (jobs[0].metadata.name, 1)
