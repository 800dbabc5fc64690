"""Work done once for everyone who asks for it at the same moment (`SingleFlight`), and a bounded
number of slots for costly work (`Slots`): what keeps a burst of identical or of different requests
from costing the API server or the CPU one piece of work each. Owns no Kubernetes state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """No slot came free in time: the request gets a fixed 503 with Retry-After."""


class SingleFlight(Generic[T]):
    """At most one piece of work per key under way; who asks for the same key meanwhile waits for
    that one (its result or its exception). A caller that goes away does not cancel it."""

    def __init__(self) -> None:
        self.pending: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        pending = self.pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(work())
            self.pending[key] = pending
            pending.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(pending)

    def _done(self, key: Hashable, done: asyncio.Future[T]) -> None:
        self.pending.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: no "never retrieved" warning if every caller left

    def __len__(self) -> int:
        return len(self.pending)


class Slots:
    """At most `size` pieces of work at once; the next waits at most `wait` seconds for a slot,
    then `Busy`."""

    def __init__(self, size: int, wait: float) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size, self.wait = size, wait
        self._free = asyncio.Semaphore(size)
        self.busy = 0
        """How many are under way now (for tests and logs)."""

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait)
        except TimeoutError:
            raise Busy from None
        self.busy += 1
        try:
            return await work()
        finally:
            self.busy -= 1
            self._free.release()
