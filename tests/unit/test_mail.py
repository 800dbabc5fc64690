"""The email channel against a real SMTP server on loopback (aiosmtpd): plain, STARTTLS with
login, implicit TLS, a server that refuses, a slow one, and the egress policy; through the
notifier, a title that tries to add headers, and failures that end as NotificationFailed."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from incident_operator.adapters import mail
from incident_operator.adapters.outbound import EgressDenied, Outbound
from incident_operator.api.models import IncidentSpec, Phase
from incident_operator.controllers.notifier import Notifier
from incident_operator.core.notices import IncidentView, Notice
from incident_operator.settings.channels import parse_channel
from incident_operator.settings.config import Notifications
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


# ----------------------------------------------------------------------------- retries


def send_retrying(
    server: mail.Server, attempts: int, *, allow: tuple[str, ...] = ("127.0.0.0/8",)
) -> tuple[str | None, list[float]]:
    """`mail.send_with_retries` with its waits recorded (not slept); (outcome, waits)."""
    waits: list[float] = []

    async def wait(seconds: float) -> None:
        waits.append(seconds)

    async def go() -> str | None:
        async with httpx.AsyncClient() as http:
            outbound = Outbound(http, EgressPolicy.build(allow=allow))
            return await mail.send_with_retries(outbound, server, ENVELOPE, 5.0, attempts, sleep=wait)

    return asyncio.run(go()), waits


def test_a_temporary_failure_is_retried_with_backoff_until_delivered() -> None:
    with mail_server() as smtp:
        smtp.inbox.busy = 2
        outcome, waits = send_retrying(mail.Server("127.0.0.1", smtp.port, "none"), 3)
        assert outcome is None
        assert len(smtp.inbox.wait()) == 1
        assert smtp.inbox.attempts == 3
    assert waits == list(mail.BACKOFF_S[:2])


def test_attempts_are_bounded_and_the_last_failure_is_said() -> None:
    with mail_server() as smtp:
        smtp.inbox.busy = 10
        outcome, waits = send_retrying(mail.Server("127.0.0.1", smtp.port, "none"), 3)
        assert smtp.inbox.attempts == 3
        assert smtp.inbox.messages == []
    assert outcome == "SMTP 451: 4.3.0 try again later after 3 attempt(s)"
    assert len(waits) == 2


def test_a_permanent_refusal_and_the_egress_policy_stop_at_once() -> None:
    with mail_server() as smtp:
        smtp.inbox.refuse = True
        outcome, waits = send_retrying(mail.Server("127.0.0.1", smtp.port, "none"), 4)
        assert smtp.inbox.attempts == 1
        assert outcome == "SMTP 554: 5.7.1 message refused by policy after 1 attempt(s)"
        assert waits == []
        smtp.inbox.refuse = False
        outcome, waits = send_retrying(mail.Server("127.0.0.1", smtp.port, "none"), 4, allow=())
        assert outcome is not None
        assert "after" not in outcome  # the policy's own words, no attempt made
        assert smtp.inbox.attempts == 1
        assert waits == []


# ----------------------------------------------------------------------------- through the notifier


def notify_by_mail(port: int, title: str) -> list[str]:
    """One `escalated` notice about an incident titled `title` through the notifier's email
    channel to the server on `port`; returns what was reported as NotificationFailed."""
    channel = parse_channel(
        {
            "name": "mail",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "from": "io@example.com"},
            "to": ["oncall@example.com"],
        }
    )
    spec = IncidentSpec.model_validate({"title": title, "severity": "P1", "category": "availability"})
    view = IncidentView("shop", "web-down", spec, Phase.MITIGATING)
    failures: list[str] = []

    async def go() -> None:
        async with httpx.AsyncClient() as http:
            outbound = Outbound(http, EgressPolicy.build(allow=("127.0.0.0/8",)))
            notifier = Notifier(None, outbound, Notifications(channels=(channel,)))
            notice = Notice("escalated", f"[P1] {title}: escalated", ("mail",))
            await asyncio.gather(*notifier.send_all([notice], view, failures.append))

    asyncio.run(go())
    return failures


def test_a_line_break_in_a_title_neither_adds_a_header_nor_loses_the_mail() -> None:
    with mail_server() as smtp:
        failures = notify_by_mail(smtp.port, "web down\r\nBcc: x@evil.example\nX-Evil: 1")
        [message] = smtp.inbox.wait()
    assert failures == []
    assert message["Subject"] == "[P1] web down Bcc: x@evil.example X-Evil: 1: escalated"  # one line
    assert message["Bcc"] is None
    assert message["X-Evil"] is None
    assert smtp.inbox.recipients == [["oncall@example.com"]]


def test_every_header_value_is_one_line_whatever_the_break() -> None:
    envelope = mail.Envelope(
        "io@example.com", ("a@example.com",), (), "a\rb\nc\r\nd\u2028e\x85f", "body\nlines", "<p>x</p>"
    )
    built = mail.message(envelope)
    assert built["Subject"] == "a b c d e f"
    assert "body\nlines" in built.get_body(("plain",)).get_content()  # the body keeps its lines


def test_a_refusing_server_is_a_notification_failure_not_an_exception() -> None:
    with mail_server() as smtp:
        smtp.inbox.refuse = True
        failures = notify_by_mail(smtp.port, "web down")
    assert len(failures) == 1
    assert "escalated notice to channel mail not delivered: SMTP 554" in failures[0]
    assert "after 1 attempt(s)" in failures[0]  # a permanent refusal is not retried


def test_a_sender_that_raises_is_a_notification_failure() -> None:
    from incident_operator.controllers import notifier as notifier_module

    async def broken(*args: object) -> str | None:
        raise RuntimeError("https://hooks.example/secret-token")

    channel = parse_channel(
        {"name": "mail", "type": "email", "smtp": {"host": "h", "from": "a@b.c"}, "to": ["x@y.z"]}
    )
    spec = IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "availability"})
    view = IncidentView("shop", "web-down", spec, Phase.MITIGATING)
    failures: list[str] = []

    async def go() -> None:
        notifier = Notifier(None, None, Notifications(channels=(channel,)))
        await asyncio.gather(*notifier.send_all([Notice("escalated", "m", ("mail",))], view, failures.append))

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(notifier_module.SENDERS, "email", broken)
        asyncio.run(go())
    assert failures == ["escalated notice to channel mail not delivered: RuntimeError while sending"]


# ------------------------------------------------------------------ the overdue reminder to its person


class _Status:
    """The status writes `People.mail_to` makes (the rate limit's record)."""

    def __init__(self) -> None:
        self.patches: list[dict[str, object]] = []

    async def patch_object_status(
        self, plural: str, namespace: str, name: str, body: dict[str, object]
    ) -> None:
        self.patches.append(body)


def test_the_overdue_reminder_mails_its_person_once_and_the_subscribed_channel_its_recipients() -> None:
    from incident_operator.controllers.people import People, ScheduleBook
    from incident_operator.core.paging import Addressee
    from incident_operator.settings.config import FileConfig

    carol = Addressee("shop/team", "carol", "carol@example.com")
    spec = IncidentSpec.model_validate({"title": "web down", "severity": "P1", "category": "availability"})
    view = IncidentView("shop", "web-down", spec, Phase.MITIGATING)
    reminder = "[P1] web down (shop/web-down): update overdue"
    notices = [
        Notice("updateOverdue", reminder),
        Notice("updateOverdue", reminder, ("people",), person=carol, personal=True),
    ]

    def run(port: int) -> list[str]:
        smtp = {"host": "127.0.0.1", "port": port, "security": "none", "from": "io@example.com"}
        config = FileConfig.model_validate(
            {
                "notifications": {
                    "channels": [
                        {
                            "name": "people",
                            "type": "email",
                            "smtp": smtp,
                            "to": ["x@example.com"],
                            "events": [],
                        },
                        {
                            "name": "team",
                            "type": "email",
                            "smtp": smtp,
                            "to": ["team@example.com"],
                            "events": ["updateOverdue"],
                        },
                    ]
                },
                "oncall": {
                    "allowedEmailDomains": ["example.com"],
                    "channels": ["people"],
                    "maxMailsPerPersonPerHour": 1,
                },
            }
        )
        schedule = {"metadata": {"resourceVersion": "1"}, "spec": {"people": [{"name": "carol"}]}}
        failures: list[str] = []

        async def go() -> None:
            async with httpx.AsyncClient() as http:
                outbound = Outbound(http, EgressPolicy.build(allow=("127.0.0.0/8",)))
                notifier = Notifier(None, outbound, config.notifications)
                book = ScheduleBook(lambda: {("shop", "team"): schedule})
                notifier.people = People(
                    _Status(), outbound, config.oncall, config.notifications, book, secret=notifier.secret
                )
                for _ in range(2):  # the second reminder within the hour: over carol's limit
                    await asyncio.gather(*notifier.send_all(notices, view, failures.append))

        asyncio.run(go())
        return failures

    with mail_server() as smtp:
        smtp.inbox.busy = 1  # a temporary failure first: retried (the one loop, with its backoff)
        failures = run(smtp.port)
        smtp.inbox.wait(3)
        recipients = sorted(map(tuple, smtp.inbox.recipients))
    assert recipients == [("carol@example.com",), ("team@example.com",), ("team@example.com",)]
    assert failures == [
        "updateOverdue notice to channel people not delivered: carol not told: carol had 1 mails within "
        "the hour (oncall.maxMailsPerPersonPerHour, counted per namespace and address)"
    ]  # never sent to the channel's own recipients instead
