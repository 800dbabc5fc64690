"""After the incident: the post-mortem draft, the monthly report and repeat incidents (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from incident_operator.api.models import IncidentSpec, IncidentStatus
from incident_operator.api.timestamps import format_time as stamp
from incident_operator.core import postmortem, repeats, report

T0 = datetime(2026, 11, 3, 14, 15, tzinfo=UTC)


def incident(
    name: str,
    severity: str = "P2",
    category: str = "availability",
    *,
    detected: datetime = T0,
    ack_after: float | None = None,
    resolve_after: float | None = None,
    detect_delay: float | None = None,
    drill: bool = False,
    breached: bool = False,
    repeat_of: str | None = None,
    escalations: int = 0,
    items: list[dict[str, Any]] | None = None,
    targets: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    spec: dict[str, Any] = {"title": name, "severity": severity, "category": category}
    if drill:
        spec["drill"] = True
    if detect_delay is not None:
        spec["source"] = {
            "type": "alert",
            "alertname": "ServiceDown",
            "startsAt": stamp(detected - timedelta(seconds=detect_delay)),
        }
    if items:
        spec["actionItems"] = items
    if targets:
        spec["targets"] = [{"kind": "Deployment", "name": t} for t in targets]
    status: dict[str, Any] = {"phase": "Detected", "detectedAt": stamp(detected)}
    if ack_after is not None:
        status["acknowledgedAt"] = stamp(detected + timedelta(seconds=ack_after))
    if resolve_after is not None:
        status["resolvedAt"] = stamp(detected + timedelta(seconds=resolve_after))
        status["phase"] = "Resolved"
    if breached:
        status["conditions"] = [
            {
                "type": "ResponseTargetBreached",
                "status": "True",
                "reason": "AckDeadlinePassed",
                "message": "late",
                "lastTransitionTime": stamp(detected),
            }
        ]
    if repeat_of:
        status["repeatOf"] = repeat_of
    if escalations:
        status["escalations"] = escalations
    return {
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": stamp(detected)},
        "spec": spec,
        "status": status,
    }


def test_the_report_counts_what_the_seed_asks_for_and_keeps_drills_apart() -> None:
    objects = [
        incident(
            "a", "P1", detect_delay=60, ack_after=300, resolve_after=1800, targets=["web"], breached=True
        ),
        incident(
            "b", "P2", "performance", detect_delay=120, ack_after=600, resolve_after=3600, targets=["web"]
        ),
        incident("c", "P2", "performance", ack_after=60, resolve_after=600, repeat_of="b", escalations=2),
        incident("d", "P4", "data", detected=T0 + timedelta(days=10), targets=["db"]),
        incident("drill", "P1", drill=True, ack_after=10, resolve_after=20),
        incident("october", "P1", detected=datetime(2026, 10, 31, 23, 0, tzinfo=UTC)),
        incident(
            "items",
            "P3",
            "security",
            items=[
                {"id": "one", "title": "x", "done": True},
                {"id": "two", "title": "y", "due": "2026-11-10"},
                {"id": "three", "title": "z", "due": "2026-12-30"},
            ],
        ),
    ]
    built = report.build(objects, 2026, 11, datetime(2026, 11, 27, tzinfo=UTC), "shop")
    data = json.loads(report.render(built, "json")[1])
    assert data["month"] == "2026-11"
    assert data["total"] == 5
    assert data["bySeverity"] == {"P1": 1, "P2": 2, "P3": 1, "P4": 1}
    assert data["byCategory"] == {"availability": 1, "performance": 2, "security": 1, "data": 1}
    assert data["drills"] == 1
    assert data["timeToDetectSeconds"] == {"count": 2, "mean": 90.0, "p50": 60.0, "p90": 120.0}
    assert data["timeToAcknowledgeSeconds"] == {"count": 3, "mean": 320.0, "p50": 300.0, "p90": 600.0}
    assert data["timeToResolveSeconds"]["p90"] == 3600.0
    assert data["timeToMitigateSeconds"]["count"] == 0
    assert (data["responseTargetBreaches"], data["repeatIncidents"], data["escalations"]) == (1, 1, 2)
    assert data["actionItems"] == {"total": 3, "done": 1, "open": 2, "overdue": 1, "completionRate": 0.333}
    assert data["topTargets"][0] == {"target": "Deployment/web", "incidents": 2}
    assert sum(sum(w.values()) for w in data["incidentsPerWeek"].values()) == 5

    markdown = report.to_markdown(built)
    assert "- Total Incidents: 5" in markdown
    assert "- P2 (High): 2" in markdown
    assert "1. Performance Issues: 40%" in markdown
    assert "- Drills (not counted above): 1" in markdown


def test_the_html_report_embeds_a_chart_and_the_same_numbers_as_a_table() -> None:
    built = report.build([incident("a", "P1"), incident("b", "P3")], 2026, 11, T0, None)
    page = report.render(built, "html")[1]
    assert page.startswith("<!doctype html>")
    assert "data:image/png;base64,iVBORw0KGgo" in page  # a PNG drawn by matplotlib
    assert "<caption>Incidents per week by severity</caption>" in page
    assert "all namespaces" in page


@pytest.mark.parametrize("month", ["2026-13", "November", "2026-1-1"])
def test_bad_months_are_refused_clearly(month: str) -> None:
    with pytest.raises(report.ReportError, match=r"month must be YYYY-MM"):
        report.parse_month(month)


def test_bad_formats_are_refused_clearly() -> None:
    built = report.build([], 2026, 11, T0)
    with pytest.raises(report.ReportError, match=r"format must be one of md, json, html"):
        report.render(built, "pdf")


def test_the_postmortem_follows_the_seed_template_with_the_timeline_and_the_peoples_words() -> None:
    raw = incident("db-down", "P1", detect_delay=45, ack_after=120, resolve_after=1500, targets=["api"])
    raw["spec"]["commander"] = "alice"
    raw["spec"]["resolution"] = {
        "summary": "raised the pool to 200",
        "rootCause": "pool exhausted | slow queries",
    }
    raw["spec"]["actionItems"] = [
        {"id": "pool-alert", "title": "alert on the pool", "owner": "bob", "due": "2026-11-01"}
    ]
    raw["status"]["timeline"] = [
        {
            "time": stamp(T0),
            "type": "Detected",
            "message": "P1 availability incident opened",
            "actor": "incident-operator",
        },
        {
            "time": stamp(T0 + timedelta(minutes=2)),
            "type": "Acknowledged",
            "message": "by alice",
            "actor": "alice",
        },
    ]
    raw["status"]["phase"] = "Closed"
    raw["status"]["closedAt"] = stamp(T0 + timedelta(days=2))
    text = postmortem.render(
        "shop",
        "db-down",
        IncidentSpec.model_validate(raw["spec"]),
        IncidentStatus.model_validate(raw["status"]),
        T0 + timedelta(days=3),
    )
    for heading in (
        "## Summary",
        "## Impact",
        "## Incident Timeline",
        "### Detection",
        "### Resolution",
        "### Recovery",
        "## Full Timeline",
        "## Root Cause Analysis",
        "### Why It Happened",
        "## What Went Well",
        "## What Did Not Go Well",
        "## Action Items",
    ):
        assert f"\n{heading}\n" in text, heading
    assert "- **Severity**: P1 (Critical)" in text
    assert "Automated monitoring alert `ServiceDown`" in text
    assert "45 seconds to detect" in text
    assert "pool exhausted | slow queries" in text  # prose keeps its pipes ...
    assert "| Acknowledged | alice | by alice |" in text  # ... table cells stay one cell each
    assert "- [ ] `pool-alert`: alert on the pool (bob, due 2026-11-01) **overdue**" in text
    assert "_Closed with 1 action item open: pool-alert._" in text
    assert "acknowledge by" in text


def test_repeats_need_the_same_key_inside_the_window_and_never_count_drills() -> None:
    alert = {"source": {"type": "alert", "alertname": "DatabaseDown"}, "category": "data"}
    assert repeats.key_of(alert) == ("alert:DatabaseDown", "")
    assert repeats.key_of(
        {
            "category": "data",
            "targets": [{"kind": "Deployment", "name": "b"}, {"kind": "Deployment", "name": "a"}],
        }
    ) == (
        "category:data",
        "Deployment/a,Deployment/b",
    )
    assert repeats.key_of({"category": "data"}) is None  # a category alone says too little
    assert repeats.key_of({**alert, "drill": True}) is None
    now = T0
    earlier = [
        ("old", stamp(now - timedelta(days=40))),
        ("recent", stamp(now - timedelta(days=3))),
        ("latest", stamp(now - timedelta(days=1))),
        ("me", stamp(now)),
    ]
    assert repeats.previous("me", now, earlier, timedelta(days=30)) == "latest"
    assert repeats.previous("me", now, earlier[:1], timedelta(days=30)) is None
    assert repeats.previous("me", now, [("me", stamp(now))], timedelta(days=30)) is None
