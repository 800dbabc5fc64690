"""The metrics about the operator itself (issue 24): `incident_operator_leader`, and
`incident_operator_notifications_total` counted per delivery's outcome; the series a dashboard's
`increase()` needs exist at zero before the first event."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from incident_operator.adapters import metrics
from incident_operator.api.models import IncidentSpec, Phase
from incident_operator.controllers.notifier import Notifier
from incident_operator.core.notices import IncidentView, Notice
from incident_operator.settings.channels import parse_channel
from incident_operator.settings.config import Notifications


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_leader_gauge_follows_who_acts() -> None:
    metrics.leading(True)
    assert value("incident_operator_leader") == 1.0
    metrics.leading(False)
    assert value("incident_operator_leader") == 0.0


def test_series_known_in_advance_exist_at_zero() -> None:
    for severity in ("P1", "P2", "P3", "P4"):
        assert value("incident_operator_response_target_breaches_total", severity=severity) is not None
        count = value("incident_operator_time_to_acknowledge_seconds_count", severity=severity, drill="false")
        assert count is not None
    assert value("incident_operator_actions_total", action="scale", result="failed") is not None
    assert value("incident_operator_alerts_received_total", status="resolved") is not None
    assert value("incident_operator_actions_deferred_total", reason="CircuitOpen") is not None
    assert (
        value("incident_operator_incidents_total", severity="P1", category="data", source="alert") is not None
    )


def test_a_notifier_exports_its_channels_and_levels_and_counts_each_outcome() -> None:
    hook = parse_channel(
        {
            "name": "unit-hook",
            "type": "webhook",
            "urlSecretRef": {"namespace": "ops", "name": "hooks", "key": "url"},
            "events": ["opened"],
        }
    )
    config = Notifications.model_validate(
        {"channels": [hook], "escalation": {"P3": {"levels": [{"channels": ["unit-hook"]}] * 2}}}
    )
    notifier = Notifier(None, None, config)
    assert value("incident_operator_notifications_total", channel="unit-hook", result="failed") == 0.0
    assert value("incident_operator_escalations_total", severity="P3", level="2") is not None

    async def fail(channel: object, notice: object, view: object) -> str:
        return "connection refused"

    notifier.deliver = fail  # type: ignore[method-assign]
    spec = IncidentSpec.model_validate({"title": "t", "severity": "P3", "category": "availability"})
    view = IncidentView("shop", "web", spec, Phase.DETECTED)
    failures: list[str] = []

    async def go() -> None:
        await asyncio.gather(
            *notifier.send_all([Notice("opened", "opened", ("unit-hook",))], view, failures.append)
        )

    asyncio.run(go())
    assert value("incident_operator_notifications_total", channel="unit-hook", result="failed") == 1.0
    assert value("incident_operator_notifications_total", channel="unit-hook", result="succeeded") == 0.0
    assert failures
