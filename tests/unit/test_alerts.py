"""Alertmanager payloads and the alert → Incident mapping (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.api.keys import ANNOTATION_CHANGED_AT, ANNOTATION_STATUS
from incident_operator.core.alerts import (
    BOUND_ELSEWHERE,
    Alert,
    Skip,
    Upsert,
    WebhookPayload,
    alert_state,
    fingerprint_of,
    next_name,
    plan_alert,
)
from incident_operator.settings.config import AlertIntakeConfig

CONFIG = AlertIntakeConfig()


def alert(**labels: str) -> Alert:
    base = {"alertname": "ServiceDown", "namespace": "shop", "severity": "critical"}
    return Alert.model_validate(
        {
            "status": "firing",
            "labels": {**base, **labels},
            "annotations": {"summary": "Service is down", "description": "up == 0 for 1m"},
            "startsAt": "2026-11-27T10:00:00Z",
            "fingerprint": "a1b2c3d4e5f60718",
            "someFutureField": True,
        }
    )


def test_a_version_4_payload_parses_with_unknown_fields() -> None:
    payload = WebhookPayload.model_validate(
        {
            "version": "4",
            "groupKey": "{}:{}",
            "status": "firing",
            "receiver": "operator",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": [alert().model_dump(mode="json")],
            "extra": "accepted",
        }
    )
    assert payload.alerts[0].labels["alertname"] == "ServiceDown"


def test_a_payload_without_alerts_is_invalid() -> None:
    with pytest.raises(ValidationError):
        WebhookPayload.model_validate({"version": "4", "status": "firing"})


def test_labels_map_to_the_incident() -> None:
    action = plan_alert(alert(deployment="web"), CONFIG, ())
    assert isinstance(action, Upsert)
    assert action.base_name == "alert-a1b2c3d4e5f60718"
    assert action.namespace == "shop"
    spec: dict[str, Any] = action.spec
    assert (spec["severity"], spec["category"]) == ("P1", "availability")
    assert spec["title"] == "ServiceDown: Service is down"
    assert spec["description"] == "up == 0 for 1m"
    assert spec["source"]["fingerprint"] == "a1b2c3d4e5f60718"
    assert spec["targets"] == [{"kind": "Deployment", "name": "web"}]


@pytest.mark.parametrize(
    ("labels", "severity", "category"),
    [
        ({"severity": "warning"}, "P3", "availability"),
        ({"severity": "info", "alertname": "QueueBacklog"}, "P4", "performance"),
        ({"severity": "error", "category": "security"}, "P2", "security"),
        ({"severity": "weird", "alertname": "DatabaseDown"}, "P3", "data"),
        ({"category": "nonsense"}, "P1", "availability"),
    ],
)
def test_severity_and_category_mapping(labels: dict[str, str], severity: str, category: str) -> None:
    action = plan_alert(alert(**labels), CONFIG, ())
    assert isinstance(action, Upsert)
    assert (action.spec["severity"], action.spec["category"]) == (severity, category)


def test_alerts_outside_the_watched_namespaces_or_without_one_are_skipped() -> None:
    skipped = plan_alert(alert(), CONFIG, ("payments",))
    assert isinstance(skipped, Skip)
    assert "not watched" in skipped.reason
    no_ns = Alert.model_validate({"status": "firing", "labels": {"alertname": "X"}})
    assert "no namespace label" in plan_alert(no_ns, CONFIG, ()).reason
    defaulted = plan_alert(no_ns, AlertIntakeConfig(defaultNamespace="ops"), ())
    assert isinstance(defaulted, Upsert)
    assert defaulted.namespace == "ops"
    bad = plan_alert(alert(namespace="Not_A_Namespace"), CONFIG, ())
    assert isinstance(bad, Skip)
    newline = plan_alert(alert(namespace="payments\n"), CONFIG, ())  # `$` would let it through
    assert isinstance(newline, Skip)
    assert newline.reason.startswith("namespace label 'payments\\n' is not a valid namespace name")


def test_fingerprint_falls_back_to_a_stable_label_hash() -> None:
    one = Alert.model_validate(
        {"status": "firing", "labels": {"b": "2", "a": "1"}, "fingerprint": "NOT HEX!"}
    )
    two = Alert.model_validate({"status": "firing", "labels": {"a": "1", "b": "2"}})
    assert fingerprint_of(one) == fingerprint_of(two)
    assert len(fingerprint_of(one)) == 16


def test_a_new_incident_after_a_closed_one_gets_the_next_name() -> None:
    assert next_name("alert-ab", set()) == "alert-ab"
    assert next_name("alert-ab", {"alert-ab"}) == "alert-ab-2"
    assert next_name("alert-ab", {"alert-ab", "alert-ab-2"}) == "alert-ab-3"


def test_alert_state_is_read_from_annotations() -> None:
    state = alert_state({ANNOTATION_STATUS: "resolved", ANNOTATION_CHANGED_AT: "2026-11-27T10:05:00.000000Z"})
    assert state is not None
    assert state.status == "resolved"
    assert state.changed_at == datetime(2026, 11, 27, 10, 5, tzinfo=UTC)
    assert alert_state({ANNOTATION_STATUS: "exploded", ANNOTATION_CHANGED_AT: "x"}) is None
    assert alert_state(None) is None


def test_alert_intake_is_scoped_to_allowed_namespaces() -> None:
    own = plan_alert(alert(namespace="incident-operator"), CONFIG, (), "incident-operator")
    assert isinstance(own, Skip)
    assert own.code == "NotAllowed"
    system = plan_alert(alert(namespace="kube-system"), CONFIG, ())
    assert isinstance(system, Skip)
    assert system.code == "NotAllowed"
    scoped = AlertIntakeConfig(namespaces=("shop",))
    assert isinstance(plan_alert(alert(namespace="shop"), scoped, ()), Upsert)
    elsewhere = plan_alert(alert(namespace="billing"), scoped, ())
    assert isinstance(elsewhere, Skip)
    assert "not in alertIntake.namespaces" in elsewhere.reason
    operator_ns = plan_alert(alert(namespace="ops"), CONFIG, (), "ops")
    assert isinstance(operator_ns, Skip)  # wherever the operator itself runs


def skip_code(action: Upsert | Skip) -> str | None:
    return action.code if isinstance(action, Skip) else None


def test_a_bound_token_opens_incidents_only_in_its_namespaces() -> None:
    team = frozenset({"shop"})
    assert isinstance(plan_alert(alert(namespace="shop"), CONFIG, (), token_namespaces=team), Upsert)
    victim = plan_alert(alert(namespace="billing"), CONFIG, (), token_namespaces=team)
    assert isinstance(victim, Skip)
    assert (victim.code, victim.reason) == (
        BOUND_ELSEWHERE,
        "namespace billing is not one this token may open incidents in",
    )
    # The default namespace is no way around it, and the token's scope is told before the others
    # (a bound token learns nothing of what is watched or allowed elsewhere).
    default = AlertIntakeConfig(defaultNamespace="billing")
    unlabelled = plan_alert(alert(namespace=""), default, (), token_namespaces=team)
    assert skip_code(unlabelled) == BOUND_ELSEWHERE
    system = plan_alert(alert(namespace="kube-system"), CONFIG, (), token_namespaces=team)
    assert skip_code(system) == BOUND_ELSEWHERE
    # alertIntake's own scope still applies to a bound token's namespaces.
    bound_to_system = frozenset({"kube-system"})
    excluded = plan_alert(alert(namespace="kube-system"), CONFIG, (), token_namespaces=bound_to_system)
    assert skip_code(excluded) == "NotAllowed"
    scoped = AlertIntakeConfig(namespaces=("other",))
    assert skip_code(plan_alert(alert(namespace="shop"), scoped, (), token_namespaces=team)) == "NotAllowed"
    # Unbound (the --alert-token-secret token, or a Drill): as before.
    assert isinstance(plan_alert(alert(namespace="billing"), CONFIG, (), token_namespaces=None), Upsert)


def test_an_alert_fired_by_a_drill_opens_a_drill_incident() -> None:
    action = plan_alert(alert(incident_operator_drill="web-drill"), CONFIG, ())
    assert isinstance(action, Upsert)
    assert action.spec["drill"] is True  # kept out of production figures
    assert action.spec["source"]["type"] == "alert"  # still follows its alert (resolves with it)
    plain = plan_alert(alert(), CONFIG, ())
    assert isinstance(plain, Upsert)
    assert "drill" not in plain.spec
