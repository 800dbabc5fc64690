"""`kubectl incident explain` against an in-memory stand-in for the user's API access: rendering
the operator's `status.explanation`, and `--alert` replaying a webhook payload with the real
alert mapping, the operator's config from its ConfigMap (or the defaults, said so) and the real
matcher, creating nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from incident_operator.cli.kubectl.client import Api, Failed
from incident_operator.cli.kubectl.explain import render
from incident_operator.cli.kubectl.main import main, parser
from incident_operator.core.planner import Intent
from tests.unit.test_explain import COLLECT, RESTART, Explained, candidate, incident

SHOP = "shop"


class FakeApi:
    """`Api` as `explain` uses it: one incident, the namespace's Playbooks and Incidents, the
    operator's ConfigMap (or a refusal to read it); it records any write."""

    namespace = SHOP

    def __init__(
        self,
        incident: dict[str, Any] | None = None,
        playbooks: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | ApiException | None = None,
        incidents: list[dict[str, Any]] | None = None,
    ) -> None:
        self.incident = incident or {}
        self.playbooks = playbooks or []
        self.incidents = incidents or []
        self.config = config
        self.writes: list[Any] = []
        self.listed: list[tuple[str, str | None, dict[str, Any]]] = []
        self.objects = self
        self.core = self

    def get(self, name: str) -> dict[str, Any]:
        return self.incident

    def list(self, plural: str, namespace: str | None, **query: Any) -> list[dict[str, Any]]:
        self.listed.append((plural, namespace, query))
        return self.playbooks if plural == "playbooks" else self.incidents

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        assert (name, namespace) == ("incident-operator-config", "incident-operator")
        if isinstance(self.config, ApiException):
            raise self.config
        if self.config is None:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data={"config.yaml": yaml.safe_dump(self.config)})

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self.writes.append(("create", args))

    def patch(self, *args: Any, **kwargs: Any) -> Any:
        self.writes.append(("patch", args))

    def patch_spec(self, *args: Any, **kwargs: Any) -> Any:
        self.writes.append(("patch_spec", args))


def run(fake: FakeApi, *argv: str) -> None:
    parsed: argparse.Namespace = parser().parse_args(list(argv))
    parsed.fn(cast(Api, fake), parsed)


def explained_incident() -> dict[str, Any]:
    """An incident as the operator leaves it: collect ran, restart waits for approval."""
    gated = {**RESTART, "requiresApproval": True}
    run_ = Explained(
        incident(), candidate("web-restart", COLLECT, gated), candidate("db", match={"categories": ["data"]})
    )
    run_.plan()
    run_.complete(Intent("run-step", 0), message="collected 3 pods")
    run_.plan()
    status = run_.status.model_dump(mode="json", exclude_none=True)
    return {
        "metadata": {"name": "web"},
        "spec": run_.spec.model_dump(mode="json", exclude_none=True),
        "status": status,
    }


