"""Pages, handoffs and roles that reach people (issue 23 items 2, 3 and 5), on the installed
cluster (admission policies included), the operator running as its ServiceAccount, with a real
SMTP server and a local Slack receiver:

- a schedule of two people with an override: a P1 pages the person on call (the override's
  person, by mail to their own address), escalates to the next level's schedule (a secondary:
  mail and a Slack mention of its person), and the paged person, as their Kubernetes user, sets
  commander = themselves under the admission rules: escalation stops (no third level), and they
  are told once that they are commander; a role given to another person tells them once;
- a handoff in a short rotation (one-minute turns) is announced once to the incoming person, also
  across an operator restart: the next boundary's handoff, announced by the restarted process,
  shows that its announcer has looked at the schedule before the counts are checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from incident_operator.api.timestamps import format_time
from tests.e2e.conftest import (
    INSTALL_NS,
    Cluster,
    OperatorProcess,
    create_namespace,
    ensure_secret,
    token_kubeconfig,
)
from tests.e2e.engine_helpers import GROUP, VERSION
from tests.e2e.users import bind_editor, patch_spec
from tests.httpserver import LocalServer, local_server
from tests.mailserver import MailServer, mail_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

NS = "paging-people"
USERS = "pagers"
TIMEOUT = 60
ALICE = f"system:serviceaccount:{USERS}:alice"
SECOND_LEVEL_S = 8
THIRD_LEVEL_S = 30
ROTATION = timedelta(minutes=1)
"""The handoff test's turns: the shortest rotation a layer allows (`RotationLayer.rotation`)."""


@pytest.fixture(scope="module")
def mailbox() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture(scope="module")
def slack() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


@pytest.fixture(scope="module")
def operator(
    installed: Cluster, mailbox: MailServer, slack: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator as the install's ServiceAccount: P1 escalation to the primary schedule's person,
    then the secondary's, then a third level that must never fire once someone acknowledges."""
    create_namespace(installed, NS, opt_in=False)
    ensure_secret(installed, INSTALL_NS, "notification-urls", {"chat": slack.url("/chat")})
    workdir = tmp_path_factory.mktemp("people")
    kubeconfig = token_kubeconfig(installed, "incident-operator", INSTALL_NS, workdir / "sa.kubeconfig")
    smtp = {"host": "127.0.0.1", "port": mailbox.port, "security": "none", "from": "incidents@example.com"}
    ref = {"namespace": INSTALL_NS, "name": "notification-urls", "key": "chat"}
    settings: dict[str, Any] = {
        "responseTargets": {"P1": "PT1H"},
        "oncall": {"allowedEmailDomains": ["example.com"], "channels": ["mail", "chat"]},
        "notifications": {
            "channels": [
                {
                    "name": "mail",
                    "type": "email",
                    "smtp": smtp,
                    "to": ["team@example.com"],
                    "events": [],
                    "namespaces": [NS],
                },
                {"name": "chat", "type": "slack", "urlSecretRef": ref, "events": [], "namespaces": [NS]},
            ],
            "escalation": {
                "P1": {
                    "levels": [
                        {"afterSeconds": 0, "channels": ["mail"], "schedule": "primary"},
                        {
                            "afterSeconds": SECOND_LEVEL_S,
                            "channels": ["mail", "chat"],
                            "schedule": f"{NS}/secondary",
                        },
                        {"afterSeconds": THIRD_LEVEL_S, "channels": ["mail"], "schedule": "nobody-here"},
                    ]
                }
            },
        },
    }
    process = OperatorProcess(kubeconfig, workdir, settings, ("--allow-egress=127.0.0.0/8",), name="people")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def create(cluster: Cluster, kind: str, name: str, spec: dict[str, Any]) -> None:
    """Create an object of the operator's `kind` named `name` in NS."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        GROUP, VERSION, NS, f"{kind.lower()}s", body
    )


def schedule(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    create(cluster, "OnCallSchedule", name, spec)


def open_incident(cluster: Cluster, name: str, title: str, severity: str, category: str) -> None:
    create(cluster, "Incident", name, {"title": title, "severity": severity, "category": category})


def get(cluster: Cluster, plural: str, name: str) -> dict[str, Any]:
    found = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, NS, plural, name
    )
    assert isinstance(found, dict)
    return found


def to(mailbox: MailServer, address: str) -> list[Message]:
    """The messages delivered to `address` so far."""
    with mailbox.inbox.lock:
        pairs = list(zip(mailbox.inbox.messages, mailbox.inbox.recipients, strict=True))
    return [message for message, rcpt in pairs if address in rcpt]


def pages(mailbox: MailServer, address: str) -> list[Message]:
    """The escalation pages delivered to `address` so far."""
    return [m for m in to(mailbox, address) if str(m["Subject"]).endswith(": escalated")]


def plain(message: Message) -> str:
    return "\n".join(
        p.get_payload(decode=True).decode(errors="replace")
        for p in message.walk()
        if p.get_content_type() == "text/plain"
    )


def iso(moment: datetime) -> str:
    return format_time(moment)


@pytest.fixture(scope="module")
def alice(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice, a real user (a ServiceAccount token), a plain editor of the namespace's incidents."""
    create_namespace(installed, USERS, opt_in=False)
    client.CoreV1Api(installed.api).create_namespaced_service_account(
        USERS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="alice"))
    )
    bind_editor(installed, NS, "alice", users_namespace=USERS)
    return token_kubeconfig(installed, "alice", USERS, tmp_path_factory.mktemp("alice") / "kubeconfig")


