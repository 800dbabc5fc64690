"""Every query of the shipped Grafana dashboard runs on a real Prometheus and returns data.

On a local cluster with the install applied, the operator runs as its ServiceAccount with leader
election; a real Prometheus (localcluster build-prometheus) scrapes it with the token of the
ServiceAccount that the shipped manifests/monitoring/metrics-reader-binding.yaml binds
(monitoring/prometheus-k8s), and scrapes a stand-in service: a loopback HTTP server whose
/metrics counts its own requests in `http_requests_total` (some of them 5xx), so that `up` and
the seed's Error Rate have data. The test then makes each thing happen: an incident per
severity, an alert through the intake (MTTD), an action, a paused circuit breaker, an escalation,
a response-target breach, an acknowledgement (MTTA), a resolution (MTTR), a notification that
fails. Then every target's `expr` of manifests/monitoring/grafana-dashboard.json, with Grafana's
variables replaced by the values in VARIABLES (docs/operations/monitoring.md), is run against
Prometheus's HTTP API: a query that errors, returns no series or only NaN fails (polled with a
deadline until scraped). The shipped rules evaluate on the same data without an error.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import (
    ALERT_TOKEN,
    INSTALL_NS,
    LOOPBACK_FOR_EVERY_NAMESPACE,
    ROOT,
    Cluster,
    OperatorProcess,
    create_namespace,
    ensure_secret,
    free_port,
    reader_token,
    token_kubeconfig,
)
from tests.e2e.engine_helpers import Scenario, deploy_ref
from tests.e2e.test_alerts import post
from tests.e2e.test_prometheus import prometheus_bin
from tests.httpserver import LocalServer, local_server
from tests.localcluster_module import load_promstack
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"
STATE = "incident-operator-automation"  # the breaker's state ConfigMap (default name)
SERVICE_JOB = "web"
VARIABLES = {
    "$__rate_interval": "10s",  # Grafana: at least four scrape intervals (here 1 s)
    "$__range": "15m",  # the dashboard's time range (longer than this test)
    "$job": SERVICE_JOB,
    # $namespace: the test's namespace (set per test)
}
"""Grafana's variables in the dashboard's queries and what this test puts in their place."""


class StandIn:
    """A service on loopback: every scrape of /metrics counts ten requests, one of them a 500."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.errors = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with stand_in.lock:
                    stand_in.ok += 9
                    stand_in.errors += 1
                    body = (
                        "# TYPE http_requests_total counter\n"
                        f'http_requests_total{{status_code="200"}} {stand_in.ok}\n'
                        f'http_requests_total{{status_code="500"}} {stand_in.errors}\n'
                    ).encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hooks() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


def prometheus_token(cluster: Cluster, path: Path) -> Path:
    """A token of monitoring/prometheus-k8s, bound by the shipped metrics-reader-binding.yaml."""
    core = client.CoreV1Api(cluster.api)
    for create in (
        lambda: core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="monitoring"))),
        lambda: core.create_namespaced_service_account(
            "monitoring", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="prometheus-k8s"))
        ),
    ):
        try:
            create()
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
    binding = ROOT / "manifests" / "monitoring" / "metrics-reader-binding.yaml"
    cluster.run_kubectl("apply", "-f", str(binding))
    token = cluster.run_kubectl("create", "token", "prometheus-k8s", "-n", "monitoring", "--duration=1h")
    path.write_text(token.stdout.strip())
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def dash_operator(
    installed: Cluster, hooks: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as the install's ServiceAccount, leader-elected, with short response targets,
    a two-level escalation, a channel that works and one that fails, and a breaker of one
    mutating action per namespace."""
    core = client.CoreV1Api(installed.api)
    try:
        core.delete_namespaced_config_map(STATE, INSTALL_NS)  # a fresh breaker window
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
    ensure_secret(installed, INSTALL_NS, "alert-token", {"token": ALERT_TOKEN})
    ensure_secret(
        installed,
        INSTALL_NS,
        "notification-urls",
        {"oncall": hooks.url("/oncall"), "broken": hooks.url("/broken")},
    )
    hooks.set_status("/broken", 500)
    shipped = yaml.safe_load(
        core.read_namespaced_config_map("incident-operator-config", INSTALL_NS).data["config.yaml"]
    )

    def channel(name: str, **extra: Any) -> dict[str, Any]:
        ref = {"namespace": INSTALL_NS, "name": "notification-urls", "key": name}
        return {"name": name, "type": "webhook", "urlSecretRef": ref, **extra}

    settings: dict[str, Any] = {
        **shipped,
        "responseTargets": {"P1": "PT15M", "P2": "PT1H", "P3": "PT4H", "P4": "PT3S"},
        "automation": {"maxMutatingActions": {"perNamespace": 1, "clusterWide": 100, "windowSeconds": 600}},
        "notifications": {
            "channels": [
                channel("oncall", events=["opened"]),
                channel("broken", events=["opened"], maxAttempts=1),
            ],
            "escalation": {
                "P2": {
                    "levels": [
                        {"afterSeconds": 0, "channels": ["oncall"]},
                        {"afterSeconds": 2, "channels": ["oncall"]},
                    ]
                }
            },
        },
        "leaderElection": {**shipped["leaderElection"], "namespace": INSTALL_NS},
        "egress": LOOPBACK_FOR_EVERY_NAMESPACE,
    }
    workdir = tmp_path_factory.mktemp("dash-operator")
    kubeconfig = token_kubeconfig(installed, "incident-operator", INSTALL_NS, workdir / "sa.kubeconfig")
    options = (
        f"--alert-token-secret={INSTALL_NS}/alert-token",
        "--leader-elect",
        "--allow-egress=127.0.0.0/8",
    )
    process = OperatorProcess(kubeconfig, workdir, settings, options, name="dash")
    process.reader_token = reader_token(installed)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def dashboard_queries(namespace: str) -> list[tuple[str, str]]:
    """(panel title, expr) of every target, Grafana's variables replaced."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {**VARIABLES, "$namespace": namespace}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(values, key=len, reverse=True):
                expr = expr.replace(name, values[name])
            unknown = re.findall(r"\$\{?\w+", expr)
            assert not unknown, f"{panel['title']}: variables without a test value: {unknown}"
            queries.append((panel["title"], expr))
    return queries


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


def alert_body(namespace: str, fingerprint: str, started: datetime) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": "DashboardCheck", "namespace": namespace, "severity": "warning"},
        "annotations": {"summary": "a stand-in alert"},
        "startsAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "incident-operator",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": [alert],
        }
    ).encode()


