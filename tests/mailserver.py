"""A real SMTP server on loopback for the email channel's tests (aiosmtpd): it keeps what it
receives, and can refuse every message, answer slowly, require STARTTLS or speak implicit TLS."""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.polling import wait_until


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    refuse: bool = False
    busy: int = 0
    """Answer this many messages (the next ones) with a temporary failure (451) first."""
    attempts: int = 0
    """Messages offered (DATA), accepted or not."""
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.attempts += 1
        if self.refuse:
            return "554 5.7.1 message refused by policy"
        if self.busy > 0:
            self.busy -= 1
            return "451 4.3.0 try again later"
        raw = envelope.original_content or b""
        with self.lock:
            self.messages.append(email.message_from_bytes(raw))
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def wait(self, count: int = 1) -> list[Message]:
        wait_until(lambda: len(self.messages) >= count, timeout=30, what=f"{count} messages")
        with self.lock:
            return list(self.messages)


class _Auth:
    def __init__(self, inbox: Inbox, user: str, password: str) -> None:
        self.inbox, self.user, self.password = inbox, user, password

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode() == self.user and auth_data.password.decode() == self.password
        )
        if ok:
            self.inbox.logins.append(self.user)
        return AuthResult(success=ok)


@dataclass
class MailServer:
    inbox: Inbox
    port: int
    ca_pem: str | None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def mail_server(
    security: str = "none", *, user: str | None = None, password: str | None = None
) -> Iterator[MailServer]:
    """security: none (plain), starttls (required before AUTH and mail), tls (implicit)."""
    inbox = Inbox()
    kwargs: dict[str, Any] = {}
    ca_pem = None
    if security != "none":
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        ca_pem = ca.cert_pem.bytes().decode()
        if security == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            kwargs.update(ssl_context=context)
    if user is not None and password is not None:
        kwargs.update(authenticator=_Auth(inbox, user, password), auth_require_tls=security != "none")
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="localhost", **kwargs)
    controller.start()
    try:
        yield MailServer(inbox, port, ca_pem)
    finally:
        controller.stop()
