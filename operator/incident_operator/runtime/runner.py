"""Runs kopf and the operator's HTTP server together in one asyncio event loop.

The only place that starts the framework and creates the API and HTTP clients (kopf itself is
configured by the startup handler in `handlers`; the endpoints live in `httpserver`).

With `--leader-elect`, every replica serves HTTP (alert intake is idempotent by fingerprint, so
any replica may take an alert) and only the holder of the Lease runs kopf (see `election`). A
leader that loses its Lease exits at once, as client-go's controllers do: no write of the old
leader can then overlap the new one's, and Kubernetes restarts the pod as a standby.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import ctypes
import functools
import logging
import os
import signal
import tracemalloc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kopf
import prometheus_client
from aiohttp import web

from incident_operator.adapters import metrics
from incident_operator.adapters.apiendpoints import ApiServerEndpoints, fixed_api_server
from incident_operator.adapters.apihealth import ApiHealth
from incident_operator.adapters.kube import (
    ApiException,
    Kube,
    api_reason,
    load_api_client,
    not_found,
    secret_value,
)
from incident_operator.adapters.outbound import Outbound, http_client
from incident_operator.adapters.reviews import Reviews
from incident_operator.api.keys import LABEL_ARCHIVE_MONTH
from incident_operator.controllers.intake import Intake
from incident_operator.core import archive
from incident_operator.runtime import handlers, httpserver
from incident_operator.runtime.context import RuntimeContext
from incident_operator.runtime.election import Elector
from incident_operator.runtime.guard import Guard
from incident_operator.runtime.liveness import Liveness
from incident_operator.runtime.oncallfeed import FeedSource, Unavailable
from incident_operator.settings.config import OperatorConfig
from incident_operator.settings.egress import EgressPolicy

logger = logging.getLogger(__name__)


TRIM_INTERVAL_S = 10.0
"""How often freed memory is given back (`_trim_memory`): within seconds of a burst's end."""
REPORT_PAGE = 500
"""Incidents per page when a report reads the live ones (it keeps only its month of them)."""


TLS_READ_BUFFER = 64 * 1024
"""Bytes a TLS connection reads at once. asyncio gives each connection a buffer of 256 KiB for
this (`asyncio.sslproto.SSLProtocol.max_size`), written through at once, so resident; the
operator keeps one connection open per watch (kopf's three kinds per watched namespace and its own
incident watch: 26 connections at the bench's five namespaces, 6.5 MB of buffers for reads that
are mostly a few kB). A listing's page of megabytes is read in more pieces: about 40 reads of
64 KiB for a page of 500 realistic incidents, microseconds beside the page's seconds."""


def _smaller_tls_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Lower asyncio's TLS read buffer to `size` for every connection opened from now on (the
    operator's API clients and kopf's, both on aiohttp; httpx's outgoing requests read through
    anyio's own TLS stream, untouched); left alone where asyncio has no such attribute."""
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    current = getattr(protocol, "max_size", None)
    if isinstance(current, int) and current > size:
        protocol.max_size = size  # type: ignore[union-attr]


