"""Sends notices to channels (HTTP, PagerDuty, Opsgenie, SMTP), off the incident's loop.

Through the egress policy (`outbound`; channels must use https unless allowed explicitly), an
explicit timeout per attempt, a bounded number of attempts with exponential
backoff (honouring a short `Retry-After` on 429), URLs, keys and passwords read from Secrets at
send time (cached a few seconds) and never logged. A notice that could not be delivered is
reported back to the incident (timeline entry and Warning Event) through `on_failure`; the
incident goes on regardless.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from incident_operator.adapters import mail, metrics
from incident_operator.adapters.kube import ApiException, Kube, api_reason, secret_value
from incident_operator.adapters.outbound import EgressDenied, Outbound, Reply, RequestFailed
from incident_operator.api.keys import page_id_annotation
from incident_operator.controllers.people import People
from incident_operator.core import notices
from incident_operator.core.notices import IncidentView, Notice, channels_for
from incident_operator.settings.channels import (
    Channel,
    ChannelBase,
    EmailChannel,
    OpsgenieChannel,
    PagerDutyChannel,
    SecretRef,
    StatuspageChannel,
    WebhookChannel,
)
from incident_operator.settings.config import Notifications, StatusPageConfig

logger = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
SECRET_TTL_S = 5.0
MAX_RETRY_AFTER_S = 5.0


class Notifier:
    def __init__(
        self, kube: Kube, outbound: Outbound, config: Notifications, page: StatusPageConfig | None = None
    ) -> None:
        self.kube, self.outbound, self.config = kube, outbound, config
        self.page = page or StatusPageConfig()
        """The status page's rule, which `statuspage` channels follow (default: nothing is public)."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.secrets: dict[tuple[str, str, str], tuple[float, str | None]] = {}
        self.page_ids: dict[tuple[str, str, str], str] = {}  # (channel, namespace, incident) -> id
        self.page_locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self.latest: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        """The last delivery started per (channel, namespace, incident): the next one waits for it."""
        for channel in config.channels:  # every channel's series from the start: a first failure shows
            metrics.notification_channel(channel.name)
        for severity, policy in config.escalation.items():  # and every escalation level's
            metrics.escalation_levels(str(severity), len(policy.levels))
        self.people: People | None = None
        """Mail to people of on-call schedules (allowed domains, rate limit); None: never mailed."""

    def would_send(self, notices: list[Notice], view: IncidentView) -> bool:
        """Whether any channel takes any of `notices` (no channel: nothing will be in flight)."""
        return any(channels_for(self.config, notice, view, self.page) for notice in notices)

    def send_all(
        self, notices: list[Notice], view: IncidentView, on_failure: Callable[[str], None]
    ) -> list[asyncio.Task[None]]:
        """Start delivering each notice to its channels in the background; returns the tasks.

        A channel hears one incident's notices in the order they happened: each delivery waits
        for the previous one to the same channel about the same incident (a slow first delivery,
        e.g. reading its Secret, cannot be overtaken by the next phase's)."""
        started = []
        for notice in notices:
            for channel in channels_for(self.config, notice, view, self.page):
                key = (channel.name, view.namespace, view.name)
                task = asyncio.create_task(
                    self._deliver(channel, notice, view, on_failure, after=self.latest.get(key))
                )
                self.latest[key] = task
                task.add_done_callback(functools.partial(self._done, key))
                self.tasks.add(task)
                started.append(task)
        return started

    def _done(self, key: tuple[str, str, str], task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.latest.get(key) is task:
            del self.latest[key]

    async def _deliver(
        self,
        channel: Channel,
        notice: Notice,
        view: IncidentView,
        on_failure: Callable[[str], None],
        after: asyncio.Task[None] | None = None,
    ) -> None:
        if after is not None:
            await asyncio.wait([after])  # its outcome is its own (reported there)
        error = await self.deliver(channel, notice, view)
        metrics.notification_done(channel.name, error is None or isinstance(error, Redirected))
        if isinstance(error, Redirected):
            logger.warning("notification %s to channel %s: %s", notice.event, channel.name, error)
            on_failure(f"{notice.event} notice to channel {channel.name}: {error}")
        elif error is not None:
            logger.warning("notification %s to channel %s failed: %s", notice.event, channel.name, error)
            on_failure(f"{notice.event} notice to channel {channel.name} not delivered: {error}")

    async def secret(self, ref: SecretRef) -> str:
        """A value from a Secret, read at most every SECRET_TTL_S (a rotated value is used within
        seconds; a burst of notices reads the Secret once)."""
        key = (ref.namespace, ref.name, ref.key)
        cached = self.secrets.get(key)
        if cached is not None and time.monotonic() - cached[0] < SECRET_TTL_S:
            value: str | None = cached[1]
        else:
            value = await secret_value(self.kube, ref.namespace, ref.name, ref.key)
            self.secrets[key] = (time.monotonic(), value)
        if value is None:
            raise KeyError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
        return value

    async def deliver(self, channel: Channel, notice: Notice, view: IncidentView) -> str | None:
        """Deliver one notice; None on success, else why it failed (never a URL, key or password).

        Never raises: whatever goes wrong is a failed delivery, reported as `NotificationFailed`."""
        try:
            return await self._deliver_once(channel, notice, view)
        except Exception as exc:  # a sender's bug is a failed delivery, never a lost one
            # The type only: an exception's text may hold a URL or a key.
            name = type(exc).__name__
            logger.error("delivery to channel %s (%s) raised %s", channel.name, channel.type, name)
            return f"{name} while sending"

    async def _deliver_once(self, channel: Channel, notice: Notice, view: IncidentView) -> str | None:
        try:
            values = {id(ref): await self.secret(ref) for ref in channel.secret_refs}
        except ApiException as exc:
            return f"a Secret of channel {channel.name}: {api_reason(exc)}"
        except KeyError as exc:
            return str(exc.args[0])

        def value(ref: SecretRef | None) -> str | None:
            return values[id(ref)] if ref is not None else None

        person = notice.person
        told = notice.event == "roleAssigned" or notice.personal
        if told and channel.type == "slack" and person is not None and not person.slackId:
            return None  # told on their other contact; a role or reminder is not posted unaddressed
        return await SENDERS[channel.type](self, channel, notice, view, value)

    async def _statuspage(
        self, channel: StatuspageChannel, notice: Notice, view: IncidentView, api_key: str
    ) -> str | None:
        """One page incident per Incident: created the first time, then updated. Deliveries for
        one incident and channel go one at a time, so a second notice waits for the first's id."""
        key = (channel.name, view.namespace, view.name)
        async with self.page_locks.setdefault(key, asyncio.Lock()):
            known = self.page_ids.get(key) or view.page_ids.get(channel.name)
            method, path, body = notices.statuspage_io(channel, notice, view, known)
            headers = {"Authorization": f"OAuth {api_key}"}
            error, reply = await self._post(channel, channel.api_url + path, body, headers, method=method)
            if error is None and known is None and reply is not None:
                created = _json_id(reply.body)
                if created is None:
                    return "the Statuspage API answered without an incident id"
                self.page_ids[key] = created
                await self._remember_page(view, channel, created)
            if notice.event == "resolved":
                self.page_ids.pop(key, None)
                self.page_locks.pop(key, None)
            return error

    async def _remember_page(self, view: IncidentView, channel: ChannelBase, page_incident: str) -> None:
        """Keep the page incident's id on the Incident (an annotation), for after a restart."""
        patch = {"metadata": {"annotations": {page_id_annotation(channel.name): page_incident}}}
        try:
            await self.kube.patch_object("incidents", view.namespace, view.name, patch)
        except ApiException as exc:
            logger.warning(
                "statuspage id of %s/%s not recorded: %s", view.namespace, view.name, api_reason(exc)
            )

    async def _post(
        self, channel: ChannelBase, url: str, body: object, headers: dict[str, str], *, method: str = "POST"
    ) -> tuple[str | None, Reply | None]:
        last = "no attempt made"
        for attempt in range(channel.maxAttempts):
            if attempt:
                await asyncio.sleep(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
            try:
                response = await self.outbound.request(
                    method,
                    url,
                    json=body,
                    headers=headers,
                    timeout=channel.timeoutSeconds,
                    require_https=True,
                )
            except EgressDenied as exc:
                return str(exc), None  # the policy will not change between attempts
            except RequestFailed as exc:
                last = f"timed out after {channel.timeoutSeconds}s" if str(exc) == "timed out" else str(exc)
                continue
            if response.status_code < 300:
                return None, response
            last = f"HTTP {response.status_code}"
            if response.status_code == 429:
                await asyncio.sleep(_retry_after(response))
            elif response.status_code < 500:
                break  # 4xx other than 429: retrying will not help
        return f"{last} after {attempt + 1} attempt(s)", None

    async def _mail(
        self, channel: EmailChannel, notice: Notice, view: IncidentView, value: Secrets
    ) -> str | None:
        subject, plain, rich = notices.email(channel, notice, view)
        to, cc, note = channel.to, channel.cc, None
        person = notice.person
        if person is not None:
            found = await self.people.mail_to(person) if self.people is not None else (None, "no oncall")
            if found[0] is not None:
                to, cc = (found[0],), ()
            elif notice.event == "roleAssigned" or notice.personal:
                return f"{person.name} not told: {found[1]}"
            else:
                note = Redirected(f"{person.name} not mailed ({found[1]}): sent to the channel's recipients")
        return await self._send_mail(channel, value, subject, plain, rich, to=to, cc=cc, note=note)

    async def _send_mail(
        self,
        channel: EmailChannel,
        value: Secrets,
        subject: str,
        plain: str,
        rich: str,
        *,
        to: tuple[str, ...] | None = None,
        cc: tuple[str, ...] = (),
        note: str | None = None,
    ) -> str | None:
        """Send one message through `channel` (to its own recipients unless `to` is given); None
        or `note` when delivered, else why not."""
        smtp = channel.smtp
        assert smtp is not None  # noqa: S101 - validated with the config
        if to is None:
            to, cc = channel.to, channel.cc
        server = mail.Server(
            smtp.host,
            smtp.port,
            smtp.security,
            value(smtp.usernameSecretRef),
            value(smtp.passwordSecretRef),
            value(smtp.caSecretRef),
        )
        envelope = mail.Envelope(smtp.sender, to, cc, subject, plain, rich)
        error = await mail.send_with_retries(
            self.outbound, server, envelope, channel.timeoutSeconds, channel.maxAttempts
        )
        return note if error is None else error

    async def send_report(
        self, channel: Channel, subject: str, plain: str, rich: str, body: object
    ) -> str | None:
        """A monthly report (`controllers.reports`): an `email` channel gets `rich` (the HTML, its
        chart in it) with `plain` as its text part, a `webhook` channel `body` as JSON. None on
        success, else why not (never a URL or a password); never raises."""
        try:
            try:
                values = {id(ref): await self.secret(ref) for ref in channel.secret_refs}
            except ApiException as exc:
                return f"a Secret of channel {channel.name}: {api_reason(exc)}"
            except KeyError as exc:
                return str(exc.args[0])

            def value(ref: SecretRef | None) -> str | None:
                return values[id(ref)] if ref is not None else None

            if isinstance(channel, EmailChannel):
                return await self._send_mail(channel, value, subject, plain, rich)
            if isinstance(channel, WebhookChannel):
                return (await self._post(channel, value(channel.urlSecretRef) or "", body, {}))[0]
            return (
                f"channel {channel.name} is of type {channel.type}: reports go to email and webhook channels"
            )
        except Exception as exc:  # a failed delivery, never a crash of the pass
            name = type(exc).__name__
            logger.error("report to channel %s (%s) raised %s", channel.name, channel.type, name)
            return f"{name} while sending"


class Redirected(str):
    """A delivery that went to the channel's own recipients instead of the person addressed."""

    __slots__ = ()


Secrets = Callable[[SecretRef | None], str | None]
"""The values of a channel's Secrets, read before the delivery."""
Sender = Callable[[Notifier, Any, Notice, IncidentView, Secrets], Awaitable[str | None]]


def _to_url(body: Callable[[ChannelBase, Notice, IncidentView], object]) -> Sender:
    """A sender that posts `body` to the URL of the channel's `urlSecretRef`."""

    async def send(
        notifier: Notifier, channel: ChannelBase, notice: Notice, view: IncidentView, value: Secrets
    ) -> str | None:
        url = value(getattr(channel, "urlSecretRef", None)) or ""
        return (await notifier._post(channel, url, body(channel, notice, view), {}))[0]

    return send


async def _send_statuspage(
    notifier: Notifier, channel: StatuspageChannel, notice: Notice, view: IncidentView, value: Secrets
) -> str | None:
    if channel.mode == "statuspageio":
        return await notifier._statuspage(channel, notice, view, value(channel.keySecretRef) or "")
    url = value(channel.urlSecretRef) or ""
    return (await notifier._post(channel, url, notices.statuspage_body(channel, notice, view), {}))[0]


async def _send_pagerduty(
    notifier: Notifier, channel: PagerDutyChannel, notice: Notice, view: IncidentView, value: Secrets
) -> str | None:
    body = notices.pagerduty(channel, notice, view, value(channel.keySecretRef) or "")
    return (await notifier._post(channel, channel.api_url, body, {}))[0]


async def _send_opsgenie(
    notifier: Notifier, channel: OpsgenieChannel, notice: Notice, view: IncidentView, value: Secrets
) -> str | None:
    path, body = notices.opsgenie(channel, notice, view)
    headers = {"Authorization": f"GenieKey {value(channel.keySecretRef)}"}
    return (await notifier._post(channel, channel.api_url + path, body, headers))[0]


async def _send_email(
    notifier: Notifier, channel: EmailChannel, notice: Notice, view: IncidentView, value: Secrets
) -> str | None:
    return await notifier._mail(channel, notice, view, value)


SENDERS: dict[str, Sender] = {
    "slack": _to_url(notices.slack_body),
    "webhook": _to_url(notices.webhook_body),
    "statuspage": _send_statuspage,
    "email": _send_email,
    "pagerduty": _send_pagerduty,
    "opsgenie": _send_opsgenie,
}
"""One sender per channel type (`settings.channels.CHANNEL_TYPES`; a unit test ties the two)."""


def _json_id(body: bytes) -> str | None:
    try:
        found = json.loads(body or b"{}").get("id")
    except (ValueError, AttributeError):
        return None
    return str(found) if found else None


def _retry_after(response: Reply) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(response.retry_after or "0")))
    except ValueError:
        return 0.0
