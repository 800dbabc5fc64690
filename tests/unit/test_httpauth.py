"""Who may read `/metrics` and `/reports`: the bearer token, what is asked of the API server
(TokenReview, then SubjectAccessReview), what the answers mean, and how long a verdict is reused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client

from incident_operator.adapters.reviews import Reviews
from incident_operator.core import httpauth
from incident_operator.core.httpauth import (
    METRICS,
    DecisionCache,
    Outcome,
    Requirement,
    ReviewUnavailable,
    User,
    bearer_token,
    decide,
    report_reader,
)
from incident_operator.core.ttlcache import TtlCache
from incident_operator.runtime.guard import Guard, ReviewBusy
from tests.polling import until

ALICE = User.of("alice", "u-1", ["team-a", "system:authenticated"], {"scopes": ["x", "y"]})


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer  abc ", "abc"),
        (None, None),
        ("", None),
        ("Basic dXNlcjpwdw==", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("Bearer " + "x" * (httpauth.MAX_TOKEN_BYTES + 1), None),
    ],
)
def test_only_a_single_bearer_token_is_a_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_metrics_need_get_on_the_non_resource_url() -> None:
    assert METRICS.review_spec(ALICE) == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["team-a", "system:authenticated"],
        "extra": {"scopes": ["x", "y"]},
        "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
    }


def test_a_report_needs_list_incidents_in_its_namespace_or_at_cluster_scope() -> None:
    assert report_reader("shop").review_spec(User("bob"))["resourceAttributes"] == {
        "verb": "list",
        "group": "incident-operator.dev",
        "resource": "incidents",
        "namespace": "shop",
    }
    cluster = report_reader(None).review_spec(User("bob"))
    assert "namespace" not in cluster["resourceAttributes"]  # cluster scope, not "every namespace I have"
    assert cluster["user"] == "bob"
    assert "uid" not in cluster
    assert "extra" not in cluster
    assert report_reader(None).describe() == "list incidents.incident-operator.dev at cluster scope"


def test_the_verdict_from_the_answers() -> None:
    assert decide(None, None, METRICS).outcome is Outcome.UNAUTHENTICATED
    assert decide(None, None, METRICS).status == 401
    refused = decide(ALICE, False, report_reader("shop"))
    assert (refused.outcome, refused.status) == (Outcome.FORBIDDEN, 403)
    assert refused.reason == "forbidden: this needs list incidents.incident-operator.dev in namespace shop"
    assert decide(ALICE, True, METRICS).status == 200


def test_allowed_verdicts_live_longer_than_refusals_and_the_cache_keeps_no_token() -> None:
    cache = DecisionCache(allowed_ttl=15, denied_ttl=5)
    cache.put("tok-allowed", METRICS, decide(ALICE, True, METRICS), now=100)
    cache.put("tok-denied", METRICS, decide(ALICE, False, METRICS), now=100)
    assert cache.get("tok-allowed", METRICS, 104) is not None
    assert cache.get("tok-denied", METRICS, 104) is not None
    assert cache.get("tok-denied", METRICS, 105) is None
    assert cache.get("tok-allowed", METRICS, 114.9) is not None
    assert cache.get("tok-allowed", METRICS, 115) is None
    assert cache.get("tok-allowed", report_reader(None), 101) is None  # per requirement
    cache.put("s3cret-token", METRICS, decide(ALICE, True, METRICS), now=100)
    cache.put_user("s3cret-token", ALICE, now=100)
    kept = (cache._users._entries, cache._allowed._entries, cache._refused._entries)
    assert "s3cret-token" not in repr(kept)


def test_the_cache_is_bounded_and_drops_the_oldest() -> None:
    cache: TtlCache[str, int] = TtlCache(max_entries=2)
    cache.put("a", 1, now=0, ttl=10)
    cache.put("b", 2, now=0, ttl=10)
    cache.put("a", 3, now=1, ttl=10)  # refreshed: now the newest
    cache.put("c", 4, now=1, ttl=10)
    assert (cache.get("a", 2), cache.get("b", 2), cache.get("c", 2), len(cache)) == (3, None, 4, 2)
    cache.put("d", 5, now=20, ttl=10)  # a and c expired: dropped, not kept until looked up
    assert len(cache) == 1
    decisions = DecisionCache(max_entries=3, max_refusals=2)
    for i in range(10):
        decisions.put(f"t{i}", METRICS, decide(ALICE, True, METRICS), now=0)
        decisions.put(f"r{i}", METRICS, decide(ALICE, False, METRICS), now=0)
    assert len(decisions) == 5


class FakeReviewer:
    """The API server's answers: tokens it knows, and what each user may do."""

    def __init__(self, users: dict[str, User], grants: set[tuple[str, Requirement]]) -> None:
        self.users, self.grants = users, grants
        self.calls: list[str] = []
        self.down = False

    async def authenticate(self, token: str) -> User | None:
        self.calls.append("TokenReview")
        if self.down:
            raise ReviewUnavailable("TokenReview: HTTP 503")
        return self.users.get(token)

    async def authorize(self, user: User, requirement: Requirement) -> bool:
        self.calls.append("SubjectAccessReview")
        if self.down:
            raise ReviewUnavailable("SubjectAccessReview: HTTP 503")
        return (user.name, requirement) in self.grants


