"""Posts the incidents' Kubernetes Events from queues, in the background, each object's in order.

Owns the Events the incident loops post (kopf's poster serves only what kopf's own handlers
watch: the Playbooks, schedules and Drills). `post` never waits: it queues the Event and returns;
POSTERS tasks create them, the Events of one object always by the same task, one after the
other. An Event the API refuses, or that cannot reach it after RETRY_DELAYS_S, is dropped with a
warning: an Event is a notice, and the incident's timeline keeps the same record. The queues are
bounded (MAX_QUEUED): when the API server is away for long, the newest Events are dropped,
counted and said once per outage, instead of growing the memory without bound. On shutdown,
`close` posts what is queued within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from incident_operator.adapters.kube import ApiException, Kube, TransportError, api_reason
from incident_operator.api.timestamps import utc_now

logger = logging.getLogger(__name__)

MAX_QUEUED = 10_000
"""Events waiting at most (in all posters' queues together)."""
POSTERS = 4
"""Events posted at once (each object's in order, by one poster): one request at a time could
not keep up with a burst of a thousand incidents."""
RETRY_DELAYS_S = (1.0, 2.0, 5.0)
"""Waits before posting an Event again after a transport error or a 429/5xx (then it is dropped)."""


@dataclass(frozen=True)
class _Event:
    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    when: datetime


class EventQueue:
    """Events about the operator's objects, posted by `posters` background tasks (`run`); the
    Events of one object always go through the same one, in order."""

    def __init__(
        self,
        kube: Kube,
        *,
        max_queued: int = MAX_QUEUED,
        posters: int = POSTERS,
        retry_delays: tuple[float, ...] = RETRY_DELAYS_S,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.kube = kube
        self.queues: list[asyncio.Queue[_Event]] = [
            asyncio.Queue(maxsize=max(1, max_queued // posters)) for _ in range(posters)
        ]
        self.retry_delays = retry_delays
        self.clock = clock
        self.dropped = [0] * posters
        """Events dropped by each poster's queue since it last took one."""
        self.posting = 0
        """Events being posted now (at most one per poster)."""

    def post(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event about `involved` (a body with apiVersion, kind and metadata)."""
        metadata = involved.get("metadata") or {}
        reference = {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
        }
        shard = zlib.crc32(str(metadata.get("uid") or "").encode()) % len(self.queues)
        try:
            self.queues[shard].put_nowait(_Event(reference, type_, reason, message[:1024], self.clock()))
        except asyncio.QueueFull:
            if not self.dropped[shard]:
                logger.warning("%d Events waiting to be posted: dropping new ones", self.waiting)
            self.dropped[shard] += 1
            return
        if self.dropped[shard]:
            logger.warning("%d Events were dropped while the queue was full", self.dropped[shard])
            self.dropped[shard] = 0

    @property
    def waiting(self) -> int:
        """Events queued and not being posted yet."""
        return sum(q.qsize() for q in self.queues)

    async def run(self) -> None:
        """Post queued Events until cancelled."""
        await asyncio.gather(*(self._poster(queue) for queue in self.queues))

    async def _poster(self, queue: asyncio.Queue[_Event]) -> None:
        while True:
            event = await queue.get()
            self.posting += 1
            try:
                await self._post(event)
            finally:
                self.posting -= 1
                queue.task_done()

    async def _post(self, event: _Event) -> None:
        for delay in (*self.retry_delays, None):
            try:
                await self.kube.post_event(
                    event.involved, event.type, event.reason, event.message, event.when
                )
                return
            except ApiException as exc:
                if delay is None or not (exc.status == 429 or exc.status >= 500):
                    logger.warning("Event %s not posted: %s", event.reason, api_reason(exc))
                    return
            except (TransportError, OSError) as exc:
                if delay is None:
                    logger.warning("Event %s not posted: %s", event.reason, type(exc).__name__)
                    return
            except Exception:  # a bug: said, and the queue goes on
                logger.exception("Event %s not posted", event.reason)
                return
            await asyncio.sleep(delay)

    async def close(self, timeout: float) -> int:
        """Post what is queued, within `timeout` seconds; returns how many were left unposted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self.queues)), timeout)
        return self.waiting + self.posting
