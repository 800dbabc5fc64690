"""Detection from a real Prometheus: the seed's rules and the alerts about the operator itself
(extracted from the shipped PrometheusRule) checked and unit-tested by promtool
(tests/prometheus/*.test.yaml), and a whole chain on the local cluster: a target goes down,
ServiceDown fires after its `for:`, Alertmanager delivers, the operator remediates, a PromQL
check against the same Prometheus confirms the target is back, the alert resolves and the
incident is Resolved; the time to detect is checked from the outage and from the alert."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import Alertmanager, Cluster, OperatorProcess, _localcluster, free_port
from tests.e2e.engine_helpers import TIMEOUT, Scenario, deploy_ref
from tests.e2e.test_alerts import incidents_for, metric
from tests.httpserver import LocalServer, local_server
from tests.localcluster_module import load_promstack
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

PROMTOOL_TESTS = Path(__file__).resolve().parents[1] / "prometheus" / "seed-alerts.test.yaml"
ALL_PROMTOOL_TESTS = sorted(PROMTOOL_TESTS.parent.glob("*.test.yaml"))
SEED_ALERTS = {"ServiceDown", "HighErrorRate", "DatabaseDown", "QueueBacklog"}
OPERATOR_ALERTS = {
    "IncidentOperatorDown",
    "IncidentOperatorNoLeader",
    "IncidentOperatorNotificationsFailing",
    "IncidentOperatorResponseTargetsBreached",
}
METRICS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def prometheus_bin() -> Path:
    built = _localcluster("build-prometheus")
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prometheus_bin() / "promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rules_with_tests(workdir: Path, rules: dict[str, Any] | None = None) -> Path:
    """The extracted rule file (or `rules`) next to the promtool unit tests, in `workdir`."""
    promstack = load_promstack()
    document = rules if rules is not None else promstack.rules_document()
    (workdir / "seed-alerts.rules.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    for tests in ALL_PROMTOOL_TESTS:
        (workdir / tests.name).write_text(tests.read_text())
    return workdir


def test_promtool_checks_the_extracted_rules_and_their_unit_tests_pass(tmp_path: Path) -> None:
    workdir = rules_with_tests(tmp_path)
    checked = promtool("check", "rules", "seed-alerts.rules.yaml", cwd=workdir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "8 rules found" in checked.stdout
    tested = promtool("test", "rules", *(t.name for t in ALL_PROMTOOL_TESTS), cwd=workdir)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in load_promstack().rules_document()["groups"] for r in g["rules"]}
    assert alerts == SEED_ALERTS | OPERATOR_ALERTS
    written = "".join(t.read_text() for t in ALL_PROMTOOL_TESTS)
    for alert in alerts:  # every alert has its unit test
        assert f"alertname: {alert}" in written


@pytest.mark.parametrize(
    ("alert", "change"),
    [
        ("QueueBacklog", {"for": "1m"}),  # would page on a short spike
        ("IncidentOperatorNoLeader", {"for": "5s"}),  # would page on every failover
        ("IncidentOperatorDown", {"expr": 'up{job="incident-operator"} == 0'}),  # one replica of two
    ],
)
def test_the_unit_tests_catch_a_rule_that_lost_its_meaning(
    tmp_path: Path, alert: str, change: dict[str, str]
) -> None:
    document = load_promstack().rules_document()
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule.update(change)
    workdir = rules_with_tests(tmp_path, document)
    tested = promtool("test", "rules", *(t.name for t in ALL_PROMTOOL_TESTS), cwd=workdir)
    assert tested.returncode != 0
    assert alert in tested.stdout + tested.stderr


class Mirror:
    """The scrape target of a Deployment: /metrics answers while the Deployment has a Ready
    replica and fails while it has none (kwok's pods run no process to scrape), so the
    operator's remediation of the Deployment is what brings the target back."""

    def __init__(self, server: LocalServer, apps: client.AppsV1Api, namespace: str, name: str) -> None:
        self.server, self.apps, self.namespace, self.name = server, apps, namespace, name
        self.down_since: float | None = None
        self.up_again: float | None = None
        self.stop = threading.Event()
        server.set_body("/metrics", b"app_info 1\n", METRICS_TEXT)
        self.thread = threading.Thread(target=self.follow, daemon=True)
        self.thread.start()

    def follow(self) -> None:
        while not self.stop.is_set():
            ready = self.apps.read_namespaced_deployment(self.name, self.namespace).status.ready_replicas or 0
            self.server.set_status("/metrics", 200 if ready else 503)
            if not ready and self.down_since is None:
                self.down_since = time.time()
            if ready and self.down_since is not None and self.up_again is None:
                self.up_again = time.time()
            self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


@pytest.fixture
def target() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


def started_prometheus(
    tmp_path: Path, target: LocalServer, alertmanager: Alertmanager, namespace: str, job: str = "web"
) -> Any:
    """A Prometheus with the seed rules scraping `target` as `job` (a Deployment of that name)."""
    promstack = load_promstack()
    rules = promstack.write_rules(tmp_path / "seed-alerts.rules.yaml")
    config = promstack.config_document(
        {job: (f"127.0.0.1:{target.port}", {"namespace": namespace, "deployment": job})},
        f"127.0.0.1:{alertmanager.port}",
        [rules],
    )
    return promstack.Prometheus(prometheus_bin(), tmp_path, free_port(), config)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_a_target_down_fires_service_down_and_the_remediation_resolves_it(
    s: Scenario, alertmanager: Alertmanager, target: LocalServer, tmp_path: Path
) -> None:
    s.deployment("web", 1)
    mirror = Mirror(target, s.apps, s.namespace, "web")
    prometheus = started_prometheus(tmp_path, target, alertmanager, s.namespace)
    try:
        up = f'up{{job="web",namespace="{s.namespace}"}}'
        wait_until(
            lambda: prometheus.api("query", query=f"{up} == 1")["result"],
            timeout=TIMEOUT,
            what="Prometheus scrapes the target",
        )
        s.playbook(
            "service-down",
            [
                {"name": "evidence", "collectEvidence": {"selector": {"app": "web"}, "logLines": 0}},
                {"name": "scale-up", "scale": {"target": deploy_ref("web"), "replicas": 2}},
                {"name": "wait", "waitReady": {"target": deploy_ref("web")}, "timeoutSeconds": 60},
                {
                    "name": "scrapes-again",
                    "promQuery": {
                        "url": prometheus.url,
                        "query": up,
                        "expect": {"op": "==", "value": 1},
                        "forSeconds": 2,
                        "intervalSeconds": 1,
                    },
                    "timeoutSeconds": 60,
                },
            ],
            match={"alertnames": ["ServiceDown"]},
            stabilizationSeconds=2,
        )
        p2 = {"severity": "P2", "drill": "false"}  # seed 1.1: down for a minute is P2
        detected_before = metric(s.operator, "incident_operator_time_to_detect_seconds_count", p2)
        detect_sum_before = metric(s.operator, "incident_operator_time_to_detect_seconds_sum", p2)

        s.apps.patch_namespaced_deployment_scale("web", s.namespace, {"spec": {"replicas": 0}})  # the outage
        incident = wait_until(
            lambda: incidents_for(s, "ServiceDown"),
            timeout=150,
            what="ServiceDown fired through Alertmanager",
        )[0]
        name = incident["metadata"]["name"]
        labels = incident["spec"]["source"]["labels"]
        assert (labels["job"], labels["namespace"], labels["deployment"]) == ("web", s.namespace, "web")
        assert incident["spec"]["targets"] == [deploy_ref("web")]
        assert (incident["spec"]["severity"], incident["spec"]["category"]) == ("P2", "availability")
        s.patch_incident(name, {"commander": "alice"})

        s.wait_phase(name, "Resolved")
        steps = s.steps(name)
        assert {k: v["state"] for k, v in steps.items()} == dict.fromkeys(steps, "Succeeded")
        assert "== 1" in steps["scrapes-again"]["message"], steps["scrapes-again"]
        status = s.status(name)
        assert any(e["type"] == "AlertResolved" for e in status["timeline"])
        history = yaml.safe_load(
            s.core.read_namespaced_config_map(status["evidenceRef"], s.namespace).data["rollout-history.yaml"]
        )
        assert history["Deployment/web"]["currentRevision"] == 1
        assert [r["revision"] for r in history["Deployment/web"]["revisions"]] == [1]

        # Time to detect: from the outage, the rule's `for: 1m` plus scrape, evaluation and
        # delivery; from the alert's own start (what the MTTD metric measures), only delivery.
        assert mirror.down_since is not None
        detected = parse_time(status["detectedAt"])
        from_outage = detected - mirror.down_since
        from_alert = detected - parse_time(incident["spec"]["source"]["startsAt"])
        assert 60 <= from_outage <= 90, from_outage
        assert 0 <= from_alert <= 15, from_alert
        assert metric(s.operator, "incident_operator_time_to_detect_seconds_count", p2) == detected_before + 1
        observed = metric(s.operator, "incident_operator_time_to_detect_seconds_sum", p2) - detect_sum_before
        assert abs(observed - from_alert) < 1.5, (observed, from_alert)

        wait_until(
            lambda: (
                not [
                    a
                    for a in prometheus.alerts()
                    if a["labels"].get("namespace") == s.namespace and a["state"] == "firing"
                ]
            ),
            timeout=30,
            what="Prometheus no longer fires ServiceDown",
        )
    finally:
        mirror.close()
        prometheus.stop()


def test_a_prom_query_that_does_not_hold_fails_with_the_values_seen(
    s: Scenario, alertmanager: Alertmanager, target: LocalServer, tmp_path: Path
) -> None:
    target.set_body("/metrics", b"queue_lag_seconds 900\n", METRICS_TEXT)
    prometheus = started_prometheus(tmp_path, target, alertmanager, s.namespace)
    try:
        query = f'queue_lag_seconds{{namespace="{s.namespace}"}}'
        wait_until(
            lambda: prometheus.api("query", query=query)["result"], timeout=TIMEOUT, what="lag scraped"
        )
        check = {"url": prometheus.url, "expect": {"op": "<", "value": 600}, "intervalSeconds": 1}
        s.playbook(
            "lag",
            [
                {
                    "name": "lag-ok",
                    "promQuery": {**check, "query": query},
                    "timeoutSeconds": 4,
                    "continueOnFailure": True,
                },
                {"name": "bad-query", "promQuery": {**check, "query": "sum(("}, "continueOnFailure": True},
            ],
        )
        s.incident("lag-1", playbookRef={"name": "lag"})
        failed = s.wait_step("lag-1", "lag-ok", "Failed")
        assert "timed out after 4s" in failed["message"]
        assert "1 of 1 series: 900 (expected < 600)" in failed["message"], failed
        assert "instance" not in failed["message"]  # the offending value, never the series' labels
        wrong = s.wait_step("lag-1", "bad-query", "Failed")
        assert "Prometheus refused the query (bad_data)" in wrong["message"], wrong  # at once, not retried
        assert "parse error" not in wrong["message"]  # never the server's error text
        assert wrong["attempts"] == 1
    finally:
        prometheus.stop()
