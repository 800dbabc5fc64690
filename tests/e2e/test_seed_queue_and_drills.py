"""The seed's queue procedure and its drills, as shipped in `manifests/samples/`, end to end.

Like `test_seed_playbooks`, each test loads the sample and changes only what points outside this
machine (the Prometheus URL) and what would make it wait for minutes (windows, timeouts), and
says so. kwok runs no container: the rpk Job's pod "succeeds" as kwok simulates it, and the queue
lag is a series the test serves to a real Prometheus, high until the test says otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import Alertmanager, Cluster, LocalServer, OperatorProcess
from tests.e2e.engine_helpers import GROUP, TIMEOUT, VERSION, Scenario, deploy_ref
from tests.e2e.test_after_the_incident import kubectl
from tests.e2e.test_alerts import incidents_for
from tests.e2e.test_drills import last_run, replicas
from tests.e2e.test_prometheus import METRICS_TEXT, started_prometheus
from tests.e2e.test_seed_playbooks import create, sample, states, step
from tests.httpserver import local_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


@pytest.fixture
def target() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


class Lag:
    """The queue's lag for Prometheus to scrape (seconds); the test sets it."""

    def __init__(self, server: LocalServer, seconds: float) -> None:
        self.server = server
        self.lock = threading.Lock()
        self.set(seconds)

    def set(self, seconds: float) -> None:
        with self.lock:
            self.server.set_body("/metrics", f"queue_lag_seconds {seconds}\n".encode(), METRICS_TEXT)


def test_queue_backlog_scales_workers_then_recreates_the_topic_only_after_approval(
    s: Scenario, alertmanager: Alertmanager, target: LocalServer, tmp_path: Path
) -> None:
    s.deployment("worker", 2)
    lag = Lag(target, 900)  # 15 minutes behind, and scaling out will not help: a stuck topic
    prometheus = started_prometheus(tmp_path, target, alertmanager, s.namespace, job="worker")
    try:
        playbook = sample("playbook-queue-backlog.yaml")
        playbook["spec"]["stabilizationSeconds"] = 2
        for name in ("lag-is-high", "lag-recovered", "lag-recovered-after-recreate"):
            query = step(playbook, name)["promQuery"]
            query["url"] = prometheus.url  # the sample's is kube-prometheus' Service
            query["intervalSeconds"] = 1
            if query.get("forSeconds"):
                query["forSeconds"] = 3  # not 2 minutes
        step(playbook, "lag-recovered")["timeoutSeconds"] = 8  # it fails: the lag stays up
        lag_query = step(playbook, "lag-is-high")["promQuery"]["query"]
        wait_until(
            lambda: prometheus.api("query", query=f"{lag_query} > 120")["result"],
            timeout=TIMEOUT,
            what="the lag in Prometheus",
        )
        create(s, playbook)
        create(s, sample("playbook-performance.yaml"))  # the generic one: lower priority, not chosen
        labels = {
            "namespace": s.namespace,
            "severity": "high",
            "category": "performance",
            "deployment": "worker",
        }
        alertmanager.fire("QueueBacklog", labels, "Queue backlog")
        found = wait_until(lambda: incidents_for(s, "QueueBacklog"), timeout=TIMEOUT, what="the incident")
        name = found[0]["metadata"]["name"]
        s.patch_incident(name, {"commander": "alice"})

        s.wait_step(name, "lag-recovered", "Failed")
        wait_until(
            lambda: s.steps(name).get("recreate-topic", {}).get("state") == "AwaitingApproval",
            timeout=TIMEOUT,
            what="the topic's recreation waits for a person",
            describe=s.describer(name),
        )
        batch = client.BatchV1Api(s.cluster.api)
        assert batch.list_namespaced_job(s.namespace).items == []  # nothing deleted unapproved
        assert s.get("incidents", name)["status"]["playbook"]["name"] == "queue-backlog"
        assert s.apps.read_namespaced_deployment("worker", s.namespace).spec.replicas == 16

        kubectl(s, "approve", name, "recreate-topic", "-n", s.namespace)
        s.wait_step(name, "recreate-topic", "Succeeded")
        jobs = batch.list_namespaced_job(s.namespace).items
        assert [j.metadata.name for j in jobs] == [s.steps(name)["recreate-topic"]["job"]]
        script = jobs[0].spec.template.spec.containers[0].args[0]
        assert "rpk topic delete evaluate-jobs" in script
        assert "rpk topic create evaluate-jobs --partitions 3" in script
        lag.set(5)  # the topic recreated, the workers catch up
        s.wait_step(name, "lag-recovered-after-recreate", "Succeeded")
        assert states(s, name) == {
            "collect-evidence": "Succeeded",
            "lag-is-high": "Succeeded",
            "scale-workers": "Succeeded",
            "wait-workers": "Succeeded",
            "lag-recovered": "Failed",
            "recreate-topic": "Succeeded",
            "lag-recovered-after-recreate": "Succeeded",
        }

        alertmanager.resolve("QueueBacklog", labels, "Queue backlog")
        s.wait_phase(name, "Resolved")
        wait_until(  # revertOnResolve: the workers go back
            lambda: s.apps.read_namespaced_deployment("worker", s.namespace).spec.replicas == 2,
            timeout=TIMEOUT,
            what="workers scaled back to 2",
        )
    finally:
        prometheus.stop()