def test_a_p1_pages_the_person_on_call_escalates_to_the_secondary_and_their_acknowledgement_stops_it(
    installed: Cluster, operator: OperatorProcess, mailbox: MailServer, slack: LocalServer, alice: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    schedule(
        installed,
        "primary",
        {
            "timeZone": "Europe/Berlin",
            "people": [
                {"name": "alice", "user": ALICE, "email": "alice@example.com"},
                {"name": "bob", "email": "bob@example.com"},
            ],
            "layers": [
                {
                    "name": "weekly",
                    "start": iso(now - timedelta(hours=1)),
                    "rotation": "P7D",
                    "people": ["bob", "alice"],
                }
            ],
            # bob's week by the rotation; alice covers for him now
            "overrides": [
                {
                    "person": "alice",
                    "start": iso(now - timedelta(minutes=5)),
                    "end": iso(now + timedelta(hours=2)),
                }
            ],
        },
    )
    schedule(
        installed,
        "secondary",
        {
            "people": [{"name": "carol", "email": "carol@example.com", "slackId": "UCAROL"}],
            "layers": [
                {
                    "name": "always",
                    "start": iso(now - timedelta(days=1)),
                    "rotation": "P1D",
                    "people": ["carol"],
                }
            ],
        },
    )
    wait_until(
        lambda: (
            (get(installed, "oncallschedules", "primary").get("status") or {})
            .get("current", {})
            .get("person")
            == "alice"
        ),
        timeout=TIMEOUT,
        what="primary: alice on call (the override)",
    )
    open_incident(installed, "checkout-down", "checkout down", "P1", "availability")
    # Level 1: the person on call in primary, by mail to their own address (not the channel's `to`).
    page = wait_until(lambda: pages(mailbox, "alice@example.com"), timeout=TIMEOUT, what="alice paged")[0]
    assert "[P1] checkout down" in str(page["Subject"])
    # she was also told of her turn when the operator first saw the schedule (a handoff)
    wait_until(
        lambda: [m for m in to(mailbox, "alice@example.com") if "You are on call in" in plain(m)],
        timeout=TIMEOUT,
        what="alice told of her turn",
    )
    assert not to(mailbox, "bob@example.com")  # the rotation's person, overridden
    assert not to(mailbox, "team@example.com")
    # Level 2: the secondary's person, by mail and by a Slack mention.
    wait_until(lambda: pages(mailbox, "carol@example.com"), timeout=TIMEOUT, what="carol paged (secondary)")
    mention = wait_until(
        lambda: [r for r in slack.received_at("/chat") if "escalated" in str(r["body"]["text"])],
        timeout=TIMEOUT,
        what="the Slack page",
    )[0]
    assert str(mention["body"]["text"]).startswith("<@UCAROL> ")
    incident = get(installed, "incidents", "checkout-down")
    history = incident["status"]["escalation"]["history"]
    assert [(e["level"], e.get("schedule"), e.get("person")) for e in history] == [
        (1, f"{NS}/primary", "alice"),
        (2, f"{NS}/secondary", "carol"),
    ]
    timeline = [e["message"] for e in incident["status"]["timeline"] if e["type"] == "Escalated"]
    assert f"to alice on call in {NS}/primary" in timeline[0]

    # alice, as her own Kubernetes user, takes command: the admission rules let her name herself.
    patched = patch_spec(installed, alice, NS, "checkout-down", {"commander": ALICE})
    assert patched.returncode == 0, patched.stderr
    wait_until(
        lambda: any(
            c["type"] == "Acknowledged" and c["status"] == "True"
            for c in get(installed, "incidents", "checkout-down")["status"].get("conditions", [])
        ),
        timeout=TIMEOUT,
        what="acknowledged by alice",
    )
    # She is told once that she is commander (her schedule person, found by people[].user).
    wait_until(
        lambda: [m for m in to(mailbox, "alice@example.com") if "Incident Commander" in plain(m)],
        timeout=TIMEOUT,
        what="alice told she is commander",
    )
    # bob is given a role by the admin: he is told once too.
    client.CustomObjectsApi(installed.api).patch_namespaced_custom_object(
        GROUP, VERSION, NS, "incidents", "checkout-down", {"spec": {"roles": {"techLead": "bob"}}}
    )
    told = wait_until(lambda: to(mailbox, "bob@example.com"), timeout=TIMEOUT, what="bob told of his role")
    assert "Technical Lead" in plain(told[0])

    # The third level was due THIRD_LEVEL_S after detection: once that time has passed and the
    # operator has planned the incident again (a new update), no level was added.
    detected = incident["status"]["detectedAt"]
    due = datetime.fromisoformat(detected.replace("Z", "+00:00")) + timedelta(seconds=THIRD_LEVEL_S + 2)
    wait_until(lambda: datetime.now(UTC) > due, timeout=THIRD_LEVEL_S + 10, what="the third level's time")
    client.CustomObjectsApi(installed.api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        "incidents",
        "checkout-down",
        {"spec": {"updates": [{"time": iso(datetime.now(UTC)), "message": "rolling back"}]}},
    )
    generation = get(installed, "incidents", "checkout-down")["metadata"]["generation"]
    wait_until(
        lambda: (
            get(installed, "incidents", "checkout-down")["status"].get("observedGeneration") == generation
        ),
        timeout=TIMEOUT,
        what="the update planned",
    )
    final = get(installed, "incidents", "checkout-down")["status"]
    assert final["escalation"]["level"] == 2
    # the channel's own `to` heard the acknowledgement (a follow-up to the paged channel), no page
    assert not pages(mailbox, "team@example.com")
    told_roles = {(t["role"], t.get("person"), t["told"]) for t in final["rolesTold"]}
    assert told_roles == {("commander", "alice", True), ("techLead", "bob", True)}
    assert len([m for m in to(mailbox, "alice@example.com") if "Incident Commander" in plain(m)]) == 1
    assert len(to(mailbox, "bob@example.com")) == 1
    sent = get(installed, "oncallschedules", "primary")["status"]["mailsSent"]
    assert {e["person"] for e in sent} == {"alice", "bob"}  # the rate limit's count, kept in the API


def handoffs(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    """(person, at) of each handoff recorded in the schedule's status, oldest first."""
    status = get(cluster, "oncallschedules", name).get("status") or {}
    return [(h["person"], h["at"]) for h in status.get("handoffs", [])]


def test_a_handoff_in_a_short_rotation_is_announced_once_also_across_a_restart(
    installed: Cluster, operator: OperatorProcess, mailbox: MailServer
) -> None:
    """Turns of one minute (the shortest a layer allows): dave's turn is announced when the
    schedule is first seen, erin's at the next boundary, then the operator restarts, and frank's
    turn, one boundary later, is announced by the restarted process. Its log shows that it looked
    at the schedule during erin's turn and found nothing to announce, and it announces frank's:
    any wrong second announcement of erin's turn would have been sent before frank's."""
    open_incident(installed, "queue-backlog", "queue backlog", "P3", "performance")
    now = datetime.now(UTC).replace(microsecond=0)
    to_erin = now + timedelta(seconds=15)  # time enough for dave's turn to be seen first
    to_frank = to_erin + ROTATION
    start = to_erin - ROTATION
    schedule(
        installed,
        "shifts",
        {
            "people": [
                {"name": "dave", "email": "dave@example.com"},
                {"name": "erin", "email": "erin@example.com"},
                {"name": "frank", "email": "frank@example.com"},
            ],
            "layers": [
                {
                    "name": "minutes",
                    "start": iso(start),
                    "rotation": "PT1M",
                    "people": ["dave", "erin", "frank"],
                }
            ],
        },
    )
    # (a) dave's current turn, when the schedule is first seen, with the incidents still open
    first = wait_until(lambda: to(mailbox, "dave@example.com"), timeout=TIMEOUT, what="dave told")[0]
    assert f"You are on call in {NS}/shifts (minutes) from {iso(start)} until {iso(to_erin)}." in plain(first)
    assert "queue-backlog: [P3] queue backlog" in plain(first)
    # (b) erin's turn, at the boundary
    told = wait_until(
        lambda: to(mailbox, "erin@example.com"), timeout=TIMEOUT + 15, what="erin told at the boundary"
    )
    assert f"You are on call in {NS}/shifts (minutes) from {iso(to_erin)} until {iso(to_frank)}." in plain(
        told[0]
    )
    wait_until(
        lambda: ("erin", iso(to_erin)) in handoffs(installed, "shifts"),
        timeout=TIMEOUT,
        what="erin's handoff recorded",
    )
    announced = get(installed, "oncallschedules", "shifts")["status"]["handoffs"][-1]["announced"]
    assert announced == "told through mail"  # erin has no Slack id: mail only

    # (c) a restart during erin's turn
    operator.stop()
    operator.start()
    restarted = operator.log_path
    # the restarted announcer looked at the schedule during erin's turn (nothing due then: had it
    # looked after frank's boundary, frank's turn would have been due), and did not tell erin again
    wait_until(
        lambda: (
            f"schedule {NS}/shifts: first seen; nothing to announce (last announced: erin at {iso(to_erin)})"
            in restarted.read_text(errors="replace")
        ),
        timeout=TIMEOUT,
        what="the restarted process looked at the schedule during erin's turn",
    )
    # (d) frank's turn, one boundary later, announced by the restarted process
    wait_until(
        lambda: to(mailbox, "frank@example.com"),
        timeout=(to_frank - datetime.now(UTC)).total_seconds() + TIMEOUT,
        what="frank told at the next boundary",
    )
    wait_until(
        lambda: "handoff to frank" in restarted.read_text(errors="replace"),
        timeout=TIMEOUT,
        what="the restarted process announced frank's turn",
    )
    assert "handoff to erin" not in restarted.read_text(errors="replace")
    assert handoffs(installed, "shifts") == [
        ("dave", iso(start)),
        ("erin", iso(to_erin)),
        ("frank", iso(to_frank)),
    ]
    assert len(to(mailbox, "dave@example.com")) == 1
    assert len(to(mailbox, "erin@example.com")) == 1
    assert len(to(mailbox, "frank@example.com")) == 1
