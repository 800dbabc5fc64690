"""The sample manifests parse with the models and pass the operator's own Playbook checks; the
generic ones act on the incident's own target within their bounds and match what they are for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from incident_operator.api.models import DrillSpec, IncidentSpec, PlaybookSpec
from incident_operator.api.reasons import Reason
from incident_operator.core import oncall, targets, validation
from incident_operator.core.matching import Candidate, select

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "samples").glob("*.yaml"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_is_valid(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "incident-operator.dev/v1alpha1"
    if doc["kind"] == "Incident":
        IncidentSpec.model_validate(doc["spec"])
    elif doc["kind"] == "OnCallSchedule":
        schedule, problems = oncall.check(doc["spec"])
        assert schedule is not None
        assert problems == []
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


def _playbook(name: str) -> Candidate:
    doc = yaml.safe_load((SAMPLES[0].parent / name).read_text())
    return Candidate(doc["metadata"]["name"], PlaybookSpec.model_validate(doc["spec"]))


def test_the_outage_sample_acts_on_whatever_deployment_the_incident_names_within_its_bounds() -> None:
    outage = _playbook("playbook-service-outage.yaml")
    for name in ("web", "checkout"):
        spec = IncidentSpec.model_validate(
            {
                "title": "down",
                "severity": "P1",
                "category": "availability",
                "targets": [{"kind": "Deployment", "name": name}],
            }
        )
        assert select(spec, [outage]).playbook is not None
        for step in outage.spec.steps:
            if step.target is None:
                continue
            opted_in = targets.resolve_step(
                step,
                spec.targets,
                outage.spec,
                {f"Deployment/{name}": {"incident-operator.dev/remediate": "true"}},
            )
            assert opted_in is not None
            assert [t.name for t in opted_in.targets] == [name], step.name
            not_opted_in = targets.resolve_step(step, spec.targets, outage.spec, {f"Deployment/{name}": {}})
            assert not_opted_in is not None
            assert not_opted_in.blocked is Reason.OUT_OF_BOUNDS


def test_the_database_sample_matches_its_alert_not_every_data_incident() -> None:
    database = _playbook("playbook-database-down.yaml")
    base = {"title": "t", "severity": "P1", "category": "data"}
    report = IncidentSpec.model_validate({**base, "title": "a corruption report"})
    alert = IncidentSpec.model_validate(
        {
            **base,
            "source": {"type": "alert", "alertname": "DatabaseDown"},
            "targets": [{"kind": "StatefulSet", "name": "postgres"}],
        }
    )
    assert select(report, [database]).playbook is None
    assert select(alert, [database]).playbook is not None
