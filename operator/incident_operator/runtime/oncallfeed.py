"""What `GET /oncall/NAMESPACE/NAME.ics` reads: the schedule, and its calendar token, briefly kept.

The schedule is read from the API at most every SCHEDULE_TTL_S per schedule, the token of its
Secret (`spec.calendarTokenSecret`, key `token`) at most every TOKEN_TTL_S (a rotated token works
within that), each once for all who ask at the same moment. The token is kept in memory only, and
compared in constant time (`matches`). The reading itself is the runner's (`adapters.kube`);
the endpoint is `httpserver.oncall_feed`. Owns no Kubernetes state.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from incident_operator.core.ttlcache import TtlCache
from incident_operator.runtime.flight import SingleFlight

SCHEDULE_TTL_S = 5.0
TOKEN_TTL_S = 30.0
MAX_ENTRIES = 256

ScheduleReader = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]
"""(namespace, name) -> the OnCallSchedule as the API returns it, None if there is none; raises
`Unavailable` when the API server cannot be asked."""
TokenReader = Callable[[str, str], Awaitable[str | None]]
"""(namespace, Secret name) -> the value of its key `token`, None if the Secret or key is missing;
raises `Unavailable` (also when the operator may not read it: the log says so)."""


class Unavailable(Exception):
    """The schedule or its token cannot be read now (a 503)."""


class FeedSource:
    def __init__(
        self, schedules: ScheduleReader, tokens: TokenReader, namespaces: tuple[str, ...] = ()
    ) -> None:
        self.schedules, self.tokens, self.namespaces = schedules, tokens, namespaces
        self._schedules: TtlCache[tuple[str, str], tuple[Mapping[str, Any] | None]] = TtlCache(MAX_ENTRIES)
        self._tokens: TtlCache[tuple[str, str], tuple[str | None]] = TtlCache(MAX_ENTRIES)
        self._reading: SingleFlight[tuple[Any, ...]] = SingleFlight()

    def serves(self, namespace: str) -> bool:
        """Whether the operator watches the namespace (all, without --namespace)."""
        return not self.namespaces or namespace in self.namespaces

    async def schedule(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = (namespace, name)
        found = await self._cached(self._schedules, ("schedule", *key), key, SCHEDULE_TTL_S, self.schedules)
        return cast(Mapping[str, Any] | None, found[0])

    async def token(self, namespace: str, secret: str) -> str | None:
        key = (namespace, secret)
        found = await self._cached(self._tokens, ("token", *key), key, TOKEN_TTL_S, self.tokens)
        return cast(str | None, found[0])

    async def _cached(
        self,
        cache: TtlCache[tuple[str, str], Any],
        flight: tuple[str, ...],
        key: tuple[str, str],
        ttl: float,
        read: Callable[[str, str], Awaitable[Any]],
    ) -> Any:
        now = asyncio.get_running_loop().time()
        kept = cache.get(key, now)
        if kept is not None:
            return kept

        async def fetch() -> tuple[Any, ...]:
            value = (await read(*key),)
            cache.put(key, value, asyncio.get_running_loop().time(), ttl)
            return value

        return await self._reading.run(flight, fetch)


def matches(given: str, expected: str) -> bool:
    """The calendar token given equals the Secret's, compared in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())