async def _trim_memory() -> None:
    """Give memory freed after a burst back to the OS (glibc keeps it otherwise, and RSS stays at
    the peak); a no-op where glibc is not the allocator. The trim runs in a worker thread (ctypes
    lets go of the GIL): on a heap fragmented by a burst each takes 15-25 ms, which on the event
    loop would hold every incident that long, every time."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    while True:
        await asyncio.sleep(TRIM_INTERVAL_S)
        await asyncio.to_thread(trim, 0)


async def _watched_incidents(
    kube: Kube, watched: tuple[str, ...], namespace: str | None
) -> list[Mapping[str, Any]]:
    """Incidents of `namespace`, or of every watched namespace (one list per namespace when the
    operator watches only some: it may not be allowed to list cluster-wide)."""
    if namespace is not None or not watched:
        return await kube.list_incidents(namespace)
    found: list[Mapping[str, Any]] = []
    for name in watched:
        found += await kube.list_incidents(name)
    return found


async def _watched_incident_pages(
    kube: Kube, watched: tuple[str, ...], namespace: str | None
) -> AsyncIterator[Sequence[Mapping[str, Any]]]:
    """Incidents of `namespace`, or of every watched namespace, a page at a time (the reports
    keep one month of them, not every page)."""
    scopes: tuple[str | None, ...] = (namespace,) if namespace is not None or not watched else watched
    for scope in scopes:
        async for page in kube.incident_pages(scope, REPORT_PAGE):
            yield page
            del page  # not held while the next page is read


async def _watched_archives(
    kube: Kube, watched: tuple[str, ...], namespace: str | None, month: str
) -> list[Mapping[str, Any]]:
    """The IncidentArchives of one month of detection (what that month's report adds to the live
    incidents, see `archive.history`), of `namespace` or of every watched namespace: never the
    archives of other months, which a year of history would make large."""
    scopes: tuple[str | None, ...] = (namespace,) if namespace is not None or not watched else watched
    selector = f"{LABEL_ARCHIVE_MONTH}={month}"
    archives: list[Mapping[str, Any]] = []
    for scope in scopes:
        archives += await kube.call(kube.objects.list, archive.PLURAL, scope, label_selector=selector)
    return archives


async def _schedule(kube: Kube, namespace: str, name: str) -> Mapping[str, Any] | None:
    """An OnCallSchedule for its iCalendar feed; None if there is none."""
    try:
        return await kube.get_object("oncallschedules", namespace, name)
    except ApiException as exc:
        if not_found(exc):
            return None
        logger.warning("cannot read oncallschedule %s/%s for its feed: %s", namespace, name, api_reason(exc))
        raise Unavailable from None
    except OSError as exc:
        logger.warning(
            "cannot read oncallschedule %s/%s for its feed: %s", namespace, name, type(exc).__name__
        )
        raise Unavailable from None


async def _calendar_token(kube: Kube, namespace: str, secret: str) -> str | None:
    """The key `token` of a schedule's calendar Secret; None if the Secret or the key is missing."""
    try:
        return await secret_value(kube, namespace, secret, "token")
    except ApiException as exc:
        if not_found(exc):
            return None
        # 403: nobody granted the operator `get` on this Secret (docs/guide/oncall.md says how)
        logger.warning("cannot read calendar token Secret %s/%s: %s", namespace, secret, api_reason(exc))
        raise Unavailable from None
    except OSError as exc:
        logger.warning("cannot read calendar token Secret %s/%s: %s", namespace, secret, type(exc).__name__)
        raise Unavailable from None


MEMORY_REPORT_ENV = "INCIDENT_OPERATOR_MEMORY_REPORT"


def write_memory_report(path: str, top: int = 30) -> None:
    """Where the Python heap is, by module and by line (a diagnostic for `make bench`): written on
    the way out when the process runs with tracemalloc (`PYTHONTRACEMALLOC=N`) and
    INCIDENT_OPERATOR_MEMORY_REPORT names a file. Does nothing otherwise."""
    if not tracemalloc.is_tracing():
        return
    snapshot = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    modules: dict[str, int] = {}
    for stat in snapshot.statistics("filename"):
        name = stat.traceback[0].filename
        marker = "site-packages/"
        name = name.split(marker, 1)[1].split("/", 1)[0] if marker in name else Path(name).parent.name or name
        modules[name] = modules.get(name, 0) + stat.size
    lines = [f"traced Python heap: {total / 2**20:.1f} MiB", "", "by package:"]
    lines += [
        f"  {size / 2**20:8.1f} MiB  {name}"
        for name, size in sorted(modules.items(), key=lambda x: -x[1])[:top]
    ]
    lines += ["", "by line:"]
    lines += [
        f"  {stat.size / 2**20:8.1f} MiB  {stat.count:>9} blocks  {stat.traceback[0]}"
        for stat in snapshot.statistics("lineno")[:top]
    ]
    Path(path).write_text("\n".join(lines) + "\n")


def _exit_now() -> None:
    os._exit(1)


