"""When a Drill runs and how its response is scored (pure; time passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from incident_operator.api import keys
from incident_operator.api.models import DrillExpectations, DrillResult, DrillSpec, IncidentStatus
from incident_operator.core import drills

T0 = datetime(2026, 11, 27, 12, 0, 30, tzinfo=UTC)
SCALE = {"scaleToZero": {"target": {"kind": "Deployment", "name": "api"}}}


def spec(**extra: object) -> DrillSpec:
    return DrillSpec.model_validate({"scenario": SCALE, **extra})


def test_a_request_runs_once_and_says_who_asked() -> None:
    asked = {keys.REQUEST_ANNOTATION: "2026-11-27T12:00:00Z by alice"}
    first = drills.due(spec(), asked, None, None, T0, T0)
    assert first.reason == "requested by alice"
    assert first.request == asked[keys.REQUEST_ANNOTATION]
    again = drills.due(spec(), asked, first.request, T0, T0, T0 + timedelta(minutes=1))
    assert again.reason is None  # handled already


def test_a_schedule_fires_when_its_time_comes_unless_suspended() -> None:
    hourly = spec(schedule="0 * * * *")
    before = drills.due(hourly, {}, None, None, T0, T0 + timedelta(minutes=10))
    assert before.reason is None
    assert before.next_at == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
    on_time = drills.due(hourly, {}, None, None, T0, datetime(2026, 11, 27, 13, 0, 5, tzinfo=UTC))
    assert on_time.reason == "scheduled (0 * * * *)"
    assert on_time.next_at == datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    suspended = spec(schedule="0 * * * *", suspend=True)
    assert drills.due(suspended, {}, None, None, T0, T0 + timedelta(hours=3)).reason is None
    with pytest.raises(drills.ScheduleError, match="not a cron expression"):
        drills.due(spec(schedule="every day"), {}, None, None, T0, T0)


def test_the_response_is_scored_from_the_break() -> None:
    status = IncidentStatus(
        detectedAt=T0 + timedelta(seconds=2),
        mitigatedAt=T0 + timedelta(seconds=40),
        resolvedAt=T0 + timedelta(seconds=200),
    )
    measured = drills.timings(T0, status)
    assert (measured.detect, measured.acknowledge, measured.mitigate, measured.resolve) == (
        2.0,
        None,
        40.0,
        200.0,
    )
    assert drills.score(DrillExpectations(mitigatedWithinSeconds=60), measured) == (DrillResult.PASSED, [])
    result, reasons = drills.score(
        DrillExpectations(acknowledgedWithinSeconds=300, resolvedWithinSeconds=120), measured
    )
    assert result is DrillResult.FAILED
    assert reasons == [
        "not acknowledged (expected within 300s)",
        "resolved after 200s (expected within 120s)",
    ]
    assert drills.finished(T0, status, 900, T0 + timedelta(seconds=201))
    assert not drills.finished(T0, IncidentStatus(), 900, T0 + timedelta(seconds=899))
    assert drills.finished(T0, None, 900, T0 + timedelta(seconds=900))


def test_the_drill_incident_is_a_drill_on_the_target() -> None:
    body = drills.incident_body(
        "api-outage", "r1", spec(incident={"severity": "P2", "playbookRef": {"name": "heal"}})
    )
    assert body["metadata"] == {"name": "api-outage-r1", "labels": {keys.DRILL_LABEL: "api-outage"}}
    assert body["spec"] == {
        "title": "Drill api-outage: Deployment api scaled to zero",
        "severity": "P2",
        "category": "availability",
        "drill": True,
        "source": {"type": "drill"},
        "targets": [{"kind": "Deployment", "name": "api"}],
        "playbookRef": {"name": "heal"},
    }


def test_the_crd_asks_the_api_server_for_exactly_one_scenario() -> None:
    from incident_operator.api.crdgen import DRILL, crd

    schema = crd(DRILL)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = schema["properties"]["spec"]["properties"]["scenario"]["x-kubernetes-validations"]
    assert rules[0]["message"] == "give exactly one of scaleToZero, deletePods, fireAlert"


def test_a_fire_alert_drill_alert_is_labelled_as_the_drills_in_its_namespace() -> None:
    from typing import Any, cast

    from incident_operator.api.keys import DRILL_ALERT_LABEL
    from incident_operator.controllers.drills import DrillLoop

    fire = spec(
        scenario={
            "fireAlert": {
                "alertname": "ServiceDown",
                "labels": {"namespace": "elsewhere", "severity": "critical"},
            }
        }
    )
    loop = DrillLoop(
        kube=cast(Any, None), intake=cast(Any, None), access=None, namespace="shop", name="fire", body={}
    )
    firing = loop._alert(fire, "firing")
    assert firing.status == "firing"
    assert firing.labels == {
        "alertname": "ServiceDown",
        "namespace": "shop",
        "severity": "critical",
        DRILL_ALERT_LABEL: "fire",
    }
    assert loop._alert(fire, "resolved").status == "resolved"


def test_every_drill_result_is_a_reason_its_condition_can_carry() -> None:
    from incident_operator.api.reasons import Reason

    assert {str(r) for r in DrillResult} <= {str(r) for r in Reason}
