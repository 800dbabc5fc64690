"""Runs kopf and the operator's HTTP server together in one asyncio event loop.

The only place that starts the framework: kopf itself is configured by the startup handler in
`handlers`, the HTTP endpoints live in `httpserver`.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from incident_operator import handlers, httpserver
from incident_operator.config import OperatorConfig

logger = logging.getLogger(__name__)


async def run(config: OperatorConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until kopf exits (on SIGINT/SIGTERM, or when `stop` is set)."""
    ready = asyncio.Event()
    app = httpserver.build_app(ready)
    server = await httpserver.start_server(app, config.http_host, config.http_port)
    logger.info("serving /healthz and /readyz on %s:%d", config.http_host, config.http_port)
    registry = kopf.get_default_registry()
    assert handlers.configure  # noqa: S101 - importing handlers registers them with kopf
    try:
        await kopf.operator(
            registry=registry,
            standalone=config.standalone,
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            ready_flag=ready,
            stop_flag=stop,
            memo=kopf.Memo(config=config),
        )
    finally:
        await server.cleanup()
