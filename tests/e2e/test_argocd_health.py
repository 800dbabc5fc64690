"""Argo CD health (manifests/argocd/health/*.lua) judged on real objects: Incidents, Playbooks and
Drills created on the local cluster, driven by the running operator into each state, read back
from the API and fed to each script in gopher-lua (hack/luahealth, the interpreter Argo CD
embeds). A script that fails in the interpreter is reported, not taken for a verdict."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from kubernetes import watch

from tests.e2e.conftest import Cluster, OperatorProcess
from tests.e2e.engine_helpers import GROUP, VERSION, Scenario, deploy_ref
from tests.e2e.test_after_the_incident import kubectl
from tests.e2e.test_drills import drill
from tests.localcluster_module import load_hack
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def load_luahealth() -> ModuleType:
    return load_hack("luahealth")


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def health(s: Scenario, kind: str, name: str) -> dict[str, str]:
    plural = {"Incident": "incidents", "Playbook": "playbooks", "Drill": "drills"}[kind]
    obj = s.custom.get_namespaced_custom_object(GROUP, VERSION, s.namespace, plural, name)
    return dict(load_luahealth().health(kind, obj))


def wait_health(s: Scenario, kind: str, name: str, status: str) -> dict[str, str]:
    """Poll the script's verdict on the live object until it is `status`."""

    def verdict() -> dict[str, str] | None:
        found = health(s, kind, name)
        return found if found["status"] == status else None

    return wait_until(
        verdict,
        timeout=180,
        what=f"{kind}/{name} health {status}",
        describe=lambda: f"{health(s, kind, name)} {s.get(kind.lower() + 's', name).get('status')}",
    )


def test_incident_health_in_each_state(s: Scenario) -> None:
    s.deployment("api", 1)
    s.playbook(
        "gated",
        [{"name": "scale", "scale": {"target": deploy_ref("api"), "replicas": 2}, "requiresApproval": True}],
        match={"categories": ["security"]},
    )
    s.incident("waiting", severity="P3", category="security")
    s.incident("lost", severity="P3", playbookRef={"name": "no-such-playbook"})
    s.incident("fixed", severity="P4", paused=True)

    s.wait_condition("waiting", "Reconciling", reason="AwaitingApproval")
    progressing = health(s, "Incident", "waiting")
    assert progressing["status"] == "Progressing", progressing
    assert progressing["message"] == s.status("waiting")["phase"]

    s.wait_condition("lost", "Stalled", reason="PlaybookNotFound")
    degraded = health(s, "Incident", "lost")
    assert degraded["status"] == "Degraded", degraded
    assert degraded["message"].startswith("PlaybookNotFound: ")

    s.patch_incident("fixed", {"resolution": {"summary": "fixed by hand", "rootCause": "bad config"}})
    s.wait_phase("fixed", "Resolved")
    assert health(s, "Incident", "fixed") == {"status": "Healthy", "message": "Resolved"}
    s.patch_incident("fixed", {"closed": True})
    s.wait_phase("fixed", "Closed")
    assert health(s, "Incident", "fixed") == {"status": "Healthy", "message": "Closed"}


def test_playbook_health_valid_and_invalid(s: Scenario) -> None:
    s.playbook("good", [{"name": "look", "collectEvidence": {"selector": {"app": "api"}}}])
    s.playbook(
        "bad-template",
        [
            {
                "name": "page",
                "notify": {"slack": {"urlSecretRef": {"name": "s", "key": "url"}}, "message": "{secret}"},
            }
        ],
    )
    assert wait_health(s, "Playbook", "good", "Healthy")
    degraded = wait_health(s, "Playbook", "bad-template", "Degraded")
    assert "unknown field {secret}" in degraded["message"]


def test_drill_health_ready_running_passed_failed_and_invalid(s: Scenario) -> None:
    s.deployment("jobs", 2)
    s.deployment("api", 2)
    s.playbook("heal-jobs", [{"name": "scale-back", "scale": {"target": deploy_ref("jobs"), "replicas": 2}}])
    s.playbook(
        "heal-api",
        [{"name": "scale-back", "scale": {"target": deploy_ref("api"), "replicas": 2}}],
        stabilizationSeconds=2,
    )
    drill(
        s,
        "api-outage",
        scenario={"scaleToZero": {"target": deploy_ref("api")}},
        incident={"playbookRef": {"name": "heal-api"}},
        expect={"mitigatedWithinSeconds": 120},
    )
    drill(
        s,
        "nobody-acks",
        scenario={"scaleToZero": {"target": deploy_ref("jobs")}},
        incident={"playbookRef": {"name": "heal-jobs"}},
        expect={"acknowledgedWithinSeconds": 1},
    )
    drill(
        s, "bad-schedule", scenario={"scaleToZero": {"target": deploy_ref("jobs")}}, schedule="every tuesday"
    )

    ready = wait_health(s, "Drill", "nobody-acks", "Healthy")  # validated, never run
    assert ready["message"]
    invalid = wait_health(s, "Drill", "bad-schedule", "Degraded")
    assert invalid["message"].startswith("InvalidSchedule: "), invalid

    wait_health(s, "Drill", "api-outage", "Healthy")
    kubectl(s, "drill", "run", "api-outage", "-n", s.namespace)
    # A run lasts seconds: every version of the Drill the API server stores is judged, from the
    # run request on (a watch from that resourceVersion), until the run's result is written.
    since = s.get("drills", "nobody-acks")["metadata"]["resourceVersion"]
    kubectl(s, "drill", "run", "nobody-acks", "-n", s.namespace)
    verdicts = []
    stream = watch.Watch().stream(
        s.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        s.namespace,
        "drills",
        field_selector="metadata.name=nobody-acks",
        resource_version=since,
        timeout_seconds=120,
    )
    for event in stream:
        obj = event["object"]
        verdicts.append(load_luahealth().health("Drill", obj))
        runs = (obj.get("status") or {}).get("runs") or [{}]
        if runs[-1].get("result") == "Failed":
            break
    assert {"status": "Progressing", "message": "A drill run is in progress"} in verdicts, verdicts
    assert verdicts[-1] == {
        "status": "Degraded",
        "message": "The last run failed: not acknowledged (expected within 1s)",
    }
    wait_until(
        lambda: (
            ((s.get("drills", "api-outage").get("status") or {}).get("runs") or [{}])[-1].get("result")
            == "Passed"
        ),
        timeout=180,
        what="api-outage passed",
        describe=lambda: str(s.get("drills", "api-outage").get("status")),
    )
    assert health(s, "Drill", "api-outage") == {"status": "Healthy", "message": "The last run passed"}


def test_a_new_generation_not_yet_seen_is_progressing_and_a_broken_script_is_an_error(
    s: Scenario, tmp_path: Path
) -> None:
    s.playbook("good", [{"name": "look", "collectEvidence": {"selector": {"app": "api"}}}])
    wait_health(s, "Playbook", "good", "Healthy")
    obj = s.custom.get_namespaced_custom_object(GROUP, VERSION, s.namespace, "playbooks", "good")
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1  # as right after an edit
    luahealth = load_luahealth()
    assert luahealth.health("Playbook", obj)["status"] == "Progressing"

    broken = tmp_path / "broken.lua"
    broken.write_text("return obj.status.nothing.here\n")
    ran = luahealth.subprocess.run(
        [str(luahealth.build()), str(broken)], input="{}", capture_output=True, text=True, check=False
    )
    assert ran.returncode == 1
    assert "the script failed" in ran.stderr
