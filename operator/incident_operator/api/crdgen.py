"""Generates the CustomResourceDefinitions in `crds/` from the pydantic models in `models`.

Pure: turns pydantic's JSON Schema into a Kubernetes *structural* OpenAPI v3 schema (refs
inlined, `anyOf: [X, null]` collapsed to X, titles and null defaults dropped) and wraps it in a
CRD with the status subresource, printer columns and short names. `python -m
incident_operator.api.crdgen crds/` rewrites the files; `tests/unit/test_crds.py` fails on drift.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from incident_operator.api.actions import ACTION_KEYS
from incident_operator.api.keys import API_GROUP, API_VERSION
from incident_operator.api.models import (
    DrillSpec,
    DrillStatus,
    IncidentArchiveSpec,
    IncidentArchiveStatus,
    IncidentSpec,
    IncidentStatus,
    OnCallScheduleSpec,
    OnCallScheduleStatus,
    PlaybookSpec,
    PlaybookStatus,
)

JsonSchema = dict[str, Any]

_DROP_KEYS = {"title", "discriminator"}


@dataclass(frozen=True)
class KindSpec:
    kind: str
    description: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: tuple[dict[str, Any], ...] = ()
    spec_validations: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"{self.plural}.{API_GROUP}"


def _age_column() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


INCIDENT = KindSpec(
    kind="Incident",
    description=(
        "An incident being responded to: spec holds human intent (severity, category, targets, "
        "commander, approvals, resolution); status holds the operator's observations (phase, "
        "conditions, playbook progress, timeline)."
    ),
    plural="incidents",
    short_names=("inc",),
    spec_model=IncidentSpec,
    status_model=IncidentStatus,
    printer_columns=(
        {"name": "Severity", "type": "string", "jsonPath": ".spec.severity"},
        {"name": "Category", "type": "string", "jsonPath": ".spec.category"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Commander", "type": "string", "jsonPath": ".spec.commander"},
        _age_column(),
    ),
)

PLAYBOOK = KindSpec(
    kind="Playbook",
    description=(
        "A remediation procedure for matching incidents in its own namespace: ordered steps, each "
        f"one action ({', '.join(ACTION_KEYS)}), optionally conditional on an earlier step, within "
        "guardrails and cooldowns."
    ),
    plural="playbooks",
    short_names=("pb",),
    spec_model=PlaybookSpec,
    status_model=PlaybookStatus,
    printer_columns=(
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
        {"name": "Steps", "type": "integer", "jsonPath": ".status.steps"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        _age_column(),
    ),
)

DRILL = KindSpec(
    kind="Drill",
    description=(
        "A response drill (seed 8.2): breaks something on purpose in its own namespace (scale a "
        "workload to zero, delete pods, fire an alert), opens a drill incident, scores the response "
        "against expectations, and restores what the response did not."
    ),
    plural="drills",
    short_names=("dr",),
    spec_model=DrillSpec,
    status_model=DrillStatus,
    printer_columns=(
        {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
        {"name": "Last", "type": "string", "jsonPath": ".status.runs[-1:].result"},
        {"name": "Next", "type": "string", "jsonPath": ".status.nextRunAt"},
        _age_column(),
    ),
)

INCIDENT_ARCHIVE = KindSpec(
    kind="IncidentArchive",
    description=(
        "Closed incidents of one namespace and one month of detection, archived by the operator's "
        "retention (config retention.closedForDays) before it deleted them: what the monthly report, "
        "repeat detection and `kubectl incident history` read, keyed by the incident's uid. Written "
        "only by the operator's identity (an admission policy refuses anyone else)."
    ),
    plural="incidentarchives",
    short_names=("incarchive",),
    spec_model=IncidentArchiveSpec,
    status_model=IncidentArchiveStatus,
    printer_columns=(
        {"name": "Month", "type": "string", "jsonPath": ".spec.month"},
        {"name": "Entries", "type": "integer", "jsonPath": ".spec.count"},
        _age_column(),
    ),
)

ONCALL_SCHEDULE = KindSpec(
    kind="OnCallSchedule",
    description=(
        "Who is on call when, in its own namespace: rotation layers over a list of people (later layers "
        "take precedence where they cover a moment), overrides (they win), and each person's contact "
        "methods; status says who is on call now and next, kept true by the operator."
    ),
    plural="oncallschedules",
    short_names=("oncall",),
    spec_model=OnCallScheduleSpec,
    status_model=OnCallScheduleStatus,
    printer_columns=(
        {"name": "On call", "type": "string", "jsonPath": ".status.current.person"},
        {"name": "Until", "type": "string", "jsonPath": ".status.current.until"},
        {"name": "Next", "type": "string", "jsonPath": ".status.next.person"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        _age_column(),
    ),
)

KINDS: tuple[KindSpec, ...] = (INCIDENT, PLAYBOOK, DRILL, INCIDENT_ARCHIVE, ONCALL_SCHEDULE)


def structural(schema: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    """Return `schema` as a structural schema: no $ref, no nullable unions, no titles."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            options = [o for o in schema[union] if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union of {len(options)} types structurally: {schema}")
            rest = {k: v for k, v in schema.items() if k != union}
            return structural({**options[0], **rest}, defs)
    out: JsonSchema = {}
    for key, value in schema.items():
        if key in _DROP_KEYS or key == "$defs":
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields; `false` is not allowed
        elif key == "additionalProperties" and value is True:
            continue  # free-form objects say x-kubernetes-preserve-unknown-fields instead
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def model_schema(model: type[BaseModel]) -> JsonSchema:
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    return structural(raw, raw.get("$defs", {}))


def crd(kind: KindSpec) -> dict[str, Any]:
    spec_schema = model_schema(kind.spec_model)
    if kind.spec_validations:
        spec_schema["x-kubernetes-validations"] = list(kind.spec_validations)
    spec_schema.pop("description", None)
    status_schema = model_schema(kind.status_model)
    status_schema.pop("description", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["incident-operator"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.printer_columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


# Frozen text: the CRDs stay byte for byte what 0.1 generated (the module moved to api/crdgen.py in 0.2).
HEADER = (
    "# Generated by `python -m incident_operator.crdgen crds/` from operator/incident_operator/models.py.\n"
    "# Do not edit by hand: change the models and regenerate (`make crds`).\n"
)


def render(kind: KindSpec) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=110)


def filename(kind: KindSpec) -> str:
    return f"{API_GROUP}_{kind.plural}.yaml"


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = directory / filename(kind)
        path.write_text(render(kind))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "crds")):
        print(written_path)