def test_every_dashboard_query_returns_data_after_each_thing_happened(
    installed: Cluster, dash_operator: OperatorProcess, tmp_path: Path
) -> None:
    namespace = f"dash-{uuid.uuid4().hex[:8]}"
    create_namespace(installed, namespace, opt_in=True)
    s = Scenario(installed, dash_operator, namespace)
    service = StandIn()
    promstack = load_promstack()
    rules = promstack.write_rules(tmp_path / "rules.yaml")
    config = promstack.config_document(
        {
            "incident-operator": (f"127.0.0.1:{dash_operator.port}", {"namespace": INSTALL_NS}),
            SERVICE_JOB: (f"127.0.0.1:{service.port}", {"namespace": namespace}),
        },
        None,  # no Alertmanager: the rules are evaluated, nothing is delivered
        [rules],
        token_files={"incident-operator": prometheus_token(installed, tmp_path / "prometheus.token")},
    )
    prometheus = promstack.Prometheus(prometheus_bin(), tmp_path, free_port(), config)

    def query(expr: str) -> list[dict[str, Any]]:
        return list(prometheus.api("query", query=expr)["result"])

    try:
        wait_until(
            lambda: query('up{job="incident-operator"} == 1') and query(f'up{{job="{SERVICE_JOB}"}} == 1'),
            timeout=60,
            what="Prometheus scrapes the operator (with the binding's token) and the service",
            describe=lambda: json.dumps(prometheus.api("targets")["activeTargets"])[:2000],
        )
        wait_until(  # the zero series are stored before anything happens: the first is an increase
            lambda: query('incident_operator_time_to_acknowledge_seconds_count{severity="P2"} == 0'),
            timeout=60,
            what="the operator's series at zero",
        )

        # An action, then a paused circuit breaker (one mutating action per namespace).
        s.deployment("a", 1)
        s.deployment("b", 1)
        s.playbook("fix-a", [{"name": "scale", "scale": {"target": deploy_ref("a"), "replicas": 2}}])
        s.playbook("fix-b", [{"name": "scale", "scale": {"target": deploy_ref("b"), "replicas": 2}}])
        s.incident("slow-a", severity="P3", category="performance", playbookRef={"name": "fix-a"})
        s.wait_step("slow-a", "scale", "Succeeded")
        s.incident("slow-b", severity="P3", category="performance", playbookRef={"name": "fix-b"})
        s.wait_condition("slow-b", "AutomationPaused", reason="CircuitOpen")
        # An incident per severity: P1 held by a person, P2 escalates, P4 breaches its 3 s target.
        s.incident("outage", severity="P1", paused=True)
        s.incident("degraded", severity="P2", paused=True)
        s.incident("cosmetic", severity="P4", category="performance", paused=True)
        # An alert through the intake (MTTD: its start to detection).
        status, answer = post(
            dash_operator.port,
            alert_body(namespace, "dash0001", datetime.now(UTC) - timedelta(seconds=20)),
        )
        assert status == 200, answer

        s.wait_condition("cosmetic", "ResponseTargetBreached")
        wait_until(
            lambda: len((s.status("degraded").get("escalation") or {}).get("history") or []) >= 2,
            timeout=60,
            what="two escalation levels",
        )
        wait_until(
            lambda: query("count(sum by (severity) (incident_operator_incidents_open) > 0) == 4"),
            timeout=60,
            what="open incidents of all four severities scraped",
        )
        s.patch_incident("degraded", {"commander": "alice"})  # MTTA
        s.patch_incident(
            "cosmetic", {"resolution": {"summary": "fixed by hand", "rootCause": "typo"}}
        )  # MTTR
        s.wait_phase("cosmetic", "Resolved")

        happened = {
            "an action": "sum(incident_operator_actions_total) > 0",
            "a paused breaker": "sum(incident_operator_automation_paused) > 0",
            "a hold": 'sum(incident_operator_actions_deferred_total{reason="CircuitOpen"}) > 0',
            "a breach": 'sum(incident_operator_response_target_breaches_total{severity="P4"}) > 0',
            "an escalation": 'sum(incident_operator_escalations_total{severity="P2"}) > 0',
            "an alert": 'sum(incident_operator_alerts_received_total{status="firing"}) > 0',
            "a detection": 'sum(incident_operator_time_to_detect_seconds_count{drill="false"}) > 0',
            "an ack": 'sum(incident_operator_time_to_acknowledge_seconds_count{severity="P2"}) > 0',
            "a resolution": 'sum(incident_operator_time_to_resolve_seconds_count{severity="P4"}) > 0',
            "a failed notification": 'sum(incident_operator_notifications_total{result="failed"}) > 0',
            "a leader": 'sum(incident_operator_leader{job="incident-operator"}) == 1',
            "5xx answers": 'sum(rate(http_requests_total{status_code="500"}[10s])) > 0',
        }
        for what, expr in happened.items():
            wait_until(functools.partial(query, expr), timeout=60, what=f"Prometheus has {what}: {expr}")

        queries = dashboard_queries(namespace)
        assert len(queries) >= 17
        answers: dict[str, list[dict[str, Any]]] = {}

        def all_answer() -> bool:
            for _, expr in queries:
                answers[expr] = query(expr)  # an error (bad_data) raises at once
            return all(finite(r) for r in answers.values())

        wait_until(
            all_answer,
            timeout=60,
            what="every dashboard query returns a number",
            describe=lambda: "\n".join(
                f"{t}: {e} -> {answers.get(e)}" for t, e in queries if not finite(answers.get(e) or [])
            ),
        )
        titles = {title for title, _ in queries}
        for needed in (
            "System Health",
            "Error Rate",
            "Escalations",
            "Automation paused",
            "Response-target breaches",
        ):
            assert needed in titles
        # The panels show what happened, not zeros: every series a panel needs exists at zero
        # before it happens (the operator exports them at start), so the first one counts.
        health = next(e for t, e in queries if t == "System Health")
        assert [float(r["value"][1]) for r in answers[health]] == [1.0]
        for title, expr in queries:
            if title in ("Alerts received", "System Health"):
                continue  # a rate over seconds (the alert came earlier); checked above
            assert any(float(r["value"][1]) > 0 for r in answers[expr]), (title, expr, answers[expr])

        for group in prometheus.api("rules")["groups"]:  # the shipped rules evaluate on this data
            for rule in group["rules"]:
                assert rule["health"] == "ok", rule
    finally:
        prometheus.stop()
        service.close()


def test_a_query_that_returns_nothing_or_errors_would_fail(tmp_path: Path) -> None:
    """The checks above can fail: an unknown metric returns no series, a broken query an error."""
    promstack = load_promstack()
    service = StandIn()
    config = promstack.config_document({SERVICE_JOB: (f"127.0.0.1:{service.port}", {})}, None, [])
    prometheus = promstack.Prometheus(prometheus_bin(), tmp_path, free_port(), config)
    try:
        wait_until(lambda: prometheus.api("query", query="up == 1")["result"], timeout=60, what="scraped")
        assert prometheus.api("query", query="incident_operator_no_such_metric")["result"] == []
        assert not finite(prometheus.api("query", query="histogram_quantile(0.5, vector(0))")["result"] or [])
        with pytest.raises(OSError, match="400"):
            prometheus.api("query", query="sum((")
    finally:
        prometheus.stop()
        service.close()
