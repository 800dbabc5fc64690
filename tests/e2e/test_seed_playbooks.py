"""The seed's four playbooks, as shipped in `manifests/samples/`, end to end on the local cluster.

Each test loads the sample file and changes only what points outside this machine (URLs of the
service, of Prometheus and of webhooks) and what would make a test wait for minutes (timeouts,
windows, stabilization), and says so where it does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import Alertmanager, Cluster, LocalServer, OperatorProcess
from tests.e2e.engine_helpers import GROUP, TIMEOUT, VERSION, Scenario
from tests.e2e.test_after_the_incident import kubectl
from tests.e2e.test_alerts import incidents_for
from tests.e2e.test_prometheus import METRICS_TEXT, started_prometheus
from tests.e2e.test_remediation_actions import deploy_version, image_of
from tests.httpserver import local_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def sample(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text()))


def step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(st for st in doc["spec"]["steps"] if st["name"] == name)


def create(s: Scenario, doc: dict[str, Any]) -> str:
    plural = {"Playbook": "playbooks", "Incident": "incidents"}[doc["kind"]]
    s.custom.create_namespaced_custom_object(GROUP, VERSION, s.namespace, plural, doc)
    return str(doc["metadata"]["name"])


def states(s: Scenario, incident: str) -> dict[str, str]:
    return {name: st["state"] for name, st in s.steps(incident).items()}


def test_service_outage_restarts_smoke_tests_rolls_back_and_tells_the_team(
    s: Scenario, receivers: LocalServer
) -> None:
    s.deployment("web", 2)
    deploy_version(s, "web", 2)  # the bad deploy
    s.deployment("api", 1)  # a bystander the generic playbook must not touch
    for name in ("web", "api"):  # both opted in (allowedTargets): the incident names web
        s.apps.patch_namespaced_deployment(
            name, s.namespace, {"metadata": {"labels": {"incident-operator.dev/remediate": "true"}}}
        )
    upload, team = f"/upload-{s.namespace}", f"/team-{s.namespace}"
    receivers.set_status(upload, 500)
    s.secret("incident-webhook", {"url": receivers.url(team)}, shared_for="127.0.0.1")
    playbook = sample("playbook-service-outage.yaml")
    smoke = step(playbook, "smoke-test")
    smoke["httpCheck"]["url"] = receivers.url(upload)  # the sample's is make demo's stand-in
    smoke["timeoutSeconds"] = 6  # not 60: the test need not wait a minute for the failure
    create(s, playbook)
    incident = create(s, sample("incident-service-outage.yaml"))
    s.patch_incident(incident, {"commander": "alice"})
    plan = kubectl(s, "plan", incident, "-n", s.namespace).stdout
    assert f"4. smoke-test: POST {receivers.url(upload)} until it answers 200 containing 'stored'" in plan
    assert "5. roll-back: roll the incident's Deployment targets back to the previous version" in plan
    assert "(only if smoke-test failed)" in plan

    s.wait_step(incident, "roll-back", "Succeeded")
    receivers.set_body(upload, b'{"stored": true}')
    receivers.set_status(upload, 200)  # revision 1 uploads again
    s.wait_phase(incident, "Resolved")
    assert states(s, incident) == {
        "collect-evidence": "Succeeded",
        "restart": "Succeeded",
        "wait-restarted": "Succeeded",
        "smoke-test": "Failed",
        "roll-back": "Succeeded",
        "wait-rolled-back": "Succeeded",
        "tell-the-team": "Succeeded",
    }
    [rolled] = s.steps(incident)["roll-back"]["targets"]  # the incident's Deployment, and it alone
    assert (rolled["name"], rolled["revisionFrom"], rolled["revision"]) == ("web", 3, 1)  # 3: the restart
    assert image_of(s, "web") == "registry.example/web:1"
    api = s.apps.read_namespaced_deployment("api", s.namespace)
    assert api.metadata.generation == 1  # untouched
    [told] = receivers.received_at(team)
    assert "restarted; smoke test done" in told["body"]["message"]
    evidence = s.core.read_namespaced_config_map(s.status(incident)["evidenceRef"], s.namespace).data
    assert "deploy web v2" in evidence["rollout-history.yaml"]


class Latency:
    """A worker's latency histogram for Prometheus to scrape: slow (about 1 s) while the
    Deployment has few Ready replicas, fast once it is scaled out (kwok's pods serve nothing)."""

    BUCKETS = ("0.1", "0.5", "1", "+Inf")

    def __init__(self, server: LocalServer, apps: client.AppsV1Api, namespace: str) -> None:
        self.server, self.apps, self.namespace = server, apps, namespace
        self.counts = dict.fromkeys(self.BUCKETS, 0)
        self.stop = threading.Event()
        self.tick()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def tick(self) -> None:
        ready = self.apps.read_namespaced_deployment("worker", self.namespace).status.ready_replicas or 0
        for bucket in self.BUCKETS:
            if ready > 4 or bucket in ("1", "+Inf"):
                self.counts[bucket] += 10
        lines = [f'http_request_duration_seconds_bucket{{le="{b}"}} {n}' for b, n in self.counts.items()]
        self.server.set_body("/metrics", ("\n".join(lines) + "\n").encode(), METRICS_TEXT)

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.tick()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def target() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


def test_performance_confirms_p95_scales_out_and_confirms_recovery(
    s: Scenario, alertmanager: Alertmanager, target: LocalServer, tmp_path: Path
) -> None:
    s.deployment("worker", 2)
    latency = Latency(target, s.apps, s.namespace)
    prometheus = started_prometheus(tmp_path, target, alertmanager, s.namespace, job="worker")
    try:
        playbook = sample("playbook-performance.yaml")
        playbook["spec"]["stabilizationSeconds"] = 2
        for name in ("p95-is-high", "p95-recovered"):
            query = step(playbook, name)["promQuery"]
            query["url"] = prometheus.url
            query["query"] = query["query"].replace("[5m]", "[10s]")  # a 5-minute window, shortened
            query["intervalSeconds"] = 1
        step(playbook, "p95-recovered")["promQuery"]["forSeconds"] = 3
        p95 = step(playbook, "p95-is-high")["promQuery"]["query"]
        wait_until(
            lambda: prometheus.api("query", query=f"{p95} > 0.5")["result"],
            timeout=TIMEOUT,
            what="p95 above 0.5 s in Prometheus",
        )
        create(s, playbook)
        incident = create(s, sample("incident-performance.yaml"))
        s.patch_incident(incident, {"commander": "alice"})
        s.wait_phase(incident, "Resolved")
        assert set(states(s, incident).values()) == {"Succeeded"}
        steps = s.steps(incident)
        assert "> 0.5" in steps["p95-is-high"]["message"]
        assert "< 0.5 for 3s" in steps["p95-recovered"]["message"]
        assert steps["scale-workers"]["replicasAfter"] == 16
        wait_until(  # revertOnResolve
            lambda: s.apps.read_namespaced_deployment("worker", s.namespace).spec.replicas == 2,
            timeout=TIMEOUT,
            what="workers scaled back to 2",
        )
    finally:
        latency.close()
        prometheus.stop()


def test_security_tells_security_preserves_evidence_and_isolates_after_approval(
    s: Scenario, receivers: LocalServer
) -> None:
    s.deployment("api", 2)
    channel = f"/security-{s.namespace}"
    s.secret("security-webhook", {"url": receivers.url(channel)}, shared_for="127.0.0.1")
    playbook = sample("playbook-security.yaml")
    playbook["spec"]["stabilizationSeconds"] = 2  # not 30
    create(s, playbook)
    incident = create(s, sample("incident-security.yaml"))
    s.wait_step(incident, "isolate-api", "AwaitingApproval")
    [told] = receivers.received_at(channel)
    assert told["body"]["message"].startswith("SECURITY P1 api pods contacting an unknown host")
    assert s.status(incident)["evidenceRef"]
    policies = s.networking.list_namespaced_network_policy(s.namespace).items
    assert policies == []  # nothing is cut off before a person approved

    kubectl(s, "approve", incident, "isolate-api", "-n", s.namespace)
    s.wait_phase(incident, "Resolved")
    policy = s.networking.read_namespaced_network_policy(f"{incident}-isolate", s.namespace)
    assert policy.spec.pod_selector.match_labels == {"app": "api"}
    assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]


