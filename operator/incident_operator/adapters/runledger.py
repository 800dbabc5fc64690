"""Playbook run records (counters `runs`/`succeeded`/`failed`, `lastRun`, per-target stamps),
batched: incidents add to an in-memory tally, and one writer flushes each Playbook's tally once
it is a second old (between one and two seconds after its first count) with optimistic
concurrency (GET, then PATCH carrying the resourceVersion). So a run that starts and ends within
a second is one write on its Playbook, whenever in the writer's cycle it started.

A thousand incidents on one Playbook used to mean a thousand conflicting read-modify-writes of
the same status (and a watch event for each, waking the namespace); now it is one write per
Playbook per second. Cooldown claims are not made here: they must be atomic before the first
action (see `controllers.incident.ledger`). Counts not yet flushed when the process dies are lost;
they are figures, not state the engine reads back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from incident_operator.adapters.kube import ApiException, Kube, api_reason

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
FINAL_FLUSH_S = 5.0


@dataclass
class Tally:
    since: float
    """When its first count was added (the recorder's clock, in seconds)."""
    counters: Counter[str] = field(default_factory=Counter)
    stamps: dict[str, Any] = field(default_factory=dict)
    """lastRun, lastRuns and lastRunBy entries to merge (the latest wins)."""


class RunRecorder:
    def __init__(
        self, kube: Kube, interval: float = FLUSH_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.interval = interval
        self.clock = clock
        self.pending: dict[tuple[str, str], Tally] = {}

    def add(self, namespace: str, playbook: str, counters: Sequence[str], stamps: dict[str, Any]) -> None:
        tally = self.pending.get((namespace, playbook))
        if tally is None:
            tally = self.pending[(namespace, playbook)] = Tally(self.clock())
        tally.counters.update(counters)
        for key, value in stamps.items():
            if isinstance(value, dict):
                tally.stamps.setdefault(key, {}).update(value)
            else:
                tally.stamps[key] = value

    async def flush(self, *, aged_only: bool = False) -> None:
        """Write every pending tally once (`aged_only`: those at least an interval old); a
        conflict or error keeps it for the next flush."""
        now = self.clock()
        batch = {
            key: tally
            for key, tally in self.pending.items()
            if not aged_only or now - tally.since >= self.interval
        }
        for key in batch:
            del self.pending[key]
        for (namespace, playbook), tally in batch.items():
            try:
                current = await self.kube.get_playbook(namespace, playbook)
                status = current.get("status") or {}
                patch: dict[str, Any] = {c: int(status.get(c) or 0) + n for c, n in tally.counters.items()}
                await self.kube.patch_playbook_status(
                    namespace,
                    playbook,
                    {**patch, **tally.stamps},
                    resource_version=current["metadata"]["resourceVersion"],
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue  # the Playbook is gone: nothing to record on
                if exc.status != 409:
                    logger.warning(
                        "playbook %s/%s: run record delayed: %s", namespace, playbook, api_reason(exc)
                    )
                self._merge_back(namespace, playbook, tally)
            except Exception as exc:  # lost connection: keep it for the next flush
                logger.warning(
                    "playbook %s/%s: run record delayed: %s", namespace, playbook, type(exc).__name__
                )
                self._merge_back(namespace, playbook, tally)

    def _merge_back(self, namespace: str, playbook: str, tally: Tally) -> None:
        newer = self.pending.get((namespace, playbook))
        if newer is not None:  # keep the newer stamps, add the counts (the first count's age)
            tally.since = min(tally.since, newer.since)
            tally.counters.update(newer.counters)
            for key, value in newer.stamps.items():
                if isinstance(value, dict):
                    tally.stamps.setdefault(key, {}).update(value)
                else:
                    tally.stamps[key] = value
        self.pending[(namespace, playbook)] = tally

    async def run(self) -> None:
        """Flush every interval until cancelled; a last flush on the way out."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                if self.pending:
                    await self.flush(aged_only=True)
        finally:
            if self.pending:  # bounded: an unreachable API server must not hold up a shutdown
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self.flush()), timeout=FINAL_FLUSH_S)
