"""The egress policy, and the outbound client that applies it to the address actually connected to."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable

import httpx
import pytest

from incident_operator.adapters.apiendpoints import ApiServerEndpoints, fixed_api_server
from incident_operator.adapters.outbound import EgressDenied, Outbound, Reply, RequestFailed, http_client
from incident_operator.settings.egress import (
    METADATA,
    EgressError,
    EgressPolicy,
    embedded_ipv4,
)

# The API server: its Service address and two endpoints (control-plane nodes), every port.
API_SERVER = ("10.96.0.1", "192.0.2.10", "2001:db8::10")
DEFAULT = EgressPolicy.build(api_server=API_SERVER)


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
        # the API server, on every port of every address it listens on
        ("kubernetes.default.svc", "10.96.0.1", 443),
        ("10.96.0.1", "10.96.0.1", 6443),
        ("10.96.0.1", "10.96.0.1", 80),
        ("192.0.2.10", "192.0.2.10", 6443),
        ("192.0.2.10", "192.0.2.10", 443),
        ("192.0.2.10", "192.0.2.10", 10250),  # the kubelet beside it
        ("192.0.2.10", "192.0.2.10", 2379),  # etcd beside it
        ("cp.example", "::ffff:192.0.2.10", 6443),
        ("cp6.example", "2001:db8::10", 6443),
        ("cp6.example", "2001:db8::10", 22),
    ],
)
def test_denied_by_default(host: str, ip: str, port: int) -> None:
    assert DEFAULT.denied(host, ip, port)


@pytest.mark.parametrize(("ip", "who"), METADATA)
def test_every_cloud_metadata_address_is_denied_whatever_a_wide_cidr_allows(ip: str, who: str) -> None:
    assert DEFAULT.denied("metadata.example", ip, 80), who
    wide = EgressPolicy.build(allow=["0.0.0.0/0", "::/0", "100.64.0.0/10", "169.254.0.0/16", "fd00::/8"])
    assert wide.denied("metadata.example", ip, 80), who
    assert wide.denied("metadata.example", ip, 443), who
    exact = EgressPolicy.build(allow=[ip])  # only naming the very address lifts it
    assert not exact.denied("metadata.example", ip, 80), who


def test_the_metadata_list_holds_the_known_services() -> None:
    listed = {ipaddress.ip_address(ip) for ip, _ in METADATA}
    for ip in (
        "169.254.169.254",
        "fd00:ec2::254",
        "100.100.100.200",  # Alibaba
        "168.63.129.16",  # Azure WireServer
        "169.254.170.2",  # ECS credentials
        "fd20:ce::254",  # GCP over IPv6
    ):
        assert ipaddress.ip_address(ip) in listed


def _nat64(v4: str) -> str:
    return str(
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(ipaddress.IPv4Address(v4)))
    )


def _nat64_local(v4: str, length: int) -> str:
    """An RFC 6052 address under 64:ff9b:1::/48 with prefix length `length` (bits 64-71 are zero)."""
    bits = f"{int(ipaddress.IPv6Address('64:ff9b:1::')):0128b}"
    bits = bits[:64] + bits[72:]  # the u octet aside
    start = length if length <= 64 else length - 8
    bits = bits[:start] + f"{int(ipaddress.IPv4Address(v4)):032b}" + bits[start + 32 :]
    return str(ipaddress.IPv6Address(int(bits[:64] + "0" * 8 + bits[64:], 2)))


def _sixtofour(v4: str) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(v4)) << 80) | 1))


def _compatible(v4: str) -> str:
    return str(ipaddress.IPv6Address(int(ipaddress.IPv4Address(v4))))


def _translated(v4: str) -> str:
    return str(ipaddress.IPv6Address((0xFFFF << 32) | int(ipaddress.IPv4Address(v4))))


def _teredo(v4: str) -> str:
    client = int(ipaddress.IPv4Address(v4)) ^ 0xFFFFFFFF
    server = int(ipaddress.IPv4Address("198.51.100.1"))
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | client))


EMBEDDINGS = {
    "nat64": _nat64,
    "nat64-local-48": lambda v4: _nat64_local(v4, 48),
    "nat64-local-56": lambda v4: _nat64_local(v4, 56),
    "nat64-local-64": lambda v4: _nat64_local(v4, 64),
    "nat64-local-96": lambda v4: _nat64_local(v4, 96),
    "6to4": _sixtofour,
    "compatible": _compatible,
    "translated": _translated,
    "teredo": _teredo,
}
DENIED_IPV4 = {
    "metadata": ("169.254.169.254", 80),
    "alibaba": ("100.100.100.200", 80),
    "wireserver": ("168.63.129.16", 32526),
    "loopback": ("127.0.0.1", 8080),
    "link-local": ("169.254.1.1", 80),
    "api-service": ("10.96.0.1", 443),
    "api-endpoint": ("192.0.2.10", 10250),
}


@pytest.mark.parametrize("embedding", sorted(EMBEDDINGS))
@pytest.mark.parametrize("what", sorted(DENIED_IPV4))
def test_a_denied_ipv4_embedded_in_ipv6_is_denied(embedding: str, what: str) -> None:
    v4, port = DENIED_IPV4[what]
    v6 = EMBEDDINGS[embedding](v4)
    assert ipaddress.IPv4Address(v4) in embedded_ipv4(ipaddress.IPv6Address(v6)), v6
    assert DEFAULT.denied("evil.example", v6, port), v6
    assert DEFAULT.denied(v6, v6, port), v6


@pytest.mark.parametrize("embedding", sorted(EMBEDDINGS))
def test_a_public_ipv4_embedded_in_ipv6_is_allowed(embedding: str) -> None:
    v6 = EMBEDDINGS[embedding]("203.0.113.7")
    assert not DEFAULT.denied("hooks.example.com", v6, 443), v6


def test_an_embedded_ipv4_is_judged_by_the_denying_rules_not_by_allow() -> None:
    policy = EgressPolicy.build(deny=["10.42.0.0/16"], api_server=API_SERVER)
    assert policy.denied("db.example", _nat64("10.42.0.5"), 5432)  # deny covers the embedded IPv4
    assert policy.denied("db.example", _sixtofour("10.42.0.5"), 5432)
    opened = EgressPolicy.build(allow=["127.0.0.0/8", "::/96"])
    assert not opened.denied("local", _compatible("127.0.0.1"), 8080)  # a CIDR lifts loopback, as for IPv4


@pytest.mark.parametrize(
    ("host", "ip", "port"),
    [
        ("hooks.slack.com", "203.0.113.7", 443),
        ("web.shop.svc", "10.0.3.4", 8080),
        ("web6.shop.svc", "2001:db8::20", 8080),
        ("alibaba-neighbour", "100.100.100.201", 80),  # CGNAT space, not the metadata address
        ("azure-neighbour", "168.63.129.17", 443),
        ("ipv6.example", "2606:4700::1111", 443),
        ("nat64.example", "64:ff9b::cb00:7107", 443),  # 203.0.113.7 through NAT64
    ],
)
def test_ordinary_addresses_are_allowed_by_default(host: str, ip: str, port: int) -> None:
    assert not DEFAULT.denied(host, ip, port)


def test_a_cidr_in_allow_lifts_loopback_but_never_the_api_server() -> None:
    policy = EgressPolicy.build(
        allow=["127.0.0.0/8", "10.0.0.0/8"], api_server=["10.96.0.1"], api_server_ports=[("127.0.0.1", 6443)]
    )
    assert not policy.denied("127.0.0.1", "127.0.0.1", 8080)
    assert not policy.denied("localhost", "127.0.0.1", 8080)
    assert policy.denied("localhost", "127.0.0.1", 6443)  # a loopback kubeconfig server: its port
    assert policy.denied("kubernetes", "10.96.0.1", 8080)  # the Service address: every port
    assert not policy.denied("web", "10.96.0.2", 8080)


def test_more_api_server_endpoints_join_the_policy() -> None:
    assert not DEFAULT.denied("cp2", "198.51.100.20", 8443)
    policy = DEFAULT.with_api_server(["198.51.100.20", "2001:db8::20"])
    for port in (443, 6443, 8443, 10250):
        assert policy.denied("cp2", "198.51.100.20", port)
        assert policy.denied("cp2", "2001:db8::20", port)
        assert policy.denied("cp2", _nat64("198.51.100.20"), port)
    assert DEFAULT.with_api_server(["10.96.0.1"]) is DEFAULT


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


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"])
def test_the_client_ignores_proxies_in_the_environment(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "http://192.0.2.99:3128")
    client = http_client()
    try:
        assert client.trust_env is False
        assert client._mounts == {}  # no proxy transport for any URL
        assert not client.follow_redirects
    finally:
        asyncio.run(client.aclose())


class FakeEndpointsKube:
    def __init__(self) -> None:
        self.answers: list[list[str] | Exception] = []
        self.calls = 0

    async def api_server_addresses(self) -> list[str]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_api_server_endpoints_are_read_once_per_ttl_and_kept_when_unreadable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = FakeEndpointsKube()
    now = [0.0]
    endpoints = ApiServerEndpoints(kube, ttl=60, clock=lambda: now[0])
    kube.answers = [
        ["192.0.2.10"],
        PermissionError("forbidden"),
        PermissionError("forbidden"),
        ["192.0.2.11"],
    ]

    async def go() -> list[frozenset[str]]:
        seen = [await endpoints.current(), await endpoints.current()]
        for _ in range(3):
            now[0] += 61
            seen.append(await endpoints.current())
        return seen

    with caplog.at_level(logging.INFO):
        seen = asyncio.run(go())
    assert kube.calls == 4  # not once per check
    assert seen == [{"192.0.2.10"}] * 4 + [{"192.0.2.11"}]  # the last ones read stay denied
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # logged once, not on every failed read
    assert "EndpointSlices" in warnings[0].getMessage()


def test_the_outbound_client_denies_the_endpoints_as_they_are_now() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    current: list[str] = []

    async def api_servers() -> Iterable[str]:
        return list(current)

    outbound = Outbound(client, EgressPolicy.build(), api_servers=api_servers)
    assert _call(outbound, "https://198.51.100.20:8443/x").status_code == 200
    current.append("198.51.100.20")
    for url in (
        "https://198.51.100.20:8443/x",
        "http://198.51.100.20:10250/pods",
        "http://[64:ff9b::c633:6414]/",
    ):
        with pytest.raises(EgressDenied):
            _call(outbound, url)
    assert len(sent) == 1


def test_the_fixed_api_server_addresses() -> None:
    every_port, one_port = fixed_api_server(
        "https://127.0.0.1:6443", {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    )
    assert every_port == ["10.96.0.1"]
    assert one_port == [("127.0.0.1", 6443)]  # a development cluster on loopback: its port only
    every_port, one_port = fixed_api_server("https://192.0.2.10:6443", {})
    assert (every_port, one_port) == (["192.0.2.10"], [])
