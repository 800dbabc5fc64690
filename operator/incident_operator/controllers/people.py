"""Reaching the people of OnCallSchedules: the schedules as the engine reads them, mail to people
(allowed domains, a rate limit kept in the schedule's status), and handoff announcements.

- `ScheduleBook`: the schedules the watch delivered (the on-call keeper's bodies), parsed once per
  resourceVersion, as `core.paging.Schedules` for the planner.
- `People.mail_to`: whether a person may be mailed now (config `oncall.allowedEmailDomains`,
  `oncall.maxMailsPerPersonPerHour`, counted per namespace and address: one mailbox listed in two
  schedules of a namespace, or under two names, has one budget there; each namespace listing it
  has its own, so one tenant cannot spend another's); a send is counted before it goes (under a
  lock, in memory) and recorded before it goes too (outside the lock) in the `status.mailsSent`
  of the schedule it was addressed through (the last hour's sends, bounded), so a restart or a new
  leader goes on counting from what the API holds (the records of the namespace's schedules,
  each entry counted only if its address is one of that schedule's people) instead of from zero.
- `People.tell`: a message to a person through an email channel's SMTP server (to their address)
  or a slack channel (mentioning their member id); egress policy and Secrets as every channel.
- `Handoffs`: at each handoff of a schedule (seen when the keeper's status write comes back
  through the watch, or at start), the incoming person is told, with the incidents still open in
  the schedule's namespace. The record (`status.handoffs`) is written first, with the schedule's
  resourceVersion as a precondition: of two leaders (or a restart) only one write succeeds, and
  only its writer announces. At most once: a crash between the write and the send loses that
  announcement (the record says it was attempted) rather than telling someone twice.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from incident_operator.adapters import mail
from incident_operator.adapters.kube import ApiException, Kube, api_reason, conflict, not_found
from incident_operator.adapters.outbound import EgressDenied, Outbound, RequestFailed
from incident_operator.api.models import OnCallHandoff, OnCallScheduleSpec, OnCallScheduleStatus
from incident_operator.api.reasons import Reason
from incident_operator.api.timestamps import format_time, parse_time, utc_now
from incident_operator.core import oncall, paging
from incident_operator.core.notices import slack_escape
from incident_operator.core.paging import Addressee, Schedules
from incident_operator.settings.channels import Channel, EmailChannel, SecretRef, SlackChannel
from incident_operator.settings.config import Notifications, OnCallConfig

logger = logging.getLogger(__name__)

PLURAL = "oncallschedules"
Key = tuple[str, str]
MailKey = tuple[str, str]
"""What the mail limit counts by: (the schedule's namespace, the address as `paging.mail_key` gives it)."""
PRUNE_EVERY = timedelta(minutes=1)
Bodies = Callable[[], Mapping[Key, Mapping[str, Any]]]
"""The schedules' latest bodies, by (namespace, name) (the on-call keeper's, from the watch)."""
SecretReader = Callable[[SecretRef], Any]
OPEN_LISTED_MAX = 20
"""A handoff message names at most this many open incidents (and counts the rest)."""


class ScheduleBook:
    """The watched schedules as the planner takes them, each parsed once per resourceVersion."""

    def __init__(self, bodies: Bodies) -> None:
        self.bodies = bodies
        self.parsed: dict[Key, tuple[str, OnCallScheduleSpec | str]] = {}

    def body(self, key: str) -> Mapping[str, Any] | None:
        namespace, _, name = key.partition("/")
        return self.bodies().get((namespace, name))

    def schedules(self, namespace: str, refs: tuple[str, ...] = ()) -> Schedules:
        """The schedules of `namespace` and those named in `refs` (`NAMESPACE/NAME`)."""
        bodies = self.bodies()
        wanted = {k for k in bodies if k[0] == namespace}
        wanted |= {(r.partition("/")[0], r.partition("/")[2]) for r in refs}
        found: dict[str, OnCallScheduleSpec | str] = {}
        for key in wanted:
            body = bodies.get(key)
            if body is not None:
                found[f"{key[0]}/{key[1]}"] = self._parse(key, body)
        return found

    def _parse(self, key: Key, body: Mapping[str, Any]) -> OnCallScheduleSpec | str:
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        cached = self.parsed.get(key)
        if cached is not None and cached[0] == version and version:
            return cached[1]
        spec, found = oncall.check(body.get("spec") or {})
        parsed: OnCallScheduleSpec | str = "; ".join(found) if spec is None or found else spec
        self.parsed[key] = (version, parsed)
        return parsed


class People:
    """Mail and Slack to people, through the channels of the config (see the module docstring)."""

    def __init__(
        self,
        kube: Kube,
        outbound: Outbound,
        config: OnCallConfig,
        notifications: Notifications,
        book: ScheduleBook,
        *,
        secret: Callable[[SecretRef], Any],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.kube, self.outbound, self.config, self.book = kube, outbound, config, book
        self.channels = {c.name: c for c in notifications.channels}
        self.secret, self.clock = secret, clock
        self.sent: dict[MailKey, list[tuple[datetime, str, str]]] = {}
        """Sends per (the schedule's namespace, address as `paging.mail_key` gives it), as (when,
        schedule, person), seeded from the `status.mailsSent` of every watched schedule: the limit
        counts mails to one mailbox from one namespace, whatever schedule of it or name listed the
        address; another namespace listing the same address has its own budget (it cannot spend
        this one). Addresses without a send within the hour are dropped (`_prune`)."""
        self.kept = paging.MAILS_KEPT
        """At most this many sends in a schedule's `status.mailsSent` (what memory counts is not cut)."""
        self.seeded: set[str] = set()
        """The watched schedules whose `status.mailsSent` was read (once per process: then memory
        counts); a schedule no longer watched is forgotten."""
        self.lock = asyncio.Lock()
        """Held while counting, never across an API call."""
        self.writing: dict[str, asyncio.Lock] = {}
        """Per schedule: its `status.mailsSent` writes, one at a time (a write is of the whole
        list, so an older one never lands after a newer one)."""
        self.counted: dict[str, int] = {}
        """Per schedule: how many sends were counted through it (a sequence number)."""
        self.written: dict[str, int] = {}
        """Per schedule: the `counted` number the last successful write covered (a later send
        whose count an earlier write already carried does not write again)."""
        self.pruned: datetime | None = None

    def _seed(self) -> None:
        """Read the sends recorded in every watched schedule not read yet, and forget the schedules
        no longer watched. Only an entry whose address is one of that schedule's `spec.people`
        counts (an entry without an address is for its person's address in that schedule): a
        status written by hand cannot spend the budget of an address the schedule does not list.
        Each schedule is read once, before any send through it is counted: two sends in one second
        are two, never taken for one. A schedule is forgotten only once deleted (the keeper drops
        its body then), so one that comes back is a new object whose status holds nothing yet."""
        bodies = self.book.bodies()
        watched = {f"{namespace}/{name}" for namespace, name in bodies}
        for gone in self.seeded - watched:
            self.counted.pop(gone, None)
            self.written.pop(gone, None)
            if gone in self.writing and not self.writing[gone].locked():
                del self.writing[gone]
        self.seeded &= watched
        for (namespace, name), body in list(bodies.items()):
            schedule = f"{namespace}/{name}"
            if schedule in self.seeded:
                continue
            self.seeded.add(schedule)
            people = {
                str(p.get("name")): paging.mail_key(str(p.get("email") or ""))
                for p in (body.get("spec") or {}).get("people") or []
                if isinstance(p, Mapping)
            }
            listed = {address for address in people.values() if address}
            for raw in (body.get("status") or {}).get("mailsSent") or []:
                if not isinstance(raw, Mapping):
                    continue
                try:
                    at = parse_time(str(raw.get("at")))
                except (ValueError, TypeError):
                    continue
                person = str(raw.get("person") or "")
                address = paging.mail_key(str(raw.get("address") or people.get(person) or ""))
                if address not in listed:
                    continue  # not a person of this schedule: a forged entry spends nobody's budget
                self.sent.setdefault((namespace, address), []).append((at, schedule, person))

    def _prune(self, now: datetime) -> None:
        """Drop the addresses with no send within the hour (at most once a minute)."""
        if self.pruned is not None and self.pruned <= now < self.pruned + PRUNE_EVERY:
            return
        self.pruned = now
        for key in [k for k, sends in self.sent.items() if not any(now - paging.HOUR < e[0] for e in sends)]:
            del self.sent[key]

    async def mail_to(self, person: Addressee) -> tuple[str | None, str]:
        """(their address, "") if they may be mailed now, the send counted and recorded before
        the caller sends; else (None, why not). Counted under the lock, recorded outside it: a
        slow status write holds only later mail through the same schedule, never mail to others."""
        if not person.email:
            return None, f"{person.name} has no email"
        if not paging.mail_allowed(person.email, self.config.allowedEmailDomains):
            return None, f"{person.name}'s address is not in oncall.allowedEmailDomains"
        key = (person.schedule.partition("/")[0], paging.mail_key(person.email))
        async with self.lock:
            self._seed()
            now = self.clock()
            self._prune(now)
            sent = [e for e in self.sent.get(key, []) if now - paging.HOUR < e[0] <= now]
            if paging.mail_budget((e[0] for e in sent), now, self.config.maxMailsPerPersonPerHour) <= 0:
                self.sent[key] = sent
                return None, (
                    f"{person.name} had {self.config.maxMailsPerPersonPerHour} mails within the hour "
                    "(oncall.maxMailsPerPersonPerHour, counted per namespace and address)"
                )
            sent.append((now, person.schedule, person.name))
            self.sent[key] = sent
            number = self.counted[person.schedule] = self.counted.get(person.schedule, 0) + 1
        await self._persist(person.schedule, number)
        return person.email, ""

    async def _persist(self, schedule: str, number: int) -> None:
        """Write the sends of the last hour made through `schedule` to its status, bounded
        (`paging.mails_kept`), once a write covers send `number` (a write made meanwhile by another
        send may already have). A failure is logged: the count in memory still holds until the
        process ends."""
        async with self.writing.setdefault(schedule, asyncio.Lock()):
            if self.written.get(schedule, 0) >= number:
                return
            async with self.lock:
                now = self.clock()
                covers = self.counted.get(schedule, 0)
                mine = [
                    (at, person, key[1])
                    for key, sends in self.sent.items()
                    for at, where, person in sends
                    if where == schedule
                ]
            kept = paging.mails_kept(mine, now, self.config.maxMailsPerPersonPerHour, self.kept)
            entries = [
                {"person": person, "at": format_time(at), "address": address} for at, person, address in kept
            ]
            namespace, _, name = schedule.partition("/")
            try:
                await self.kube.patch_object_status(
                    PLURAL, namespace, name, {"status": {"mailsSent": entries}}
                )
            except (ApiException, OSError) as exc:
                reason = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
                logger.warning("schedule %s: mail count not recorded: %s", schedule, reason)
                return
            self.written[schedule] = max(self.written.get(schedule, 0), covers)

    async def tell(
        self, person: Addressee, subject: str, message: str, namespace: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Tell `person` through each of `oncall.channels` that can reach them; (channels that
        delivered, why the others did not)."""
        told, failed = [], []
        for name in self.reaching(person, namespace):
            channel = self.channels[name]
            error = await self.send(channel, person, subject, message)
            if error is None:
                told.append(name)
            else:
                failed.append(f"{name}: {error}")
        return told, failed

    def reaching(self, person: Addressee, namespace: str | None = None) -> list[str]:
        """The `oncall.channels` that can reach `person`: email ones if they have an address, slack
        ones if they have a member id; with `namespace`, only channels whose `namespaces` take it
        (a channel scoped to namespace A never carries a message of namespace B)."""
        return [
            name
            for name in self.config.channels
            if (
                namespace is None
                or not self.channels[name].namespaces
                or namespace in self.channels[name].namespaces
            )
            and (
                (self.channels[name].type == "email" and person.email)
                or (self.channels[name].type == "slack" and person.slackId)
            )
        ]

    async def send(self, channel: Channel, person: Addressee, subject: str, message: str) -> str | None:
        """One message to one person through `channel`; None when delivered, else why not."""
        try:
            if isinstance(channel, EmailChannel):
                return await self._mail(channel, person, subject, message)
            if isinstance(channel, SlackChannel):
                return await self._slack(channel, person, message)
            return f"a {channel.type} channel does not reach people"
        except Exception as exc:  # a sender's surprise is a failed delivery (never its text: secrets)
            return f"{type(exc).__name__} while sending"

    async def _mail(self, channel: EmailChannel, person: Addressee, subject: str, message: str) -> str | None:
        smtp = channel.smtp
        if smtp is None:
            return "no smtp"
        to, why = await self.mail_to(person)
        if to is None:
            return why
        values = [
            await self.secret(r) if r is not None else None
            for r in (smtp.usernameSecretRef, smtp.passwordSecretRef, smtp.caSecretRef)
        ]
        server = mail.Server(smtp.host, smtp.port, smtp.security, *values)
        rich = f"<!doctype html><html><body><pre>{html.escape(message)}</pre></body></html>"
        envelope = mail.Envelope(smtp.sender, (to,), (), subject[:200], message, rich)
        return await mail.send_with_retries(
            self.outbound, server, envelope, channel.timeoutSeconds, channel.maxAttempts
        )

    async def _slack(self, channel: SlackChannel, person: Addressee, message: str) -> str | None:
        if not person.slackId or not person.slackId.isalnum():
            return f"{person.name} has no Slack id"
        if channel.urlSecretRef is None:
            return "no urlSecretRef"
        url = await self.secret(channel.urlSecretRef)
        body = {"text": f"<@{person.slackId}> {slack_escape(message)}"}
        last = "no attempt made"
        for _ in range(channel.maxAttempts):
            try:
                reply = await self.outbound.request(
                    "POST", url, json=body, headers={}, timeout=channel.timeoutSeconds, require_https=True
                )
            except EgressDenied as exc:
                return str(exc)
            except RequestFailed as exc:
                last = str(exc)
                continue
            if reply.status_code < 300:
                return None
            last = f"HTTP {reply.status_code}"
            if reply.status_code < 500 and reply.status_code != 429:
                break
        return last


class Handoffs:
    """Announces each schedule's handoffs once (see the module docstring)."""

    def __init__(self, kube: Kube, people: People, clock: Callable[[], datetime] = utc_now) -> None:
        self.kube, self.people, self.clock = kube, people, clock
        self.busy: dict[Key, asyncio.Task[None]] = {}
        self.latest: dict[Key, Mapping[str, Any]] = {}
        """The latest body of each schedule the watch delivered."""

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a schedule: announce its current turn if nobody did yet."""
        if event_type == "DELETED":
            self.latest.pop(_key(body), None)
            return
        key = _key(body)
        first = key not in self.latest
        self.latest[key] = body
        if key in self.busy:
            return  # looked at again once the announcement in flight is done
        shift = self.due(body)
        if shift is None:
            if first:  # at start (or a new schedule): say where it stands, once
                recorded = (body.get("status") or {}).get("handoffs") or [{}]
                last = f"{recorded[-1].get('person')} at {recorded[-1].get('at')}" if recorded[-1] else "none"
                logger.info(
                    "schedule %s/%s: first seen; nothing to announce (last announced: %s)", *key, last
                )
            return
        task = asyncio.create_task(self.announce(key, body, shift), name=f"handoff {key[0]}/{key[1]}")
        self.busy[key] = task
        task.add_done_callback(lambda _: self._done(key, body))

    def _done(self, key: Key, body: Mapping[str, Any]) -> None:
        """The schedule changed while its announcement was in flight (our own record, or a write
        that beat our claim): look at its latest body."""
        self.busy.pop(key, None)
        latest = self.latest.get(key)
        if latest is not None and latest is not body:
            self.observe("MODIFIED", latest)

    def due(self, body: Mapping[str, Any]) -> oncall.Shift | None:
        spec, found = oncall.check(body.get("spec") or {})
        if spec is None or found:
            return None
        try:
            status = OnCallScheduleStatus.model_validate(dict(body.get("status") or {}))
        except ValidationError:
            return None
        return paging.due_handoff(spec, status.handoffs or [], self.clock())

    async def announce(self, key: Key, body: Mapping[str, Any], shift: oncall.Shift) -> None:
        metadata = body.get("metadata") or {}
        spec, _ = oncall.check(body.get("spec") or {})
        person = oncall.person(spec, shift.person) if spec is not None else None
        schedule = f"{key[0]}/{key[1]}"
        addressee = Addressee.of(schedule, person) if person is not None else None
        channels = self.people.reaching(addressee, key[0]) if addressee is not None else []
        if addressee is None or not addressee.reachable:
            said = f"not told: {shift.person} has no email or Slack id"
        elif not self.people.config.channels:
            said = "not told: no oncall.channels configured"
        elif not channels:
            said = f"not told: no channel of oncall.channels reaches {shift.person}"
        else:
            said = f"told through {', '.join(channels)}"
        status = dict(body.get("status") or {})
        entry = OnCallHandoff(
            at=shift.start, person=shift.person, layer=shift.layer, until=shift.end, announced=said
        )
        handoffs = [OnCallHandoff.model_validate(h) for h in status.get("handoffs") or []]
        recorded = [h.model_dump(mode="json", exclude_none=True) for h in paging.recorded(handoffs, entry)]
        patch = {
            "metadata": {"resourceVersion": metadata.get("resourceVersion")},
            "status": {"handoffs": recorded},
        }
        try:  # the claim: only one writer of this resourceVersion wins, and only it announces
            await self.kube.patch_object_status(PLURAL, key[0], key[1], patch)
        except ApiException as exc:
            if not (conflict(exc) or not_found(exc)):
                logger.warning("schedule %s: handoff not recorded: %s", schedule, api_reason(exc))
            return  # a conflict: the newer body comes through the watch, and is looked at then
        except OSError as exc:
            logger.warning("schedule %s: handoff not recorded: %s", schedule, exc)
            return
        outcome = said
        if addressee is not None and addressee.reachable and channels:
            subject, message = await self.message(key, shift)
            told, failed = await self.people.tell(addressee, subject, message, key[0])
            outcome = f"{shift.person} told through {', '.join(told)}" if told else f"{shift.person} not told"
            if failed:
                outcome += f" ({'; '.join(failed)})"
        kind = "Normal" if outcome.startswith(f"{shift.person} told") else "Warning"
        message = f"handoff to {shift.person} ({shift.layer}) at {format_time(shift.start)}: {outcome}"
        logger.info("schedule %s: %s", schedule, message)
        try:
            await self.kube.post_event(body, kind, Reason.HANDOFF, message, self.clock())
        except (ApiException, OSError) as exc:
            logger.warning("schedule %s: cannot post an Event: %s", schedule, exc)

    async def message(self, key: Key, shift: oncall.Shift) -> tuple[str, str]:
        """(subject, text) telling the incoming person their turn and the open incidents."""
        try:
            incidents = await self.kube.list_objects("incidents", key[0])
        except (ApiException, OSError) as exc:
            logger.warning("schedule %s/%s: cannot list incidents: %s", *key, type(exc).__name__)
            incidents = None
        until = f" until {format_time(shift.end)}" if not oncall.open_ended(shift, shift.start) else ""
        lines = [
            f"You are on call in {key[0]}/{key[1]} ({shift.layer}) from {format_time(shift.start)}{until}."
        ]
        if incidents is None:
            lines.append("The open incidents could not be read: kubectl incident list -n " + key[0])
        else:
            still = [i for i in incidents if _open(i)]
            lines.append(f"Open incidents in {key[0]}: {len(still) or 'none'}")
            for item in still[:OPEN_LISTED_MAX]:
                spec, status = item.get("spec") or {}, item.get("status") or {}
                lines.append(
                    f"- {item['metadata']['name']}: [{spec.get('severity')}] {spec.get('title')} "
                    f"({status.get('phase') or 'Detected'}, commander: {spec.get('commander') or 'none'})"
                )
            if len(still) > OPEN_LISTED_MAX:
                lines.append(f"... and {len(still) - OPEN_LISTED_MAX} more")
        return f"On call: {key[0]}/{key[1]} is yours", "\n".join(lines) + "\n"

    async def stop(self) -> None:
        for task in list(self.busy.values()):
            task.cancel()


def _key(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _open(item: Mapping[str, Any]) -> bool:
    spec, status = item.get("spec") or {}, item.get("status") or {}
    return (
        not spec.get("closed")
        and not spec.get("resolution")
        and status.get("phase") not in ("Resolved", "Closed")
    )
