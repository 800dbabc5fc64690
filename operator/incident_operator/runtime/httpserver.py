"""The operator's HTTP endpoints on one port: `/healthz` (the process serves), `/readyz` (kopf
has started, or this replica stands by, and the API server answers), `/metrics` (Prometheus),
`POST /alertmanager` (the Alertmanager webhook, see `intake`), `GET /reports/YYYY-MM` (the
monthly report, computed from the Incidents the API returns, see `report`) and the public status
page `GET /status`, `/status.json`, `/status/feed.atom` (see `statuspage`; the incidents behind it
are listed at most every STATUS_TTL_S, however many people reload it). Owns no Kubernetes state.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from incident_operator.api.timestamps import utc_now
from incident_operator.controllers.intake import Intake
from incident_operator.core import report, statuspage
from incident_operator.settings.config import StatusPageConfig

READY_KEY = web.AppKey("ready", asyncio.Event)
INTAKE_KEY = web.AppKey("intake", Intake)
ApiOk = Callable[[], bool]
API_OK_KEY: web.AppKey[ApiOk] = web.AppKey("api_ok")
IncidentLister = Callable[[str | None], Awaitable[list[Mapping[str, Any]]]]
"""Incidents as the API returns them, of one namespace or (None) of all."""
LISTER_KEY: web.AppKey[IncidentLister] = web.AppKey("incidents")
STATUS_TTL_S = 5.0


class StatusSource:
    """The status page's incidents, listed from the API at most every STATUS_TTL_S."""

    def __init__(self, lister: IncidentLister, config: StatusPageConfig) -> None:
        self.lister, self.config = lister, config
        self.cached: tuple[float, list[Mapping[str, Any]]] | None = None
        self.lock = asyncio.Lock()

    async def page(self) -> statuspage.Page:
        async with self.lock:
            now = asyncio.get_running_loop().time()
            if self.cached is None or now - self.cached[0] > STATUS_TTL_S:
                self.cached = (now, await self.lister(None))
            objects = self.cached[1]
        return statuspage.build(objects, self.config, utc_now())


STATUS_KEY: web.AppKey[StatusSource] = web.AppKey("status")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if not request.app[READY_KEY].is_set():
        return web.Response(status=503, text="not ready: the operator is not watching the API yet\n")
    if not request.app[API_OK_KEY]():
        return web.Response(status=503, text="not ready: the API server does not answer\n")
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def alertmanager(request: web.Request) -> web.Response:
    return await request.app[INTAKE_KEY].handle(request)


async def monthly_report(request: web.Request) -> web.Response:
    """`/reports/YYYY-MM?namespace=NS&format=md|json|html` (default md, all namespaces)."""
    fmt = request.query.get("format", "md")
    namespace = request.query.get("namespace") or None
    try:
        year, month = report.parse_month(request.match_info["month"])
        if fmt not in report.FORMATS:
            raise report.ReportError(f"format must be one of {', '.join(report.FORMATS)}, got {fmt!r}")
    except report.ReportError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    if namespace is not None and not _NAMESPACE.match(namespace):
        return web.Response(status=400, text=f"not a namespace name: {namespace!r}\n")
    try:
        incidents = await request.app[LISTER_KEY](namespace)
    except Exception as exc:  # the API server's answer, said plainly
        return web.Response(status=503, text=f"cannot list incidents: {type(exc).__name__}: {exc}\n"[:500])
    built = report.build(incidents, year, month, utc_now(), namespace)
    if fmt == "html":  # drawing the chart takes a moment: not on the event loop
        content_type, body = await asyncio.to_thread(report.render, built, fmt)
    else:
        content_type, body = report.render(built, fmt)
    return web.Response(text=body, content_type=content_type.split(";")[0], charset="utf-8")


async def status_page(request: web.Request) -> web.Response:
    """`/status` (HTML), `/status.json`, `/status/feed.atom`: public incidents only."""
    try:
        page = await request.app[STATUS_KEY].page()
    except Exception:  # no detail on a public page
        return web.Response(status=503, text="The status page is unavailable right now.\n")
    kind = request.match_info.get("kind", "")
    headers = {"Cache-Control": f"public, max-age={int(STATUS_TTL_S)}"}
    if kind == ".json":
        return web.json_response(statuspage.to_json(page), headers=headers)
    if kind == "/feed.atom":
        base = f"{request.scheme}://{request.host}"
        return web.Response(
            text=statuspage.to_atom(page, base), content_type="application/atom+xml", headers=headers
        )
    return web.Response(text=statuspage.to_html(page), content_type="text/html", headers=headers)


def build_app(
    ready: asyncio.Event,
    intake: Intake | None = None,
    max_body_bytes: int = 1_048_576,
    *,
    api_ok: Callable[[], bool] = lambda: True,
    incidents: IncidentLister | None = None,
    status_config: StatusPageConfig | None = None,
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app[READY_KEY] = ready
    app[API_OK_KEY] = api_ok
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if intake is not None:
        app[INTAKE_KEY] = intake
        app.router.add_post("/alertmanager", alertmanager)
    if incidents is not None:
        app[LISTER_KEY] = incidents
        app.router.add_get(r"/reports/{month}", monthly_report)
        app[STATUS_KEY] = StatusSource(incidents, status_config or StatusPageConfig())
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
