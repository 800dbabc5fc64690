"""Steps that act on the incident's own target, on the local cluster: one generic Playbook, two
Deployments, two alerts through the real Alertmanager (one naming a pod, one a Service), each
incident remediating its own Deployment and nothing else; an incident naming a workload outside the
Playbook's bounds acting on nothing; and the per-workload lock, held by one incident's run until it
settles, making a second incident wait, naming the first, then proceed."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from incident_operator.api.base import WorkloadRef
from incident_operator.api.keys import RESTARTED_AT
from incident_operator.api.timestamps import format_time, parse_time
from incident_operator.core.targets import lock_lease
from tests.e2e.conftest import Alertmanager, Cluster, OperatorProcess
from tests.e2e.engine_helpers import TIMEOUT, Scenario
from tests.e2e.test_alerts import incidents_for
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

OPTED_IN = {"remediate": "true"}
THEIRS = {"fromIncident": {"kind": "Deployment"}}
GENERIC_STEPS = [
    {"name": "restart", "restart": {"target": THEIRS}},
    {"name": "wait-restarted", "waitReady": {"target": THEIRS}, "timeoutSeconds": 60},
]
BOUNDS = {"kinds": ["Deployment"], "names": ["shop-*"], "selector": {"matchLabels": OPTED_IN}}


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


def label(s: Scenario, name: str, labels: dict[str, str]) -> None:
    s.apps.patch_namespaced_deployment(name, s.namespace, {"metadata": {"labels": labels}})


def restarted_at(s: Scenario, name: str) -> str | None:
    template = s.apps.read_namespaced_deployment(name, s.namespace).spec.template.metadata
    return (template.annotations or {}).get(RESTARTED_AT)


def ref(name: str) -> WorkloadRef:
    return WorkloadRef.model_validate({"kind": "Deployment", "name": name})


def lock_of(s: Scenario, name: str) -> str | None:
    """The holder of the Lease that locks Deployment `name`, if there is one."""
    try:
        lease = client.CoordinationV1Api(s.cluster.api).read_namespaced_lease(
            lock_lease(ref(name)), s.namespace
        )
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return str(lease.spec.holder_identity)


def one_pod_of(s: Scenario, app: str) -> str:
    pods = s.core.list_namespaced_pod(s.namespace, label_selector=f"app={app}").items
    return str(pods[0].metadata.name)


def incident_of(s: Scenario, alertname: str, label_key: str, value: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next(
            (i for i in incidents_for(s, alertname) if i["spec"]["source"]["labels"].get(label_key) == value),
            None,
        )

    return wait_until(found, timeout=TIMEOUT, what=f"the incident of {label_key}={value}")


def test_one_playbook_two_deployments_two_alerts_each_incident_remediates_its_own(
    s: Scenario, alertmanager: Alertmanager
) -> None:
    for name in ("shop-a", "shop-b", "other"):
        s.deployment(name, 1)
    for name in ("shop-a", "shop-b", "other"):
        label(s, name, OPTED_IN)  # `other` opted in too: the names bound keeps it out
    s.core.create_namespaced_service(
        s.namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="shop-b"),
            spec=client.V1ServiceSpec(selector={"app": "shop-b"}, ports=[client.V1ServicePort(port=80)]),
        ),
    )
    s.playbook("service-down", GENERIC_STEPS, match={"alertnames": ["ServiceDown"]}, allowedTargets=BOUNDS)
    base = {"namespace": s.namespace, "severity": "critical"}
    pod_a = one_pod_of(s, "shop-a")
    alertmanager.fire("ServiceDown", {**base, "pod": pod_a, "job": "a"}, "shop-a is down")
    alertmanager.fire("ServiceDown", {**base, "service": "shop-b", "job": "b"}, "shop-b is down")

    a = incident_of(s, "ServiceDown", "pod", pod_a)["metadata"]["name"]
    b = incident_of(s, "ServiceDown", "service", "shop-b")["metadata"]["name"]
    assert s.get("incidents", a)["spec"]["targets"] == [{"kind": "Deployment", "name": "shop-a"}]
    assert s.get("incidents", b)["spec"]["targets"] == [{"kind": "Deployment", "name": "shop-b"}]
    for name in (a, b):
        s.patch_incident(name, {"commander": "alice"})
        s.wait_step(name, "wait-restarted", "Succeeded")
    for name, own in ((a, "shop-a"), (b, "shop-b")):
        steps = s.steps(name)
        for step in ("restart", "wait-restarted"):
            assert [(t["name"], t["state"]) for t in steps[step]["targets"]] == [(own, "Succeeded")]
        assert restarted_at(s, own) is not None
        # left in place for the settled run (no write when it settles), free: the next claim replaces it
        assert (lock_of(s, own) or "").startswith(f"{name}/")
    assert restarted_at(s, "other") is None

    alertmanager.fire("ServiceDown", {**base, "deployment": "other", "job": "o"}, "other is down")
    outside = incident_of(s, "ServiceDown", "deployment", "other")["metadata"]["name"]
    stalled = s.wait_condition(outside, "Stalled", reason="OutOfBounds")
    assert "Deployment/other is outside allowedTargets.names ['shop-*']" in stalled["message"]
    restart = s.steps(outside)["restart"]
    assert restart["state"] == "Blocked"
    assert "targets" not in restart
    assert restarted_at(s, "other") is None  # acted on nothing
    assert s.steps(outside)["wait-restarted"]["state"] == "Pending"


def test_an_incident_naming_no_deployment_waits_with_no_target(s: Scenario) -> None:
    s.playbook("service-down", GENERIC_STEPS, allowedTargets=BOUNDS)
    s.incident("nothing-named", playbookRef={"name": "service-down"})
    stalled = s.wait_condition("nothing-named", "Stalled", reason="NoTarget")
    assert "names no Deployment target" in stalled["message"]
    assert s.steps("nothing-named")["restart"]["state"] == "Blocked"


RESTART_THEN_APPROVED_RESTART = [
    {"name": "restart", "restart": {"target": THEIRS}},
    {"name": "again", "restart": {"target": THEIRS}, "requiresApproval": True},
]


def stamp(time: str) -> str:
    """A step's start as its restart annotation says it (whole seconds)."""
    return format_time(parse_time(time))


