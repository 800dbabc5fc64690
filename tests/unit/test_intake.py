"""The intake's answers when the API server is unreachable: 503, so Alertmanager retries and no
alert is lost. A stand-in for the API client raises the connection errors a real one raises;
the HTTP side is the real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from urllib3.exceptions import MaxRetryError

from incident_operator.controllers.intake import Intake
from incident_operator.runtime.httpserver import build_app, start_server
from incident_operator.settings.config import OperatorConfig


class Methods:
    """Stands in for an API group: every method is just its name."""

    def __getattr__(self, name: str) -> str:
        return name


class UnreachableApi:
    """Every call fails as the official client does when the API server is down."""

    core = custom = Methods()

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise MaxRetryError(pool=None, url="/api", reason=ConnectionRefusedError("refused"))

    async def list_objects(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("list_objects", *args, **kwargs)

    async def create_object(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("create_object", *args, **kwargs)

    async def patch_object(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("patch_object", *args, **kwargs)


class TokenOnlyApi(UnreachableApi):
    """The token Secret can be read; everything else fails."""

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn == "read_namespaced_secret":
            return type("Secret", (), {"data": {"token": "dG9rZW4="}})()  # base64("token")
        return await super().call(fn, *args, **kwargs)


def post(kube: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async def scenario() -> tuple[int, dict[str, Any]]:
        config = OperatorConfig(alert_token_secret=("ops", "alert-token"))
        app = build_app(asyncio.Event(), Intake(kube, config))
        runner = await start_server(app, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": "Bearer token"}
                async with session.post(
                    f"http://127.0.0.1:{port}/alertmanager", json=body, headers=headers
                ) as resp:
                    return resp.status, json.loads(await resp.text())
        finally:
            await runner.cleanup()

    return asyncio.run(scenario())


PAYLOAD = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {"status": "firing", "labels": {"alertname": "ServiceDown", "namespace": "shop"}, "fingerprint": "ab"}
    ],
}


def test_an_unreadable_token_secret_answers_503() -> None:
    status, body = post(UnreachableApi(), PAYLOAD)
    assert status == 503
    assert "API server unavailable" in body["error"]


def test_an_unwritable_incident_answers_503_so_the_alert_is_retried() -> None:
    status, body = post(TokenOnlyApi(), PAYLOAD)
    assert status == 503
    assert body["done"] == []
    assert "retry" in body["error"]
