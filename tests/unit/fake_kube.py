"""An in-memory stand-in for the part of the Kubernetes API an incident loop uses.

It implements exactly the `Kube` methods the loop and the actions of the test playbooks call
(the Incident's status, its post-mortem ConfigMap, the Playbook's status with resourceVersion
checks, and Deployments: read, scale, patch, readiness, and their lock Leases with resourceVersion
checks), plus `post_event`. Every call is
appended to `calls` in order, and every change of a Deployment is kept in `effects` with the
Incident status the API held at that moment, so a test can tell what was persisted before what
acted. `drop_at` / `fail` make a chosen status write kill the loop or fail with an API error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from incident_operator.adapters.kube import ApiException, Readiness
from incident_operator.core.planner import Record

NAMESPACE = "shop"
INCIDENT = "web-down"
UID = "uid-1"


class Dropped(BaseException):
    """The loop is killed here, like a process: nothing after this point runs (a BaseException,
    so the loop's own error handling does not catch it)."""


@dataclass
class Effect:
    """A change the cluster saw, and the Incident status the API held when it happened."""

    kind: str  # "scale" or "restart"
    workload: str
    value: Any
    status: dict[str, Any]


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it to a custom resource."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class FakeKube:
    def __init__(
        self, incident_spec: dict[str, Any], playbook_spec: dict[str, Any], replicas: dict[str, int]
    ) -> None:
        self.incident: dict[str, Any] = {
            "metadata": {"name": INCIDENT, "namespace": NAMESPACE, "uid": UID, "generation": 1},
            "spec": incident_spec,
            "status": {},
        }
        self.playbook: dict[str, Any] = {
            "metadata": {"name": "pb", "namespace": NAMESPACE, "resourceVersion": "1"},
            "spec": playbook_spec,
            "status": {},
        }
        self.workloads: dict[str, dict[str, Any]] = {
            name: {"replicas": n, "annotations": {}, "ready": n, "meta": {}, "labels": {}, "rv": 1}
            for name, n in replicas.items()
        }
        self.playbook_listed = True
        """Whether a listing of the namespace's Playbooks shows `playbook`."""
        self.locks: dict[str, tuple[str, str]] = {}
        """Lock Leases by name: (holder, resourceVersion)."""
        self.lock_versions = 0
        self.locks_seen: set[str] = set()
        """Lock Leases the client saw exist (`lock_seen`), kept as `Kube` keeps them."""
        self.incidents: dict[str, dict[str, Any]] = {}
        """Other incidents by name (the holder of a workload lock is looked up here)."""
        self.configmaps: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.effects: list[Effect] = []
        self.status_writes = 0
        self.drop_at: tuple[int, str] | None = None
        """(n, "before" or "after"): the n-th status write kills the loop, before or after it lands."""
        self.fail: Callable[[int], ApiException | None] = lambda n: None
        """The error the n-th status write fails with, if any (nothing is written then)."""

    # ------------------------------------------------------------------ the Incident

    async def patch_incident_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status_writes += 1
        n = self.status_writes
        self.calls.append(("patch_incident_status", n, copy.deepcopy(status)))
        error = self.fail(n)
        if error is not None:
            raise error
        if self.drop_at == (n, "before"):
            raise Dropped
        self.incident["status"] = merge_patch(self.incident["status"], status)
        if self.drop_at == (n, "after"):
            raise Dropped

    async def write_owned_configmap(
        self, namespace: str, name: str, data: dict[str, str], incident: str, incident_uid: str
    ) -> None:
        self.calls.append(("write_owned_configmap", name))
        self.configmaps[name] = dict(data)

    def post_event(self, record: Record) -> None:
        self.calls.append(("event", record.reason, record.message, record.warning))

    # ------------------------------------------------------------------ the Playbook

    async def get_playbook(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get_playbook", name))
        return copy.deepcopy(self.playbook)

    async def list_objects(self, plural: str, namespace: str | None, **query: Any) -> list[dict[str, Any]]:
        self.calls.append(("list_objects", plural))
        assert plural == "playbooks", plural  # the loop lists nothing else
        return [copy.deepcopy(self.playbook)] if self.playbook_listed else []

    async def patch_playbook_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        self.calls.append(("patch_playbook_status", copy.deepcopy(status)))
        meta = self.playbook["metadata"]
        if resource_version is not None and resource_version != meta["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.playbook["status"] = merge_patch(self.playbook["status"], status)
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    # ------------------------------------------------------------------ Deployments

    async def read_workload(self, kind: str, name: str, namespace: str) -> Any:
        self.calls.append(("read_workload", name))
        if name not in self.workloads:
            raise ApiException(status=404, reason="Not Found")
        w = self.workloads[name]
        return SimpleNamespace(
            metadata=SimpleNamespace(resource_version=str(w.setdefault("version", 1))),
            spec=SimpleNamespace(
                replicas=w["replicas"],
                template=SimpleNamespace(metadata=SimpleNamespace(annotations=dict(w["annotations"]))),
            ),
            status=SimpleNamespace(ready_replicas=w["ready"]),
        )

    async def scale_workload(
        self, kind: str, name: str, namespace: str, replicas: int, resource_version: str | None = None
    ) -> None:
        self.calls.append(("scale_workload", name, replicas))
        w = self.workloads[name]
        if resource_version is not None and resource_version != str(w.setdefault("version", 1)):
            raise ApiException(status=409, reason="Conflict")
        if w["replicas"] != replicas:
            w["replicas"] = w["ready"] = replicas
            w["version"] = w.setdefault("version", 1) + 1
            self.effects.append(Effect("scale", name, replicas, copy.deepcopy(self.incident["status"])))

    async def patch_workload(self, kind: str, name: str, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append(("patch_workload", name))
        annotations = body["spec"]["template"]["metadata"]["annotations"]
        w = self.workloads[name]
        if any(w["annotations"].get(k) != v for k, v in annotations.items()):
            w["annotations"].update(annotations)
            w["version"] = w.setdefault("version", 1) + 1
            self.effects.append(
                Effect("restart", name, dict(annotations), copy.deepcopy(self.incident["status"]))
            )
        return None

    async def workload_labels(self, kind: str, name: str, namespace: str) -> dict[str, str]:
        self.calls.append(("workload_labels", name))
        if name not in self.workloads:
            raise ApiException(status=404, reason="Not Found")
        return dict(self.workloads[name]["labels"])

    def lock_seen(self, namespace: str, lease: str) -> bool:
        """As `Kube.lock_seen`: the Lease was read, created or refused as there, not deleted since."""
        return lease in self.locks_seen

    async def read_lock(self, namespace: str, lease: str) -> tuple[str | None, str | None]:
        self.calls.append(("read_lock", lease))
        holder, version = self.locks.get(lease, (None, None))
        if holder is None:
            self.locks_seen.discard(lease)
        else:
            self.locks_seen.add(lease)
        return holder, version

    async def write_lock(
        self, namespace: str, lease: str, holder: str | None, resource_version: str | None
    ) -> None:
        """The lock Lease: created, replaced or deleted, with the resourceVersion precondition."""
        self.calls.append(("write_lock", lease, holder))
        current = self.locks.get(lease)
        if resource_version is None and current is not None:
            self.locks_seen.add(lease)
            raise ApiException(status=409, reason="AlreadyExists")
        if resource_version is not None and (current is None or current[1] != resource_version):
            raise ApiException(status=409, reason="Conflict")
        if holder is None:
            self.locks.pop(lease, None)
            self.locks_seen.discard(lease)
            return
        self.locks_seen.add(lease)
        self.lock_versions += 1
        self.locks[lease] = (holder, str(self.lock_versions))

    def lock(self, workload: str) -> str | None:
        """The holder of the lock of Deployment `workload`, if any."""
        return self.locks.get(f"incident-operator-lock-deployment-{workload}", (None, None))[0]

    def set_lock(self, workload: str, holder: str) -> None:
        self.lock_versions += 1
        self.locks[f"incident-operator-lock-deployment-{workload}"] = (holder, str(self.lock_versions))

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get_object", plural, name))
        if plural == "incidents" and name == INCIDENT:
            return copy.deepcopy(self.incident)
        if plural == "incidents" and name in self.incidents:
            return copy.deepcopy(self.incidents[name])
        raise ApiException(status=404, reason="Not Found")

    async def readiness(self, kind: str, name: str, namespace: str) -> Readiness:
        self.calls.append(("readiness", name))
        n = self.workloads[name]["replicas"]
        return Readiness(n, n, n, n, rolled_out=True)

    # ------------------------------------------------------------------ reading back

    def status(self) -> dict[str, Any]:
        return self.incident["status"]  # type: ignore[no-any-return]

    def called(self, method: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == method]
