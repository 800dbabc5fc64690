"""Sending one email over SMTP, through the egress policy: STARTTLS, implicit TLS, or (for a
relay on the node only) none.

The mail server's host is resolved and checked like every outgoing request, and the connection
goes to the checked address while TLS still verifies the certificate against the host name.
The standard library's smtplib does the protocol, in a worker thread with a timeout on every
socket operation, so a slow or silent server costs one thread for at most `timeout` seconds.

`send_with_retries` is the one retry loop every mail goes through (notices, reports, mail to
people): a bounded number of attempts with backoff between them; a permanent failure (the
message cannot be built, a 5xx answer) and the egress policy's refusal stop at once.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from incident_operator.adapters.outbound import EgressDenied, Outbound, RequestFailed

BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
"""Seconds to wait before the 2nd, 3rd, ... attempt (the last value for any later one)."""


class MailFailed(Exception):
    """The message was not accepted; the text says why (never a credential). `permanent`: trying
    again will not help (the message cannot be built, the server refused it for good)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True)
class Envelope:
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    plain: str
    html: str


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str  # starttls | tls | none
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None


class _Pinned(smtplib.SMTP):
    """Connects to the checked address, but speaks TLS to (and verifies) the host name."""

    def __init__(self, address: str, server_name: str, timeout: float) -> None:
        self._address = address
        super().__init__(timeout=timeout)
        self._host = server_name  # used by starttls() for SNI and the certificate check

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


class _PinnedSSL(smtplib.SMTP_SSL):
    def __init__(self, address: str, server_name: str, timeout: float, context: ssl.SSLContext) -> None:
        self._address = address
        self._server_name = server_name
        super().__init__(timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((self._address, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=self._server_name)


_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def header_value(value: str) -> str:
    """One line: every line break (CR, LF and the rest `str.splitlines` knows) becomes a space,
    so a value that came from people (a title in the subject) can neither add a header (`Bcc:`)
    nor make the message unbuildable."""
    return _LINE_BREAKS.sub(" ", value)


def message(envelope: Envelope) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = header_value(envelope.sender)
    msg["To"] = header_value(", ".join(envelope.to))
    if envelope.cc:
        msg["Cc"] = header_value(", ".join(envelope.cc))
    msg["Subject"] = header_value(envelope.subject)
    msg.set_content(envelope.plain)
    msg.add_alternative(envelope.html, subtype="html")
    return msg


def _login(client: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN where offered (every server does over TLS): one round trip, one clear answer;
    otherwise smtplib's own choice of mechanism."""
    if "plain" in client.esmtp_features.get("auth", "").lower().split():
        client.user, client.password = username, password
        client.auth("PLAIN", client.auth_plain)
    else:
        client.login(username, password)


def _send(address: str, server: Server, envelope: Envelope, built: EmailMessage, timeout: float) -> None:
    context = (
        ssl.create_default_context(cadata=server.ca_pem) if server.ca_pem else ssl.create_default_context()
    )
    client: smtplib.SMTP
    if server.security == "tls":
        client = _PinnedSSL(address, server.host, timeout, context)
    else:
        client = _Pinned(address, server.host, timeout)
    with client:
        client.connect(server.host, server.port)
        client.ehlo()
        if server.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if server.username and server.password:
            _login(client, server.username, server.password)
        refused = client.send_message(built, to_addrs=[*envelope.to, *envelope.cc])
    if refused:
        raise MailFailed(f"the server refused {len(refused)} recipients: {', '.join(sorted(refused))}")


async def send(outbound: Outbound, server: Server, envelope: Envelope, timeout: float) -> None:
    """Send one message. Raises EgressDenied (the policy), RequestFailed (resolving) or MailFailed."""
    try:
        built = message(envelope)  # a message that cannot be built fails here, before connecting
    except (ValueError, TypeError) as exc:
        raise MailFailed(f"the message could not be built: {type(exc).__name__}", permanent=True) from None
    address = await outbound.address(
        server.host, server.port, scheme="https" if server.security != "none" else "smtp"
    )
    try:
        await asyncio.wait_for(
            asyncio.to_thread(_send, address, server, envelope, built, timeout), timeout * 4
        )
    except TimeoutError:  # a socket operation, or the whole conversation
        raise MailFailed(f"timed out after {timeout:.0f}s") from None
    except smtplib.SMTPResponseException as exc:
        detail = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        permanent = 500 <= exc.smtp_code < 600
        raise MailFailed(f"SMTP {exc.smtp_code}: {str(detail)[:200]}", permanent=permanent) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailFailed(f"the server refused every recipient ({len(exc.recipients)})") from None
    except ssl.SSLError as exc:
        raise MailFailed(f"TLS: {exc.reason or type(exc).__name__}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise MailFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    except Exception as exc:  # anything else smtplib or the message raises is a failed delivery too
        raise MailFailed(f"{type(exc).__name__} while sending", permanent=True) from None


async def send_with_retries(
    outbound: Outbound,
    server: Server,
    envelope: Envelope,
    timeout: float,
    attempts: int,
    *,
    backoff: Sequence[float] = BACKOFF_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str | None:
    """Send one message, trying up to `attempts` times with `backoff` between tries; None when
    delivered, else why not (never a credential). The egress policy's refusal and a permanent
    failure stop at once: trying again would not help."""
    last, tried = "no attempt made", 0
    for attempt in range(max(1, attempts)):
        if attempt:
            await sleep(backoff[min(attempt - 1, len(backoff) - 1)] if backoff else 0.0)
        tried = attempt + 1
        try:
            await send(outbound, server, envelope, timeout)
            return None
        except EgressDenied as exc:
            return str(exc)  # the policy will not change between attempts
        except RequestFailed as exc:
            last = str(exc)
        except MailFailed as exc:
            last = str(exc)
            if exc.permanent:
                break  # a refusal for good, a message that cannot be built
    return f"{last} after {tried} attempt(s)"
