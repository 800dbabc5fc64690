"""The gate in front of `/metrics` and `/reports`: a bearer token, a TokenReview and a
SubjectAccessReview, with the verdict remembered briefly (`core.httpauth` says what the answers
mean; `adapters.reviews` asks them). Owns no state but the decision cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from incident_operator.core.httpauth import (
    NO_TOKEN,
    DecisionCache,
    Requirement,
    User,
    Verdict,
    bearer_token,
    decide,
)


class Reviewer(Protocol):
    async def authenticate(self, token: str) -> User | None: ...

    async def authorize(self, user: User, requirement: Requirement) -> bool: ...


class Guard:
    """Decides whether a request's `Authorization` header grants `requirement`.

    Raises `ReviewUnavailable` when the API server cannot be asked (nothing is cached then).
    """

    def __init__(
        self,
        reviewer: Reviewer,
        cache: DecisionCache | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.reviewer = reviewer
        self.cache = cache or DecisionCache()
        self.clock = clock

    def _now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    async def check(self, authorization: str | None, requirement: Requirement) -> Verdict:
        token = bearer_token(authorization)
        if token is None:
            return NO_TOKEN
        cached = self.cache.get(token, requirement, self._now())
        if cached is not None:
            return cached
        user = await self.reviewer.authenticate(token)
        allowed = await self.reviewer.authorize(user, requirement) if user is not None else None
        verdict = decide(user, allowed, requirement)
        self.cache.put(token, requirement, verdict, self._now())
        return verdict