def generation(s: Scenario, name: str) -> int:
    return int(s.apps.read_namespaced_deployment(name, s.namespace).metadata.generation)


def test_a_run_holds_the_workload_lock_until_it_settles_and_a_second_incident_waits_naming_it(
    s: Scenario,
) -> None:
    s.deployment("shop-w", 1)
    label(s, "shop-w", OPTED_IN)
    s.playbook("restart-twice", RESTART_THEN_APPROVED_RESTART, allowedTargets=BOUNDS)
    shop_w = [{"kind": "Deployment", "name": "shop-w"}]
    before = generation(s, "shop-w")
    s.incident("first", targets=shop_w, playbookRef={"name": "restart-twice"})
    s.wait_step("first", "again", "AwaitingApproval")  # restarted once, now waits between its steps
    assert generation(s, "shop-w") == before + 1
    assert restarted_at(s, "shop-w") == stamp(s.steps("first")["restart"]["startedAt"])
    first_uid = s.get("incidents", "first")["metadata"]["uid"]
    assert (lock_of(s, "shop-w") or "").startswith(f"first/{first_uid}/r1/")  # kept for the run

    s.incident("second", targets=shop_w, playbookRef={"name": "restart-twice"})
    stalled = s.wait_condition("second", "Stalled", reason="TargetBusy")
    assert "Deployment/shop-w is busy: incident first holds it until its run settles" in stalled["message"]
    assert generation(s, "shop-w") == before + 1  # the second acted on nothing
    assert s.wait_step("second", "restart", "Blocked")["message"] == (
        "Deployment/shop-w is busy: incident first holds it until its run settles"
    )

    s.patch_incident("first", {"approvals": [{"step": "again", "by": "alice", "run": "r1"}]})
    restart = s.wait_step("second", "restart", "Succeeded")
    assert s.steps("first")["again"]["state"] == "Succeeded"  # it acted once the first's run settled
    assert s.condition("second", "Stalled")["status"] == "False"
    assert restarted_at(s, "shop-w") == stamp(restart["startedAt"])  # the second's restart, the last one
    s.wait_step("second", "again", "AwaitingApproval")
    second_uid = s.get("incidents", "second")["metadata"]["uid"]
    assert (lock_of(s, "shop-w") or "").startswith(f"second/{second_uid}/r1/")  # now the second's run
