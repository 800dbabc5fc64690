"""crds/ is generated from the pydantic models and must not drift from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from incident_operator.api import crdgen
from incident_operator.api.models import ROLE_HOLDER_MAX, IncidentSpec, IncidentStatus
from incident_operator.core import paging

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_committed_crd_matches_the_models(kind: crdgen.KindSpec) -> None:
    path = CRDS / crdgen.filename(kind)
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == crdgen.render(kind), f"{path} drifted from the models: run `make crds`"


def test_crds_holds_only_the_crds_and_a_kustomization_kubectl_apply_f_skips() -> None:
    """`kubectl apply -f crds/` reads every .yaml, .yml and .json file: those are exactly the CRDs.
    The kustomize base (manifests/install refers to it) is the extension-less `Kustomization`."""
    generated = {crdgen.filename(k) for k in crdgen.KINDS}
    assert {p.name for p in CRDS.iterdir()} == generated | {"Kustomization"}
    kustomization = yaml.safe_load((CRDS / "Kustomization").read_text())
    assert set(kustomization["resources"]) == generated  # `kubectl apply -k crds/` installs each


def _walk(schema: dict[str, object]) -> list[dict[str, object]]:
    found = [schema]
    for key in ("properties",):
        for sub in (schema.get(key) or {}).values():
            found += _walk(sub)
    for key in ("items", "additionalProperties"):
        sub = schema.get(key)
        if isinstance(sub, dict):
            found += _walk(sub)
    return found


def test_schema_is_structural() -> None:
    doc = yaml.safe_load(crdgen.render(crdgen.INCIDENT))
    root = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(root):
        assert "$ref" not in node
        assert "anyOf" not in node
        assert "title" not in node
        assert "type" in node, node
        assert node.get("default", "x") is not None


def test_enums_and_required_fields_come_from_the_models() -> None:
    spec = crdgen.model_schema(IncidentSpec)
    assert spec["properties"]["severity"]["enum"] == ["P1", "P2", "P3", "P4"]
    assert spec["properties"]["category"]["enum"] == ["availability", "performance", "security", "data"]
    assert set(spec["required"]) == {"title", "severity", "category"}


def test_role_holders_have_one_length_limit_and_a_stored_longer_commander_is_still_read() -> None:
    """The CRD refuses a role holder longer than status.rolesTold keeps; the model still reads an
    Incident stored before spec.commander had a limit (the API server ratchets the unchanged value)."""
    spec = crdgen.model_schema(IncidentSpec)["properties"]
    status = crdgen.model_schema(IncidentStatus)["properties"]
    limits = {
        "commander": spec["commander"]["maxLength"],
        **{role: spec["roles"]["properties"][role]["maxLength"] for role in paging.ROLES[1:]},
        **{
            f"status.roles.{role}": status["roles"]["properties"][role]["maxLength"]
            for role in paging.ROLES[1:]
        },
        "status.rolesTold[].who": status["rolesTold"]["items"]["properties"]["who"]["maxLength"],
    }
    assert set(limits.values()) == {ROLE_HOLDER_MAX} == {paging.WHO_MAX}, limits
    stored = IncidentSpec.model_validate(
        {"title": "t", "severity": "P1", "category": "data", "commander": "x" * (ROLE_HOLDER_MAX + 50)}
    )
    assert stored.commander == "x" * (ROLE_HOLDER_MAX + 50)


def test_printer_columns_and_short_name() -> None:
    doc = crdgen.crd(crdgen.INCIDENT)
    version = doc["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Severity",
        "Category",
        "Phase",
        "Commander",
        "Age",
    ]
    assert doc["spec"]["names"]["shortNames"] == ["inc"]
    assert version["subresources"] == {"status": {}}


def test_a_union_of_two_types_is_refused() -> None:
    with pytest.raises(ValueError, match="union of 2 types"):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})
