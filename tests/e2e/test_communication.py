"""The communication cadence of seed 4.2 and reports that arrive (issue 23, items 6 and 7), on the
installed cluster, the operator running as its ServiceAccount (so the install's Role is what lets
it read the channels' Secret and keep the record of the reports sent), with a real local SMTP
server and real local HTTP receivers:

- a P2 with `communication.updateEvery.P2: PT10S` and no update: `UpdateOverdue=True` and one
  reminder (a webhook notice addressed to the communications lead, and a mail to that person's own
  address, found in the namespace's OnCallSchedule, through `oncall.channels`), cleared by the next
  update (`UpdatePublished`); the next period overdue reminds once more;
- a public update reaches the statuspage channel once (an internal update and an edit of the
  estimated resolution in between send nothing), with its status word; the status page shows the
  updates in order with their words and the estimated resolution;
- the monthly report for November is delivered on 1 December (the scheduler's clock is held there
  by `reports.testingNow`): an email with the HTML and its chart, a webhook with the JSON, once;
  after an operator restart, a pass runs and sends nothing again (the record is in the API).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from incident_operator.core import deliveries
from tests.e2e.conftest import (
    INSTALL_NS,
    Cluster,
    OperatorProcess,
    create_namespace,
    ensure_secret,
    reader_token,
    token_kubeconfig,
)
from tests.e2e.engine_helpers import GROUP, TIMEOUT, VERSION, Scenario
from tests.httpserver import LocalServer, local_server
from tests.mailserver import MailServer, mail_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

NS = "comms-e2e"
RECORD = "incident-operator-reports"  # the default reports.recordConfigMap, which the Role names
TESTING_NOW = "2026-12-01T00:10:00Z"


def stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def hooks() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


@pytest.fixture(scope="module")
def mails() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture(scope="module")
def comms(
    installed: Cluster, hooks: LocalServer, mails: MailServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    core = client.CoreV1Api(installed.api)
    try:
        core.delete_namespaced_config_map(RECORD, INSTALL_NS)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
    paths = {"hook": "/overdue", "page": "/page", "report": "/report"}
    ensure_secret(installed, INSTALL_NS, "notification-urls", {k: hooks.url(v) for k, v in paths.items()})
    workdir = tmp_path_factory.mktemp("comms")
    kubeconfig = token_kubeconfig(installed, "incident-operator", INSTALL_NS, workdir / "sa.kubeconfig")

    def ref(key: str) -> dict[str, str]:
        return {"namespace": INSTALL_NS, "name": "notification-urls", "key": key}

    smtp = {"host": "127.0.0.1", "port": mails.port, "security": "none", "from": "incidents@example.com"}
    settings: dict[str, Any] = {
        "communication": {"updateEvery": {"P2": "PT10S"}},
        "statusPage": {"namespaces": [NS]},
        "notifications": {
            "channels": [
                {
                    "name": "overdue",
                    "type": "webhook",
                    "urlSecretRef": ref("hook"),
                    "events": ["updateOverdue"],
                },
                {"name": "page", "type": "statuspage", "urlSecretRef": ref("page"), "events": ["update"]},
                {
                    "name": "report-mail",
                    "type": "email",
                    "smtp": smtp,
                    "to": ["sre@example.com"],
                    "events": [],
                },
                {"name": "report-hook", "type": "webhook", "urlSecretRef": ref("report"), "events": []},
                {"name": "people", "type": "email", "smtp": smtp, "to": ["team@example.com"], "events": []},
            ]
        },
        "oncall": {"allowedEmailDomains": ["example.com"], "channels": ["people"]},
        "reports": {
            "deliver": [{"name": "monthly", "namespaces": [NS], "channels": ["report-mail", "report-hook"]}],
            "testingNow": TESTING_NOW,
            "intervalSeconds": 5,
        },
    }
    create_namespace(installed, NS, opt_in=False)
    schedule = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OnCallSchedule",
        "metadata": {"name": "team"},
        "spec": {
            "timeZone": "UTC",
            "people": [{"name": "carol", "email": "carol@example.com"}, {"name": "bob"}],
            "layers": [
                {"name": "all", "start": "2026-11-01T00:00:00Z", "rotation": "P7D", "people": ["bob"]}
            ],
        },
    }
    custom = client.CustomObjectsApi(installed.api)
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "oncallschedules", schedule)
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    process = OperatorProcess(kubeconfig, workdir, settings, ("--allow-egress=127.0.0.0/8",), name="comms")
    process.reader_token = reader_token(installed)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def s(installed: Cluster, comms: OperatorProcess) -> Scenario:
    return Scenario(installed, comms, NS)


def for_incident(received: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in received
        if isinstance(r["body"], dict) and r["body"].get("incident") in (name, f"{NS}/{name}")
    ]


def reminded(mails: MailServer, address: str) -> list[str]:
    """The overdue reminders mailed to `address` so far (their plain text)."""
    with mails.inbox.lock:
        pairs = list(zip(mails.inbox.messages, mails.inbox.recipients, strict=True))
    return [
        next(p for p in m.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
        for m, rcpt in pairs
        if rcpt == [address] and str(m["Subject"]).endswith(": updateOverdue")
    ]


def test_an_overdue_update_reminds_once_and_the_next_update_clears_it(
    s: Scenario, hooks: LocalServer, mails: MailServer
) -> None:
    s.incident("quiet", severity="P2", title="checkout slow", commander="alice", roles={"comms": "carol"})
    overdue = s.wait_condition("quiet", "UpdateOverdue", "True", "UpdateOverdue")
    assert "10s" in overdue["message"]
    reminders = wait_until(
        lambda: for_incident(hooks.received_at("/overdue"), "quiet"), timeout=TIMEOUT, what="the reminder"
    )
    assert reminders[0]["event"] == "updateOverdue"
    assert "to carol (communications lead)" in reminders[0]["message"]
    assert "person" not in reminders[0]  # the subscribed channel's own copy
    # and carol herself, by mail to her address (oncall.channels), once
    mailed = wait_until(lambda: reminded(mails, "carol@example.com"), timeout=TIMEOUT, what="the mail")
    assert "checkout slow" in mailed[0]
    assert "carol, update overdue" in mailed[0]
    timeline = s.status("quiet")["timeline"]
    said = next(e["message"] for e in timeline if e["type"] == "UpdateOverdue")
    assert said.endswith("(carol told through people)")

    s.patch_incident("quiet", {"updates": [{"time": stamp(), "message": "looking at the database"}]})
    s.wait_condition("quiet", "UpdateOverdue", "False", "UpdatePublished")
    assert len(for_incident(hooks.received_at("/overdue"), "quiet")) == 1  # once for that period
    assert len(reminded(mails, "carol@example.com")) == 1
    timeline = [e["type"] for e in s.status("quiet")["timeline"]]
    assert timeline.count("UpdateOverdue") == 1
    assert "NotificationFailed" not in timeline

    # the next period passes without an update: reminded once more
    wait_until(
        lambda: len(for_incident(hooks.received_at("/overdue"), "quiet")) == 2,
        timeout=TIMEOUT,
        what="the second period's reminder",
    )
    s.wait_condition("quiet", "UpdateOverdue", "True", "UpdateOverdue")
    wait_until(
        lambda: len(reminded(mails, "carol@example.com")) == 2, timeout=TIMEOUT, what="the second mail"
    )
    s.patch_incident("quiet", {"resolution": {"summary": "index rebuilt"}})
    s.wait_condition("quiet", "UpdateOverdue", "False", "Resolved")
    assert len(for_incident(hooks.received_at("/overdue"), "quiet")) == 2
    assert len(reminded(mails, "carol@example.com")) == 2
    assert [e["type"] for e in s.status("quiet")["timeline"]].count("UpdateOverdue") == 2


def test_a_public_update_reaches_the_statuspage_channel_once_with_its_status_word(
    s: Scenario, hooks: LocalServer, comms: OperatorProcess
) -> None:
    eta = stamp(datetime.now(UTC) + timedelta(hours=1))
    s.incident("outage", severity="P3", title="payments down", public=True, estimatedResolution=eta)
    wait_until(
        lambda: (s.status("outage").get("communication") or {}).get("lastPublished"),
        timeout=TIMEOUT,
        what="the operator has seen the incident",
    )
    first = {"time": stamp(), "message": "We are investigating failed payments.", "public": True}
    s.patch_incident("outage", {"updates": [first]})
    pages = wait_until(
        lambda: for_incident(hooks.received_at("/page"), "outage"), timeout=TIMEOUT, what="the public update"
    )
    assert pages[0]["message"] == first["message"]
    assert pages[0]["status"] == "Investigating"
    assert pages[0]["estimatedResolution"] == eta

    internal = {"time": stamp(datetime.now(UTC) + timedelta(seconds=1)), "message": "db-7 OOM"}
    later = stamp(datetime.now(UTC) + timedelta(hours=2))
    s.patch_incident("outage", {"updates": [first, internal], "estimatedResolution": later})
    generation = s.get("incidents", "outage")["metadata"]["generation"]
    wait_until(
        lambda: s.status("outage").get("observedGeneration") == generation,
        timeout=TIMEOUT,
        what="the edit planned",
    )
    second = {
        "time": stamp(datetime.now(UTC) + timedelta(seconds=2)),
        "message": "The cause is found; a fix is rolling out.",
        "public": True,
        "status": "identified",
    }
    s.patch_incident("outage", {"updates": [first, internal, second]})
    wait_until(
        lambda: len(for_incident(hooks.received_at("/page"), "outage")) >= 2,
        timeout=TIMEOUT,
        what="the second",
    )
    generation = s.get("incidents", "outage")["metadata"]["generation"]
    wait_until(
        lambda: s.status("outage").get("observedGeneration") == generation, timeout=TIMEOUT, what="planned"
    )
    pages = for_incident(hooks.received_at("/page"), "outage")
    assert [p["message"] for p in pages] == [
        first["message"],
        second["message"],
    ]  # each once, never the internal one
    assert pages[1]["status"] == "Identified"
    assert [u["status"] for u in pages[1]["updates"]] == ["investigating", "identified"]

    status, _, body = comms.get("/status.json", status_page=True)
    assert status == 200, body
    shown = next(i for i in json.loads(body)["incidents"] if i["title"] == "payments down")
    assert shown["status"] == "Identified"
    assert shown["estimatedResolution"] == later
    assert [(u["status"], u["message"]) for u in shown["updates"]] == [
        ("investigating", first["message"]),
        ("identified", second["message"]),
    ]
    status, _, page = comms.get("/status", status_page=True)
    assert "Estimated resolution" in page
    assert "<strong>Identified</strong>: The cause is found" in page


def report_passes(operator: OperatorProcess) -> float:
    for line in operator.scrape().splitlines():
        if line.startswith("incident_operator_report_passes_total "):
            return float(line.split()[-1])
    return 0.0


def record(installed: Cluster) -> dict[str, dict[str, Any]]:
    found = client.CoreV1Api(installed.api).read_namespaced_config_map(RECORD, INSTALL_NS)
    return deliveries.decode((found.data or {}).get(deliveries.DATA_KEY))


def test_the_monthly_report_arrives_once_and_not_again_after_a_restart(
    installed: Cluster, comms: OperatorProcess, hooks: LocalServer, mails: MailServer
) -> None:
    subject = f"Monthly incident report 2026-11 (namespace {NS})"
    messages = wait_until(
        lambda: [m for m in list(mails.inbox.messages) if m["Subject"] == subject],
        timeout=TIMEOUT,
        what="the report by mail",
    )
    html = next(p for p in messages[0].walk() if p.get_content_type() == "text/html").get_payload(decode=True)
    assert b"Monthly Incident Summary: 2026-11" in html
    assert b"<img src='data:image/png;base64," in html  # the chart, as /reports renders it
    hooked = wait_until(lambda: hooks.received_at("/report"), timeout=TIMEOUT, what="the report by webhook")
    assert hooked[0]["body"]["month"] == "2026-11"
    assert hooked[0]["body"]["report"]["namespace"] == NS
    assert {k: v["state"] for k, v in record(installed).items()} == {
        f"monthly/report-mail/{NS}": "sent",
        f"monthly/report-hook/{NS}": "sent",
    }

    comms.stop()
    comms.start()  # the same day (testingNow), a new process: it reads the record from the API
    wait_until(lambda: report_passes(comms) >= 2, timeout=TIMEOUT, what="two passes after the restart")
    assert len([m for m in list(mails.inbox.messages) if m["Subject"] == subject]) == 1
    assert len(hooks.received_at("/report")) == 1
    assert {v["attempts"] for v in record(installed).values()} == {1}
