"""The gate in front of `/metrics` and `/reports`: a bearer token, a TokenReview and a
SubjectAccessReview, with the answers remembered briefly (`core.httpauth` says what they mean;
`adapters.reviews` asks them). Identical reviews asked at the same moment are asked once
(`SingleFlight`), and at most REVIEWS_IN_FLIGHT reviews are under way at once (`Slots`): a flood of
new tokens costs the API server, and the connections the operator shares with its handlers, a
bounded number of calls; the rest get a 503 (`ReviewBusy`). Owns no state but these caches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from incident_operator.core.httpauth import (
    BAD_TOKEN,
    NO_TOKEN,
    DecisionCache,
    Requirement,
    ReviewUnavailable,
    UnsureToken,
    User,
    Verdict,
    bearer_token,
    decide,
    token_key,
)
from incident_operator.runtime.flight import Busy, SingleFlight, Slots

T = TypeVar("T")
REVIEWS_IN_FLIGHT = 4
REVIEW_WAIT_S = 2.0
"""How long a review waits for one of the REVIEWS_IN_FLIGHT slots before the request gets a 503."""


class ReviewBusy(ReviewUnavailable):
    """Every review slot stayed taken for REVIEW_WAIT_S: a fixed 503 with Retry-After."""


class Reviewer(Protocol):
    async def authenticate(self, token: str) -> User | None: ...

    async def authorize(self, user: User, requirement: Requirement) -> bool: ...


class Guard:
    """Decides whether a request's `Authorization` header grants `requirement`.

    Raises `ReviewUnavailable` when the API server cannot be asked (nothing is cached then), and its
    `ReviewBusy` when too many reviews are under way.
    """

    def __init__(
        self,
        reviewer: Reviewer,
        cache: DecisionCache | None = None,
        clock: Callable[[], float] | None = None,
        *,
        in_flight: int = REVIEWS_IN_FLIGHT,
        wait: float = REVIEW_WAIT_S,
    ) -> None:
        self.reviewer = reviewer
        self.cache = cache or DecisionCache()
        self.clock = clock
        self.slots = Slots(in_flight, wait)
        self.identities: SingleFlight[User | Verdict] = SingleFlight()
        self.decisions: SingleFlight[Verdict] = SingleFlight()

    def _now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    async def identify(self, authorization: str | None) -> User | Verdict:
        """Who the header's token is (a TokenReview, remembered), or the 401 verdict."""
        token = bearer_token(authorization)
        if token is None:
            return NO_TOKEN
        known = self.cache.user(token, self._now())
        if known is not None:
            return known
        return await self.identities.run(token_key(token), lambda: self._authenticate(token))

    async def _authenticate(self, token: str) -> User | Verdict:
        try:
            user = await self._ask(lambda: self.reviewer.authenticate(token))
        except UnsureToken:
            return BAD_TOKEN  # refused, not remembered
        self.cache.put_user(token, user, self._now())
        return user if user is not None else BAD_TOKEN

    async def check(self, authorization: str | None, requirement: Requirement) -> Verdict:
        token = bearer_token(authorization)
        if token is None:
            return NO_TOKEN
        cached = self.cache.get(token, requirement, self._now())
        if cached is not None:
            return cached
        who = await self.identify(authorization)
        if isinstance(who, Verdict):
            return who
        return await self.decisions.run(
            (token_key(token), requirement), lambda: self._authorize(token, who, requirement)
        )

    async def _authorize(self, token: str, user: User, requirement: Requirement) -> Verdict:
        allowed = await self._ask(lambda: self.reviewer.authorize(user, requirement))
        verdict = decide(user, allowed, requirement)
        self.cache.put(token, requirement, verdict, self._now())
        return verdict

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.slots.run(call)
        except Busy:
            raise ReviewBusy("every review slot is taken") from None
