"""Metric bookkeeping from status transitions, and the merge patch the engine sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from incident_operator.adapters import metrics
from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase
from incident_operator.controllers.incident import status_patch

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def spec(**extra: object) -> IncidentSpec:
    return IncidentSpec.model_validate({"title": "t", "severity": "P3", "category": "data", **extra})


def test_durations_are_observed_once_when_the_moment_is_recorded() -> None:
    labels = {"severity": "P3", "drill": "false"}
    before = sample("incident_operator_time_to_acknowledge_seconds_count", labels)
    old = IncidentStatus(detectedAt=T0)
    new = IncidentStatus(detectedAt=T0, acknowledgedAt=T0 + timedelta(minutes=2))
    metrics.observe_transition(spec(), old, new)
    metrics.observe_transition(spec(), new, new)  # nothing new: no second observation
    assert sample("incident_operator_time_to_acknowledge_seconds_count", labels) == before + 1
    assert sample("incident_operator_time_to_acknowledge_seconds_bucket", {**labels, "le": "120.0"}) >= 1


def test_drills_are_labelled_apart_and_not_counted_as_breaches_or_open() -> None:
    drill = spec(drill=True)
    before = sample(
        "incident_operator_incidents_total", {"severity": "P3", "category": "data", "source": "drill"}
    )
    metrics.observe_transition(drill, IncidentStatus(), IncidentStatus(detectedAt=T0))
    after = sample(
        "incident_operator_incidents_total", {"severity": "P3", "category": "data", "source": "drill"}
    )
    assert after == before + 1
    breaches = sample("incident_operator_response_target_breaches_total", {"severity": "P3"})
    metrics.breach(drill)
    assert sample("incident_operator_response_target_breaches_total", {"severity": "P3"}) == breaches


def test_open_incidents_follow_the_phase() -> None:
    tracker = metrics.OpenIncidents()
    labels = {"severity": "P3", "category": "data"}
    tracker.update("a", spec(), Phase.MITIGATING)
    tracker.update("b", spec(), Phase.DETECTED)
    tracker.update("c", spec(drill=True), Phase.DETECTED)
    assert sample("incident_operator_incidents_open", labels) == 2
    tracker.update("a", spec(), Phase.RESOLVED)
    tracker.update("b", None, None)
    assert sample("incident_operator_incidents_open", labels) == 0


def test_status_patch_sends_only_changes_and_nulls_what_went_away() -> None:
    old = IncidentStatus(phase=Phase.MONITORING, monitoringSince=T0, evidenceRef="x")
    new = IncidentStatus(phase=Phase.INVESTIGATING, evidenceRef="x")
    assert status_patch(old, new) == {"phase": "Investigating", "monitoringSince": None}
    assert status_patch(new, new) == {}
