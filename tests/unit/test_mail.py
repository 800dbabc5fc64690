"""The email channel against a real SMTP server on loopback (aiosmtpd): plain, STARTTLS with
login, implicit TLS, a server that refuses, a slow one, and the egress policy."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from incident_operator.adapters import mail
from incident_operator.adapters.outbound import EgressDenied, Outbound
from incident_operator.settings.egress import EgressPolicy
from tests.mailserver import mail_server

ENVELOPE = mail.Envelope(
    "incident-operator@example.com",
    ("oncall@example.com",),
    ("lead@example.com",),
    "[P1] web is down: escalated",
    "web is down\n\nIncident: shop/web-down",
    "<p>web is down</p>",
)


def send(server: mail.Server, *, allow: tuple[str, ...] = ("127.0.0.0/8",), timeout: float = 5.0) -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            outbound = Outbound(http, EgressPolicy.build(allow=allow))
            await mail.send(outbound, server, ENVELOPE, timeout)

    asyncio.run(go())


def test_a_plain_relay_gets_one_message_with_text_and_html_to_every_recipient() -> None:
    with mail_server() as smtp:
        send(mail.Server("127.0.0.1", smtp.port, "none"))
        [message] = smtp.inbox.wait()
    assert message["Subject"] == "[P1] web is down: escalated"
    assert message["Cc"] == "lead@example.com"
    assert smtp.inbox.recipients == [["oncall@example.com", "lead@example.com"]]
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }
    assert "Incident: shop/web-down" in parts["text/plain"]
    assert "<p>web is down</p>" in parts["text/html"]


def test_starttls_with_a_login_verifies_the_certificate_by_name() -> None:
    with mail_server("starttls", user="bot", password="s3cret") as smtp:
        server = mail.Server("localhost", smtp.port, "starttls", "bot", "s3cret", smtp.ca_pem)
        send(server, allow=("localhost", "127.0.0.0/8"))
        smtp.inbox.wait()
        assert smtp.inbox.logins == ["bot"]
        untrusted = mail.Server("localhost", smtp.port, "starttls", "bot", "s3cret", None)
        with pytest.raises(mail.MailFailed, match="TLS"):
            send(untrusted, allow=("localhost", "127.0.0.0/8"))


def test_implicit_tls() -> None:
    with mail_server("tls") as smtp:
        send(
            mail.Server("localhost", smtp.port, "tls", ca_pem=smtp.ca_pem), allow=("localhost", "127.0.0.0/8")
        )
        assert len(smtp.inbox.wait()) == 1


def test_a_refusing_server_says_why() -> None:
    with mail_server() as smtp:
        smtp.inbox.refuse = True
        with pytest.raises(mail.MailFailed, match=r"SMTP 554: 5\.7\.1 message refused by policy"):
            send(mail.Server("127.0.0.1", smtp.port, "none"))


def test_a_slow_server_times_out_within_the_bound() -> None:
    with mail_server() as smtp:
        smtp.inbox.delay_s = 3.0
        with pytest.raises(mail.MailFailed, match="timed out"):
            send(mail.Server("127.0.0.1", smtp.port, "none"), timeout=0.5)


def test_the_egress_policy_applies_to_mail_servers() -> None:
    with mail_server() as smtp, pytest.raises(EgressDenied):
        send(mail.Server("127.0.0.1", smtp.port, "none"), allow=())  # loopback is guarded by default
