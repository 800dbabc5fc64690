"""The breaker's ConfigMap (`automation.stateConfigMap`): read it and write it, nothing else.

What the state means is `core.breaker`'s; when to read and write it is
`controllers.automation`'s. This module knows the object's wire shape only: one data key holding
the state as JSON, replaced with the resourceVersion it was read at, so two writers (a replica
taking over, a person resuming automation) never overwrite each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from incident_operator.adapters.kube import ApiException, Kube
from incident_operator.core import breaker

MANAGED_BY = {"app.kubernetes.io/managed-by": "incident-operator"}


@dataclass(frozen=True)
class ReadState:
    """The state as last read, and the resourceVersion a replace must name (None: no object)."""

    state: breaker.State
    resource_version: str | None


class BreakerStore:
    """Reads and writes one ConfigMap `namespace/name`."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name

    async def read(self) -> ReadState:
        """The state (an empty one when the ConfigMap does not exist yet)."""
        try:
            found = await self.kube.call(self.kube.core.read_namespaced_config_map, self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ReadState(breaker.State(), None)
            raise
        data = found.data or {}
        version = found.metadata.resource_version if found.metadata else None
        return ReadState(breaker.from_json(data.get(breaker.DATA_KEY)), version)

    async def write(self, state: breaker.State, resource_version: str | None) -> str | None:
        """Create (no resource_version) or replace the ConfigMap (`breaker.StateTooLarge` when it
        would not fit); the new resourceVersion, or
        None when another writer came first (read again and decide again), or when the ConfigMap
        was deleted since it was read (read again: it is created anew)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": MANAGED_BY},
            "data": {breaker.DATA_KEY: breaker.encode(state)},
        }
        try:
            if resource_version is None:
                written = await self.kube.call(
                    self.kube.core.create_namespaced_config_map, self.namespace, body
                )
            else:
                body["metadata"]["resourceVersion"] = resource_version
                written = await self.kube.call(
                    self.kube.core.replace_namespaced_config_map, self.name, self.namespace, body
                )
        except ApiException as exc:
            if exc.status == 409 or (exc.status == 404 and resource_version is not None):
                return None
            raise
        return str(written.metadata.resource_version) if written.metadata else None
