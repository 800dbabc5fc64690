"""The generated CRDs install with `kubectl apply -f crds/`; the API server enforces their schema."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import ROOT, Cluster

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "incident-operator.dev", "v1alpha1", "incidents"


def incident(name: str, **spec: object) -> dict[str, object]:
    base = {"title": "checkout is down", "severity": "P1", "category": "availability"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Incident",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


def test_status_subresource_accepts_a_status_patch(crds_installed: Cluster, namespace: str) -> None:
    api = client.CustomObjectsApi(crds_installed.api)
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, incident("inc-1"))
    assert "status" not in created

    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "inc-1", {"status": {"phase": "Detected"}}
    )
    got = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "inc-1")
    assert got["status"]["phase"] == "Detected"
    assert got["metadata"]["generation"] == created["metadata"]["generation"]  # status does not bump it

    # The main resource ignores status; the status subresource ignores spec.
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "inc-1",
        {"status": {"phase": "Closed"}, "spec": {"severity": "P2"}},
    )
    got = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "inc-1")
    assert got["status"]["phase"] == "Detected"
    assert got["spec"]["severity"] == "P2"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"severity": "P9"}, "spec.severity"),
        ({"category": "weather"}, "spec.category"),
        ({"title": ""}, "spec.title"),
    ],
)
def test_schema_violations_are_rejected(
    crds_installed: Cluster, namespace: str, spec: dict[str, object], field: str
) -> None:
    api = client.CustomObjectsApi(crds_installed.api)
    with pytest.raises(ApiException) as rejected:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, incident("bad", **spec))
    assert rejected.value.status == 422
    body = json.loads(rejected.value.body)
    assert any(cause["field"] == field for cause in body["details"]["causes"]), body


def test_status_patch_that_breaks_the_schema_is_rejected(crds_installed: Cluster, namespace: str) -> None:
    api = client.CustomObjectsApi(crds_installed.api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, incident("inc-2"))
    with pytest.raises(ApiException) as rejected:
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "inc-2", {"status": {"phase": "Sleeping"}}
        )
    assert rejected.value.status == 422


def test_kubectl_explain_and_short_name(crds_installed: Cluster, namespace: str) -> None:
    explained = crds_installed.run_kubectl("explain", "incident.spec.severity").stdout
    assert "P1" in explained
    listed = crds_installed.run_kubectl("get", "inc", "-n", namespace, check=False)
    assert listed.returncode == 0, listed.stderr


def test_every_sample_is_accepted_by_the_api_server(crds_installed: Cluster, namespace: str) -> None:
    applied = crds_installed.run_kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(ROOT / "manifests" / "samples"), check=False
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(
        list((ROOT / "manifests" / "samples").glob("*.yaml"))
    )


def test_a_closed_incident_is_read_only(crds_installed: Cluster, namespace: str) -> None:
    api = client.CustomObjectsApi(crds_installed.api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, incident("done", closed=True))
    for change in ({"commander": "late"}, {"closed": False}):
        with pytest.raises(ApiException) as rejected:
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "done", {"spec": change})
        assert rejected.value.status == 422
        assert "a closed incident is read-only history" in str(rejected.value.body)
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "done", {"metadata": {"labels": {"x": "y"}}}
    )
