"""A small cache of values that expire: bounded in size, with the clock passed in. Pure.

Used for the endpoints' access decisions (`httpauth`) and the monthly reports (`runtime.httpserver`):
what a burst of requests would otherwise ask of the API server again and again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most `max_entries` values, each until the moment given when it was put. A full cache
    drops the entry put (or refreshed) longest ago; an expired entry is dropped when looked up or
    when anything is put."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if now >= found[0]:
            del self._entries[key]
            return None
        return found[1]

    def put(self, key: K, value: V, now: float, ttl: float) -> None:
        """Keep `value` until `now + ttl`; expired entries are dropped now (what they hold, such as
        a namespace's incidents, is not kept past its time just because nobody asked again)."""
        for expired in [k for k, (until, _) in self._entries.items() if now >= until]:
            del self._entries[expired]
        self._entries.pop(key, None)
        self._entries[key] = (now + ttl, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