def statefulset(s: Scenario, name: str, replicas: int) -> None:
    labels = {"app": name}
    body = client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1StatefulSetSpec(
            replicas=replicas,
            service_name=name,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="db", image="postgres:16")]),
            ),
        ),
    )
    s.apps.create_namespaced_stateful_set(s.namespace, body)
    wait_until(
        lambda: s.apps.read_namespaced_stateful_set(name, s.namespace).status.ready_replicas == replicas,
        timeout=TIMEOUT,
        what=f"{name} ready",
    )


def test_database_down_from_its_alert_checks_restarts_and_checks_again(
    s: Scenario, alertmanager: Alertmanager
) -> None:
    statefulset(s, "postgres", 1)
    create(s, sample("playbook-database-down.yaml"))  # unchanged
    labels = {"namespace": s.namespace, "severity": "critical", "statefulset": "postgres", "job": "pg"}
    alertmanager.fire("DatabaseDown", labels, "postgres is down")
    incident = wait_until(lambda: incidents_for(s, "DatabaseDown"), timeout=TIMEOUT, what="the incident")[0]
    name = incident["metadata"]["name"]
    assert (incident["spec"]["category"], incident["spec"]["targets"]) == (
        "data",
        [{"kind": "StatefulSet", "name": "postgres"}],
    )
    s.patch_incident(name, {"commander": "alice"})
    wait_until(
        lambda: "waiting for the alert" in (s.condition(name, "Reconciling") or {}).get("message", ""),
        timeout=TIMEOUT,
        what="remediated, waiting for the alert to resolve",
        describe=s.describer(name),
    )
    assert set(states(s, name).values()) == {"Succeeded"}
    jobs = {
        j.metadata.name: j for j in client.BatchV1Api(s.cluster.api).list_namespaced_job(s.namespace).items
    }
    steps = s.steps(name)
    assert set(jobs) == {steps["pg-isready"]["job"], steps["pg-isready-again"]["job"]}
    for job in jobs.values():
        assert job.status.succeeded == 1
        assert job.spec.template.spec.containers[0].command[0] == "pg_isready"
        assert job.metadata.owner_references[0].name == name
    restarted = s.apps.read_namespaced_stateful_set(
        "postgres", s.namespace
    ).spec.template.metadata.annotations
    assert "kubectl.kubernetes.io/restartedAt" in restarted

    alertmanager.resolve("DatabaseDown", labels, "postgres is down")
    s.wait_phase(name, "Resolved")
    assert s.condition(name, "Stalled") is None or s.condition(name, "Stalled")["status"] == "False"
