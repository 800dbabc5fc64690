"""Runs kopf and the operator's HTTP server together in one asyncio event loop.

The only place that starts the framework and creates the API and HTTP clients (kopf itself is
configured by the startup handler in `handlers`; the endpoints live in `httpserver`).
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import kopf
import prometheus_client

from incident_operator import handlers, httpserver
from incident_operator.config import OperatorConfig
from incident_operator.intake import Intake
from incident_operator.kube import Kube, load_api_client

logger = logging.getLogger(__name__)


async def run(config: OperatorConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until kopf exits (on SIGINT/SIGTERM, or when `stop` is set)."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    kube = Kube(load_api_client())
    http = httpx.AsyncClient(follow_redirects=False)
    ready = asyncio.Event()
    app = httpserver.build_app(ready, Intake(kube, config), config.file.alertIntake.maxBodyBytes)
    try:
        server = await httpserver.start_server(app, config.http_host, config.http_port)
    except OSError:
        await http.aclose()
        kube.api.close()  # type: ignore[no-untyped-call]
        raise
    logger.info(
        "serving /healthz, /readyz, /metrics, /alertmanager on %s:%d", config.http_host, config.http_port
    )
    assert handlers.configure  # noqa: S101 - importing handlers registers them with kopf
    try:
        await kopf.operator(
            registry=kopf.get_default_registry(),
            standalone=config.standalone,
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            ready_flag=ready,
            stop_flag=stop,
            memo=kopf.Memo(config=config, kube=kube, http=http),
        )
    finally:
        await server.cleanup()
        await http.aclose()
        kube.api.close()  # type: ignore[no-untyped-call]