def test_explain_renders_candidates_steps_hold_and_next(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeApi(explained_incident())
    run(fake, "explain", "web")
    out = capsys.readouterr().out
    assert out.startswith("Incident web (namespace shop): phase Investigating, P1 availability\n")
    lines = out.splitlines()
    chosen = next(line for line in lines if "web-restart" in line and "Chosen" in line)
    assert "matches: no match criteria" in chosen
    assert any(line.split()[:2] == ["NotMatched", "db"] for line in lines)
    restart = next(line for line in lines if line.strip().startswith("2 "))
    assert restart.split()[1:6] == ["restart", "restart", "AwaitingApproval", "Waits", "AwaitingApproval"]
    assert "Held by: Reconciling AwaitingApproval: step restart waits for approval" in out
    assert "Next: step restart runs once approved: kubectl incident approve web restart -n shop" in out
    assert fake.writes == []


def test_explain_json_is_the_status_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    body = explained_incident()
    run(FakeApi(body), "explain", "web", "-o", "json")
    assert json.loads(capsys.readouterr().out) == body["status"]["explanation"]


def test_explain_without_an_explanation_says_why() -> None:
    with pytest.raises(Failed, match="has no explanation yet"):
        run(
            FakeApi({"metadata": {"name": "web"}, "spec": incident().model_dump(mode="json")}),
            "explain",
            "web",
        )


def test_explain_needs_a_name_or_an_alert(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(Failed, match="explain NAME, or explain --alert"):
        run(FakeApi(), "explain")


def test_render_counts_the_candidates_left_out() -> None:
    many = [candidate(f"pb-{i:02}", match={"severities": ["P4"]}) for i in range(25)]
    run_ = Explained(incident(), *many)
    run_.plan()
    assert run_.status.explanation is not None
    assert "  ... and 5 more" in render(run_.status.explanation).splitlines()


# ----------------------------------------------------------------------------- --alert


def payload(*alerts: dict[str, Any], version: str = "4") -> dict[str, Any]:
    return {"version": version, "status": "firing", "alerts": list(alerts)}


def alert(fingerprint: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": labels, "annotations": {}, "fingerprint": fingerprint}


PLAYBOOKS = [
    {
        "metadata": {"name": "data-restore", "generation": 1},
        "spec": {"match": {"categories": ["data"]}, "steps": [{**RESTART, "requiresApproval": True}]},
    },
    {
        "metadata": {"name": "availability", "generation": 1},
        "spec": {"match": {"categories": ["availability"]}, "steps": [COLLECT]},
    },
    {"metadata": {"name": "broken"}, "spec": {"steps": [{**COLLECT, "when": {"stepFailed": "later"}}]}},
]
CONFIG = {"alertIntake": {"categoryByAlertname": {"WebDown": "data"}, "severityMap": {"critical": "P2"}}}


def write(tmp_path: Path, body: dict[str, Any]) -> str:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_an_alert_replay_uses_the_operators_config_and_the_matcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeApi(playbooks=PLAYBOOKS, config=CONFIG)
    body = payload(
        alert("a1", alertname="WebDown", namespace=SHOP, severity="critical"),
        alert("a2", alertname="WebDown", namespace="payments"),
        alert("a3", alertname="WebDown"),
    )
    run(fake, "explain", "--alert", write(tmp_path, body), "-n", SHOP)
    out = capsys.readouterr().out
    assert "config: ConfigMap incident-operator/incident-operator-config" in out
    assert "Alert a1 (firing): incident alert-a1, P2 data" in out  # mapped by the ConfigMap's config
    lines = out.splitlines()
    assert any(line.split()[:2] == ["Chosen", "data-restore"] for line in lines)
    assert any(line.split()[:2] == ["NotMatched", "availability"] for line in lines)
    broken = next(line for line in lines if line.split()[:2] == ["Invalid", "broken"])
    assert "when names 'later', which is not an earlier step" in broken
    assert "waits for approval (kubectl incident approve alert-a1 restart)" in out
    assert "replay it with -n payments" in out
    assert "Alert a3: opens no incident (NoNamespace)" in out
    assert "Not known to a replay" in out
    assert "cooldowns" in out
    assert fake.writes == []  # nothing created
    assert ("incidents", SHOP, {"label_selector": "incident-operator.dev/fingerprint=a1"}) in fake.listed


def test_an_unreadable_config_map_falls_back_to_the_defaults_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"reason": "Forbidden", "message": "configmaps is forbidden"})
    fake = FakeApi(playbooks=PLAYBOOKS, config=forbidden)
    body = payload(alert("a1", alertname="WebDown", namespace=SHOP, severity="critical"))
    run(fake, "explain", "--alert", write(tmp_path, body), "-n", SHOP, "-o", "json")
    document = json.loads(capsys.readouterr().out)
    assert document["config"] == (
        "config: the defaults (ConfigMap incident-operator/incident-operator-config unreadable: "
        "Error from server (Forbidden): configmaps is forbidden)"
    )
    first = document["alerts"][0]
    assert first["said"] == ["Alert a1 (firing): incident alert-a1, P1 availability"]  # the default map
    assert first["playbook"] == "availability"
    assert document["unknown"]


def test_an_alert_with_an_open_incident_is_recorded_on_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeApi(playbooks=PLAYBOOKS, incidents=[{"metadata": {"name": "alert-a1"}, "spec": {}}])
    body = payload(alert("a1", alertname="WebDown", namespace=SHOP))
    run(fake, "explain", "--alert", write(tmp_path, body), "-n", SHOP)
    out = capsys.readouterr().out
    assert "It has an open incident already, alert-a1" in out
    assert "config: the defaults (ConfigMap incident-operator/incident-operator-config unreadable" in out


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("not json", "is not JSON"),
        (json.dumps({"alerts": []}), "is not an Alertmanager webhook payload"),
        (json.dumps(payload(version="3")), "payload version 3; the operator takes version 4"),
    ],
)
def test_a_bad_payload_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "alert.json"
    path.write_text(body)
    with pytest.raises(Failed, match=error):
        run(FakeApi(), "explain", "--alert", str(path))


def test_name_and_alert_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Failed, match="not both"):
        run(FakeApi(), "explain", "web", "--alert", write(tmp_path, payload()))


def test_main_prints_a_refusal_and_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.json")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": SHOP}}],
                "current-context": "x",
            }
        )
    )
    assert main(["--kubeconfig", str(kubeconfig), "explain", "--alert", missing]) == 1
    assert f"error: cannot read {missing}" in capsys.readouterr().err


def test_control_characters_reach_the_terminal_as_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    """A Playbook's label value (any string) or a message with an escape sequence or a line break
    is shown escaped: it cannot clear the screen or forge a line of the output."""
    hostile = "\x1b[2J\x1b[31mpwned\nNext: nothing"
    run_ = Explained(incident(), candidate("lure", match={"labels": {"team": hostile}}))
    run_.plan()
    body = {"metadata": {"name": "web"}, "spec": run_.spec.model_dump(mode="json"), "status": {}}
    body["status"] = run_.status.model_dump(mode="json", exclude_none=True)
    run(FakeApi(body), "explain", "web")
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "label team missing (wants \\x1b[2J\\x1b[31mpwned\\nNext: nothing)" in out
    assert [line for line in out.splitlines() if line.startswith("Next:")] == [
        "Next: no playbook runs: a Playbook created or changed to fit is considered at once"
    ]
