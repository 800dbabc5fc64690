"""People hear about incidents: Slack, JSON webhook and status-page receivers (real local HTTP
servers), escalation on a breach, and receivers that fail, time out or answer 429. Whatever the
receivers do, the incident progresses and a failed delivery is recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest

from tests.e2e.conftest import Cluster, OperatorProcess
from tests.e2e.engine_helpers import TIMEOUT, Scenario
from tests.httpserver import LocalServer
from tests.mailserver import MailServer
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, notify_namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, notify_namespace)


def test_channels_hear_the_incident_and_failing_receivers_do_not_stop_it(
    s: Scenario, receivers: LocalServer
) -> None:
    receivers.set_sequence("/flaky", [429, 200])
    receivers.set_status("/broken", 500)
    receivers.set_delay("/slow", 2.0)
    s.deployment("shop", 1)
    s.playbook(
        "grow",
        [{"name": "scale", "scale": {"target": {"kind": "Deployment", "name": "shop"}, "replicas": 2}}],
    )
    s.incident("noticed", severity="P2", title="checkout errors", public=True)  # the statuspage channel

    s.wait_phase("noticed", "Resolved")
    wait_until(
        lambda: any("resolved" in r["body"]["text"] for r in receivers.received_at("/ok")),
        timeout=TIMEOUT,
        what="the resolved notice on Slack",
    )
    # this incident's notices (the namespace is shared with the bad-input table's hostile titles)
    texts = [r["body"]["text"] for r in receivers.received_at("/ok") if "/noticed)" in r["body"]["text"]]
    assert texts[0] == "[P2] checkout errors (notify-e2e/noticed): opened, availability"
    assert any("Mitigating -&gt; Monitoring" in t for t in texts)  # Slack shows ->, escaped

    statuses = [r["body"]["status"] for r in receivers.received_at("/status")]
    wait_until(
        lambda: "Resolved" in [r["body"]["status"] for r in receivers.received_at("/status")],
        timeout=TIMEOUT,
        what="status page resolved",
    )
    statuses = [r["body"]["status"] for r in receivers.received_at("/status")]
    assert statuses[0] in ("Investigating", "Identified")  # opened: the scale step may already run
    assert "Monitoring" in statuses
    assert statuses[-1] == "Resolved"
    assert receivers.received_at("/status")[0]["body"]["impact"] == "major"

    def flaky() -> list[dict[str, Any]]:
        return [r for r in receivers.received_at("/flaky") if "noticed" in json.dumps(r["body"])]

    wait_until(lambda: len(flaky()) == 2, timeout=TIMEOUT, what="429 then retried")

    def failures() -> list[str]:
        return [
            e["message"] for e in s.status("noticed").get("timeline", []) if e["type"] == "NotificationFailed"
        ]

    wait_until(
        lambda: len(failures()) == 2,
        timeout=TIMEOUT,
        what="two failed deliveries recorded",
        describe=lambda: str(failures()),
    )
    assert any("channel broken not delivered: HTTP 500 after 2 attempt(s)" in f for f in failures())
    assert any("channel slow not delivered: timed out after 0.5s after 2 attempt(s)" in f for f in failures())
    assert not any("flaky" in f for f in failures())
    assert any(e.reason == "NotificationFailed" and e.type == "Warning" for e in s.events("noticed"))
    assert receivers.url("/broken") not in str(s.status("noticed"))


def test_a_breach_escalates_to_the_severity_channel(s: Scenario, receivers: LocalServer) -> None:
    # No playbook runs (the ref names none), so nothing acknowledges it; the P4 target is 3 s here.
    s.incident("ignored", severity="P4", title="nobody looks", playbookRef={"name": "none-here"})
    s.wait_condition("ignored", "ResponseTargetBreached")
    page = wait_until(lambda: receivers.received_at("/pager"), timeout=TIMEOUT, what="the escalation page")
    # Only this namespace's breach: the pager channel is limited to it (other tests' P4 breaches too).
    texts = [p["body"]["text"] for p in page if "P4" in p["body"]["text"]]
    assert texts == ["PAGE P4 ignored: escalated"]  # the channel's own template
    assert s.status("ignored")["escalations"] == 1


def test_a_p1_automation_works_on_breaches_and_escalates_but_one_resolved_in_time_does_not(
    s: Scenario, receivers: LocalServer
) -> None:
    """Only a person acknowledges: a playbook working on a P1 does not stop the page (the P1
    target is 10 s here)."""
    receivers.set_status("/p1-gate", 503)
    s.deployment("svc", 1)
    s.playbook(
        "p1-slow", [{"name": "gate", "httpCheck": {"url": receivers.url("/p1-gate")}, "timeoutSeconds": 300}]
    )
    s.playbook("p1-fast", [{"name": "ready", "waitReady": {"target": {"kind": "Deployment", "name": "svc"}}}])
    s.incident("p1-slow", severity="P1", title="automation is on it", playbookRef={"name": "p1-slow"})
    s.incident("p1-fast", severity="P1", title="automation fixes it", playbookRef={"name": "p1-fast"})
    s.wait_step("p1-slow", "gate", "Running")
    fast = s.wait_phase("p1-fast", "Resolved")

    s.wait_condition("p1-slow", "ResponseTargetBreached")
    slow = s.status("p1-slow")
    assert "acknowledgedAt" not in slow
    assert slow["escalations"] == 1
    assert "Escalated" in [e["type"] for e in slow["timeline"]]
    pages = wait_until(
        lambda: [p for p in receivers.received_at("/pager") if "P1" in p["body"]["text"]],
        timeout=TIMEOUT,
        what="the P1 page",
    )
    assert [p["body"]["text"] for p in pages] == ["PAGE P1 p1-slow: escalated"]

    # The fast one's deadline has passed too (it was opened at the same time): no breach for it.
    deadline = datetime.fromisoformat(fast["acknowledgeBy"].replace("Z", "+00:00"))
    wait_until(lambda: datetime.now(UTC) > deadline, timeout=TIMEOUT, what="the fast one's deadline passed")
    assert s.condition("p1-fast", "ResponseTargetBreached") is None
    assert "escalations" not in s.status("p1-fast")
    s.patch_incident("p1-slow", {"resolution": {"summary": "test over"}})


def test_a_p2_escalates_level_by_level_and_a_person_acknowledging_stops_it_and_follows_up(
    s: Scenario, receivers: LocalServer, mailbox: MailServer
) -> None:
    """The session's P2 policy: PagerDuty at once, Opsgenie and email 2 s later; a person's
    acknowledgement then acknowledges both pages, and the resolution resolves and closes them."""
    s.incident("paged", severity="P2", title="checkout slow", playbookRef={"name": "none-here"})
    key = f"incident-operator/{s.namespace}/paged"

    def mine(request: dict[str, Any]) -> bool:
        body = request["body"]
        return key in (body.get("dedup_key"), body.get("alias")) or key in unquote(request["path"])

    def received(prefix: str) -> list[dict[str, Any]]:
        """This incident's requests (the namespace's other P2 incidents are paged too)."""
        return [r for r in receivers.received() if r["path"].startswith(prefix) and mine(r)]

    wait_until(lambda: len(received("/og")) >= 1, timeout=TIMEOUT, what="the second level's page")
    [trigger] = received("/pd")
    assert trigger["body"]["event_action"] == "trigger"
    assert trigger["body"]["routing_key"] == "R0UTING-KEY"
    assert trigger["body"]["dedup_key"] == key
    assert trigger["body"]["payload"]["severity"] == "error"  # P2
    assert trigger["body"]["links"][0]["href"] == f"https://console.example/{s.namespace}/paged"
    [created] = received("/og")
    assert created["path"] == "/og/v2/alerts"
    assert created["authorization"] == "GenieKey GENIE-KEY"
    assert (created["body"]["alias"], created["body"]["priority"]) == (key, "P2")
    [message] = wait_until(  # the inbox is the session's: other tests' mails may come first
        lambda: [m for m in mailbox.inbox.wait() if "checkout slow" in str(m["Subject"])],
        timeout=TIMEOUT,
        what="the escalation mail",
    )
    assert message["Subject"] == "[P2] checkout slow: escalated"
    assert message["To"] == "oncall@example.com"

    status = s.status("paged")
    assert status["escalation"]["level"] == 2
    assert [(e["level"], e["channels"]) for e in status["escalation"]["history"]] == [
        (1, ["pd"]),
        (2, ["og", "mail"]),
    ]

    s.patch_incident("paged", {"commander": "alice"})
    alias = key.replace("/", "%2F")
    wait_until(
        lambda: len(received("/pd")) >= 2 and len(received("/og")) >= 2,
        timeout=TIMEOUT,
        what="the acknowledgements",
    )
    assert received("/pd")[1]["body"]["event_action"] == "acknowledge"
    assert received("/pd")[1]["body"]["dedup_key"] == key
    assert received("/og")[1]["path"] == f"/og/v2/alerts/{alias}/acknowledge?identifierType=alias"

    s.patch_incident("paged", {"resolution": {"summary": "a cache node was replaced"}})
    wait_until(
        lambda: len(received("/pd")) >= 3 and len(received("/og")) >= 3,
        timeout=TIMEOUT,
        what="the resolutions",
    )
    assert received("/pd")[2]["body"]["event_action"] == "resolve"
    assert received("/og")[2]["path"] == f"/og/v2/alerts/{alias}/close?identifierType=alias"
    assert len(received("/pd")) == 3  # one page, one acknowledgement, one resolution: no duplicates
    assert s.status("paged")["escalation"]["level"] == 2  # no level after the acknowledgement


def test_the_statuspage_api_gets_one_page_incident_created_then_updated(
    s: Scenario, receivers: LocalServer
) -> None:
    """The session's `sp` channel (Statuspage API shape, P3 only): the first notice creates the
    page incident, later ones update that one; its id is kept on the Incident."""
    create = "/sp/v1/pages/PAGE1/incidents"
    receivers.set_body(create, b'{"id": "pi-123", "name": "x"}')
    s.incident(
        "status-shown", severity="P3", title="Search is slow", playbookRef={"name": "none-here"}, public=True
    )

    def requests() -> list[dict[str, Any]]:
        return [r for r in receivers.received() if r["path"].startswith("/sp/")]

    created = wait_until(requests, timeout=TIMEOUT, what="the page incident created")
    assert [(r["method"], r["path"]) for r in created] == [("POST", create)]
    assert created[0]["authorization"] == "OAuth SP-KEY"
    body = created[0]["body"]["incident"]
    assert (body["name"], body["status"], body["impact_override"]) == (
        "Search is slow",
        "investigating",
        "minor",
    )
    wait_until(
        lambda: (
            (s.get("incidents", "status-shown")["metadata"].get("annotations") or {}).get(
                "incident-operator.dev/statuspage-sp"
            )
            == "pi-123"
        ),
        timeout=TIMEOUT,
        what="the page incident's id kept on the Incident",
    )

    s.patch_incident("status-shown", {"resolution": {"summary": "an index was rebuilt"}})
    updated = wait_until(
        lambda: [r for r in requests() if r["method"] == "PATCH"],
        timeout=TIMEOUT,
        what="the page incident updated",
    )
    assert updated[-1]["path"] == f"{create}/pi-123"
    assert updated[-1]["body"]["incident"]["status"] == "resolved"
    assert [r["method"] for r in requests()].count("POST") == 1  # never a second page incident