def test_the_monthly_drill_stops_the_service_and_scores_the_people_who_bring_it_back(s: Scenario) -> None:
    s.deployment("web", 2)
    drill = sample("drill-monthly-service-outage.yaml")  # unchanged: suspended, run on request
    s.custom.create_namespaced_custom_object(GROUP, VERSION, s.namespace, "drills", drill)
    kubectl(s, "drill", "run", "monthly-service-outage", "-n", s.namespace)

    def broken() -> str | None:
        runs = (s.get("drills", "monthly-service-outage").get("status") or {}).get("runs") or []
        return str(runs[-1]["incident"]) if runs and replicas(s, "web") == 0 else None

    incident = wait_until(broken, timeout=TIMEOUT, what="web stopped and the drill incident open")
    opened = s.get("incidents", incident)
    assert opened["spec"]["drill"] is True
    assert (opened["spec"]["severity"], opened["spec"]["category"]) == ("P2", "availability")
    # The responders: acknowledge, start the service again (the seed's `docker compose start app`),
    # resolve.
    kubectl(s, "ack", incident, "--commander", "alice", "-n", s.namespace)
    s.apps.patch_namespaced_deployment_scale("web", s.namespace, {"spec": {"replicas": 2}})
    wait_until(lambda: s.ready_replicas("web") == 2, timeout=TIMEOUT, what="web back")
    kubectl(s, "resolve", incident, "--summary", "started web again", "-n", s.namespace)

    run = last_run(s, "monthly-service-outage")
    assert run["result"] == "Passed", run
    assert run["timeToAcknowledgeSeconds"] <= 900
    assert run["timeToResolveSeconds"] <= 3600
    assert run["restored"] is False  # the people brought it back, not the drill
    assert run["replicasBefore"] == 2


def test_the_quarterly_simulation_runs_the_whole_path_from_an_alert(s: Scenario) -> None:
    s.deployment("web", 2)
    s.playbook(  # the namespace's response to ServiceDown: a restart a person approves
        "on-service-down",
        [{"name": "restart-web", "restart": {"target": deploy_ref("web")}, "requiresApproval": True}],
        match={"alertnames": ["ServiceDown"]},
    )
    drill = sample("drill-quarterly-simulation.yaml")  # unchanged: suspended, run on request
    s.custom.create_namespaced_custom_object(GROUP, VERSION, s.namespace, "drills", drill)
    kubectl(s, "drill", "run", "quarterly-simulation", "-n", s.namespace)

    found = wait_until(lambda: incidents_for(s, "ServiceDown"), timeout=TIMEOUT, what="the alert's incident")
    name = found[0]["metadata"]["name"]
    spec: dict[str, Any] = found[0]["spec"]
    assert spec["drill"] is True  # kept out of production figures
    assert (spec["severity"], spec["targets"]) == ("P1", [deploy_ref("web")])
    kubectl(s, "ack", name, "--commander", "alice", "-n", s.namespace)
    wait_until(
        lambda: s.status(name).get("acknowledgedAt"),
        timeout=TIMEOUT,
        what="acknowledged",
        describe=s.describer(name),
    )
    kubectl(s, "approve", name, "restart-web", "-n", s.namespace)

    run = last_run(s, "quarterly-simulation")
    assert run["result"] == "Passed", run
    assert run["incident"] == name
    status = s.get("incidents", name)["status"]
    assert status["phase"] == "Resolved"  # the drill resolved its alert once the response had run
    assert states(s, name) == {"restart-web": "Succeeded"}
    assert replicas(s, "web") == 2
