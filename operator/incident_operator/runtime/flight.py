"""Work done once for everyone who asks for it at the same moment (`SingleFlight`), one reading
of pages for everyone who reads them at the same moment (`SharedPages`), and a bounded number of
slots for costly work (`Slots`): what keeps a burst of identical or of different requests from
costing the API server or the CPU one piece of work each. Owns no Kubernetes state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
P = TypeVar("P")


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


class SharedPages(Generic[P]):
    """One reading of `source(key)`'s pages for every reader of that key that comes before its
    first page: each page is handed to each reader's `take` (synchronous: it keeps what it needs),
    in order. A reader that comes later starts a reading of its own (it would have missed the
    pages handed on already). Thirteen monthly reports asked at once read the namespace once, not
    thirteen times. The reading's error is every joined reader's; a reader whose `take` raises
    gets its own error and is handed nothing more, the others go on; a reader that goes away
    does not cancel the reading."""

    def __init__(self, source: Callable[[Hashable], AsyncIterator[P]]) -> None:
        self.source = source
        self.joinable: dict[Hashable, tuple[asyncio.Future[None], list[_Reader[P]]]] = {}
        """Readings that have handed on no page yet, and who reads each."""
        self.readings = 0
        """Readings started (what the tests count)."""

    async def read(self, key: Hashable, take: Callable[[P], None]) -> None:
        """Hand every page of `key` to `take`; returns once the last one was handed on."""
        joined = self.joinable.get(key)
        if joined is None:
            readers: list[_Reader[P]] = []
            reading = asyncio.ensure_future(self._read(key, readers))
            joined = self.joinable[key] = (reading, readers)
            reading.add_done_callback(_retrieve)
            self.readings += 1
        reader = _Reader(take)
        joined[1].append(reader)
        await asyncio.shield(joined[0])
        if reader.error is not None:
            raise reader.error

    async def _read(self, key: Hashable, readers: list[_Reader[P]]) -> None:
        pages = self.source(key)
        try:
            async for page in pages:
                self._closed(key, readers)  # from the first page on, nobody joins: they would miss it
                for reader in readers:
                    reader.hand(page)
                del page  # what the readers keep of it is theirs; not held while the next is read
        finally:
            self._closed(key, readers)
            close = getattr(pages, "aclose", None)  # a generator's listing ends now, not when collected
            if close is not None:
                await close()

    def _closed(self, key: Hashable, readers: list[_Reader[P]]) -> None:
        joined = self.joinable.get(key)
        if joined is not None and joined[1] is readers:
            del self.joinable[key]


class _Reader(Generic[P]):
    """One reader of a shared reading: its `take`, and the error it raised (then it takes no more)."""

    def __init__(self, take: Callable[[P], None]) -> None:
        self.take = take
        self.error: Exception | None = None

    def hand(self, page: P) -> None:
        if self.error is None:
            try:
                self.take(page)
            except Exception as exc:  # this reader's failure, not the others'
                self.error = exc


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: no "never retrieved" warning if every reader left


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
