"""Every shipped manifest validated offline (hack/validate_manifests.py): built-in kinds against
the Kubernetes 1.36 schemas (kubernetes-validate, strict), Incidents, Playbooks and Drills against
the project's own CRDs, ServiceMonitor and PrometheusRule against the Prometheus Operator's CRDs at
a pinned version (from its Go module, hence the e2e tier: it needs the Go module proxy once),
and the Helm chart's renders (`helm template`, default and full values, as tests/e2e/test_chart.py
renders them). Broken manifests of each family fail with a message naming the object and the field."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_chart import FULL_VALUES, render
from tests.localcluster_module import load_hack

pytestmark = pytest.mark.e2e

validator = load_hack("validate_manifests")


@pytest.mark.parametrize("source", sorted(validator.SOURCES))
def test_every_shipped_manifest_is_valid(source: str) -> None:
    documents = validator.SOURCES[source]()
    assert documents, f"{source} holds no objects"
    assert validator.validate(documents) == []


@pytest.mark.parametrize("values", ["default", "full"])
def test_the_charts_renders_are_valid(values: str, tmp_path: Path) -> None:
    args: tuple[str, ...] = ()
    if values == "full":  # every optional part on: monitoring, Ingress, opt-ins, PDB, ...
        (tmp_path / "full.yaml").write_text(yaml.safe_dump(FULL_VALUES))
        args = ("-f", str(tmp_path / "full.yaml"))
    documents = render(*args)
    kinds = {d["kind"] for d in documents}
    assert "Deployment" in kinds
    if values == "full":
        assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Ingress"} <= kinds
    assert validator.validate(documents) == []


def test_the_sets_cover_what_ships() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for load in validator.SOURCES.values() for d in load()}
    for needed in (
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("incident-operator.dev/v1alpha1", "Incident"),
        ("incident-operator.dev/v1alpha1", "Playbook"),
        ("incident-operator.dev/v1alpha1", "Drill"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("apps/v1", "Deployment"),
        ("v1", "ConfigMap"),
    ):
        assert needed in kinds, needed


def one(path: str, kind: str | None = None) -> dict[str, Any]:
    documents = validator.load_documents(validator.ROOT / path)
    return copy.deepcopy(next(d for d in documents if kind is None or d["kind"] == kind))


def broken_manifests() -> list[tuple[str, dict[str, Any], str]]:
    servicemonitor = one("manifests/monitoring/servicemonitor.yaml")
    servicemonitor["spec"]["endpoints"][0]["bearerTokenFil"] = "/token"  # a typo: pruned, never used
    rule = one("manifests/monitoring/prometheusrule.yaml")
    rule["spec"]["groups"][0]["rules"][0]["for"] = 60  # a number, not a duration
    labels = one("manifests/monitoring/servicemonitor.yaml")
    labels["metadata"]["lables"] = {"a": "b"}
    playbook = one("manifests/samples/playbook-security.yaml")
    playbook["spec"]["stepz"] = playbook["spec"].pop("steps")
    incident = one("manifests/samples/incident-security.yaml")
    incident["spec"]["severity"] = "P9"
    deployment = one("manifests/install.yaml", "Deployment")
    deployment["spec"]["replica"] = 2
    role = one("manifests/install.yaml", "ClusterRole")
    role["rules"][0]["verbs"] = "get"
    return [
        ("ServiceMonitor", servicemonitor, ".spec.endpoints.0: Additional properties are not allowed"),
        ("PrometheusRule", rule, ".spec.groups.0.rules.0.for: 60 is not of type 'string'"),
        ("ObjectMeta of a CRD kind", labels, ".metadata: Additional properties are not allowed ('lables'"),
        ("Playbook", playbook, ".spec: Additional properties are not allowed ('stepz'"),
        ("Incident", incident, ".spec.severity: 'P9' is not one of"),
        ("Deployment", deployment, ".spec: Additional properties are not allowed ('replica'"),
        ("ClusterRole", role, "is not of type 'array'"),
        (
            "unknown kind",
            {"apiVersion": "v1", "kind": "Pods", "metadata": {"name": "x"}},
            "has no Pods in v1",
        ),
        (
            "unserved CRD kind",
            {"apiVersion": "monitoring.coreos.com/v1", "kind": "Probe"},
            "no CRD serves Probe",
        ),
        ("not an object", {"kind": "ConfigMap"}, "apiVersion and kind are required"),
    ]


@pytest.mark.parametrize(
    ("document", "expected"), [pytest.param(d, e, id=what) for what, d, e in broken_manifests()]
)
def test_a_broken_manifest_fails_naming_the_field(document: dict[str, Any], expected: str) -> None:
    problems = validator.validate([document])
    assert any(expected in problem for problem in problems), problems


def test_the_command_fails_on_a_broken_file_and_passes_on_a_good_one(tmp_path: Path) -> None:
    good = validator.ROOT / "manifests" / "monitoring" / "servicemonitor.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("bearerTokenFile", "bearerTokenFil"))
    script = str(validator.ROOT / "hack" / "validate_manifests.py")
    ran = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True, check=False)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "'bearerTokenFil' was unexpected" in ran.stdout
    ran = subprocess.run([sys.executable, script, str(good)], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 objects, no problems" in ran.stdout
