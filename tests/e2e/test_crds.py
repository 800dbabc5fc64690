"""The generated CRDs install with `kubectl apply -f crds/`; the API server enforces their schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from incident_operator.api.models import ROLE_HOLDER_MAX, IncidentSpec
from tests.e2e.conftest import ROOT, Cluster
from tests.polling import wait_until

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


RATCHET_GROUP = "ratchet.e2e.incident-operator.dev"
"""A copy of the Incident CRD under a group of its own, so that its schema can be changed
without touching the Incident CRD other tests (and operators) use."""


def _incident_crd(*, commander_limit: bool) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "crds" / "incident-operator.dev_incidents.yaml").read_text())
    doc["metadata"] = {"name": f"{PLURAL}.{RATCHET_GROUP}"}
    doc["spec"]["group"] = RATCHET_GROUP
    doc["spec"]["names"].pop("shortNames", None)
    commander = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "commander"
    ]
    assert commander["maxLength"] == ROLE_HOLDER_MAX  # the generated CRD has the limit
    if not commander_limit:
        del commander["maxLength"]  # as 0.1.0 had it
    assert isinstance(doc, dict)
    return doc


def test_an_incident_stored_before_the_commander_limit_keeps_its_value_and_can_still_be_written(
    crds_installed: Cluster, namespace: str
) -> None:
    """An Incident stored with a commander longer than the limit (0.1.0 had none) stays readable
    and writable after an upgrade to the CRD with `maxLength`: the API server ratchets the
    unchanged value (CRD validation ratcheting, on by default since Kubernetes 1.30, GA in 1.33),
    so the operator's status writes and people's edits of other fields go through, while a new
    over-long value is refused; and the operator's model still reads the stored spec."""
    ext = client.ApiextensionsV1Api(crds_installed.api)
    api = client.CustomObjectsApi(crds_installed.api)
    name = f"{PLURAL}.{RATCHET_GROUP}"
    long_name = "x" * (ROLE_HOLDER_MAX + 44)
    ext.create_custom_resource_definition(_incident_crd(commander_limit=False))
    try:

        def served() -> bool:
            try:
                api.list_namespaced_custom_object(RATCHET_GROUP, VERSION, namespace, PLURAL)
            except ApiException:
                return False
            return True

        wait_until(served, timeout=60, what=f"CRD {name} served")

        def create(obj_name: str, commander: str) -> dict[str, Any]:
            body = {**incident(obj_name, commander=commander), "apiVersion": f"{RATCHET_GROUP}/{VERSION}"}
            created = api.create_namespaced_custom_object(RATCHET_GROUP, VERSION, namespace, PLURAL, body)
            assert isinstance(created, dict)
            return created

        create("from-before", long_name)

        upgraded = _incident_crd(commander_limit=True)
        upgraded["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(
            name
        ).metadata.resource_version
        ext.replace_custom_resource_definition(name, upgraded)

        probes = iter(range(1000))

        def limit_in_force() -> bool:
            probe = f"probe-{next(probes)}"
            try:
                create(probe, long_name)
            except ApiException as exc:
                return exc.status == 422 and "spec.commander: Too long" in str(exc.body)
            api.delete_namespaced_custom_object(RATCHET_GROUP, VERSION, namespace, PLURAL, probe)
            return False

        wait_until(limit_in_force, timeout=60, what="the upgraded CRD refuses a new over-long commander")

        def patch(change: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
            write = (
                api.patch_namespaced_custom_object_status if status else api.patch_namespaced_custom_object
            )
            patched = write(RATCHET_GROUP, VERSION, namespace, PLURAL, "from-before", change)
            assert isinstance(patched, dict)
            return patched

        stored = patch({"metadata": {"annotations": {"touched": "yes"}}})  # as kopf and kubectl annotate
        assert stored["spec"]["commander"] == long_name
        assert IncidentSpec.model_validate(stored["spec"]).commander == long_name  # the operator reads it
        patch({"status": {"phase": "Acknowledged"}}, status=True)  # the operator's status writes
        assert (
            patch({"spec": {"severity": "P2"}})["spec"]["commander"] == long_name
        )  # an edit of another field
        with pytest.raises(ApiException) as refused:  # a new over-long value is not ratcheted
            patch({"spec": {"commander": "y" * (ROLE_HOLDER_MAX + 1)}})
        assert refused.value.status == 422
        assert "spec.commander: Too long" in str(refused.value.body)
        assert patch({"spec": {"commander": "alice"}})["spec"]["commander"] == "alice"  # a fix is accepted
    finally:
        ext.delete_custom_resource_definition(name)
