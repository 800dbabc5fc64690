"""The egress policy, and the outbound client that applies it to the address actually connected to."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from incident_operator.adapters.outbound import EgressDenied, Outbound, Reply, RequestFailed
from incident_operator.settings.egress import EgressError, EgressPolicy

DEFAULT = EgressPolicy.build(api_server=[("10.96.0.1", 443), ("192.0.2.10", 6443)])


@pytest.mark.parametrize(
    ("host", "ip", "port"),
    [
        ("169.254.169.254", "169.254.169.254", 80),  # cloud metadata
        ("metadata.google.internal", "169.254.169.254", 80),  # a name for it
        ("fe80::1", "fe80::1", 80),
        ("fd00:ec2::254", "fd00:ec2::254", 80),
        ("127.0.0.1", "127.0.0.1", 8080),
        ("localhost", "::1", 8080),
        ("evil.example", "127.0.0.2", 80),  # DNS pointing at loopback
        ("evil.example", "::ffff:169.254.169.254", 80),  # IPv4-mapped metadata
        ("0.0.0.0", "0.0.0.0", 80),  # noqa: S104 - an address to refuse, not to bind
        ("kubernetes.default.svc", "10.96.0.1", 443),  # the API server
        ("192.0.2.10", "192.0.2.10", 6443),
    ],
)
def test_denied_by_default(host: str, ip: str, port: int) -> None:
    assert DEFAULT.denied(host, ip, port)


def test_ordinary_addresses_are_allowed_by_default() -> None:
    assert not DEFAULT.denied("hooks.slack.com", "203.0.113.7", 443)
    assert not DEFAULT.denied("web.shop.svc", "10.0.3.4", 8080)
    assert not DEFAULT.denied("192.0.2.10", "192.0.2.10", 443)  # the API server's host, another port


def test_a_cidr_in_allow_lifts_loopback_but_never_the_api_server() -> None:
    policy = EgressPolicy.build(allow=["127.0.0.0/8"], api_server=[("127.0.0.1", 6443)])
    assert not policy.denied("127.0.0.1", "127.0.0.1", 8080)
    assert not policy.denied("localhost", "127.0.0.1", 8080)
    assert policy.denied("localhost", "127.0.0.1", 6443)


def test_once_allow_is_set_only_what_it_lists_is_reachable() -> None:
    policy = EgressPolicy.build(allow=["hooks.slack.com", "10.0.0.0/8"])
    assert not policy.denied("hooks.slack.com", "203.0.113.7", 443)
    assert not policy.denied("web.shop.svc", "10.0.3.4", 8080)
    assert policy.denied("example.com", "203.0.113.8", 443)


def test_a_host_in_allow_cannot_reach_a_guarded_address() -> None:
    policy = EgressPolicy.build(allow=["hooks.example.com"])
    assert policy.denied("hooks.example.com", "169.254.169.254", 443)  # rebinding to metadata


def test_deny_wins_over_allow() -> None:
    policy = EgressPolicy.build(allow=["10.0.0.0/8"], deny=["10.1.0.0/16", "internal.example"])
    assert policy.denied("db", "10.1.2.3", 5432)
    assert policy.denied("internal.example", "10.2.0.1", 443)
    assert not policy.denied("other", "10.2.0.1", 443)


def test_https_is_required_where_asked_unless_allowed_explicitly() -> None:
    assert DEFAULT.denied("hooks.example.com", "203.0.113.7", 80, scheme="http", require_https=True)
    assert not DEFAULT.denied("hooks.example.com", "203.0.113.7", 443, scheme="https", require_https=True)
    policy = EgressPolicy.build(allow=["hooks.example.com"])
    assert not policy.denied("hooks.example.com", "203.0.113.7", 80, scheme="http", require_https=True)


@pytest.mark.parametrize("entry", ["", "http://x", "a b", "*.example.com", "host:80"])
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(EgressError):
        EgressPolicy.build(allow=[entry])


def _call(outbound: Outbound, url: str) -> Reply:
    async def go() -> Reply:
        return await outbound.request("GET", url, timeout=2.0)

    return asyncio.run(go())


def test_the_resolved_address_is_checked_and_connected_to() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"x" * 100_000)

    async def resolve_to_public(host: str, port: int) -> str:
        return "203.0.113.9"

    async def resolve_to_metadata(host: str, port: int) -> str:
        return "169.254.169.254"

    transport = httpx.MockTransport(handler)
    client = httpx.AsyncClient(transport=transport)
    reply = _call(Outbound(client, DEFAULT, resolve_to_public), "https://hooks.example.com/x")
    assert reply.status_code == 200
    assert len(reply.body) == 65_536  # the body is read up to a cap
    assert seen[0].url.host == "203.0.113.9"  # connected to the address that was checked
    assert seen[0].headers["Host"] == "hooks.example.com"
    with pytest.raises(EgressDenied, match=r"^egress denied: hooks.example.com$"):
        _call(Outbound(client, DEFAULT, resolve_to_metadata), "https://hooks.example.com/x")
    assert len(seen) == 1  # the denied request never left


@pytest.mark.parametrize("url", ["ftp://example.com/", "not a url", "http:///nohost"])
def test_urls_that_are_not_http_fail_with_a_reason(url: str) -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with pytest.raises(RequestFailed, match="invalid URL"):
        _call(Outbound(client, DEFAULT), url)
