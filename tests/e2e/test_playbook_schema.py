"""The API server itself validates Playbooks (schema + CEL), before the operator sees them."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "incident-operator.dev", "v1alpha1", "playbooks"
SCALE = {"target": {"kind": "Deployment", "name": "workers"}, "replicas": 16}


def playbook(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Playbook",
        "metadata": {"name": name},
        "spec": {"match": {"categories": ["performance"]}, "steps": steps, **spec},
    }


def create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(cluster.api)
    return cast(dict[str, Any], api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body))


def rejection(cluster: Cluster, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as rejected:
        create(cluster, namespace, body)
    assert rejected.value.status == 422, rejected.value.body
    return json.dumps(json.loads(rejected.value.body)["details"]["causes"])


def test_a_valid_playbook_is_accepted_with_defaults(crds_installed: Cluster, namespace: str) -> None:
    created = create(
        crds_installed, namespace, playbook("queue-backlog", [{"name": "scale-workers", "scale": SCALE}])
    )
    step = created["spec"]["steps"][0]
    assert step["retries"] == 0
    assert step["timeoutSeconds"] == 300
    assert created["spec"]["stabilizationSeconds"] == 60


def test_two_action_keys_in_one_step_are_rejected(crds_installed: Cluster, namespace: str) -> None:
    steps = [{"name": "both", "scale": SCALE, "restart": {"target": SCALE["target"]}}]
    assert "exactly one action" in rejection(crds_installed, namespace, playbook("two", steps))


def test_a_step_without_an_action_is_rejected(crds_installed: Cluster, namespace: str) -> None:
    assert "exactly one action" in rejection(crds_installed, namespace, playbook("none", [{"name": "idle"}]))


def test_negative_replicas_are_rejected(crds_installed: Cluster, namespace: str) -> None:
    steps = [{"name": "scale", "scale": {**SCALE, "replicas": -1}}]
    assert "spec.steps[0].scale.replicas" in rejection(crds_installed, namespace, playbook("neg", steps))


def test_replicas_and_delta_together_are_rejected(crds_installed: Cluster, namespace: str) -> None:
    steps = [{"name": "scale", "scale": {**SCALE, "delta": 2}}]
    assert "exactly one of replicas, delta" in rejection(crds_installed, namespace, playbook("both", steps))


def test_duplicate_step_names_are_rejected(crds_installed: Cluster, namespace: str) -> None:
    steps = [{"name": "same", "scale": SCALE}, {"name": "same", "restart": {"target": SCALE["target"]}}]
    assert "Duplicate value" in rejection(crds_installed, namespace, playbook("dup", steps))


def test_unknown_severity_in_match_is_rejected(crds_installed: Cluster, namespace: str) -> None:
    body = playbook("sev", [{"name": "scale", "scale": SCALE}], match={"severities": ["P0"]})
    assert "spec.match.severities[0]" in rejection(crds_installed, namespace, body)


def test_a_check_url_naming_the_target_needs_one_and_doubled_braces_are_literal(
    crds_installed: Cluster, namespace: str
) -> None:
    """The CEL rule reads the URL as the template does: `{targetName}` (also after `{{`) is a field
    and needs a target; `{{targetName}}` is literal text and is admitted without one."""
    for i, url in enumerate(["http://{targetName}.{namespace}.svc/", "http://x.shop.svc/{{{targetKind}}}"]):
        body = playbook(f"field-{i}", [{"name": "check", "httpCheck": {"url": url}}])
        assert "give a target" in rejection(crds_installed, namespace, body)
    for i, url in enumerate(["http://x.shop.svc/{{targetName}}", "http://x.shop.svc/q?{{{{targetKind}}}}"]):
        body = playbook(f"literal-{i}", [{"name": "check", "httpCheck": {"url": url}}])
        assert create(crds_installed, namespace, body)["spec"]["steps"][0]["httpCheck"]["url"] == url
