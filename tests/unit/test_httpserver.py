"""/healthz answers while the process serves; /readyz only once kopf watches the API."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from incident_operator.runtime import httpserver


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


def test_port_in_use_is_a_clear_error() -> None:
    async def scenario(port: int) -> None:
        await httpserver.start_server(httpserver.build_app(asyncio.Event()), "127.0.0.1", port)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(scenario(port))
