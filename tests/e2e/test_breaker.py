"""The circuit breaker (issue 21, item 5) on the installed cluster, the operator running as its
ServiceAccount (so the install's Role is what lets it keep the breaker's ConfigMap):

- 30 incidents opened within seconds in one namespace, each with one mutating step, against a
  limit of 10 mutating actions per 60 s window: exactly 10 act, 20 wait (`AutomationPaused`,
  `CircuitOpen`, naming the limit), then they go on as the window slides; no 60 s ever holds
  more than 10 starts, every step runs once (each scales its own Deployment by one), nothing is
  lost; people are told once (one webhook notice for the trip), the metrics say it.
- A step on the incident's own targets takes one slot per workload: with 2 slots, a step on three
  Deployments never fits (`Stalled`, `ActionsAboveLimit`, naming the limit) and touches none; a
  step on two takes both, and a step on one more then waits (`CircuitOpen`).
- `kubectl incident automation resume` by a person bound to the shipped resumer Role closes the
  breaker long before its window ends; a person with the read-only viewer Role reads
  `automation status` and is refused `resume`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from incident_operator.api.timestamps import parse_time
from incident_operator.core import breaker
from tests.e2e.conftest import (
    INSTALL_NS,
    Cluster,
    OperatorProcess,
    create_namespace,
    ensure_secret,
    reader_token,
    token_kubeconfig,
)
from tests.e2e.engine_helpers import GROUP, VERSION, Scenario, deploy_ref
from tests.httpserver import LocalServer, local_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

STATE = "incident-operator-automation"  # the default automation.stateConfigMap, which the Role names
HOOK = "/breaker"


@pytest.fixture(scope="module")
def hooks() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


def start_operator(
    cluster: Cluster, workdir: Path, hooks: LocalServer, automation: dict[str, Any]
) -> OperatorProcess:
    """An operator as the install's ServiceAccount with these limits, on a fresh breaker state,
    telling a webhook (and only it) when automation pauses."""
    core = client.CoreV1Api(cluster.api)
    try:
        core.delete_namespaced_config_map(STATE, INSTALL_NS)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
    ensure_secret(cluster, INSTALL_NS, "notification-urls", {"breaker": hooks.url(HOOK)})
    kubeconfig = token_kubeconfig(cluster, "incident-operator", INSTALL_NS, workdir / "sa.kubeconfig")
    ref = {"namespace": INSTALL_NS, "name": "notification-urls", "key": "breaker"}
    settings = {
        "automation": automation,
        "notifications": {
            "channels": [
                {"name": "breaker", "type": "webhook", "urlSecretRef": ref, "events": ["automationPaused"]}
            ]
        },
    }
    process = OperatorProcess(kubeconfig, workdir, settings, ("--allow-egress=127.0.0.0/8",), name="breaker")
    process.reader_token = reader_token(cluster)
    process.start()
    return process


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def incidents(s: Scenario) -> list[dict[str, Any]]:
    found = s.custom.list_namespaced_custom_object(GROUP, VERSION, s.namespace, "incidents")
    return list(found["items"])


def step_of(incident: dict[str, Any]) -> dict[str, Any]:
    steps = ((incident.get("status") or {}).get("playbook") or {}).get("steps") or [{}]
    return dict(steps[0])


def paused_reason(incident: dict[str, Any]) -> str | None:
    for c in (incident.get("status") or {}).get("conditions") or []:
        if c["type"] == "AutomationPaused" and c["status"] == "True":
            return str(c["reason"])
    return None


def metric(text: str, name: str, labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return None


LIMIT, WINDOW, FLOOD = 10, 60, 30
"""A 60 s window: the first ten act and the other twenty say they wait within 55 s, a margin for a
slow machine (the window frees no slot before)."""


def test_a_flood_of_incidents_beyond_the_window_waits_then_each_step_runs_once_and_nothing_is_lost(
    installed: Cluster, hooks: LocalServer, workdir: Path
) -> None:
    automation = {
        "maxMutatingActions": {"perNamespace": LIMIT, "clusterWide": 100, "windowSeconds": WINDOW},
        "maxConcurrentRunsPerPlaybook": 100,  # the storm guard is not what this test is about
    }
    operator = start_operator(installed, workdir, hooks, automation)
    try:
        namespace = "breaker-flood"
        create_namespace(installed, namespace, opt_in=True)
        s = Scenario(installed, operator, namespace)
        names = [f"app-{n:02d}" for n in range(FLOOD)]
        for name in names:
            s.deployment(name, 0)
            s.playbook(name, [{"name": "scale-up", "scale": {"target": deploy_ref(name), "delta": 1}}])
        for name in names:  # within a few seconds
            s.incident(name, playbookRef={"name": name})

        def first_wave() -> list[dict[str, Any]] | None:
            found = incidents(s)
            done = [i for i in found if step_of(i).get("state") == "Succeeded"]
            waiting = [i for i in found if paused_reason(i) == "CircuitOpen"]
            return found if len(done) == LIMIT and len(waiting) == FLOOD - LIMIT else None

        found = wait_until(
            first_wave,
            timeout=WINDOW - 5,  # before the window frees a slot
            what=f"{LIMIT} steps done and {FLOOD - LIMIT} waiting (CircuitOpen)",
            describe=lambda: str(
                [(i["metadata"]["name"], step_of(i).get("state"), paused_reason(i)) for i in incidents(s)]
            ),
        )
        replicas = {
            name: int(s.apps.read_namespaced_deployment(name, namespace).spec.replicas) for name in names
        }
        assert sorted(replicas.values()) == [0] * (FLOOD - LIMIT) + [1] * LIMIT  # exactly 10 acted
        for incident in found:
            if paused_reason(incident) is None:
                continue
            step = step_of(incident)
            assert step.get("state") == "Pending", step
            assert step.get("attempts", 0) == 0, step  # waiting uses up no attempt
            paused = next(c for c in incident["status"]["conditions"] if c["type"] == "AutomationPaused")
            assert "automation.maxMutatingActions.perNamespace (10)" in paused["message"]
            assert f"within {WINDOW}s" in paused["message"]
        scraped = operator.scrape()
        assert metric(scraped, "incident_operator_automation_paused", 'scope="namespace"') == 1.0
        assert (
            metric(scraped, "incident_operator_actions_deferred_total", 'reason="CircuitOpen"')
            == FLOOD - LIMIT
        )

        def all_done() -> list[dict[str, Any]] | None:
            found = incidents(s)
            done = [i for i in found if step_of(i).get("state") == "Succeeded"]
            return found if len(done) == FLOOD else None

        found = wait_until(
            all_done,
            timeout=3 * WINDOW + 90,
            what="every step done as the window slides",
            describe=lambda: str(
                [(i["metadata"]["name"], step_of(i).get("state"), paused_reason(i)) for i in incidents(s)]
            ),
            interval=1,
        )
        assert len(found) == FLOOD  # nothing lost
        for name in names:  # each step ran once: each Deployment went up by exactly one
            assert s.apps.read_namespaced_deployment(name, namespace).spec.replicas == 1, name
        for incident in found:
            assert step_of(incident).get("attempts") == 1, incident["metadata"]["name"]
            assert paused_reason(incident) is None
        starts = sorted(parse_time(step_of(i)["startedAt"]) for i in found)
        for first, eleventh in zip(starts, starts[LIMIT:], strict=False):
            # startedAt has second precision: a start may show up to a second early
            assert eleventh - first >= timedelta(seconds=WINDOW - 1), (first, eleventh)
        waited = [i for i in found if "CircuitOpen" in [e["type"] for e in i["status"]["timeline"]]]
        assert len(waited) == FLOOD - LIMIT
        for incident in waited:  # said on pause and on resume, in the timeline
            types = [e["type"] for e in incident["status"]["timeline"]]
            assert types.count("CircuitOpen") == 1
            assert types.count("AutomationResumed") == 1
            assert types.index("CircuitOpen") < types.index("AutomationResumed")
        tripped = [i for i in found if "AutomationTripped" in [e["type"] for e in i["status"]["timeline"]]]
        assert len(tripped) == 1  # one trip, however many waited
        notices = wait_until(lambda: hooks.received_at(HOOK), timeout=30, what="the notice of the trip")
        assert len(notices) == 1, notices
        assert "automation.maxMutatingActions.perNamespace (10)" in str(notices[0]["body"])
        assert metric(
            operator.scrape(), "incident_operator_actions_deferred_total", 'reason="CircuitOpen"'
        ) == (FLOOD - LIMIT)
    finally:
        operator.stop()


def test_a_step_on_the_incidents_targets_takes_a_slot_per_workload_and_one_no_window_holds_touches_nothing(
    installed: Cluster, hooks: LocalServer, workdir: Path
) -> None:
    automation = {
        "maxMutatingActions": {"perNamespace": 2, "clusterWide": 100, "windowSeconds": 3600},
        "maxConcurrentRunsPerPlaybook": 100,
    }
    operator = start_operator(installed, workdir, hooks, automation)
    try:
        namespace = "breaker-targets"
        create_namespace(installed, namespace, opt_in=True)
        s = Scenario(installed, operator, namespace)
        for name in ("a", "b", "c"):
            s.deployment(name, 0)
        theirs = [{"name": "scale-up", "scale": {"target": {"fromIncident": {}}, "delta": 1}}]
        s.playbook("scale-theirs", theirs, allowedTargets={"names": ["*"]})
        ref = {"name": "scale-theirs"}
        s.incident("all-three", playbookRef=ref, targets=[deploy_ref(n) for n in ("a", "b", "c")])
        stalled = s.wait_condition("all-three", "Stalled", "True", "ActionsAboveLimit")
        assert (
            "acts on 3 workloads, more than automation.maxMutatingActions.perNamespace (2)"
            in stalled["message"]
        )
        s.incident("two", playbookRef=ref, targets=[deploy_ref("a"), deploy_ref("b")])
        s.wait_step("two", "scale-up", "Succeeded")
        s.incident("one", playbookRef=ref, targets=[deploy_ref("c")])
        paused = s.wait_condition("one", "AutomationPaused", "True", "CircuitOpen")
        assert f"2 mutating actions in namespace {namespace}" in paused["message"]
        replicas = {n: s.apps.read_namespaced_deployment(n, namespace).spec.replicas for n in ("a", "b", "c")}
        assert replicas == {"a": 1, "b": 1, "c": 0}  # two slots, two workloads: c waits
        three = s.steps("all-three")["scale-up"]
        assert (three["state"], three.get("attempts", 0)) == ("Pending", 0)  # touched nothing
        core = client.CoreV1Api(installed.api)
        state = breaker.from_json(core.read_namespaced_config_map(STATE, INSTALL_NS).data[breaker.DATA_KEY])
        two = s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", "two")
        prefix = f"{two['metadata']['uid']}/{two['status']['playbook']['runId']}/scale-up/1"
        assert sorted(a.key for a in state.actions) == sorted(
            breaker.digest(f"{prefix}/Deployment/{n}") for n in ("a", "b")
        )
    finally:
        operator.stop()


def plugin(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "incident_operator.cli.kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_person_with_the_resumer_role_resumes_automation_long_before_the_window_ends(
    installed: Cluster, hooks: LocalServer, workdir: Path
) -> None:
    automation = {"maxMutatingActions": {"perNamespace": 1, "clusterWide": 100, "windowSeconds": 3600}}
    operator = start_operator(installed, workdir, hooks, automation)
    try:
        namespace = "breaker-resume"
        create_namespace(installed, namespace, opt_in=True)
        s = Scenario(installed, operator, namespace)
        for name in ("first", "second"):
            s.deployment(name, 0)
            s.playbook(name, [{"name": "scale-up", "scale": {"target": deploy_ref(name), "delta": 1}}])
        s.incident("first", playbookRef={"name": "first"})
        s.wait_step("first", "scale-up", "Succeeded")
        s.incident("second", playbookRef={"name": "second"})
        s.wait_condition("second", "AutomationPaused", "True", "CircuitOpen")

        core = client.CoreV1Api(installed.api)
        for account in ("oncall", "bystander"):
            core.create_namespaced_service_account(
                INSTALL_NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
            )
        for binding, role, account in (
            ("oncall-resumes-automation", "resumer", "oncall"),
            ("bystander-views-automation", "viewer", "bystander"),
        ):
            installed.run_kubectl(
                "create",
                "rolebinding",
                binding,
                "-n",
                INSTALL_NS,
                f"--role=incident-operator-automation-{role}",
                f"--serviceaccount={INSTALL_NS}:{account}",
            )
        bystander = token_kubeconfig(installed, "bystander", INSTALL_NS, workdir / "bystander")
        viewed = plugin(bystander, "automation", "status")  # the read-only Role reads it
        assert viewed.returncode == 0, viewed.stderr
        assert f"namespace/{namespace} since" in viewed.stdout
        refused = plugin(bystander, "automation", "resume")  # and may not close the breaker
        assert refused.returncode == 1
        assert "Forbidden" in refused.stderr
        oncall = token_kubeconfig(installed, "oncall", INSTALL_NS, workdir / "oncall")
        status = plugin(oncall, "automation", "status")
        assert status.returncode == 0, status.stderr
        assert f"namespace/{namespace} since" in status.stdout
        resumed = plugin(oncall, "automation", "resume")
        assert resumed.returncode == 0, resumed.stderr
        who = f"system:serviceaccount:{INSTALL_NS}:oncall"
        assert f"automation resumed by {who} (namespace/{namespace})" in resumed.stdout

        step = s.wait_step("second", "scale-up", "Succeeded")  # within seconds, not the hour
        assert step["attempts"] == 1
        assert s.apps.read_namespaced_deployment("second", namespace).spec.replicas == 1
        resumed_condition = s.wait_condition("second", "AutomationPaused", "False", "AutomationResumed")
        assert resumed_condition["status"] == "False"
        state = breaker.from_json(core.read_namespaced_config_map(STATE, INSTALL_NS).data[breaker.DATA_KEY])
        assert state.resumed_by == who
        second = s.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", "second")
        run = second["status"]["playbook"]["runId"]
        key = breaker.digest(f"{second['metadata']['uid']}/{run}/scale-up/1")
        assert [a.key for a in state.actions] == [key]  # the window started again: second's step only
    finally:
        operator.stop()
