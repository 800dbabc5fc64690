"""Drills on the local cluster: a scaleToZero drill the playbook fixes passes with its figures;
one with an expectation nobody can meet fails and says why; one the response does not fix is
restored; a real incident on the target skips it; a scheduled drill runs on its schedule."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Cluster, OperatorProcess
from tests.e2e.engine_helpers import GROUP, TIMEOUT, VERSION, Scenario, deploy_ref
from tests.e2e.test_after_the_incident import kubectl
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def drill(s: Scenario, name: str, **spec: Any) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Drill", "metadata": {"name": name}, "spec": spec}
    s.custom.create_namespaced_custom_object(GROUP, VERSION, s.namespace, "drills", body)


def last_run(s: Scenario, name: str, result: str | None = None) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        runs = (s.get("drills", name).get("status") or {}).get("runs") or []
        if runs and (runs[-1]["result"] == result if result else runs[-1]["result"] != "Running"):
            return dict(runs[-1])
        return None

    return wait_until(
        done, timeout=180, what=f"drill {name} run", describe=lambda: str(s.get("drills", name).get("status"))
    )


def replicas(s: Scenario, name: str) -> int:
    return int(s.apps.read_namespaced_deployment(name, s.namespace).spec.replicas)


def test_drills_score_restore_skip_and_run_on_schedule(s: Scenario) -> None:
    ns = ("-n", s.namespace)
    for name in ("api", "jobs", "lonely", "busy", "cron"):
        s.deployment(name, 2)
    # The response playbooks: scale the target back to 2.
    for name in ("api", "jobs"):
        s.playbook(
            f"heal-{name}",
            [{"name": "scale-back", "scale": {"target": deploy_ref(name), "replicas": 2}}],
            match={"severities": ["P4"]},
        )
    drill(
        s,
        "api-outage",
        scenario={"scaleToZero": {"target": deploy_ref("api")}},
        incident={"severity": "P3", "title": "Drill: api is down", "playbookRef": {"name": "heal-api"}},
        expect={"mitigatedWithinSeconds": 120, "resolvedWithinSeconds": 170},
    )
    drill(
        s,
        "jobs-nobody-acks",
        scenario={"scaleToZero": {"target": deploy_ref("jobs")}},
        incident={"playbookRef": {"name": "heal-jobs"}},
        expect={"acknowledgedWithinSeconds": 1},
    )
    drill(
        s,
        "lonely-outage",
        scenario={"scaleToZero": {"target": deploy_ref("lonely")}},
        incident={"category": "data", "playbookRef": {"name": "no-such-playbook"}},
        expect={"resolvedWithinSeconds": 5},
        timeoutSeconds=10,
    )
    s.incident("real-one", targets=[deploy_ref("busy")], paused=True)
    drill(s, "busy-outage", scenario={"scaleToZero": {"target": deploy_ref("busy")}})
    for name in ("api-outage", "jobs-nobody-acks", "lonely-outage", "busy-outage"):
        requested = kubectl(s, "drill", "run", name, *ns).stdout
        assert "run requested by" in requested

    passed = last_run(s, "api-outage")
    assert passed["result"] == "Passed", passed
    assert passed["timeToMitigateSeconds"] <= 120
    assert passed["timeToResolveSeconds"] <= 170
    assert passed["replicasBefore"] == 2
    assert passed.get("restored") is False  # the playbook put it back
    assert passed["requestedBy"]
    incident = s.get("incidents", passed["incident"])
    assert incident["spec"]["drill"] is True
    assert replicas(s, "api") == 2

    failed = last_run(s, "jobs-nobody-acks")
    assert failed["result"] == "Failed"
    assert failed["reasons"] == ["not acknowledged (expected within 1s)"]

    restored = last_run(s, "lonely-outage")
    assert restored["result"] == "Failed"
    assert restored["restored"] is True  # nobody fixed it: the drill did
    assert replicas(s, "lonely") == 2

    skipped = last_run(s, "busy-outage")
    assert skipped["result"] == "Skipped"
    assert "real-one" in skipped["reasons"][0]
    assert replicas(s, "busy") == 2  # never broken

    drill(
        s,
        "every-minute",
        scenario={"deletePods": {"selector": {"app": "cron"}, "count": 1}},
        schedule="* * * * *",
        timeoutSeconds=10,
    )
    scheduled = last_run(s, "every-minute")  # within a minute and its timeout
    assert "requestedBy" not in scheduled  # the schedule asked, not a person
    assert s.get("drills", "every-minute")["status"]["nextRunAt"]
    wait_until(
        lambda: replicas(s, "cron") == 2 and s.ready_replicas("cron") == 2, timeout=TIMEOUT, what="cron back"
    )


def test_a_fire_alert_drill_goes_through_the_alert_intake_and_resolves_its_alert(s: Scenario) -> None:
    """fireAlert: the drill's alert enters the operator's own intake (as Alertmanager's would), opens
    an alert incident marked as a drill, the matching playbook runs, and the drill resolves its alert
    once the response has run, so the incident resolves and the run is scored."""
    s.deployment("checkout", 1)
    s.playbook(
        "on-checkout-down",
        [{"name": "scale-up", "scale": {"target": deploy_ref("checkout"), "replicas": 2}}],
        match={"alertnames": ["CheckoutDown"]},
    )
    drill(
        s,
        "checkout-alert",
        scenario={
            "fireAlert": {
                "alertname": "CheckoutDown",
                "labels": {"severity": "warning", "deployment": "checkout"},
                "annotations": {"summary": "Drill: checkout is down"},
            }
        },
        expect={"mitigatedWithinSeconds": 60, "resolvedWithinSeconds": 120},
        timeoutSeconds=150,
    )
    kubectl(s, "drill", "run", "checkout-alert", "-n", s.namespace)
    run = last_run(s, "checkout-alert")
    assert run["result"] == "Passed", run
    incident = s.get("incidents", run["incident"])
    assert incident["metadata"]["name"].startswith("alert-")
    assert incident["spec"]["drill"] is True
    assert incident["spec"]["source"]["alertname"] == "CheckoutDown"
    assert (incident["spec"]["severity"], incident["spec"]["targets"]) == ("P3", [deploy_ref("checkout")])
    status = incident["status"]
    assert status["phase"] == "Resolved"
    assert [e["type"] for e in status["timeline"]].count("AlertResolved") == 1
    assert s.ready_replicas("checkout") == 2
