"""The operator's HTTP endpoints, on two listeners.

`--http-port` (8080, `build_app`): `/healthz` (the process serves and none of the tasks it needs
ended: `liveness`), `/readyz` (kopf has started, or
this replica stands by, and the API server answers), `POST /alertmanager` (the Alertmanager
webhook, its own bearer token, see `intake`), `GET /oncall/NS/NAME.ics` (an OnCallSchedule as
iCalendar: a bearer token with `get` on it, or the schedule's calendar token, see `oncallfeed`),
and behind TokenReview + SubjectAccessReview
(`guard`): `/metrics` (Prometheus; `get` on the non-resource URL) and `GET /reports/YYYY-MM` (the
monthly report, computed from the Incidents the API returns and the archived ones of IncidentArchives,
see `report` and `archive.history`; `list incidents` in the
namespace asked for, or at cluster scope). Reports are kept for REPORT_TTL_S per (month, namespace,
format), and the incidents behind them and the status page are listed at most every LIST_TTL_S per
namespace however many ask at once (`SharedListing`). Reports cover 2000-01 to the current month,
are built once for all who ask at once, and at most DRAWING_SLOTS html charts are drawn at once.

`--status-port` (8081, `build_status_app`): the public status page alone, `GET /status`,
`/status.json`, `/status/feed.atom` (see `statuspage`), its links from `statusPage.baseURL`, each
format rendered once per listing (`StatusSource`).

No response carries an exception's text: an unexpected error is a fixed 500 (`_no_details`), the API
server's failures fixed 503s. Every answer but the public page's is `Cache-Control: no-store`
(`_no_store_by_default`). Owns no Kubernetes state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from incident_operator.adapters.kube import ApiException, api_reason
from incident_operator.api.timestamps import utc_now
from incident_operator.controllers.intake import Intake
from incident_operator.core import archive, httpauth, oncall, oncallfeed, report, statuspage
from incident_operator.core.httpauth import Outcome, Requirement, ReviewUnavailable
from incident_operator.core.ttlcache import TtlCache
from incident_operator.runtime.flight import Busy, SharedPages, SingleFlight, Slots
from incident_operator.runtime.guard import Guard, ReviewBusy
from incident_operator.runtime.oncallfeed import FeedSource, Unavailable, matches
from incident_operator.settings.config import StatusPageConfig

logger = logging.getLogger(__name__)

READY_KEY = web.AppKey("ready", asyncio.Event)
INTAKE_KEY = web.AppKey("intake", Intake)
ApiOk = Callable[[], bool]
API_OK_KEY: web.AppKey[ApiOk] = web.AppKey("api_ok")
Failed = Callable[[], str | None]
"""Why the operator can no longer work (a task it needs ended: `liveness`), or None."""
FAILED_KEY: web.AppKey[Failed] = web.AppKey("failed")
IncidentLister = Callable[[str | None], Awaitable[list[Mapping[str, Any]]]]
IncidentPages = Callable[[str | None], AsyncIterator[Sequence[Mapping[str, Any]]]]
"""The incidents of a namespace (None: of every watched one), a page at a time."""
ArchiveLister = Callable[[str | None, str], Awaitable[list[Mapping[str, Any]]]]
"""(namespace or None for all, month "YYYY-MM") -> that month's IncidentArchives."""
"""Incidents as the API returns them, of one namespace or (None) of all."""
GUARD_KEY = web.AppKey("guard", Guard)
LIST_TTL_S = 5.0
STATUS_TTL_S = LIST_TTL_S
REPORT_TTL_S = 30.0
MAX_LISTINGS = 64
MAX_REPORTS = 64
DRAWING_SLOTS = 2
"""html reports drawn at once (each chart costs up to a second of CPU)."""
DRAWING_WAIT_S = 5.0
"""How long an html report waits for a drawing slot before the request gets a 503."""
RETRY_AFTER = {"Retry-After": "5"}
BUSY_DRAWING = "busy drawing other reports; try again shortly\n"
NO_STORE = {"Cache-Control": "no-store"}
"""On everything but the public page: nothing private (or any error) in a shared cache."""
INTERNAL_ERROR = "internal error: the operator's log says more\n"
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""A namespace name, whole (`fullmatch`: `$` would let a trailing newline through)."""


def _why(exc: Exception) -> str:
    """Why a listing failed, in a log line: the API's status and reason (no body), or the error's type."""
    return api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__


class ListingFailed(Exception):
    """The API server did not list the incidents (the request gets a fixed 503)."""


class SharedListing:
    """The incidents of a namespace (None: of all), listed from the API at most every `ttl`
    seconds, and once for all who ask at the same moment: a burst of requests costs one list."""

    def __init__(
        self, lister: IncidentLister, ttl: float = LIST_TTL_S, max_entries: int = MAX_LISTINGS
    ) -> None:
        self.lister, self.ttl = lister, ttl
        self.cached: TtlCache[str | None, list[Mapping[str, Any]]] = TtlCache(max_entries)
        self.pending: dict[str | None, asyncio.Future[list[Mapping[str, Any]]]] = {}
        """Listings under way (at most one per namespace): who asks meanwhile waits for it."""

    async def get(self, namespace: str | None) -> list[Mapping[str, Any]]:
        """The incidents; raises ListingFailed (logged once per failed listing, without detail)."""
        found = self.cached.get(namespace, asyncio.get_running_loop().time())
        if found is not None:
            return found
        pending = self.pending.get(namespace)
        if pending is None:
            pending = asyncio.ensure_future(self._list(namespace))
            self.pending[namespace] = pending
            pending.add_done_callback(lambda _: self.pending.pop(namespace, None))
        return await asyncio.shield(pending)

    async def _list(self, namespace: str | None) -> list[Mapping[str, Any]]:
        try:
            found = await self.lister(namespace)
        except Exception as exc:
            logger.warning("cannot list incidents (%s): the report or page answers 503", _why(exc))
            raise ListingFailed from None
        self.cached.put(namespace, found, asyncio.get_running_loop().time(), self.ttl)
        return found


class StatusSource:
    """The status page's incidents (a `SharedListing` of every namespace), each format rendered
    once per listing and at most every STATUS_TTL_S: a flood of requests renders nothing more."""

    def __init__(self, listing: SharedListing, config: StatusPageConfig, base: str | None) -> None:
        self.listing, self.config, self.base = listing, config, base
        self.rendered: dict[str, tuple[list[Mapping[str, Any]], float, str, str]] = {}
        """format -> (the listing it was rendered from, until when, content type, body)."""

    async def render(self, fmt: str) -> tuple[str, str]:
        """(content type, body) of `fmt` (html, json or atom); raises ListingFailed."""
        incidents = await self.listing.get(None)
        now = asyncio.get_running_loop().time()
        kept = self.rendered.get(fmt)
        if kept is not None and kept[0] is incidents and now < kept[1]:
            return kept[2], kept[3]
        page = statuspage.build(incidents, self.config, utc_now())
        if fmt == "json":
            found = ("application/json", json.dumps(statuspage.to_json(page)))
        elif fmt == "atom":
            found = ("application/atom+xml", statuspage.to_atom(page, self.base))
        else:
            found = ("text/html", statuspage.to_html(page, self.base))
        self.rendered[fmt] = (incidents, now + STATUS_TTL_S, *found)
        return found


class Reports:
    """Monthly reports, each (month, namespace, format) built at most every REPORT_TTL_S, once for
    all who ask at the same moment, and at most DRAWING_SLOTS html charts drawn at once (the next
    waits DRAWING_WAIT_S, then `Busy`: a 503). The live incidents are read a page at a time and
    only the month's are kept: a namespace with a year of history costs one page and one month
    of bodies, not the year. Reports of several months asked at once read the pages once
    (`SharedPages`)."""

    def __init__(
        self,
        pages: IncidentPages,
        ttl: float = REPORT_TTL_S,
        max_entries: int = MAX_REPORTS,
        *,
        archives: ArchiveLister | None = None,
        drawing_slots: int | None = None,
        drawing_wait: float | None = None,
    ) -> None:
        self.ttl, self.archives = ttl, archives
        self.shared: SharedPages[Sequence[Mapping[str, Any]]] = SharedPages(
            lambda namespace: pages(cast(str | None, namespace))
        )
        self.built: TtlCache[tuple[str, str | None, str], tuple[str, str]] = TtlCache(max_entries)
        self.flights: SingleFlight[tuple[str, str]] = SingleFlight()
        self.drawing = Slots(
            drawing_slots or DRAWING_SLOTS, DRAWING_WAIT_S if drawing_wait is None else drawing_wait
        )

    async def render(self, year: int, month: int, namespace: str | None, fmt: str) -> tuple[str, str]:
        """(content type, body); raises ListingFailed, or Busy when every drawing slot stays taken."""
        key = (f"{year:04d}-{month:02d}", namespace, fmt)  # one key however the month was written
        found = self.built.get(key, asyncio.get_running_loop().time())
        if found is not None:
            return found
        return await self.flights.run(key, lambda: self._build(key, year, month, namespace, fmt))

    async def _build(
        self, key: tuple[str, str | None, str], year: int, month: int, namespace: str | None, fmt: str
    ) -> tuple[str, str]:
        start, end = report.month_bounds(year, month)
        incidents: list[Mapping[str, Any]] = []

        def take(page: Sequence[Mapping[str, Any]]) -> None:
            incidents.extend(report.slim(i) for i in report.detected_within(page, start, end))

        try:
            await self.shared.read(namespace, take)
        except Exception as exc:
            logger.warning("cannot list incidents (%s): the report answers 503", _why(exc))
            raise ListingFailed from None
        if self.archives is not None:  # only the month's archives: filed by the month of detection
            try:
                archived = await self.archives(namespace, key[0])
            except Exception as exc:
                logger.warning(
                    "cannot list incident archives (%s): the report answers 503", type(exc).__name__
                )
                raise ListingFailed from None
            incidents = archive.history(incidents, archived)
        built = report.build(incidents, year, month, utc_now(), namespace)
        if fmt == "html":  # drawing the chart takes a moment: not on the event loop, few at once
            found = await self.drawing.run(lambda: asyncio.to_thread(report.render, built, fmt))
        else:
            found = report.render(built, fmt)
        self.built.put(key, found, asyncio.get_running_loop().time(), self.ttl)
        return found


FEED_KEY: web.AppKey[FeedSource] = web.AppKey("oncall_feed")
STATUS_KEY: web.AppKey[StatusSource] = web.AppKey("status")
REPORTS_KEY: web.AppKey[Reports] = web.AppKey("reports")


async def _no_store_by_default(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer without its own Cache-Control (all but the public page's, including 404s, 413s
    and aiohttp's own errors) is `no-store`: nothing of it in a shared cache."""
    response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def _no_details(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Any unexpected exception of a handler is a fixed 500: its text goes to the log, never out."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return web.Response(status=500, text=INTERNAL_ERROR, headers=NO_STORE)


def _unavailable(exc: ReviewUnavailable) -> web.Response:
    """The fixed 503 when a token cannot be checked now (never the API server's words)."""
    if isinstance(exc, ReviewBusy):
        return web.Response(status=503, text=httpauth.BUSY + "\n", headers={**NO_STORE, **RETRY_AFTER})
    return web.Response(status=503, text=httpauth.UNAVAILABLE + "\n", headers={**NO_STORE, **RETRY_AFTER})


async def _unidentified(request: web.Request) -> web.Response | None:
    """None if the request's bearer token is someone's (a TokenReview); else the 401 or 503."""
    try:
        who = await request.app[GUARD_KEY].identify(request.headers.get("Authorization"))
    except ReviewUnavailable as exc:
        return _unavailable(exc)
    return _answer(who) if isinstance(who, httpauth.Verdict) else None


async def _refused(request: web.Request, requirement: Requirement) -> web.Response | None:
    """None if the request's bearer token grants `requirement`; else the 401, 403 or 503 to send."""
    try:
        verdict = await request.app[GUARD_KEY].check(request.headers.get("Authorization"), requirement)
    except ReviewUnavailable as exc:
        return _unavailable(exc)
    return None if verdict.outcome is Outcome.ALLOWED else _answer(verdict)


def _answer(verdict: httpauth.Verdict) -> web.Response:
    headers = dict(NO_STORE)
    if verdict.outcome is Outcome.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="incident-operator"'
    return web.Response(status=verdict.status, text=verdict.reason + "\n", headers=headers)


async def healthz(request: web.Request) -> web.Response:
    failed = request.app[FAILED_KEY]()
    if failed is not None:  # our own words (`Liveness.guard`): the task, never the API's answer
        return web.Response(status=503, text=f"unhealthy: {failed.splitlines()[0][:200]}\n")
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if not request.app[READY_KEY].is_set():
        return web.Response(status=503, text="not ready: the operator is not watching the API yet\n")
    if not request.app[API_OK_KEY]():
        return web.Response(status=503, text="not ready: the API server does not answer\n")
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    refused = await _refused(request, httpauth.METRICS)
    if refused is not None:
        return refused
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})


