"""The operator's HTTP endpoints on one port: `/healthz` (the process serves) and `/readyz`
(kopf has started and is watching the API). Later features add `/alertmanager` and `/metrics`
to the same application. Owns no Kubernetes state.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

READY_KEY = web.AppKey("ready", asyncio.Event)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY_KEY].is_set():
        return web.Response(text="ok\n")
    return web.Response(status=503, text="not ready: the operator is not watching the API yet\n")


def build_app(ready: asyncio.Event) -> web.Application:
    app = web.Application()
    app[READY_KEY] = ready
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
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
