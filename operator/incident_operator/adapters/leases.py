"""The operator's Lease (`coordination.k8s.io/v1`): read it and write it, nothing else.

Leader election's decisions are pure (`core.leadership`) and its loop is in `runtime.election`;
this module is the only one that knows the Lease's wire shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from incident_operator.adapters.kube import ApiException, Kube
from incident_operator.api.timestamps import format_micro_time
from incident_operator.core.leadership import LeaseRecord


def _record(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or None,
        duration_seconds=int(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
    )


def _spec(record: LeaseRecord) -> dict[str, Any]:
    return {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_seconds,
        "acquireTime": format_micro_time(record.acquire_time) if record.acquire_time else None,
        "renewTime": format_micro_time(record.renew_time) if record.renew_time else None,
        "leaseTransitions": record.transitions,
    }


@dataclass(frozen=True)
class ReadLease:
    """The Lease as last read: its record and the resourceVersion a replace must name."""

    record: LeaseRecord
    resource_version: str | None


class LeaseStore:
    """Reads and writes one Lease `namespace/name`, each call bounded by `timeout` seconds."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.api = client.CoordinationV1Api(kube.api)
        self.namespace = namespace
        self.name = name

    async def read(self, timeout: float) -> ReadLease | None:
        """The Lease, or None when it does not exist."""
        try:
            lease = await self.kube.call(
                self.api.read_namespaced_lease, self.name, self.namespace, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        version = lease.metadata.resource_version if lease.metadata else None
        return ReadLease(_record(lease), version)

    async def write(self, record: LeaseRecord, resource_version: str | None, timeout: float) -> bool:
        """Create (no resource_version) or replace the Lease; False if another replica wrote first."""
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": _spec(record),
        }
        try:
            if resource_version is None:
                await self.kube.call(
                    self.api.create_namespaced_lease, self.namespace, body, _request_timeout=timeout
                )
            else:
                body["metadata"]["resourceVersion"] = resource_version
                await self.kube.call(
                    self.api.replace_namespaced_lease,
                    self.name,
                    self.namespace,
                    body,
                    _request_timeout=timeout,
                )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True
