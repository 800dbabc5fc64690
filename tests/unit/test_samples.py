"""The sample manifests parse with the models and pass the operator's own Playbook checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from incident_operator.api.models import DrillSpec, IncidentSpec
from incident_operator.core import validation

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "samples").glob("*.yaml"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_is_valid(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "incident-operator.dev/v1alpha1"
    if doc["kind"] == "Incident":
        IncidentSpec.model_validate(doc["spec"])
    elif doc["kind"] == "Drill":
        drill = DrillSpec.model_validate(doc["spec"])
        assert drill.schedule
        assert drill.suspend  # shipped suspended: applying it breaks nothing
    else:
        assert doc["kind"] == "Playbook"
        spec, problems = validation.problems(doc["spec"])
        assert spec is not None
        assert problems == []


def test_the_seed_playbooks_are_all_there() -> None:
    names = {p.name for p in SAMPLES}
    assert {
        "playbook-service-outage.yaml",
        "playbook-performance.yaml",
        "playbook-security.yaml",
        "playbook-database-down.yaml",
        "playbook-queue-backlog.yaml",  # seed 3.3: scale workers, clear the queue
        "drill-monthly-service-outage.yaml",  # seed 8.2
        "drill-quarterly-simulation.yaml",
    } <= names
