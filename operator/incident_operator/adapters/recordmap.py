"""One JSON document kept in one ConfigMap, read and replaced with its resourceVersion.

The record of the monthly reports delivered (`controllers.reports`) lives here: the wire shape only
(one data key holding text), never what it means. A replace names the resourceVersion it read, so
two writers (a leader taking over in the middle of a pass) never overwrite each other.
"""

from __future__ import annotations

from typing import Any

from incident_operator.adapters.kube import ApiException, Kube

MANAGED_BY = {"app.kubernetes.io/managed-by": "incident-operator"}


class RecordMap:
    """Reads and writes the data key `key` of ConfigMap `namespace/name`."""

    def __init__(self, kube: Kube, namespace: str, name: str, key: str) -> None:
        self.kube, self.namespace, self.name, self.key = kube, namespace, name, key

    async def read(self) -> tuple[str | None, str | None]:
        """(the text, its resourceVersion); (None, None) when the ConfigMap does not exist yet."""
        try:
            found = await self.kube.call(self.kube.core.read_namespaced_config_map, self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        version = found.metadata.resource_version if found.metadata else None
        return (found.data or {}).get(self.key), version

    async def write(self, text: str, resource_version: str | None) -> bool:
        """Create (no resource_version) or replace the ConfigMap; False when another writer came
        first, or it was deleted since it was read (read again and decide again)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": MANAGED_BY},
            "data": {self.key: text},
        }
        try:
            if resource_version is None:
                await self.kube.call(self.kube.core.create_namespaced_config_map, self.namespace, body)
            else:
                body["metadata"]["resourceVersion"] = resource_version
                await self.kube.call(
                    self.kube.core.replace_namespaced_config_map, self.name, self.namespace, body
                )
        except ApiException as exc:
            if exc.status == 409 or (exc.status == 404 and resource_version is not None):
                return False
            raise
        return True
