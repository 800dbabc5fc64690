"""A request a person wrote wrong is a misconfiguration, not an outage (issue 21, item 2): a host
name that does not exist (NXDOMAIN) or an invalid URL makes the step Blocked (`Misconfigured`),
never Failed, so no `when: {stepFailed}` branch fires on it; a DNS timeout or server failure, a
refused connection, a timeout or a wrong answer are failures as before."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from incident_operator.adapters.outbound import Outbound, RequestFailed
from incident_operator.api.reasons import Reason
from incident_operator.controllers import actions
from incident_operator.settings.egress import EgressPolicy
from tests.unit.test_tenant_egress import _context

PUBLIC = "93.184.215.14"


def _outbound(dns_error: int | None) -> tuple[Outbound, list[httpx.Request]]:
    """An Outbound whose resolver answers a public address, or fails with getaddrinfo's `dns_error`."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})

    async def resolver(host: str, port: int) -> str:
        if dns_error is not None:
            raise socket.gaierror(dns_error, "lookup failed")
        return PUBLIC

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Outbound(client, EgressPolicy.build([], []), resolver), sent


def _failure(dns_error: int | None, url: str) -> RequestFailed:
    outbound, _ = _outbound(dns_error)
    with pytest.raises(RequestFailed) as raised:
        asyncio.run(outbound.request("GET", url, timeout=2.0, namespace="shop"))
    return raised.value


def test_a_name_that_does_not_exist_is_a_misconfiguration() -> None:
    failed = _failure(socket.EAI_NONAME, "https://typo.example.com/healthz")
    assert failed.misconfigured
    assert str(failed) == "host not found (no such name in DNS)"


@pytest.mark.parametrize("code", [socket.EAI_AGAIN, socket.EAI_FAIL])
def test_a_dns_timeout_or_server_failure_is_a_failure(code: int) -> None:
    failed = _failure(code, "https://web.example.com/healthz")
    assert not failed.misconfigured
    assert str(failed) == "cannot resolve host (gaierror)"


@pytest.mark.parametrize("url", ["http://bad host/", "ftp://example.com/x", "http://exa mple.com:99999/"])
def test_an_invalid_url_is_a_misconfiguration(url: str) -> None:
    failed = _failure(None, url)
    assert failed.misconfigured
    assert str(failed).startswith("invalid URL")


CHECK = {"httpCheck": {"url": "https://typo.example.com/healthz"}}
QUERY = {"promQuery": {"url": "https://typo.example.com", "query": "up", "expect": {"op": ">", "value": 0}}}


@pytest.mark.parametrize("step", [CHECK, QUERY], ids=["httpCheck", "promQuery"])
def test_a_check_of_a_name_that_does_not_exist_is_blocked_not_failed(step: dict[str, Any]) -> None:
    outbound, sent = _outbound(socket.EAI_NONAME)
    action = actions.http_check if "httpCheck" in step else actions.prom_query
    outcome = asyncio.run(action(_context(step, outbound)))
    assert (outcome.ok, outcome.blocked) == (False, Reason.MISCONFIGURED)
    assert "host not found (no such name in DNS)" in outcome.message
    assert sent == []


@pytest.mark.parametrize("step", [CHECK, QUERY], ids=["httpCheck", "promQuery"])
def test_a_check_whose_dns_times_out_fails_as_an_outage_may(step: dict[str, Any]) -> None:
    outbound, _ = _outbound(socket.EAI_AGAIN)
    action = actions.http_check if "httpCheck" in step else actions.prom_query
    kind = next(iter(step))
    context = _context({kind: {**step[kind], "intervalSeconds": 2}, "timeoutSeconds": 1}, outbound)
    outcome = asyncio.run(action(context))  # the next try would be past the deadline: one try
    assert not outcome.ok
    assert outcome.blocked is None


def test_a_webhook_whose_name_does_not_exist_is_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    async def secret_url(ctx: Any, name: str, key: str) -> str:
        return "https://hooks.typo.example/x"

    monkeypatch.setattr(actions, "read_secret_url", secret_url)
    outbound, sent = _outbound(socket.EAI_NONAME)
    step = {"notify": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}, "message": "m"}}
    outcome = asyncio.run(actions.notify(_context(step, outbound)))
    assert (outcome.ok, outcome.blocked) == (False, Reason.MISCONFIGURED)
    assert sent == []
