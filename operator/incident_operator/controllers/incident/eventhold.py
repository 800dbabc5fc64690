"""The Kubernetes Events of one incident, held briefly so that a fast run's status writes share one.

Owns the records waiting to be posted and the timer that posts them. Each status write hands its
records over (`add`); those `planner.posts_event` admits wait until HOLD_S after the first of
them, then go out as `planner.events` folds them: every Warning its own Event, the Normal records
together in one (the reason of the most advanced, the messages joined). A Warning is posted at
once, after what waited before its write (their Events first); `flush` (the loop stopping: the
incident settled, closed or deleted) posts what waits at once. So a one-step run that resolves
within HOLD_S of its start, two status writes, posts one Event instead of two; a longer one
posts its start HOLD_S late, never later. The timeline in status keeps every record whatever
happens here. What waits when the operator shuts down is lost: kopf stops its Event poster
before the operator's cleanup stops the loops (as an Event kopf has queued but not posted is).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from incident_operator.core.planner import Record, events, posts_event

logger = logging.getLogger(__name__)

HOLD_S = 1.0
"""How long the first held Normal record waits for others to share its Event."""

EventPoster = Callable[[Record], None]


class HeldEvents:
    def __init__(self, post: EventPoster, hold_s: float = HOLD_S) -> None:
        self.post, self.hold_s = post, hold_s
        self.waiting: list[Record] = []
        self.timer: asyncio.TimerHandle | None = None

    def add(self, records: Sequence[Record]) -> None:
        """Hold the records a status write made (those posted as Events); a Warning, or no hold,
        posts everything waiting now."""
        posted = [r for r in records if posts_event(r)]
        if not posted:
            return
        if self.hold_s <= 0 or any(r.warning for r in posted):
            self.flush()  # what waited, from earlier writes, before this write's
            self._post(posted)
            return
        self.waiting.extend(posted)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.hold_s, self.flush)

    def flush(self) -> None:
        """Post everything waiting, now (safe to call when nothing waits)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiting, self.waiting = self.waiting, []
        self._post(waiting)

    def _post(self, records: Sequence[Record]) -> None:
        for event in events(records):
            try:
                self.post(event)
            except Exception as exc:  # one Event that cannot go must not keep the others
                logger.warning("Event %s not posted: %s", event.reason, exc)
