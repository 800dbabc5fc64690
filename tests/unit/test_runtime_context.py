"""The handlers' shared state lives in one RuntimeContext that every per-object memo refers to."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
import kopf
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from incident_operator.adapters.kube import Kube, api_client
from incident_operator.adapters.outbound import Outbound
from incident_operator.controllers.intake import Intake
from incident_operator.controllers.supervisor import LiveBody
from incident_operator.runtime import handlers, runner
from incident_operator.runtime.context import RuntimeContext, context
from incident_operator.settings.config import OperatorConfig
from incident_operator.settings.egress import EgressPolicy
from tests.polling import until


def test_a_supervisor_built_through_one_objects_memo_is_the_one_every_other_memo_sees() -> None:
    # kopf hands each watched object a shallow copy of the operator's memo (inventory.recall)
    ctx = RuntimeContext.__new__(RuntimeContext)  # no API client needed: the factory is not called
    ctx.supervisor = None
    root = kopf.Memo(ctx=ctx)
    incident_a, incident_b, playbook = copy.copy(root), copy.copy(root), copy.copy(root)
    empty: Any = {}
    built = handlers._supervisor(incident_a, empty)
    assert handlers._supervisor(incident_b, empty) is built
    assert context(playbook).supervisor is built  # a Playbook change wakes the same loops
    assert context(root).supervisor is built  # and the cleanup stops them


def test_configure_twice_starts_each_task_once_and_the_way_out_cancels_them_and_closes_the_lookups() -> None:
    """kopf runs a startup handler again after it raised: what `configure` started stays as it is.
    The loops' Playbook listing goes through the lookups' client; the cleanup stops every task by
    cancelling it (so /healthz stays 200) and closes that client."""

    configure = cast(Callable[..., Awaitable[None]], handlers.configure)  # kopf's decorator hides it
    flush = cast(Callable[..., Awaitable[None]], handlers.flush_run_records)

    async def scenario() -> dict[str, Any]:
        asked: list[str] = []

        async def api(request: web.Request) -> web.StreamResponse:
            asked.append(request.path)
            if request.query.get("watch") in ("1", "true", "True"):
                await asyncio.Event().wait()  # a watch with nothing to say, until cancelled
            return web.json_response({"items": [], "metadata": {"resourceVersion": "1"}})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", api)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        config = OperatorConfig(namespaces=("team",))
        kube = Kube(api_client(client.Configuration(host=f"http://127.0.0.1:{runner.addresses[0][1]}")))
        async with httpx.AsyncClient() as http:
            outbound = Outbound(http, EgressPolicy.build(api_server=("127.0.0.1",)))
            ctx = RuntimeContext.build(config, kube, outbound, Intake(kube, config))
            memo = kopf.Memo(ctx=ctx)
            try:
                await configure(settings=kopf.OperatorSettings(), memo=memo, playbooks_by_namespace={})
                first = (ctx.lookups, ctx.run_records_task, ctx.events_task, ctx.incidents_task)
                await configure(settings=kopf.OperatorSettings(), memo=memo, playbooks_by_namespace={})
                again = (ctx.lookups, ctx.run_records_task, ctx.events_task, ctx.incidents_task)
                lookups = ctx.lookups
                assert lookups is not None
                listed: list[str] = []
                real = lookups.list_objects

                async def through_lookups(plural: str, namespace: str | None, **query: Any) -> Any:
                    listed.append(f"{plural}/{namespace}")
                    return await real(plural, namespace, **query)

                lookups.list_objects = through_lookups  # type: ignore[method-assign]
                assert ctx.supervisor is not None
                body = {"metadata": {"name": "i", "namespace": "team", "uid": "u1"}, "spec": {}}
                loop = ctx.supervisor.factory("u1", LiveBody(body))
                await loop.list_playbooks("team")
                tasks = [t for t in again[1:] if t is not None]
                await flush(memo=memo)
                return {
                    "same": all(a is b for a, b in zip(first, again, strict=True)),
                    "separate": lookups is not kube and lookups.api is not kube.api,
                    "listed": listed,
                    "cancelled": all(t.cancelled() for t in tasks),
                    "healthy": ctx.liveness.failed is None,
                    "lookups_after": ctx.lookups,
                    "lookups_closed": lookups.api.rest_client.pool_manager.closed,
                }
            finally:
                await kube.close()
                await runner.cleanup()

    seen = asyncio.run(scenario())
    assert seen["same"]
    assert seen["separate"]
    assert seen["listed"] == ["playbooks/team"]
    assert seen["cancelled"]
    assert seen["healthy"]
    assert seen["lookups_after"] is None
    assert seen["lookups_closed"]


def test_memory_is_trimmed_every_interval_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trim after a burst takes tens of milliseconds: on the event loop it would hold every
    incident that long. It runs in a thread, every TRIM_INTERVAL_S."""
    threads: list[int] = []

    class Libc:
        def malloc_trim(self, pad: int) -> int:
            threads.append(threading.get_ident())
            return 1

    monkeypatch.setattr(runner.ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr(runner, "TRIM_INTERVAL_S", 0.01)

    async def scenario() -> int:
        trimming = asyncio.create_task(runner._trim_memory())
        try:
            await until(lambda: len(threads) >= 3, timeout=5, what="three trims")
        finally:
            trimming.cancel()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(threads) >= 3
    assert loop_thread not in threads
