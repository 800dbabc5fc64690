"""The adapter's own-kinds calls reach the client with the group, version and plural, and with the
request timeout every operator call carries (the client's methods take it as `_request_timeout`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client

from incident_operator.adapters.kube import REQUEST_TIMEOUT_S, Kube
from incident_operator.api.keys import API_GROUP, API_VERSION


class RecordingCustomObjectsApi:
    """Stands in for the client's CustomObjectsApi: records every call, answers like the API."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
            self.calls.append((method, args, kwargs))
            return {"items": [{"metadata": {"name": "a"}}], "metadata": {}}

        return call


@pytest.fixture
def kube() -> Any:
    k = Kube(client.ApiClient())
    k.objects.api = RecordingCustomObjectsApi()  # type: ignore[assignment]
    yield k
    k.close()


@pytest.mark.parametrize(
    ("call", "method", "args"),
    [
        (
            lambda k: k.get_object("incidents", "ns", "x"),
            "get_namespaced_custom_object",
            ("ns", "incidents", "x"),
        ),
        (
            lambda k: k.create_object("incidents", "ns", {}),
            "create_namespaced_custom_object",
            ("ns", "incidents", {}),
        ),
        (
            lambda k: k.patch_object("incidents", "ns", "x", {"m": 1}),
            "patch_namespaced_custom_object",
            ("ns", "incidents", "x", {"m": 1}),
        ),
        (
            lambda k: k.patch_object_status("drills", "ns", "d", {"status": {}}),
            "patch_namespaced_custom_object_status",
            ("ns", "drills", "d", {"status": {}}),
        ),
        (
            lambda k: k.patch_incident_status("ns", "x", {"phase": "Resolved"}),
            "patch_namespaced_custom_object_status",
            ("ns", "incidents", "x", {"status": {"phase": "Resolved"}}),
        ),
        (lambda k: k.get_playbook("ns", "pb"), "get_namespaced_custom_object", ("ns", "playbooks", "pb")),
        (
            lambda k: k.list_objects("incidents", "ns", label_selector="a=b"),
            "list_namespaced_custom_object",
            ("ns", "incidents"),
        ),
        (lambda k: k.list_incidents(None), "list_cluster_custom_object", ("incidents",)),
    ],
)
def test_every_own_kind_call_carries_the_group_version_plural_and_the_request_timeout(
    kube: Any, call: Any, method: str, args: tuple[Any, ...]
) -> None:
    asyncio.run(call(kube))
    ((called, got, options),) = kube.objects.api.calls
    assert called == method
    assert got == (API_GROUP, API_VERSION, *args)
    assert options["_request_timeout"] == REQUEST_TIMEOUT_S
