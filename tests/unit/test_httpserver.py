"""/healthz answers while the process serves; /readyz only once kopf watches the API. `/metrics` and
`/reports` need a bearer token a TokenReview and SubjectAccessReview accept (a fake API server's
answers here); the status page is alone on its own listener, its links from statusPage.baseURL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import pytest

from incident_operator.api.timestamps import utc_now
from incident_operator.core import httpauth, report, statuspage
from incident_operator.core.httpauth import User
from incident_operator.runtime import httpserver
from incident_operator.runtime.guard import Guard, ReviewBusy
from incident_operator.runtime.liveness import Liveness
from incident_operator.settings.config import StatusPageConfig
from tests.polling import until
from tests.unit.test_httpauth import FakeReviewer


def test_readyz_follows_the_ready_flag() -> None:
    async def scenario() -> list[int]:
        ready = asyncio.Event()
        runner = await httpserver.start_server(httpserver.build_app(ready), "127.0.0.1", 0)
        port = runner.addresses[0][1]
        seen = []
        try:
            async with aiohttp.ClientSession() as session:
                for path in ("/healthz", "/readyz"):
                    async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                        seen.append(resp.status)
                ready.set()
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    seen.append(resp.status)
        finally:
            await runner.cleanup()
        return seen

    assert asyncio.run(scenario()) == [200, 503, 200]


@pytest.mark.parametrize("ending", ["error", "return"])
def test_healthz_fails_once_a_guarded_task_ends_by_itself_and_never_shows_its_error(ending: str) -> None:
    """A task the operator needs that ends other than by cancellation (a bug) turns /healthz to
    503 naming the task, so the kubelet restarts the process; the exception's text (it may carry
    an API answer) stays in the log. Cancelled tasks (the way out) change nothing."""

    async def scenario() -> list[tuple[int, str]]:
        liveness = Liveness()
        release = asyncio.Event()

        async def essential() -> None:
            await release.wait()
            if ending == "error":
                raise RuntimeError(SECRET_TEXT)

        async def stopped() -> None:
            await asyncio.Event().wait()

        app = httpserver.build_app(asyncio.Event(), alive=lambda: liveness.failed)
        runner = await httpserver.start_server(app, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        seen = []
        try:
            cancelled = liveness.guard(asyncio.create_task(stopped()), "the Event posters")
            watch = liveness.guard(asyncio.create_task(essential()), "the watch of incidents")
            cancelled.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cancelled
            seen.append(await get(port, "/healthz"))
            release.set()
            with contextlib.suppress(RuntimeError):
                await watch
            seen.append(await get(port, "/healthz"))
        finally:
            await runner.cleanup()
        return [(status, text) for status, _, text in seen]

    assert asyncio.run(scenario()) == [(200, "ok\n"), (503, "unhealthy: the watch of incidents ended\n")]


def test_port_in_use_is_a_clear_error() -> None:
    async def scenario(port: int) -> None:
        await httpserver.start_server(httpserver.build_app(asyncio.Event()), "127.0.0.1", port)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(scenario(port))


# --------------------------------------------------------------------------- two listeners, authenticated


READER = User("reader")
SHOP_READER = User("shop-reader")
TOKENS = {"reader-token": READER, "shop-token": SHOP_READER, "nobody-token": User("nobody")}
GRANTS = {
    ("reader", httpauth.METRICS),
    ("reader", httpauth.report_reader(None)),
    ("shop-reader", httpauth.report_reader("shop")),
}
SECRET_TEXT = "Unauthorized: token s3cr3t at 10.0.0.1"


def incident(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"title": f"{name} title", "severity": "P1", "category": "availability", **spec},
        "status": {"phase": "Investigating", "detectedAt": "2026-11-02T10:00:00Z"},
    }


class Lister:
    def __init__(self) -> None:
        self.calls: list[str | None] = []
        self.fail = False

    async def __call__(self, namespace: str | None) -> list[Mapping[str, Any]]:
        self.calls.append(namespace)
        if self.fail:
            raise RuntimeError(SECRET_TEXT)
        found = [incident("shop", "outage", public=True), incident("bank", "vault")]
        return [i for i in found if namespace in (None, i["metadata"]["namespace"])]

    async def pages(self, namespace: str | None) -> AsyncIterator[list[Mapping[str, Any]]]:
        """The same incidents a page of one at a time, as the reports read them."""
        for item in await self(namespace):
            yield [item]


Answer = tuple[int, dict[str, str], str]


async def get(port: int, path: str, token: str | None = None, **headers: str) -> Answer:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


def serve(
    requests: Callable[[int, int], Awaitable[list[Answer]]],
    *,
    lister: Lister | None = None,
    reviewer: FakeReviewer | None = None,
    config: StatusPageConfig | None = None,
) -> list[Answer]:
    async def scenario() -> list[Answer]:
        source = lister or Lister()
        listing = httpserver.SharedListing(source)
        guard = Guard(reviewer or FakeReviewer(TOKENS, GRANTS))
        app = httpserver.build_app(asyncio.Event(), guard=guard, pages=source.pages)
        status_app = httpserver.build_status_app(
            listing, config or StatusPageConfig(namespaces=("shop",), baseURL="https://status.example.com")
        )
        main = await httpserver.start_server(app, "127.0.0.1", 0)
        public = await httpserver.start_server(status_app, "127.0.0.1", 0)
        try:
            return await requests(main.addresses[0][1], public.addresses[0][1])
        finally:
            await main.cleanup()
            await public.cleanup()

    return asyncio.run(scenario())


def test_metrics_need_a_token_that_may_get_the_url() -> None:
    async def requests(port: int, _: int) -> list[Answer]:
        return [
            await get(port, "/metrics"),
            await get(port, "/metrics", "forged"),
            await get(port, "/metrics", "nobody-token"),
            await get(port, "/metrics", "shop-token"),
            await get(port, "/metrics", "reader-token"),
        ]

    none, forged, nobody, shop, reader = serve(requests)
    assert (none[0], forged[0], nobody[0], shop[0], reader[0]) == (401, 401, 403, 403, 200)
    assert none[1]["WWW-Authenticate"].startswith("Bearer")
    assert "bearer token" in none[2]
    assert nobody[2] == "forbidden: this needs get on /metrics\n"
    assert "# HELP" in reader[2]
    assert reader[1]["Cache-Control"] == "no-store"


def test_reports_need_list_incidents_where_they_look() -> None:
    async def requests(port: int, _: int) -> list[Answer]:
        return [
            await get(port, "/reports/2026-11?namespace=shop&format=json", "shop-token"),
            await get(port, "/reports/2026-11?namespace=bank&format=json", "shop-token"),
            await get(port, "/reports/2026-11?format=json", "shop-token"),  # cluster-wide
            await get(port, "/reports/2026-11?format=json", "reader-token"),
            await get(port, "/reports/2026-11?namespace=shop"),
        ]

    shop, bank, everything, reader, anonymous = serve(requests)
    assert shop[0] == 200
    assert json.loads(shop[2])["total"] == 1
    assert bank == (
        403,
        bank[1],
        "forbidden: this needs list incidents.incident-operator.dev in namespace bank\n",
    )
    assert everything[0] == 403
    assert "at cluster scope" in everything[2]
    assert reader[0] == 200
    assert json.loads(reader[2])["total"] == 2
    assert anonymous[0] == 401


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/reports/9999-12", "month must be between"),
        ("/reports/2026-13", "month must be YYYY-MM"),
        ("/reports/2026-11?format=pdf", "format must be one of"),
        ("/reports/2026-11?namespace=Bad_NS", "namespace must be a namespace name"),
        ("/reports/2026-11?namespace=shop%0A", "namespace must be a namespace name"),
        ("/reports/2026-11?namespace=shop&namespace=bank", "given once each"),
        ("/reports/2026-11?namespace=bank&namespace=shop", "given once each"),
        ("/reports/2026-11?format=json&format=html", "given once each"),
    ],
)
def test_bad_report_requests_are_400s(path: str, says: str) -> None:
    async def requests(port: int, _: int) -> list[Answer]:
        return [await get(port, path, "reader-token")]

    ((status, _, text),) = serve(requests)
    assert (status, says in text) == (400, True), text


def test_no_exception_text_in_any_answer() -> None:
    lister, reviewer = Lister(), FakeReviewer(TOKENS, GRANTS)
    lister.fail = True

    async def requests(port: int, status_port: int) -> list[Answer]:
        seen = [
            await get(port, "/reports/2026-11", "reader-token"),
            await get(status_port, "/status"),
        ]
        reviewer.down = True
        seen.append(await get(port, "/metrics", "reader-token"))
        return seen

    report_down, page_down, review_down = serve(requests, lister=lister, reviewer=reviewer)
    assert report_down[:1] + report_down[2:] == (503, "cannot list incidents right now; try again\n")
    assert page_down[0] == 503
    assert page_down[1]["Cache-Control"] == "no-store"
    assert review_down[0] == 503
    assert review_down[2] == httpauth.UNAVAILABLE + "\n"
    for _, _, text in (report_down, page_down, review_down):
        assert "s3cr3t" not in text
        assert "RuntimeError" not in text
        assert "HTTP 503" not in text


def test_an_unexpected_error_in_a_handler_is_a_plain_500() -> None:
    async def scenario() -> Answer:
        def broken() -> bool:
            raise KeyError(SECRET_TEXT)

        ready = asyncio.Event()
        ready.set()
        runner = await httpserver.start_server(httpserver.build_app(ready, api_ok=broken), "127.0.0.1", 0)
        try:
            return await get(runner.addresses[0][1], "/readyz")
        finally:
            await runner.cleanup()

    status, _, text = asyncio.run(scenario())
    assert (status, text) == (500, httpserver.INTERNAL_ERROR)


def test_reports_and_listings_are_shared_and_kept_briefly() -> None:
    lister = Lister()

    async def requests(port: int, status_port: int) -> list[Answer]:
        burst = await asyncio.gather(
            *(get(port, "/reports/2026-11?namespace=shop", "shop-token") for _ in range(5)),
            *(get(status_port, "/status.json") for _ in range(5)),
        )
        return [*burst, await get(port, "/reports/2026-11?namespace=shop", "shop-token")]

    answers = serve(requests, lister=lister)
    assert {a[0] for a in answers} == {200}
    assert sorted(lister.calls, key=str) == [None, "shop"]  # one report, one page: one list each


def test_the_status_page_is_alone_on_its_port_and_its_links_come_from_the_base_url() -> None:
    async def requests(port: int, status_port: int) -> list[Answer]:
        return [
            await get(port, "/status"),
            await get(port, "/status/feed.atom", "reader-token"),
            await get(status_port, "/status/feed.atom", Host="evil.example"),
            await get(status_port, "/status", Host="evil.example"),
            await get(status_port, "/metrics", "reader-token"),
            await get(status_port, "/reports/2026-11", "reader-token"),
            await get(status_port, "/healthz"),
        ]

    on_main, on_main_with_token, feed, page, *others = serve(requests)
    assert (on_main[0], on_main_with_token[0]) == (404, 404)
    assert feed[0] == 200
    assert page[0] == 200
    assert "evil.example" not in feed[2] + page[2]
    assert "<link rel='self' href='https://status.example.com/status/feed.atom'/>" in feed[2]
    assert "<id>https://status.example.com/status#shop-outage</id>" in feed[2]
    assert "href='https://status.example.com/status.json'" in page[2]
    assert feed[1]["Cache-Control"].startswith("public")
    assert [o[0] for o in others] == [404, 404, 404]


def test_without_a_base_url_the_feed_has_relative_links_and_urn_ids() -> None:
    async def requests(_: int, status_port: int) -> list[Answer]:
        return [await get(status_port, "/status/feed.atom", Host="evil.example")]

    ((status, _, feed),) = serve(requests, config=StatusPageConfig(namespaces=("shop",)))
    assert status == 200
    assert "evil.example" not in feed
    assert "<id>urn:incident-operator:status</id>" in feed
    assert "<id>urn:incident-operator:status:shop-outage</id>" in feed
    assert "<link href='/status#shop-outage'/>" in feed


def test_every_answer_but_the_public_pages_is_no_store() -> None:
    async def requests(port: int, status_port: int) -> list[Answer]:
        return [
            await get(port, "/healthz"),
            await get(port, "/readyz"),
            await get(port, "/nothing-here"),
            await get(port, "/metrics"),
            await get(port, "/reports/2026-11", "reader-token"),
            await get(status_port, "/nothing-here"),
            await get(status_port, "/status/"),
        ]

    answers = serve(requests)
    assert [a[0] for a in answers] == [200, 503, 404, 401, 200, 404, 404]
    assert [a[1].get("Cache-Control") for a in answers] == ["no-store"] * len(answers)


def test_the_status_page_is_rendered_once_per_listing_however_many_ask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[str] = []
    for name in ("build", "to_html", "to_json", "to_atom"):
        original = getattr(statuspage, name)

        def counted(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            renders.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(statuspage, name, counted)

    async def requests(_: int, status_port: int) -> list[Answer]:
        paths = ("/status", "/status.json", "/status/feed.atom")
        return [await get(status_port, path) for path in paths for _ in range(10)]

    answers = serve(requests)
    assert {a[0] for a in answers} == {200}
    assert len({a[2] for a in answers}) == 3  # the same body to each of the ten
    assert sorted(renders) == ["build", "build", "build", "to_atom", "to_html", "to_json"]
    assert answers[10][1]["Content-Type"] == "application/json; charset=utf-8"
    assert answers[20][1]["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert answers[0][1]["Cache-Control"] == "public, max-age=5"


def test_report_months_are_one_key_however_written_and_none_after_this_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[str] = []
    original = report.render

    def counted(built: Any, fmt: str) -> tuple[str, str]:
        renders.append(fmt)
        return original(built, fmt)

    monkeypatch.setattr(report, "render", counted)
    now = utc_now()
    this_month = f"{now.year:04d}-{now.month:02d}"
    next_month = f"{now.year + (now.month == 12):04d}-{now.month % 12 + 1:02d}"

    async def requests(port: int, _: int) -> list[Answer]:
        return [
            await get(port, "/reports/2026-1?format=json", "reader-token"),
            await get(port, "/reports/2026-01?format=json", "reader-token"),
            await get(port, f"/reports/{this_month}?format=json", "reader-token"),
            await get(port, f"/reports/{next_month}?format=json", "reader-token"),
            await get(port, "/reports/9998-12?format=html", "reader-token"),
            await get(port, "/reports/1999-12?format=html", "reader-token"),
            await get(port, "/reports/1970-01?format=html", "reader-token"),
        ]

    one, zero_one, current, following, far, before, epoch = serve(requests)
    assert (one[0], zero_one[0], current[0]) == (200, 200, 200)
    assert renders == ["json", "json"]  # 2026-1 and 2026-01 are one report
    assert following[:1] + following[2:] == (
        400,
        f"month {next_month} has not begun: reports cover 2000-01 to {this_month}\n",
    )
    assert far[0] == 400
    assert "has not begun" in far[2]
    assert (before[0], before[2]) == (400, "month must be 2000-01 or later, got 1999-12\n")
    assert epoch[0] == 400


def test_html_reports_are_drawn_few_at_a_time_and_the_rest_get_a_busy_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered, release = threading.Event(), threading.Event()
    original = report.render

    def slow(built: Any, fmt: str) -> tuple[str, str]:
        entered.set()
        release.wait(10)
        return original(built, fmt)

    monkeypatch.setattr(report, "render", slow)
    monkeypatch.setattr(httpserver, "DRAWING_SLOTS", 1)
    monkeypatch.setattr(httpserver, "DRAWING_WAIT_S", 0.05)

    async def requests(port: int, _: int) -> list[Answer]:
        first = asyncio.ensure_future(get(port, "/reports/2026-10?format=html", "reader-token"))
        await until(entered.is_set, timeout=10, what="the first report holding the only slot")
        second = await get(port, "/reports/2026-09?format=html", "reader-token")
        release.set()
        return [await first, second]

    first, second = serve(requests)
    assert first[0] == 200
    assert (second[0], second[2]) == (503, httpserver.BUSY_DRAWING)
    assert second[1]["Retry-After"] == "5"
    assert second[1]["Cache-Control"] == "no-store"


def test_who_asks_is_checked_before_what_is_asked() -> None:
    reviewer = FakeReviewer(TOKENS, GRANTS)

    async def requests(port: int, _: int) -> list[Answer]:
        return [
            await get(port, "/reports/0000-99?format=pdf&namespace=Bad_NS", "forged"),
            await get(port, "/reports/2026-13"),
            await get(port, "/reports/2026-13", "reader-token"),
        ]

    forged, anonymous, reader = serve(requests, reviewer=reviewer)
    assert (forged[0], anonymous[0], reader[0]) == (401, 401, 400)
    assert forged[2] == httpauth.BAD_TOKEN.reason + "\n"
    assert reviewer.calls == ["TokenReview", "TokenReview"]  # and no access review for a 400


def test_a_busy_guard_is_a_fixed_503_with_retry_after() -> None:
    class Busy(FakeReviewer):
        async def authenticate(self, token: str) -> User | None:
            raise ReviewBusy("every review slot is taken")

    async def requests(port: int, _: int) -> list[Answer]:
        return [await get(port, "/metrics", "reader-token"), await get(port, "/reports/2026-11", "x")]

    for status, headers, text in serve(requests, reviewer=Busy(TOKENS, GRANTS)):
        assert (status, text) == (503, httpauth.BUSY + "\n")
        assert headers["Retry-After"] == "5"