async def alertmanager(request: web.Request) -> web.Response:
    return await request.app[INTAKE_KEY].handle(request)


async def monthly_report(request: web.Request) -> web.Response:
    """`/reports/YYYY-MM?namespace=NS&format=md|json|html` (default md, all namespaces). Who asks
    is checked first (a 401 whatever the request), then the request (400), then the permission."""
    unidentified = await _unidentified(request)
    if unidentified is not None:
        return unidentified
    try:
        year, month, namespace, fmt = _report_request(request)
    except report.ReportError as exc:  # our own words, about the request
        return web.Response(status=400, text=f"{exc}\n", headers=NO_STORE)
    refused = await _refused(request, httpauth.report_reader(namespace))
    if refused is not None:
        return refused
    try:
        content_type, body = await request.app[REPORTS_KEY].render(year, month, namespace, fmt)
    except ListingFailed:
        return web.Response(status=503, text="cannot list incidents right now; try again\n", headers=NO_STORE)
    except Busy:
        return web.Response(status=503, text=BUSY_DRAWING, headers={**NO_STORE, **RETRY_AFTER})
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8", headers=NO_STORE)


def _report_request(request: web.Request) -> tuple[int, int, str | None, str]:
    """(year, month, namespace or None, format) of a report request; raises ReportError."""
    if any(len(request.query.getall(name, [])) > 1 for name in ("namespace", "format")):
        raise report.ReportError("namespace and format may be given once each")
    year, month = report.parse_month(request.match_info["month"])
    report.servable_month(year, month, utc_now())
    fmt = request.query.get("format", "md")
    if fmt not in report.FORMATS:
        raise report.ReportError(f"format must be one of {', '.join(report.FORMATS)}")
    namespace = request.query.get("namespace") or None
    if namespace is not None and not _NAMESPACE.fullmatch(namespace):
        raise report.ReportError("namespace must be a namespace name")
    return year, month, namespace, fmt