def test_a_scraper_costs_two_reviews_per_ttl_not_per_scrape() -> None:
    reviewer = FakeReviewer({"tok": ALICE}, {("alice", METRICS)})
    now = [0.0]
    guard = Guard(reviewer, clock=lambda: now[0])

    async def scrapes() -> list[int]:
        seen = []
        for _ in range(5):
            seen.append((await guard.check("Bearer tok", METRICS)).status)
            now[0] += 1
        return seen

    assert asyncio.run(scrapes()) == [200] * 5
    assert reviewer.calls == ["TokenReview", "SubjectAccessReview"]
    now[0] = 100.0
    asyncio.run(guard.check("Bearer tok", METRICS))
    assert len(reviewer.calls) == 4  # expired: asked again


def test_no_token_asks_nothing_an_unknown_token_asks_once_and_failures_are_not_remembered() -> None:
    reviewer = FakeReviewer({"tok": ALICE}, set())
    guard = Guard(reviewer, clock=lambda: 0.0)
    assert asyncio.run(guard.check(None, METRICS)) == httpauth.NO_TOKEN
    assert reviewer.calls == []
    assert asyncio.run(guard.check("Bearer nope", METRICS)).status == 401
    assert reviewer.calls == ["TokenReview"]  # no access review for nobody
    assert asyncio.run(guard.check("Bearer tok", report_reader("shop"))).status == 403
    reviewer.down = True
    with pytest.raises(ReviewUnavailable):
        asyncio.run(guard.check("Bearer other", METRICS))
    reviewer.down = False
    assert (
        asyncio.run(guard.check("Bearer other", METRICS)).status == 401
    )  # asked again, not a cached failure


def test_a_flood_of_refusals_does_not_evict_an_allowed_verdict() -> None:
    cache = DecisionCache()
    cache.put("scraper", METRICS, decide(ALICE, True, METRICS), now=0)
    cache.put_user("scraper", ALICE, now=0)
    for i in range(5 * httpauth.MAX_DECISIONS):
        cache.put_user(f"random-{i}", None, now=1)
        cache.put(f"nobody-{i}", METRICS, decide(User("nobody"), False, METRICS), now=1)
    assert cache.get("scraper", METRICS, 2) == decide(ALICE, True, METRICS)
    assert cache.user("scraper", 2) == ALICE
    assert len(cache) == 2 + httpauth.MAX_REFUSALS


class GatedReviewer(FakeReviewer):
    """A FakeReviewer whose TokenReviews wait for `gate`, counting how many are under way at once."""

    def __init__(self, users: dict[str, User], grants: set[tuple[str, Requirement]]) -> None:
        super().__init__(users, grants)
        self.gate = asyncio.Event()
        self.now = self.most = 0

    async def authenticate(self, token: str) -> User | None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.gate.wait()
            return await super().authenticate(token)
        finally:
            self.now -= 1


def test_identical_reviews_at_the_same_moment_are_asked_once() -> None:
    reviewer = GatedReviewer({"tok": ALICE}, {("alice", METRICS)})

    async def burst() -> list[int]:
        guard = Guard(reviewer)
        checks = [asyncio.ensure_future(guard.check("Bearer tok", METRICS)) for _ in range(20)]
        # once the first review waits at the gate, all 20 have started: each found it under way
        await until(lambda: reviewer.now == 1, timeout=5, what="the first review under way")
        reviewer.gate.set()
        return [v.status for v in await asyncio.gather(*checks)]

    assert asyncio.run(burst()) == [200] * 20
    assert reviewer.calls == ["TokenReview", "SubjectAccessReview"]


