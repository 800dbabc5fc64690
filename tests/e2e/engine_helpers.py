"""Helpers for the engine's e2e tests: create objects, read incidents, wait for conditions."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client

from incident_operator.api.keys import SECRET_HOSTS_ANNOTATION, SECRET_SHARED_LABEL
from tests.e2e.conftest import Cluster, OperatorProcess
from tests.polling import wait_until

GROUP, VERSION = "incident-operator.dev", "v1alpha1"

CHECK_POD: dict[str, Any] = {  # a pg_isready Job pod: restricted, within the Job policy's default caps
    "spec": {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 999,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "check",
                "image": "postgres:16",
                "command": ["pg_isready"],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
            }
        ],
    }
}
TIMEOUT = 90


def deployment_body(
    name: str, replicas: int, node_selector: dict[str, str] | None = None
) -> client.V1Deployment:
    """A Deployment of pods labelled app=NAME (kwok runs them; the image is never pulled)."""
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="app", image=f"registry.example/{name}:1")],
                    node_selector=node_selector,
                ),
            ),
        ),
    )


def deploy_ref(name: str) -> dict[str, str]:
    return {"kind": "Deployment", "name": name}


class Scenario:
    """One namespace of one test: its workloads, playbooks and incidents."""

    def __init__(self, cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
        self.cluster, self.operator, self.namespace = cluster, operator, namespace
        self.apps = client.AppsV1Api(cluster.api)
        self.core = client.CoreV1Api(cluster.api)
        self.custom = client.CustomObjectsApi(cluster.api)
        self.networking = client.NetworkingV1Api(cluster.api)

    # ------------------------------------------------------------------ objects

    def deployment(self, name: str, replicas: int, node_selector: dict[str, str] | None = None) -> None:
        self.apps.create_namespaced_deployment(self.namespace, deployment_body(name, replicas, node_selector))
        if node_selector is None:
            wait_until(lambda: self.ready_replicas(name) == replicas, timeout=TIMEOUT, what=f"{name} ready")

    def ready_replicas(self, name: str) -> int:
        return int(self.apps.read_namespaced_deployment(name, self.namespace).status.ready_replicas or 0)

    def secret(self, name: str, data: dict[str, str], *, shared_for: str | None = None) -> None:
        """A Secret; with `shared_for` (hosts, comma-separated), shared with the namespace's
        Playbooks for those hosts, as its owner does it (see docs/operations/security.md)."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        meta = client.V1ObjectMeta(name=name)
        if shared_for is not None:
            meta.labels = {SECRET_SHARED_LABEL: "true"}
            meta.annotations = {SECRET_HOSTS_ANNOTATION: shared_for}
        self.core.create_namespaced_secret(self.namespace, client.V1Secret(metadata=meta, data=encoded))

    def playbook(self, name: str, steps: list[dict[str, Any]], **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Playbook",
            "metadata": {"name": name},
            "spec": {"steps": steps, "stabilizationSeconds": 1, **spec},
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "playbooks", body)

    def incident(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Incident",
            "metadata": {"name": name},
            "spec": {"title": f"{name} test", "severity": "P2", "category": "availability", **spec},
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "incidents", body)

    def patch_incident(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "incidents", name, {"spec": spec}
        )

    # ------------------------------------------------------------------ reading

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name),
        )

    def status(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.get("incidents", name).get("status") or {})

    def condition(self, name: str, type_: str, kind: str = "incidents") -> dict[str, Any] | None:
        status = self.get(kind, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)

    def steps(self, name: str) -> dict[str, dict[str, Any]]:
        playbook = self.status(name).get("playbook") or {}
        return {s["name"]: s for s in playbook.get("steps") or []}

    def events(self, name: str) -> list[client.CoreV1Event]:
        selector = f"involvedObject.name={name},involvedObject.kind=Incident"
        return list(self.core.list_namespaced_event(self.namespace, field_selector=selector).items)

    def wait_events(
        self, name: str, check: Callable[[list[client.CoreV1Event]], bool], what: str
    ) -> list[client.CoreV1Event]:
        """The incident's Events once `check` holds for them (Normal records are held for a
        moment to share an Event: `controllers.incident.eventhold`)."""
        return cast(
            list[client.CoreV1Event],
            wait_until(
                lambda: (found := self.events(name)) and check(found) and found, timeout=TIMEOUT, what=what
            ),
        )

    # ------------------------------------------------------------------ waiting

    def wait_condition(
        self, name: str, type_: str, status: str = "True", reason: str | None = None, kind: str = "incidents"
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            found = self.condition(name, type_, kind)
            if found and found["status"] == status and (reason is None or found["reason"] == reason):
                return found
            return None

        return wait_until(
            check,
            timeout=TIMEOUT,
            what=f"{kind}/{name} {type_}={status} {reason or ''}",
            describe=self.describer(name, kind),
        )

    def wait_phase(self, name: str, phase: str) -> dict[str, Any]:
        return wait_until(
            lambda: self.status(name) if self.status(name).get("phase") == phase else None,
            timeout=TIMEOUT,
            what=f"incident {name} phase {phase}",
            describe=self.describer(name),
        )

    def wait_step(self, name: str, step: str, state: str) -> dict[str, Any]:
        return wait_until(
            lambda: (
                self.steps(name).get(step)
                if (self.steps(name).get(step) or {}).get("state") == state
                else None
            ),
            timeout=TIMEOUT,
            what=f"incident {name} step {step} {state}",
            describe=self.describer(name),
        )

    def describer(self, name: str, kind: str = "incidents") -> Callable[[], str]:
        def describe() -> str:
            try:
                status = self.get(kind, name).get("status")
            except client.exceptions.ApiException as exc:
                status = f"unreadable: {exc.status}"
            return f"status={status}\n--- operator log ---\n{self.operator.log()[-3000:]}"

        return describe


GATED_STEPS = ("restart-app", "scale-up", "gate", "delete-one", "wait-app")


def start_gated_playbook(s: Scenario, gate: str, incident: str, replicas: int, gate_timeout: int) -> int:
    """Deployment `app` with `replicas`, and a five-step playbook held at an httpCheck on `gate`
    (a URL that answers 503 until the test opens it); returns once the gate has been polled, with
    the Deployment's generation before the playbook ran. The test then breaks something, opens the
    gate, and checks with `assert_gated_playbook_ran_once`."""
    target = {"kind": "Deployment", "name": "app"}
    s.deployment("app", replicas)
    generation = int(s.apps.read_namespaced_deployment("app", s.namespace).metadata.generation)
    s.playbook(
        f"gated-{incident}",
        [
            {"name": "restart-app", "restart": {"target": target}},
            {"name": "scale-up", "scale": {"target": target, "delta": 2}},
            {
                "name": "gate",
                "httpCheck": {"url": gate, "intervalSeconds": 1},
                "timeoutSeconds": gate_timeout,
            },
            {"name": "delete-one", "deletePods": {"selector": {"app": "app"}, "max": 1}},
            {"name": "wait-app", "waitReady": {"target": target}, "timeoutSeconds": 120},
        ],
    )
    s.incident(incident, targets=[target])
    s.wait_step(incident, "gate", "Running")
    return generation


def assert_gated_playbook_ran_once(s: Scenario, incident: str, replicas: int, generation: int) -> None:
    """Resolved, every step Succeeded in one attempt, the Deployment changed once (+2 replicas,
    one restart and one scale: generation +2), one StepStarted timeline entry per step."""
    s.wait_phase(incident, "Resolved")
    steps = s.steps(incident)
    assert {name: (st["state"], st["attempts"]) for name, st in steps.items()} == dict.fromkeys(
        GATED_STEPS, ("Succeeded", 1)
    )
    deployment = s.apps.read_namespaced_deployment("app", s.namespace)
    assert deployment.spec.replicas == replicas + 2  # delta +2 applied once, not twice
    assert deployment.metadata.generation == generation + 2  # one restart, one scale
    timeline = s.status(incident)["timeline"]
    started = Counter(e["message"].split(":")[0] for e in timeline if e["type"] == "StepStarted")
    assert started == Counter({f"step {n}": 1 for n in GATED_STEPS}), started
