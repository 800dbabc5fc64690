"""`kubectl incident explain` through the real `kubectl` with the plugin on PATH: the operator writes
`status.explanation` for an incident whose gated step waits for approval, and the plugin renders
it; `--alert FILE.json` replays a payload against the namespace's Playbooks with the operator's
config from a ConfigMap (or the defaults), creating nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import Cluster, OperatorProcess, named_namespace
from tests.e2e.engine_helpers import GROUP, TIMEOUT, VERSION, Scenario, deploy_ref
from tests.e2e.test_after_the_incident import kubectl
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def steps_of(s: Scenario, name: str) -> dict[str, dict[str, Any]]:
    explanation = s.status(name).get("explanation") or {}
    return {step["name"]: step for step in explanation.get("steps") or []}


def row(output: str, *first: str) -> str:
    """The line of a rendered table whose first cells are `first`."""
    found = [line for line in output.splitlines() if tuple(line.split()[: len(first)]) == first]
    assert found, f"no row {first} in:\n{output}"
    return found[0]


def incidents(s: Scenario) -> list[str]:
    listed = s.custom.list_namespaced_custom_object(GROUP, VERSION, s.namespace, "incidents")
    return sorted(i["metadata"]["name"] for i in listed["items"])


def test_explain_says_which_playbook_and_why_a_step_waits(s: Scenario, tmp_path: Path) -> None:
    ns = ("-n", s.namespace)
    s.deployment("web", 1)
    collect = {"name": "collect", "collectEvidence": {"selector": {"app": "web"}}}
    s.playbook(
        "web-gated",
        [collect, {"name": "restart", "restart": {"target": deploy_ref("web")}, "requiresApproval": True}],
        priority=10,
        match={"severities": ["P2"]},
    )
    s.playbook("generic", [collect])
    s.playbook("data-only", [collect], match={"categories": ["data"]})
    s.incident("web-down", targets=[deploy_ref("web")])

    waiting = wait_until(
        lambda: (step := steps_of(s, "web-down").get("restart")) and step["verdict"] == "Waits" and step,
        timeout=TIMEOUT,
        what="the explanation of a step waiting for approval",
        describe=s.describer("web-down"),
    )
    assert waiting["reason"] == "AwaitingApproval"
    written = s.status("web-down")["explanation"]
    assert written["playbook"] == "web-gated"
    assert written["runId"] == "r1"

    shown = kubectl(s, "explain", "web-down", *ns).stdout
    assert row(shown, "Chosen", "web-gated")
    assert "higher priority (10)" in row(shown, "Matched", "generic")
    assert "category availability not in [data]" in row(shown, "NotMatched", "data-only")
    assert row(shown, "1", "collect", "collectEvidence", "Succeeded", "Ran")
    assert row(shown, "2", "restart", "restart", "AwaitingApproval", "Waits", "AwaitingApproval")
    assert (
        f"Next: step restart runs once approved: kubectl incident approve web-down restart -n {s.namespace}"
        in (shown)
    )
    as_json = json.loads(kubectl(s, "explain", "web-down", *ns, "-o", "json").stdout)
    assert as_json == s.status("web-down")["explanation"]

    # The same namespace's Playbooks, met by an alert that has no incident yet: with the config
    # of an operator's ConfigMap (here in a namespace of the test's own: --operator-namespace),
    # DiskFull is a data incident; with the defaults (no ConfigMap there), an availability one.
    with named_namespace(s.cluster, f"{s.namespace}-op") as operator_ns:
        replay_alert(s, tmp_path, operator_ns)


def replay_alert(s: Scenario, tmp_path: Path, operator_ns: str) -> None:
    ns = ("-n", s.namespace)
    s.core.create_namespaced_config_map(
        operator_ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="incident-operator-config"),
            data={"config.yaml": "alertIntake:\n  categoryByAlertname: {DiskFull: data}\n"},
        ),
    )
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "namespace": s.namespace, "severity": "critical"},
                "annotations": {"summary": "disk full"},
                "fingerprint": "d15cf011",
            }
        ],
    }
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(payload))
    before = incidents(s)
    replayed = kubectl(s, "explain", "--alert", str(alert), *ns, "--operator-namespace", operator_ns).stdout
    assert f"config: ConfigMap {operator_ns}/incident-operator-config" in replayed
    assert "Alert d15cf011 (firing): incident alert-d15cf011, P1 data" in replayed
    assert row(replayed, "Chosen", "data-only")
    assert "severity P1 not in [P2]" in row(replayed, "NotMatched", "web-gated")
    assert "Not known to a replay" in replayed

    defaults = kubectl(s, "explain", "--alert", str(alert), *ns, "--operator-namespace", "default").stdout
    assert "config: the defaults (ConfigMap default/incident-operator-config unreadable" in defaults
    assert "incident alert-d15cf011, P1 availability" in defaults
    assert row(defaults, "Chosen", "generic")
    assert incidents(s) == before == ["web-down"]  # nothing was created
