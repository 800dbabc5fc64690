"""The public status page: public incidents only, in the words users know, and nothing internal."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

from incident_operator.api.timestamps import format_time as stamp
from incident_operator.core import statuspage
from incident_operator.settings.config import StatusPageConfig

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SECRET_BITS = (
    "collect-evidence",  # a step name
    "web-7d9f8-abcde",  # a pod name
    "web-outage-evidence-r1",  # an evidence ConfigMap
    "https://hooks.internal.example/T000",  # a URL from a step
    "StepSucceeded",  # a timeline type
    "playbook service-outage",  # a timeline message
    "scaled Deployment",  # a condition message
)


def incident(
    name: str,
    *,
    severity: str = "P1",
    phase: str = "Mitigating",
    detected: datetime = NOW - timedelta(hours=1),
    resolved: datetime | None = None,
    **spec: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "detectedAt": stamp(detected),
        "playbook": {
            "name": "service-outage",
            "steps": [
                {
                    "name": "collect-evidence",
                    "action": "collectEvidence",
                    "state": "Succeeded",
                    "message": "evidence in web-outage-evidence-r1",
                },
                {"name": "kill", "action": "deletePods", "state": "Succeeded", "pods": ["web-7d9f8-abcde"]},
            ],
        },
        "evidenceRef": "web-outage-evidence-r1",
        "timeline": [
            {
                "time": stamp(detected),
                "type": "StepSucceeded",
                "message": "playbook service-outage: GET https://hooks.internal.example/T000",
            }
        ],
        "conditions": [
            {
                "type": "Mitigated",
                "status": "True",
                "reason": "MitigationApplied",
                "message": "scaled Deployment web 2 -> 4",
                "lastTransitionTime": stamp(detected),
            }
        ],
    }
    if resolved is not None:
        status["resolvedAt"] = stamp(resolved)
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "title": f"{name} title",
            "severity": severity,
            "category": "availability",
            "targets": [{"kind": "Deployment", "name": "web"}],
            **spec,
        },
        "status": status,
    }


CONFIG = StatusPageConfig(
    title="Example status",
    publicSeverities=("P1",),
    components={"Deployment/web": "Checkout"},
    namespaces=("shop",),
)


def test_all_systems_operational_without_public_incidents() -> None:
    page = statuspage.build([incident("quiet", severity="P3")], CONFIG, NOW)
    assert page.overall == "All systems operational"
    assert "All systems operational" in statuspage.to_html(page)
    assert statuspage.to_json(page)["incidents"] == []


def test_public_incidents_show_status_impact_services_and_updates_in_users_words() -> None:
    objects = [
        incident(
            "outage",
            updates=[
                {
                    "time": stamp(NOW - timedelta(minutes=50)),
                    "message": "We are looking into failed checkouts.",
                    "public": True,
                },
                {"time": stamp(NOW - timedelta(minutes=40)), "message": "db-7 OOM, see runbook"},
                {"time": stamp(NOW - timedelta(minutes=30)), "message": "not yet", "public": False},
            ],
        ),
        incident("hidden-p1", public=False),
        incident("shown-p3", severity="P3", public=True, phase="Monitoring"),
        incident("drill", drill=True),
        incident(
            "old", phase="Resolved", detected=NOW - timedelta(days=100), resolved=NOW - timedelta(days=95)
        ),
        incident(
            "last-week",
            phase="Resolved",
            detected=NOW - timedelta(days=7),
            resolved=NOW - timedelta(days=7) + timedelta(hours=1),
        ),
    ]
    data = statuspage.to_json(statuspage.build(objects, CONFIG, NOW))
    assert data["status"] == "Major outage"
    assert [i["title"] for i in data["incidents"]] == ["outage title", "shown-p3 title"]
    outage = data["incidents"][0]
    assert (outage["status"], outage["impact"], outage["services"]) == (
        "Identified",
        "critical",
        ["Checkout"],
    )
    assert outage["updates"] == [
        {
            "time": stamp(NOW - timedelta(minutes=50)),
            "status": "identified",  # the word of its phase (Mitigating), as it names none
            "message": "We are looking into failed checkouts.",
        }
    ]
    assert data["incidents"][1]["status"] == "Monitoring"
    assert [i["title"] for i in data["history"]] == ["last-week title"]  # 90 days of history


def test_nothing_internal_is_ever_shown_in_any_format() -> None:
    page = statuspage.build(
        [incident("outage"), incident("done", phase="Resolved", resolved=NOW)], CONFIG, NOW
    )
    for rendered in (
        statuspage.to_html(page),
        json.dumps(statuspage.to_json(page)),
        statuspage.to_atom(page, "https://status.example.com"),
    ):
        for bit in SECRET_BITS:
            assert bit not in rendered, bit


def test_the_html_needs_no_script_and_has_landmarks_and_the_feed_is_atom() -> None:
    page = statuspage.build([incident("outage", title="<script>alert(1)</script>")], CONFIG, NOW)
    html = statuspage.to_html(page)
    assert "<script" not in html  # the title is escaped, and the page has no script of its own
    for landmark in ("<header>", "<main>", "<footer>", "lang='en'", "name='viewport'"):
        assert landmark in html
    feed = ET.fromstring(statuspage.to_atom(page, "https://status.example.com"))  # noqa: S314 - our own output
    ns = {"a": "http://www.w3.org/2005/Atom"}
    assert feed.find("a:title", ns).text == "Example status"
    assert len(feed.findall("a:entry", ns)) == 1


def test_only_listed_namespaces_publish_and_none_by_default() -> None:
    shown = incident("outage", public=True)
    elsewhere = {**incident("other", public=True), "metadata": {"name": "other", "namespace": "dev"}}
    assert statuspage.build([shown, elsewhere], StatusPageConfig(publicSeverities=("P1",)), NOW).current == ()
    page = statuspage.build([shown, elsewhere], CONFIG, NOW)
    assert [i.title for i in page.current] == ["outage title"]  # dev is not listed: spec.public is not enough
    p1_elsewhere = {**incident("p1"), "metadata": {"name": "p1", "namespace": "dev"}}
    assert statuspage.build([p1_elsewhere], CONFIG, NOW).overall == "All systems operational"


def test_drills_never_publish_by_either_mark() -> None:
    objects = [
        incident("drill", drill=True, public=True),
        incident("fired", source={"type": "drill"}, public=True),
    ]
    assert statuspage.build(objects, CONFIG, NOW).current == ()


def test_an_update_is_internal_unless_marked_public() -> None:
    updates = [{"time": stamp(NOW - timedelta(minutes=5)), "message": "db-7 OOM, see runbook"}]
    page = statuspage.build([incident("outage", updates=updates)], CONFIG, NOW)
    assert page.current[0].updates == ()
    for rendered in (statuspage.to_html(page), statuspage.to_atom(page, "https://status.example.com")):
        assert "db-7" not in rendered
