"""Which notices a change produces, who gets them, and in which shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.config import Channel, Notifications
from incident_operator.models import IncidentSpec, IncidentStatus, Phase, Severity
from incident_operator.notifications import IncidentView, Notice, channels_for, notices, payload
from incident_operator.planner import Record

SPEC = IncidentSpec.model_validate({"title": "web down", "severity": "P1", "category": "availability"})
VIEW = IncidentView("shop", "web-outage", SPEC, Phase.MITIGATING)
REF = {"namespace": "ops", "name": "hooks"}


def channel(name: str, type_: str = "slack", **extra: Any) -> Channel:
    return Channel.model_validate({"name": name, "type": type_, "urlSecretRef": REF, **extra})


def status(phase: Phase | None) -> IncidentStatus:
    return IncidentStatus(phase=phase, detectedAt=datetime(2026, 1, 1, tzinfo=UTC))


def test_opening_phase_changes_failures_breaches_and_resolution_are_noticed() -> None:
    opened = notices(IncidentStatus(), status(Phase.MITIGATING), [Record("Detected", "x")], VIEW)
    assert [n.event for n in opened] == ["opened"]
    moved = notices(status(Phase.MITIGATING), status(Phase.MONITORING), [Record("Monitoring", "x")], VIEW)
    assert moved[0].message.endswith("Mitigating -> Monitoring")
    failed = notices(
        status(Phase.MITIGATING), status(Phase.MITIGATING), [Record("StepFailed", "step s failed")], VIEW
    )
    assert [n.event for n in failed] == ["stepFailed"]
    resolved = notices(status(Phase.MONITORING), status(Phase.RESOLVED), [Record("Resolved", "ok")], VIEW)
    assert [n.event for n in resolved] == ["resolved"]  # not also a phase notice
    breached = notices(status(None), status(None), [Record("ResponseTargetBreached", "late")], VIEW)
    assert "P1 response target" in breached[0].message


def test_channels_filter_by_event_severity_namespace_and_escalate_on_breach() -> None:
    config = Notifications(
        channels=(
            channel("all"),
            channel("p2-only", severities=["P2"]),
            channel("other-ns", namespaces=["payments"]),
            channel("pager", events=[]),
            channel("payments-pager", events=[], namespaces=["payments"]),
        ),
        escalation={Severity.P1: ("pager", "payments-pager")},
    )
    assert [c.name for c in channels_for(config, Notice("opened", "m"), VIEW)] == ["all"]
    assert [c.name for c in channels_for(config, Notice("breached", "m"), VIEW)] == ["all"]
    escalated = Notice("escalated", "m", channels=("pager",))  # the engine names the level's channels
    assert [c.name for c in channels_for(config, escalated, VIEW)] == ["pager"]
    assert config.escalation[Severity.P1].levels[0].afterSeconds is None  # the list form: at the target


def test_escalation_to_an_unknown_channel_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="escalation names unknown channels: ghost"):
        Notifications(channels=(channel("a"),), escalation={Severity.P1: ("ghost",)})


def test_payload_shapes_and_templates() -> None:
    notice = Notice("phase", "[P1] web down: Investigating -> Mitigating")
    assert payload(channel("s"), notice, VIEW) == {"text": notice.message}
    templated = channel("t", template=":fire: {severity} {name} {event}: {notice}")
    assert payload(templated, notice, VIEW)["text"] == f":fire: P1 web-outage phase: {notice.message}"
    page = payload(channel("p", "statuspage"), notice, VIEW)
    assert (page["status"], page["impact"], page["title"]) == ("Identified", "critical", "web down")
    hook = payload(channel("w", "webhook"), notice, VIEW)
    assert (hook["event"], hook["namespace"], hook["phase"]) == ("phase", "shop", "Mitigating")


def test_a_bad_channel_template_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="unknown field"):
        channel("bad", template="{secret_url}")
