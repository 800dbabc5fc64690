"""The operator's HTTP endpoints on one port: `/healthz` (the process serves), `/readyz` (kopf
has started, or this replica stands by, and the API server answers), `/metrics` (Prometheus)
and `POST /alertmanager` (the Alertmanager webhook, see `intake`). Owns no Kubernetes state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from incident_operator.intake import Intake

READY_KEY = web.AppKey("ready", asyncio.Event)
INTAKE_KEY = web.AppKey("intake", Intake)
ApiOk = Callable[[], bool]
API_OK_KEY: web.AppKey[ApiOk] = web.AppKey("api_ok")


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


def build_app(
    ready: asyncio.Event,
    intake: Intake | None = None,
    max_body_bytes: int = 1_048_576,
    api_ok: Callable[[], bool] = lambda: True,
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