def test_a_flood_of_new_tokens_gets_few_reviews_at_once_and_the_rest_a_busy_503() -> None:
    reviewer = GatedReviewer({}, set())

    async def flood() -> list[object]:
        guard = Guard(reviewer, in_flight=4, wait=0.05)
        checks = [asyncio.ensure_future(guard.check(f"Bearer random-{i}", METRICS)) for i in range(50)]
        # the 46 without a slot give up after 0.05 s
        await until(lambda: sum(c.done() for c in checks) >= 46, timeout=5, what="46 checks given up")
        reviewer.gate.set()
        return list(await asyncio.gather(*checks, return_exceptions=True))

    answers = asyncio.run(flood())
    assert reviewer.most == 4
    assert len(reviewer.calls) == 4
    assert sum(isinstance(a, ReviewBusy) for a in answers) == 46
    assert [a.status for a in answers if not isinstance(a, Exception)] == [401] * 4


def test_an_unsure_token_is_refused_but_not_remembered() -> None:
    class Unsure(FakeReviewer):
        async def authenticate(self, token: str) -> User | None:
            self.calls.append("TokenReview")
            raise httpauth.UnsureToken

    reviewer = Unsure({}, set())
    guard = Guard(reviewer, clock=lambda: 0.0)
    assert asyncio.run(guard.check("Bearer expired", METRICS)) == httpauth.BAD_TOKEN
    assert asyncio.run(guard.check("Bearer expired", METRICS)) == httpauth.BAD_TOKEN
    assert reviewer.calls == ["TokenReview", "TokenReview"]


class AnsweringKube:
    """What `Reviews` needs of `Kube`: an ApiClient, and calls that return `answer`."""

    def __init__(self, answer: Any) -> None:
        self.api = client.ApiClient()
        self.answer = answer

    async def call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        return self.answer


def test_an_authorizer_that_failed_is_unavailable_not_a_refusal() -> None:
    failed = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user="alice"),
        status=client.V1SubjectAccessReviewStatus(allowed=False, evaluation_error="webhook: timeout"),
    )
    with pytest.raises(ReviewUnavailable):
        asyncio.run(Reviews(AnsweringKube(failed)).authorize(ALICE, METRICS))
    denied = client.V1SubjectAccessReviewStatus(allowed=False, denied=True, evaluation_error="partial")
    failed.status = denied
    assert asyncio.run(Reviews(AnsweringKube(failed)).authorize(ALICE, METRICS)) is False
    failed.status = client.V1SubjectAccessReviewStatus(allowed=True, evaluation_error="one of two failed")
    assert asyncio.run(Reviews(AnsweringKube(failed)).authorize(ALICE, METRICS)) is True
    failed.status = client.V1SubjectAccessReviewStatus(allowed=False)
    assert asyncio.run(Reviews(AnsweringKube(failed)).authorize(ALICE, METRICS)) is False


def test_a_token_review_with_an_error_is_refused_but_never_remembered() -> None:
    answer = client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token="t"),
        status=client.V1TokenReviewStatus(authenticated=False, error="[invalid bearer token, expired]"),
    )
    reviews = Reviews(AnsweringKube(answer))
    with pytest.raises(httpauth.UnsureToken):
        asyncio.run(reviews.authenticate("t"))
    guard = Guard(reviews, clock=lambda: 0.0)
    assert asyncio.run(guard.check("Bearer t", METRICS)) == httpauth.BAD_TOKEN
    assert len(guard.cache) == 0
    answer.status = client.V1TokenReviewStatus(authenticated=False)
    assert asyncio.run(reviews.authenticate("t")) is None


def test_a_failed_evaluation_is_a_503_and_not_cached() -> None:
    class Failing(FakeReviewer):
        async def authorize(self, user: User, requirement: Requirement) -> bool:
            self.calls.append("SubjectAccessReview")
            raise ReviewUnavailable("SubjectAccessReview: evaluation error")

    reviewer = Failing({"tok": ALICE}, set())
    guard = Guard(reviewer, clock=lambda: 0.0)
    for _ in range(2):
        with pytest.raises(ReviewUnavailable):
            asyncio.run(guard.check("Bearer tok", METRICS))
    assert reviewer.calls.count("SubjectAccessReview") == 2
