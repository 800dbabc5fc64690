"""The egress policy: which addresses the operator's outgoing requests may reach (pure).

Every outgoing request (`httpCheck`, `notify`, notification channels) is checked against the
address it will actually connect to, after name resolution (see `outbound`), so a hostname that
resolves to a forbidden address is refused too. The rules, in order:

1. The API server's own addresses (host and port) are always denied.
2. Addresses in `deny` (CIDRs) and hosts in `deny` are denied.
3. Link-local (169.254.0.0/16, fe80::/10: the cloud metadata services live there), loopback,
   unspecified and IPv6 metadata addresses are denied unless a CIDR in `allow` covers them
   (a hostname in `allow` never lifts this: DNS could point it anywhere).
4. Once `allow` is non-empty, everything else it does not list (CIDR or exact host) is denied.
5. Where https is required (notification channels), plain http needs an explicit allow entry.

A denial tells the caller only `egress denied: <host>`: no status code, no body, no timing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_GUARDED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack metadata)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS IPv6 metadata
        "127.0.0.0/8",  # loopback
        "::1/128",
        "0.0.0.0/8",  # "this host"
        "::/128",
    )
)


class EgressError(ValueError):
    """An entry of `allow`/`deny` is neither a CIDR nor a host name."""


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return None


def _host(entry: str) -> str:
    host = entry.strip().lower().rstrip(".")
    if not host or any(c in host for c in "/ :@*?#") or host.startswith("-"):
        raise EgressError(f"egress entry {entry!r} is neither a CIDR nor a host name")
    return host


def _split(entries: Iterable[str]) -> tuple[tuple[Network, ...], frozenset[str]]:
    """CIDRs and host names of an allow or deny list."""
    networks: list[Network] = []
    hosts: set[str] = set()
    for entry in entries:
        net = _network(entry)
        if net is None:
            hosts.add(_host(entry))
        else:
            networks.append(net)
    return tuple(networks), frozenset(hosts)


def _normalise(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class EgressPolicy:
    allow_networks: tuple[Network, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    deny_networks: tuple[Network, ...] = ()
    deny_hosts: frozenset[str] = frozenset()
    api_server: frozenset[tuple[Address, int]] = field(default_factory=frozenset)

    @classmethod
    def build(
        cls,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        api_server: Iterable[tuple[str, int]] = (),
    ) -> EgressPolicy:
        allow_networks, allow_hosts = _split(allow)
        deny_networks, deny_hosts = _split(deny)
        endpoints = frozenset((_normalise(ipaddress.ip_address(ip)), port) for ip, port in api_server)
        return cls(
            tuple(allow_networks),
            frozenset(allow_hosts),
            tuple(deny_networks),
            frozenset(deny_hosts),
            endpoints,
        )

    @property
    def restricted(self) -> bool:
        """True once `allow` lists anything: then only what it lists is reachable."""
        return bool(self.allow_networks or self.allow_hosts)

    def denied(
        self, host: str, ip: str, port: int, *, scheme: str = "https", require_https: bool = False
    ) -> bool:
        """True if a request to `host` (resolved to `ip`) on `port` must not be made."""
        address = _normalise(ipaddress.ip_address(ip))
        name = host.lower().rstrip(".")
        if (address, port) in self.api_server:
            return True
        if name in self.deny_hosts or any(address in net for net in self.deny_networks):
            return True
        by_network = any(address in net for net in self.allow_networks)
        if any(address in net for net in ALWAYS_GUARDED) and not by_network:
            return True
        explicitly = by_network or name in self.allow_hosts
        if self.restricted and not explicitly:
            return True
        return require_https and scheme != "https" and not explicitly
