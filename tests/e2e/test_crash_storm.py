"""SIGKILL of the operator in the middle of a storm of 500 alerts sent through a real Alertmanager:
Alertmanager's retries deliver everything, there is exactly one Incident per firing alert, and no
step ran twice (each of the storm's scale steps adds one replica to its own Deployment: a step
run twice would leave two)."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.conftest import Alertmanager, Cluster, OperatorProcess
from tests.e2e.engine_helpers import TIMEOUT, Scenario, deploy_ref
from tests.e2e.test_alerts import incidents_for
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ALERTS = 500
EVERY = 20  # one alert in EVERY has a scale step of its own; the others only open incidents
SCALED = ALERTS // EVERY
KILL_AFTER = 20  # incidents in the API when the operator is killed
ALERTNAME = "CrashStorm"
FINGERPRINT = "incident-operator.dev/fingerprint"


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def storm(namespace: str, *, ended: datetime | None = None) -> list[dict[str, Any]]:
    alerts = []
    for n in range(ALERTS):
        labels = {
            "alertname": ALERTNAME,
            "namespace": namespace,
            "severity": "warning",
            "instance": f"worker-{n:03d}",
            "shard": str(n // EVERY) if n % EVERY == 0 else "none",
        }
        alert: dict[str, Any] = {"labels": labels, "annotations": {"summary": f"worker {n} is slow"}}
        if ended is not None:
            alert["endsAt"] = ended.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        alerts.append(alert)
    return alerts


def push(alertmanager: Alertmanager, alerts: list[dict[str, Any]]) -> None:
    """Into Alertmanager's own API, in batches, as Prometheus servers do."""
    for start in range(0, len(alerts), 50):
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{alertmanager.url}/api/v2/alerts",
            data=json.dumps(alerts[start : start + 50]).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback
            assert resp.status == 200


def test_sigkill_during_an_alert_storm_loses_nothing_and_runs_no_step_twice(
    s: Scenario, operator: OperatorProcess, alertmanager: Alertmanager
) -> None:
    for shard in range(SCALED):
        s.deployment(f"app-{shard}", 0)
        s.playbook(
            f"scale-{shard}",
            [{"name": "up", "scale": {"target": deploy_ref(f"app-{shard}"), "delta": 1}}],
            match={"alertnames": [ALERTNAME], "labels": {"shard": str(shard)}},
            stabilizationSeconds=0,
        )
    failures_before = alertmanager.log_path.read_text(errors="replace").count("Notify for alerts failed")
    try:
        push(alertmanager, storm(s.namespace))
        opened = wait_until(
            lambda: len(found) if len(found := incidents_for(s, ALERTNAME)) >= KILL_AFTER else None,
            timeout=TIMEOUT,
            what=f"{KILL_AFTER} incidents from the storm",
        )
        operator.kill()
        at_kill = len(incidents_for(s, ALERTNAME))
        # Deliveries fail while the operator is down: Alertmanager says so, and will retry.
        wait_until(
            lambda: (
                alertmanager.log_path.read_text(errors="replace").count("Notify for alerts failed")
                > failures_before
            ),
            timeout=TIMEOUT,
            what="Alertmanager failing to deliver to the killed operator",
        )
        operator.start()
        assert opened >= KILL_AFTER
        assert at_kill < ALERTS, "the storm was over before the kill: the test proved nothing"

        def all_opened() -> list[dict[str, Any]] | None:
            found = incidents_for(s, ALERTNAME)
            return found if len(found) >= ALERTS else None

        found = wait_until(
            all_opened,
            timeout=240,
            what=f"{ALERTS} incidents",
            describe=lambda: f"{len(incidents_for(s, ALERTNAME))} incidents",
            interval=1,
        )
        per_fingerprint = Counter(i["metadata"]["labels"][FINGERPRINT] for i in found)
        assert len(found) == ALERTS
        assert len(per_fingerprint) == ALERTS
        assert set(per_fingerprint.values()) == {1}

        by_shard = {
            i["spec"]["source"]["labels"]["shard"]: i["metadata"]["name"]
            for i in found
            if i["spec"]["source"]["labels"]["shard"] != "none"
        }
        assert len(by_shard) == SCALED
        for shard, name in sorted(by_shard.items()):
            step = s.wait_step(name, "up", "Succeeded")
            assert step["attempts"] == 1
            assert (step["replicasBefore"], step["replicasAfter"]) == (0, 1)
            replicas = s.apps.read_namespaced_deployment(f"app-{shard}", s.namespace).spec.replicas
            assert replicas == 1, f"app-{shard} has {replicas} replicas: its step ran twice"
    finally:
        # Resolve them, or Alertmanager would keep re-sending 500 alerts to later tests.
        push(alertmanager, storm(s.namespace, ended=datetime.now(UTC) - timedelta(seconds=1)))
    for name in by_shard.values():
        s.wait_phase(name, "Resolved")  # the alert resolved: the chain goes on after the crash