async def oncall_feed(request: web.Request) -> web.Response:
    """`/oncall/NAMESPACE/NAME.ics[?weeks=N]`: the schedule's turns as iCalendar. With a bearer
    token, who sent it needs `get` on that OnCallSchedule (TokenReview + SubjectAccessReview);
    with `?token=`, the token must equal the key `token` of the Secret the schedule names in
    `spec.calendarTokenSecret` (for calendar apps, which send no headers). 404 for a schedule
    that does not exist (asked after the permission, for a bearer token), 422 for an invalid one."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    source = request.app[FEED_KEY]
    given = request.query.get("token", "")
    if not given:  # who asks is checked first (a 401 whatever the request), then the request
        unidentified = await _unidentified(request)
        if unidentified is not None:
            return unidentified
    if any(len(request.query.getall(key, [])) > 1 for key in ("token", "weeks")):
        return _plain(400, "token and weeks may be given once each")
    try:
        weeks = oncallfeed.parse_weeks(request.query.get("weeks"))
    except oncallfeed.FeedError as exc:
        return _plain(400, str(exc))
    if not given:
        refused = await _refused(request, httpauth.schedule_reader(namespace, name))
        if refused is not None:
            return refused
    # with a calendar token (no bearer login) a missing schedule, one that takes no token and a wrong token
    # all answer the same 403: the token must not probe which schedules exist
    mismatch = "forbidden: the calendar token does not match (or no such schedule takes one)"
    if not source.serves(namespace):
        if given:
            return _plain(403, mismatch)
        return _plain(404, f"no oncallschedule {namespace}/{name}: the operator does not watch {namespace}")
    try:
        schedule = await source.schedule(namespace, name)
        if schedule is None:
            return _plain(403, mismatch) if given else _plain(404, f"no oncallschedule {namespace}/{name}")
        spec_raw = schedule.get("spec") or {}
        if given:
            secret = spec_raw.get("calendarTokenSecret")
            expected = await source.token(namespace, str(secret)) if secret else None
            if not expected or not matches(given, expected):
                return _plain(403, mismatch)
    except Unavailable:
        return _plain(503, "cannot read the schedule right now; try again", RETRY_AFTER)
    spec, problems = oncall.check(spec_raw)
    if spec is None or problems:
        return _plain(422, f"oncallschedule {namespace}/{name} is invalid: " + "; ".join(problems))
    body = oncallfeed.calendar(namespace, name, spec, utc_now(), weeks)
    return web.Response(
        body=body.encode(),
        headers={"Content-Type": "text/calendar; charset=utf-8", **NO_STORE},
    )


def _plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={**NO_STORE, **(headers or {})})


async def status_page(request: web.Request) -> web.Response:
    """`/status` (HTML), `/status.json`, `/status/feed.atom`: public incidents only, the same for
    everyone (nothing depends on who asks or on the request's headers), so shared caches may keep it,
    and so may the operator (`StatusSource.render`)."""
    fmt = {".json": "json", "/feed.atom": "atom"}.get(request.match_info.get("kind", ""), "html")
    try:
        content_type, body = await request.app[STATUS_KEY].render(fmt)
    except ListingFailed:  # no detail on a public page (any other error: the plain 500)
        return web.Response(status=503, text="The status page is unavailable right now.\n", headers=NO_STORE)
    headers = {"Cache-Control": f"public, max-age={int(STATUS_TTL_S)}"}
    return web.Response(text=body, content_type=content_type, charset="utf-8", headers=headers)


def build_app(
    ready: asyncio.Event,
    intake: Intake | None = None,
    max_body_bytes: int = 1_048_576,
    *,
    api_ok: Callable[[], bool] = lambda: True,
    alive: Failed = lambda: None,
    guard: Guard | None = None,
    pages: IncidentPages | None = None,
    archives: ArchiveLister | None = None,
    feed: FeedSource | None = None,
) -> web.Application:
    """The app of --http-port. `/metrics`, `/reports` (when given the `pages` of incidents) and
    `/oncall` (when given a `feed`) are served only behind a `guard`."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_no_details])
    app.on_response_prepare.append(_no_store_by_default)
    app[READY_KEY] = ready
    app[API_OK_KEY] = api_ok
    app[FAILED_KEY] = alive
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if intake is not None:
        app[INTAKE_KEY] = intake
        app.router.add_post("/alertmanager", alertmanager)
    if guard is not None:
        app[GUARD_KEY] = guard
        app.router.add_get("/metrics", metrics)
        if pages is not None:
            app[REPORTS_KEY] = Reports(pages, archives=archives)
            app.router.add_get(r"/reports/{month}", monthly_report)
        if feed is not None:
            app[FEED_KEY] = feed
            app.router.add_get(
                r"/oncall/{namespace:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?}/{name:[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?}.ics",
                oncall_feed,
            )
    return app


def build_status_app(listing: SharedListing, config: StatusPageConfig) -> web.Application:
    """The app of --status-port: the public status page and nothing else."""
    app = web.Application(client_max_size=1024, middlewares=[_no_details])
    app.on_response_prepare.append(_no_store_by_default)
    app[STATUS_KEY] = StatusSource(listing, config, config.baseURL or None)
    app.router.add_get(r"/status{kind:(|\.json|/feed\.atom)}", status_page)
    return app


async def start_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving `app`; the caller must `await runner.cleanup()` when done."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return runner
