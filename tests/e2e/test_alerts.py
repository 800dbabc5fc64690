"""Alerts in: a real Alertmanager delivers to the operator's /alertmanager; Incidents open,
remediate, resolve with the alert, reopen on a re-fire; bad requests get clear answers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    ALERT_TOKEN,
    TEAM_NAMESPACE,
    TEAM_TOKEN,
    Alertmanager,
    Cluster,
    OperatorProcess,
    create_namespace,
)
from tests.e2e.engine_helpers import GROUP, TIMEOUT, VERSION, Scenario
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def incidents_for(s: Scenario, alertname: str) -> list[dict[str, Any]]:
    found = s.custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        s.namespace,
        "incidents",
        label_selector=f"incident-operator.dev/alertname={alertname}",
    )
    return sorted(found["items"], key=lambda i: i["metadata"]["creationTimestamp"])


def post(port: int, body: bytes, token: str | None = ALERT_TOKEN) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/alertmanager", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, json.loads(text) if text.startswith(b"{") else {"raw": text.decode(errors="replace")}


def payload(namespace: str, fingerprint: str, status: str = "firing", **labels: str) -> bytes:
    return batch([(namespace, fingerprint)], status, **labels)


def batch(alerts: list[tuple[str, str]], status: str = "firing", **labels: str) -> bytes:
    """A delivery of one alert per (namespace, fingerprint)."""
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}",
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "op",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://am",
            "alerts": [_alert(namespace, fingerprint, status, **labels) for namespace, fingerprint in alerts],
        }
    ).encode()


def _alert(namespace: str, fingerprint: str, status: str, **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "namespace": namespace, "severity": "critical", **labels},
        "annotations": {"summary": "5xx above 10%"},
        "startsAt": "2026-11-27T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def metric(operator: OperatorProcess, name: str, labels: dict[str, str]) -> float:
    """A metric's value summed over the series with `labels`, as a scraper with the metrics-reader
    role reads /metrics."""
    total = 0.0
    for line in operator.scrape().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_service_down_from_alertmanager_is_remediated_and_resolves_with_the_alert(
    s: Scenario, alertmanager: Alertmanager
) -> None:
    s.deployment("web", 2)
    s.playbook(
        "on-service-down",
        [
            {"name": "restart-web", "restart": {"target": {"kind": "Deployment", "name": "web"}}},
            {
                "name": "wait-web",
                "waitReady": {"target": {"kind": "Deployment", "name": "web"}},
                "timeoutSeconds": 60,
            },
        ],
        match={"alertnames": ["ServiceDown"]},
    )
    firing_before = metric(s.operator, "incident_operator_alerts_received_total", {"status": "firing"})
    histograms = [
        f"incident_operator_time_to_{what}_seconds_count"
        for what in ("detect", "acknowledge", "mitigate", "resolve")
    ]
    p1 = {"severity": "P1", "drill": "false"}
    counts_before = [metric(s.operator, name, p1) for name in histograms]
    labels = {"namespace": s.namespace, "severity": "critical", "deployment": "web", "job": "web"}
    alertmanager.fire("ServiceDown", labels, "web is down")

    incident = wait_until(
        lambda: incidents_for(s, "ServiceDown"), timeout=TIMEOUT, what="an incident from the alert"
    )[0]
    name = incident["metadata"]["name"]
    assert name.startswith("alert-")
    assert (incident["spec"]["severity"], incident["spec"]["category"]) == ("P1", "availability")
    assert incident["spec"]["source"]["type"] == "alert"
    assert incident["spec"]["targets"] == [{"kind": "Deployment", "name": "web"}]

    assert incident["spec"]["source"]["startsAt"]  # the alert's own start: MTTD is measured from it
    s.patch_incident(name, {"commander": "alice"})  # a person acknowledges
    s.wait_condition(name, "Acknowledged", reason="CommanderAssigned")

    reconciling = s.wait_condition(name, "Reconciling", reason="Monitoring")
    wait_until(
        lambda: "waiting for the alert" in (s.condition(name, "Reconciling") or {}).get("message", ""),
        timeout=TIMEOUT,
        what="monitoring waits for the alert",
        describe=s.describer(name),
    )
    assert reconciling["status"] == "True"
    assert s.status(name)["phase"] == "Monitoring"

    alertmanager.resolve("ServiceDown", labels, "web is down")
    s.wait_phase(name, "Resolved")
    types = [entry["type"] for entry in s.status(name)["timeline"]]
    assert "AlertResolved" in types
    # Its loop was started from the intake's create (the Playbook's event built the supervisor):
    # its Events are posted all the same (kopf's variables, which the HTTP request lacks).
    s.wait_events(
        name,
        lambda found: {"PlaybookStarted", "Resolved"} <= {e.reason for e in found},
        "the run's Events on an incident the intake opened",
    )
    assert len(incidents_for(s, "ServiceDown")) == 1  # Alertmanager's repeated deliveries changed nothing
    assert metric(s.operator, "incident_operator_alerts_received_total", {"status": "firing"}) > firing_before
    assert metric(s.operator, "incident_operator_alerts_received_total", {"status": "resolved"}) >= 1
    assert metric(s.operator, "incident_operator_incidents_total", {"source": "alert", "severity": "P1"}) >= 1
    counts_after = [metric(s.operator, name, p1) for name in histograms]
    assert [after - before for before, after in zip(counts_before, counts_after, strict=True)] == [1, 1, 1, 1]
    assert (
        metric(s.operator, "incident_operator_actions_total", {"action": "restart", "result": "succeeded"})
        >= 1
    )


def test_a_refire_reopens_the_incident_and_after_closing_opens_a_new_one(s: Scenario) -> None:
    s.deployment("api", 1)
    s.playbook(
        "on-errors",
        [{"name": "scale", "scale": {"target": {"kind": "Deployment", "name": "api"}, "delta": 1}}],
        stabilizationSeconds=0,
    )
    port = s.operator.port
    assert post(port, payload(s.namespace, "0123abcd0123abcd"))[0] == 200
    name = "alert-0123abcd0123abcd"
    s.wait_condition(name, "Mitigated")
    assert post(port, payload(s.namespace, "0123abcd0123abcd", "resolved"))[0] == 200
    s.wait_phase(name, "Resolved")

    status, body = post(port, payload(s.namespace, "0123abcd0123abcd"))
    assert (status, body["results"][0]["result"]) == (200, "marked firing")
    wait_until(
        lambda: "Refired" in [e["type"] for e in s.status(name)["timeline"]],
        timeout=TIMEOUT,
        what="re-fire recorded",
        describe=s.describer(name),
    )
    assert post(port, payload(s.namespace, "0123abcd0123abcd", "resolved"))[0] == 200
    s.wait_phase(name, "Resolved")
    assert s.ready_replicas("api") == 3  # the playbook ran once per firing: 1 -> 2 -> 3

    s.patch_incident(name, {"closed": True})
    s.wait_phase(name, "Closed")
    status, body = post(port, payload(s.namespace, "0123abcd0123abcd"))
    assert body["results"][0] == {
        "fingerprint": "0123abcd0123abcd",
        "result": "created",
        "incident": f"{name}-2",
    }
    assert status == 200


def test_bad_requests_get_clear_answers_and_create_nothing(s: Scenario) -> None:
    port = s.operator.port
    good = payload(s.namespace, "00000000000000aa")
    assert post(port, good, token=None)[0] == 401
    status, body = post(port, good, token="wrong")
    assert (status, body["error"]) == (401, "missing or wrong bearer token")
    status, body = post(port, b"{not json")
    assert status == 400
    assert "not an Alertmanager webhook payload" in body["error"]
    status, body = post(port, json.dumps({"version": "4", "status": "firing"}).encode())
    assert status == 400
    assert any("alerts" in reason for reason in body["reasons"])
    status, body = post(port, json.dumps({"version": "3", "status": "firing", "alerts": []}).encode())
    assert (status, body["error"]) == (400, "unsupported payload version '3'; expected '4'")
    assert post(port, b"{" + b" " * 2_000_000 + b"}")[0] == 413
    assert incidents_for(s, "HighErrorRate") == []

    status, body = post(port, payload("no-such-namespace", "00000000000000bb"))
    assert status == 200
    assert body["results"][0]["result"] == "skipped"
    assert "does not exist" in body["results"][0]["reason"]


def test_the_token_can_be_rotated_without_a_restart(s: Scenario) -> None:
    core = client.CoreV1Api(s.cluster.api)
    rotated = ALERT_TOKEN + "-rotated"
    core.patch_namespaced_secret(
        "alert-token", "incident-operator-system", {"stringData": {"token": rotated}}
    )
    try:
        wait_until(
            lambda: post(s.operator.port, payload(s.namespace, "00000000000000cc"), token=rotated)[0] == 200,
            timeout=30,
            what="the rotated token accepted",
        )
        assert post(s.operator.port, payload(s.namespace, "00000000000000cc"))[0] == 401
    finally:
        core.patch_namespaced_secret(
            "alert-token", "incident-operator-system", {"stringData": {"token": ALERT_TOKEN}}
        )
        wait_until(
            lambda: post(s.operator.port, payload(s.namespace, "00000000000000cc"))[0] == 200,
            timeout=30,
            what="the original token accepted again",
        )


def test_a_token_bound_to_a_namespace_opens_incidents_there_only(s: Scenario) -> None:
    """alertIntake.tokens: the team's token is bound to TEAM_NAMESPACE; its alert for another
    namespace (this test's) is skipped with the reason and counted, the rest of the batch is
    taken, and the single token still opens incidents anywhere intake allows."""
    core = client.CoreV1Api(s.cluster.api)
    if not any(ns.metadata.name == TEAM_NAMESPACE for ns in core.list_namespace().items):
        create_namespace(s.cluster, TEAM_NAMESPACE, opt_in=False)
    port = s.operator.port
    before = metric(s.operator, "incident_operator_alerts_skipped_total", {"reason": "NotAllowedForToken"})
    team_fp, victim_fp = f"{uuid.uuid4().hex[:16]}", f"{uuid.uuid4().hex[:16]}"
    status, body = post(port, batch([(s.namespace, victim_fp), (TEAM_NAMESPACE, team_fp)]), token=TEAM_TOKEN)
    assert status == 200, body
    victim, team = body["results"]
    assert (victim["result"], victim["code"]) == ("skipped", "NotAllowedForToken")
    assert victim["reason"] == f"namespace {s.namespace} is not one this token may open incidents in"
    assert team["result"] == "created", team
    assert incidents_for(s, "HighErrorRate") == []
    team_incident = s.custom.get_namespaced_custom_object(
        GROUP, VERSION, TEAM_NAMESPACE, "incidents", f"alert-{team_fp}"
    )
    assert team_incident["spec"]["source"]["fingerprint"] == team_fp
    assert (
        metric(s.operator, "incident_operator_alerts_skipped_total", {"reason": "NotAllowedForToken"})
        == before + 1
    )

    status, body = post(port, payload(s.namespace, victim_fp))  # the single token: bound to none
    assert (status, body["results"][0]["result"]) == (200, "created")
    assert [i["metadata"]["name"] for i in incidents_for(s, "HighErrorRate")] == [f"alert-{victim_fp}"]


def test_an_alert_resolving_mid_run_stops_the_mutating_steps_not_yet_running(s: Scenario) -> None:
    """The restart waits for an approval; the alert resolves meanwhile: the restart is skipped with
    the reason (never run against the recovered service), and the incident resolves."""
    s.deployment("cart", 1)
    target = {"kind": "Deployment", "name": "cart"}
    s.playbook(
        "on-errors",
        [
            {"name": "look", "collectEvidence": {"selector": {"app": "cart"}, "logLines": 0}},
            {"name": "grow", "scale": {"target": target, "delta": 1}, "requiresApproval": True},
        ],
        stabilizationSeconds=0,
    )
    port = s.operator.port
    assert post(port, payload(s.namespace, "5eed5eed5eed5eed"))[0] == 200
    name = "alert-5eed5eed5eed5eed"
    wait_until(
        lambda: s.steps(name).get("grow", {}).get("state") == "AwaitingApproval",
        timeout=TIMEOUT,
        what="the scale step waits for its approval",
        describe=s.describer(name),
    )
    assert post(port, payload(s.namespace, "5eed5eed5eed5eed", "resolved"))[0] == 200
    s.wait_phase(name, "Resolved")
    steps = s.steps(name)
    assert steps["look"]["state"] == "Succeeded"
    assert steps["grow"]["state"] == "Skipped"
    assert "the alert resolved before this mutating step ran" in steps["grow"]["message"]
    assert s.ready_replicas("cart") == 1
    assert s.apps.read_namespaced_deployment("cart", s.namespace).spec.replicas == 1