async def run(
    config: OperatorConfig, stop: asyncio.Event | None = None, on_lost: Callable[[], None] = _exit_now
) -> None:
    """Serve until kopf exits (on SIGINT/SIGTERM, or when `stop` is set)."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    _smaller_tls_buffers()  # before the first connection
    kube = Kube(await load_api_client())
    egress = config.file.egress
    http = http_client()
    every_port, one_port = fixed_api_server(kube.host)
    policy = EgressPolicy.build(
        allow=(*egress.allow, *config.allow_egress),
        deny=egress.deny,
        api_server=every_port,
        api_server_ports=one_port,
    )
    endpoints = ApiServerEndpoints(kube)
    await endpoints.refresh()  # logs the endpoints, or once that they cannot be read
    outbound = Outbound(
        http,
        policy,
        api_servers=endpoints.current,
        tenant=egress.tenant_policy(),
        services=kube.service_facts,
    )
    ready = asyncio.Event()
    liveness = Liveness()  # /healthz: 503 once a task the operator needs has ended
    health = ApiHealth(kube)
    intake = Intake(kube, config)  # one intake: the HTTP server's, and a Drill's fireAlert
    listing = httpserver.SharedListing(functools.partial(_watched_incidents, kube, config.namespaces))
    app = httpserver.build_app(
        ready,
        intake,
        config.file.alertIntake.maxBodyBytes,
        api_ok=lambda: health.ok,
        alive=lambda: liveness.failed,
        guard=Guard(Reviews(kube)),
        pages=functools.partial(_watched_incident_pages, kube, config.namespaces),
        archives=functools.partial(_watched_archives, kube, config.namespaces),
        feed=FeedSource(
            functools.partial(_schedule, kube),
            functools.partial(_calendar_token, kube),
            config.namespaces,
        ),
    )
    servers: list[web.AppRunner] = []
    try:
        servers.append(await httpserver.start_server(app, config.http_host, config.http_port))
        status_app = httpserver.build_status_app(listing, config.file.statusPage)
        servers.append(await httpserver.start_server(status_app, config.http_host, config.status_port))
    except OSError:
        for server in servers:
            await server.cleanup()
        await http.aclose()
        await kube.close()
        raise
    logger.info(
        "serving /healthz, /readyz, /alertmanager and (authenticated) /metrics, /reports, /oncall on %s:%d; "
        "the status page on %s:%d",
        config.http_host,
        config.http_port,
        config.http_host,
        config.status_port,
    )
    await health.check()
    metrics.leading(False)  # a standby until it acts (incident_operator_leader)
    watching = liveness.guard(asyncio.create_task(health.watch()), "the API server's readiness checks")
    trimming = asyncio.create_task(_trim_memory())
    try:
        if config.leader_elect:
            await _elected(
                config,
                kube=kube,
                outbound=outbound,
                intake=intake,
                ready=ready,
                liveness=liveness,
                stop=stop or asyncio.Event(),
                on_lost=on_lost,
            )
        else:
            metrics.leading(True)
            await _operate(
                config, kube=kube, outbound=outbound, intake=intake, ready=ready, liveness=liveness, stop=stop
            )
    finally:
        metrics.leading(False)
        watching.cancel()
        trimming.cancel()
        if os.environ.get(MEMORY_REPORT_ENV):
            write_memory_report(os.environ[MEMORY_REPORT_ENV])
        for server in servers:
            await server.cleanup()
        await http.aclose()
        await kube.close()


async def _operate(
    config: OperatorConfig,
    *,
    kube: Kube,
    outbound: Outbound,
    intake: Intake,
    ready: asyncio.Event,
    liveness: Liveness,
    stop: asyncio.Event | None,
) -> None:
    assert handlers.configure  # noqa: S101 - importing handlers registers them with kopf
    await kopf.operator(
        registry=kopf.get_default_registry(),
        standalone=True,  # no kopf peering: one process acts (leader election decides which)
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        ready_flag=ready,
        stop_flag=stop,
        memo=kopf.Memo(ctx=RuntimeContext.build(config, kube, outbound, intake, liveness)),  # runtime.context
    )


async def _elected(
    config: OperatorConfig,
    *,
    kube: Kube,
    outbound: Outbound,
    intake: Intake,
    ready: asyncio.Event,
    liveness: Liveness,
    stop: asyncio.Event,
    on_lost: Callable[[], None],
) -> None:
    """Stand by until this replica holds the Lease, then run kopf while renewing it."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)  # kopf installs its own once it runs
    # A standby is ready once it can read the Lease: it serves alerts and metrics like the leader.
    elector = Elector(
        kube, config.file.leaderElection, default_namespace=config.own_namespace, on_observed=ready.set
    )
    logger.info("leader election: Lease %s/%s as %s", elector.namespace, elector.name, elector.me)
    if not await elector.campaign(stop.is_set):
        return
    metrics.leading(True)
    kopf_stop = asyncio.Event()
    operator = asyncio.create_task(
        _operate(
            config,
            kube=kube,
            outbound=outbound,
            intake=intake,
            ready=asyncio.Event(),
            liveness=liveness,
            stop=kopf_stop,
        )
    )
    holding = asyncio.create_task(elector.hold(lambda: stop.is_set() or operator.done()))
    await asyncio.wait({operator, holding}, return_when=asyncio.FIRST_COMPLETED)
    metrics.leading(False)
    if not operator.done() and not stop.is_set():
        logger.critical("leader election lost: exiting so that only the new leader acts")
        on_lost()
    kopf_stop.set()
    await operator
    holding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holding
    await elector.release()
