"""The plugin's synchronous access to the operator's own kinds (`incidents`, `playbooks`, `drills`
of incident-operator.dev) on the official `kubernetes` client, with the user's credentials.

The operator itself never imports this module (it runs on `kubernetes_asyncio`, through
`adapters.kube.AsyncCustomObjects`, which has the same methods as coroutines).
"""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client

from incident_operator.api.keys import API_GROUP, API_VERSION


class CustomObjects:
    """Synchronous and thin: bodies are plain dicts; `options` go to the client as they are
    (`_request_timeout`)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = client.CustomObjectsApi(api)

    def get(self, plural: str, namespace: str, name: str, **options: Any) -> dict[str, Any]:
        found = self.api.get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, name, **options
        )
        return cast(dict[str, Any], found)

    def list(self, plural: str, namespace: str | None, **query: Any) -> list[dict[str, Any]]:
        """Every object of `namespace` (None: all) that `query` selects, read in pages of 500."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page: dict[str, Any] = {**query, "limit": 500, **({"_continue": token} if token else {})}
            if namespace is None:
                listed = self.api.list_cluster_custom_object(API_GROUP, API_VERSION, plural, **page)
            else:
                listed = self.api.list_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, plural, **page
                )
            result = cast(dict[str, Any], listed)
            items += result.get("items") or []
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return items

    def create(self, plural: str, namespace: str, body: dict[str, Any], **options: Any) -> dict[str, Any]:
        created = self.api.create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, body, **options
        )
        return cast(dict[str, Any], created)

    def patch(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """A merge patch of the object (metadata, spec)."""
        patched = self.api.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, name, body, **options
        )
        return cast(dict[str, Any], patched)

    def patch_status(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """A merge patch of the status subresource (`body` is `{"status": ...}`, maybe a resourceVersion)."""
        patched = self.api.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, plural, name, body, **options
        )
        return cast(dict[str, Any], patched)

    def apply(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        """Server-side apply of `body` (the whole intent of `field_manager`), never forced: a field
        another manager owns with another value is a conflict the API server reports."""
        applied = self.api.patch_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            name,
            body,
            field_manager=field_manager,
            _content_type="application/apply-patch+yaml",
        )
        return cast(dict[str, Any], applied)
