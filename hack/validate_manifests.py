"""Offline validation of every shipped manifest against the schemas of what would serve it.

`validate(documents)` takes a list of Kubernetes objects (dicts) and returns one message per
problem found (an empty list: all valid). Each object is checked against:

- built-in kinds: the Kubernetes 1.36 OpenAPI schemas bundled with PyPI `kubernetes-validate`,
  strict (an unknown field is an error, as `kubectl apply --validate=strict` would say);
- `incident-operator.dev` kinds: the openAPIV3Schema of the project's own CRDs (crds/);
- `monitoring.coreos.com` kinds (ServiceMonitor, PrometheusRule): the Prometheus Operator's CRDs
  at PROMETHEUS_OPERATOR_VERSION, read from its Go module (`go mod download`, through the Go
  module proxy) and cached under ~/.cache/incident-operator/prometheus-operator-crds-<version>.

CRD schemas are made strict the way the API server prunes: an object schema with `properties`
and neither `additionalProperties` nor `x-kubernetes-preserve-unknown-fields` admits no other
field; `nullable` admits null; `metadata` is checked as an ObjectMeta. CEL rules
(`x-kubernetes-validations`) are not evaluated offline: the e2e tests apply the objects to a real
API server, which does.

`SOURCES` names the shipped sets of files (install.yaml, samples, monitoring, Argo CD, the CRD
files); a new set is one more entry: a name and a function returning its documents. The Helm
chart's renders need the helm binary: tests/e2e/test_manifest_validation.py passes them to
`validate` (default and full values). `python hack/validate_manifests.py [FILE...]` validates
the given files, or every source; the exit status is 1 when anything is invalid.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES_VERSION = "1.36.0"
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_OPERATOR_CRDS = (
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
)
OWN_GROUP = "incident-operator.dev"
OBJECT_META = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)

Document = dict[str, Any]


class ValidatorError(Exception):
    """The validator cannot run (a schema cannot be fetched); the message says why."""


def load_documents(path: Path) -> list[Document]:
    """The objects of a YAML (or JSON) file, empty documents left out."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "incident-operator"


def prometheus_operator_crd_dir() -> Path:
    """The Prometheus Operator's CRD files at the pinned version, fetched once from its Go module."""
    target = cache_root() / f"prometheus-operator-crds-{PROMETHEUS_OPERATOR_VERSION}"
    if all((target / name).exists() for name in PROMETHEUS_OPERATOR_CRDS):
        return target
    go = shutil.which("go")
    if go is None:
        raise ValidatorError("Go is not on PATH: it downloads the Prometheus Operator's CRDs (its Go module)")
    module = f"{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}"
    with tempfile.TemporaryDirectory() as empty:  # outside any module: a plain download
        done = subprocess.run(
            [go, "mod", "download", "-json", module],
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        raise ValidatorError(f"go mod download {module} failed:\n{done.stdout}{done.stderr}")
    source = Path(json.loads(done.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    target.mkdir(parents=True, exist_ok=True)
    for name in PROMETHEUS_OPERATOR_CRDS:
        if not (source / name).exists():
            raise ValidatorError(f"{module} has no example/prometheus-operator-crd/{name}")
        shutil.copyfile(source / name, target / f"{name}.partial")
        (target / f"{name}.partial").rename(target / name)
    return target


def own_crd_documents() -> list[Document]:
    return [d for p in sorted((ROOT / "crds").glob(f"{OWN_GROUP}_*.yaml")) for d in load_documents(p)]


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the JSON schema of that served version, for the CRDs we know."""
    crds = own_crd_documents()
    directory = prometheus_operator_crd_dir()
    for name in PROMETHEUS_OPERATOR_CRDS:
        crds += load_documents(directory / name)
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                schema.setdefault("properties", {})["metadata"] = {"$ref": OBJECT_META}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A structural CRD schema as a JSON schema that rejects what the API server would prune."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key, value in node.items():
            if key in ("properties", "patternProperties", "definitions", "$defs"):
                for sub in value.values():
                    walk(sub)
            elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
                walk(value)

    walk(out)
    return out


@cache
def kubernetes_registry() -> Registry[Any]:
    definitions = kv_utils.schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/_definitions.json", KUBERNETES_VERSION
    )
    registry: Registry[Any] = Registry()
    return Resource.from_contents(definitions) @ registry


def name_of(document: Document) -> str:
    metadata = document.get("metadata") or {}
    namespace = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{document.get('kind', '?')} {namespace}{metadata.get('name', '?')}"


def _where(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f".{path}" if path else "(the object)"


def validate_document(document: Document) -> list[str]:
    """The problems of one object (empty: valid)."""
    if not isinstance(document, dict) or not document.get("apiVersion") or not document.get("kind"):
        return [f"{str(document)[:60]}: not a Kubernetes object (apiVersion and kind are required)"]
    api_version, kind = str(document["apiVersion"]), str(document["kind"])
    group = api_version.rpartition("/")[0]
    if group in (OWN_GROUP, "monitoring.coreos.com"):
        schema = crd_schemas().get((api_version, kind))
        if schema is None:
            return [f"{name_of(document)}: no CRD serves {kind} in {api_version}"]
        validator = jsonschema.Draft202012Validator(schema, registry=kubernetes_registry())
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        return [f"{name_of(document)}: {_where(e)}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name_of(document)}: Kubernetes {KUBERNETES_VERSION} has no {kind} in {api_version}"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{name_of(document)}: {_where(exc)}: {exc.message}"]
    return []


def validate(documents: Iterable[Document]) -> list[str]:
    """Every problem of `documents` (empty: all valid)."""
    return [problem for document in documents for problem in validate_document(document)]


def _files(*paths: Path) -> Callable[[], list[Document]]:
    return lambda: [d for p in paths for d in load_documents(p)]


def _glob(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.glob(pattern))


MONITORING = ROOT / "manifests" / "monitoring"
SOURCES: dict[str, Callable[[], list[Document]]] = {
    "manifests/install.yaml": _files(ROOT / "manifests" / "install.yaml"),
    "manifests/samples": _files(*_glob(ROOT / "manifests" / "samples", "*.yaml")),
    # Not Kubernetes objects, checked elsewhere: alertmanager-receiver.yaml (amtool), the
    # dashboard's JSON (tests/e2e/test_dashboards.py); the dashboard's ConfigMap is validated.
    "manifests/monitoring": _files(
        *(p for p in _glob(MONITORING, "*.yaml") if p.name != "alertmanager-receiver.yaml")
    ),
    "manifests/argocd": _files(*_glob(ROOT / "manifests" / "argocd", "*.yaml")),
    "crds": _files(*_glob(ROOT / "crds", f"{OWN_GROUP}_*.yaml")),
}
"""Every shipped set of manifest files, by name (the chart's renders: see the module's docstring)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="validate_manifests", description=__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="files to validate (default: every shipped set)")
    args = parser.parse_args(argv)
    sources = {str(p): _files(p) for p in args.files} if args.files else SOURCES
    failed = False
    try:
        for name, documents in sources.items():
            found = documents()
            problems = validate(found)
            failed = failed or bool(problems)
            print(f"{name}: {len(found)} objects, {len(problems) or 'no'} problems")
            for problem in problems:
                print(f"  {problem}")
    except ValidatorError as exc:
        print(f"validate_manifests: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
