"""Keeps every OnCallSchedule's `status.current` and `status.next` true (on the leader only).

Each watch event of a schedule (and our own status writes come back as one) hands its body to
`OnCallKeeper.observe`; the schedule is looked at then, and again at its next boundary (the end of
the current turn or the start of the next one: one timer per schedule, at most MAX_SLEEP_S away, so
a clock that jumped or a year-long horizon is caught up with). The status is written only when it
differs from what was last written (`core.oncallstatus`); an invalid spec gets Ready=False and one
Event per new problem, and nothing is retried until the spec changes. A failed write is tried again
after RETRY_S. Nothing survives the process but what the API holds: a new leader starts over from
the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from incident_operator.adapters.kube import ApiException, Kube, api_reason, not_found
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import utc_now
from incident_operator.core import conditions, oncallstatus

logger = logging.getLogger(__name__)

PLURAL = "oncallschedules"
MAX_SLEEP_S = 3600.0
RETRY_S = 10.0
SLACK_S = 0.5
"""Woken this long after a boundary, so that the moment is really past when the schedule is read."""

Key = tuple[str, str]


class OnCallKeeper:
    def __init__(self, kube: Kube, clock: Callable[[], datetime] = utc_now) -> None:
        self.kube, self.clock = kube, clock
        self.bodies: dict[Key, Mapping[str, Any]] = {}
        """The latest body of each schedule, as the watch delivered it."""
        self.written: dict[Key, dict[str, Any]] = {}
        """The owned part of status as we last wrote it (the watch may lag behind our writes)."""
        self.loops: dict[Key, asyncio.Task[None]] = {}
        self.changed: dict[Key, asyncio.Event] = {}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event: remember the body and have the schedule's loop look at it now."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        if event_type == "DELETED":
            self._forget(key)
        else:
            self.bodies[key] = body
        self.changed.setdefault(key, asyncio.Event()).set()
        if key in self.bodies and key not in self.loops:
            self.loops[key] = asyncio.create_task(self._loop(key), name=f"oncall {key[0]}/{key[1]}")

    def _forget(self, key: Key) -> None:
        self.bodies.pop(key, None)
        self.written.pop(key, None)

    async def _loop(self, key: Key) -> None:
        """Look at the schedule, then again at its next boundary or when it changes; end when it is gone."""
        changed = self.changed.setdefault(key, asyncio.Event())
        try:
            while key in self.bodies:
                changed.clear()
                try:
                    delay = await self.reconcile(key)
                except asyncio.CancelledError:
                    raise
                except Exception:  # never let one schedule's surprise stop the loop
                    logger.exception("on-call schedule %s/%s: cannot be looked at; trying again", *key)
                    delay = RETRY_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=delay)
        finally:
            if self.loops.get(key) is asyncio.current_task():
                del self.loops[key]
                self.changed.pop(key, None)

    async def reconcile(self, key: Key) -> float | None:
        """Write what the schedule's status should say now; return when to look again (None: when
        the spec changes)."""
        body = self.bodies.get(key)
        if body is None:
            return None
        now = self.clock()
        metadata = body.get("metadata") or {}
        status = dict(body.get("status") or {})
        written = self.written.get(key)
        if written is not None and written.get("observedGeneration") == metadata.get("generation"):
            status.update(written)
        observed = oncallstatus.observe(body.get("spec") or {}, status, metadata.get("generation"), now)
        if oncallstatus.differs(status, observed):
            try:
                await self.kube.patch_object_status(PLURAL, key[0], key[1], {"status": observed.status})
            except ApiException as exc:
                if not_found(exc):
                    self._forget(key)
                    return None
                logger.warning("on-call schedule %s/%s: cannot write status: %s", *key, api_reason(exc))
                return RETRY_S
            except OSError as exc:
                logger.warning("on-call schedule %s/%s: cannot write status: %s", *key, exc)
                return RETRY_S
            self.written[key] = dict(observed.status)
            await self._tell(body, status, observed, now)
        if observed.invalid:
            return None
        if observed.wake is None:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, (observed.wake - now).total_seconds()) + SLACK_S)

    async def _tell(
        self,
        body: Mapping[str, Any],
        before: Mapping[str, Any],
        observed: oncallstatus.Observed,
        now: datetime,
    ) -> None:
        """One Warning Event when the schedule becomes invalid, or its problems change."""
        if not observed.invalid:
            return
        was = conditions.find_condition(before.get("conditions"), ConditionType.INVALID) or {}
        if was.get("status") == "True" and was.get("message") == observed.message:
            return
        try:
            await self.kube.post_event(body, "Warning", Reason.INVALID, observed.message, now)
        except (ApiException, OSError) as exc:  # the condition says it too
            logger.warning("on-call schedule: cannot post an Event: %s", exc)

    async def stop(self) -> None:
        """Stop every schedule's loop (the leader steps down, or the process ends)."""
        loops = list(self.loops.values())
        for loop in loops:
            loop.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop
        self.loops.clear()
