"""The operator's API client against the synchronous one in its old thread pool, on loopback.

`python hack/client_bench.py [CALLS] [ROUNDS]` (with the repository's `operator` on PYTHONPATH)
starts a small HTTP server on 127.0.0.1 in a child process that answers like the API server
(a ConfigMap), then, in a fresh process per client and round, sends CALLS calls (half GET, half
PATCH), 16 at once, after a warm-up of as many: the old way (the official `kubernetes` client, each
call in a 16-thread pool) and the new one (`adapters.kube.Kube` on `kubernetes_asyncio`). It prints
wall time, calls per second, p50 and p99 latency, CPU seconds, RSS and threads of each run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CONCURRENCY = 16
CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cm", "namespace": "ns", "labels": {"app": "web"}},
    "data": {"key": "v" * 200},
}


def serve(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(CONFIGMAP)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def measure(call: Callable[[int], Awaitable[Any]], calls: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    free = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with free:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return time.perf_counter() - started, sorted(latencies)


async def client_run(which: str, port: int, calls: int) -> str:
    host = f"http://127.0.0.1:{port}"
    call: Callable[[int], Awaitable[Any]]
    if which == "threads":
        from kubernetes import client as sync_client

        configuration = sync_client.Configuration()
        configuration.host = host
        core = sync_client.CoreV1Api(sync_client.ApiClient(configuration))
        pool = ThreadPoolExecutor(max_workers=CONCURRENCY)
        loop = asyncio.get_running_loop()

        async def call_in_thread(i: int) -> Any:
            if i % 2:
                patch = functools.partial(
                    core.patch_namespaced_config_map, "cm", "ns", {"data": {"i": str(i)}}, _request_timeout=30
                )
                return await loop.run_in_executor(pool, patch)
            read = functools.partial(core.read_namespaced_config_map, "cm", "ns", _request_timeout=30)
            return await loop.run_in_executor(pool, read)

        call = call_in_thread
    else:
        # the adapter first (it makes the client's models load on first use), then the client
        from incident_operator.adapters.kube import KUBE_CONNECTIONS, Kube, api_client

        configuration = sys.modules["kubernetes_asyncio.client"].Configuration(host=host)
        configuration.connection_pool_maxsize = KUBE_CONNECTIONS
        kube = Kube(api_client(configuration))

        async def call_async(i: int) -> Any:
            if i % 2:
                body = {"data": {"i": str(i)}}
                return await kube.call(kube.core.patch_namespaced_config_map, "cm", "ns", body)
            return await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")

        call = call_async
    await measure(call, calls)  # warm-up: connections, imports, caches
    wall, latencies = await measure(call, calls)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    threads = len(os.listdir("/proc/self/task"))
    if which != "threads":
        await kube.close()
    return (
        f"{which:8} {calls} calls: {wall:5.2f} s, {calls / wall:5.0f}/s, "
        f"p50 {1000 * latencies[len(latencies) // 2]:5.1f} ms, "
        f"p99 {1000 * latencies[int(len(latencies) * 0.99)]:5.1f} ms, "
        f"CPU {usage.ru_utime + usage.ru_stime:4.1f} s, RSS {rss:3.0f} MiB, {threads} threads"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--client"]:
        print(asyncio.run(client_run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))), flush=True)
        return
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for _ in range(rounds):
            for which in ("threads", "asyncio"):
                subprocess.run(
                    [sys.executable, __file__, "--client", which, str(port), str(calls)], check=True
                )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
