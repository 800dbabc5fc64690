"""The egress policy: which addresses the operator's outgoing requests may reach (pure).

Every outgoing request (`httpCheck`, `notify`, notification channels, mail) is checked against the
address it will actually connect to, after name resolution (see `outbound`), so a hostname that
resolves to a forbidden address is refused too. An IPv6 address that carries an IPv4 address
(IPv4-mapped `::ffff:0:0/96` and IPv4-translated `::ffff:0:0:0/96`, IPv4-compatible `::/96`,
NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) is checked as
that IPv4 address too: a translator or relay on the way would deliver it there. The rules, in order:

1. The API server's addresses are always denied, on every port (`api_server`: its Service address,
   every endpoint of the `kubernetes` EndpointSlices, the kubeconfig's server; `api_server_ports`:
   a loopback kubeconfig server, denied on its own port only, as loopback is guarded anyway).
2. The cloud metadata addresses (`METADATA`) are always denied, unless `allow` names that very
   address (a wider CIDR such as `100.64.0.0/10` or `0.0.0.0/0` never lifts them).
3. Addresses in `deny` (CIDRs) and hosts in `deny` are denied.
4. Link-local (169.254.0.0/16, fe80::/10), loopback and unspecified addresses are denied unless a
   CIDR in `allow` covers them (a hostname in `allow` never lifts this: DNS could point it anywhere).
5. Once `allow` is non-empty, everything else it does not list (CIDR or exact host) is denied.
6. Where https is required (notification channels), plain http needs an explicit allow entry.

Rules 1-4 apply to the connected address and to every IPv4 address it carries; 5 and 6 to the
connected address. A denial tells the caller only `egress denied: <host>`: no status code, no
body, no timing.

Playbook requests (`httpCheck`, `promQuery`, a `notify` step's webhook, the health check after the
steps) pass a second, per-namespace policy on top (`TenantEgress`; channels of the operator's config
do not): a tenant must not reach other tenants' private services through the operator. From
namespace NS, an address that is not public (`is_public`: RFC 1918, CGNAT, ULA, loopback,
link-local, multicast, anything not `is_global`, and any IPv6 address carrying such an IPv4
address) is reachable only

a. through a Service of NS itself, named `NAME.NS.svc` or `NAME.NS.svc.<clusterDomain>` (exact
   labels, case and a trailing dot aside): decided by the name, and then only if that Service
   exists, is not an ExternalName (which would point anywhere, another tenant's Service included)
   and the address connected to is its ClusterIP, or for a headless Service an address of its
   controller-managed EndpointSlices (`ServiceFacts`, read by the caller); or
b. where the config grants it to NS (`egress.namespaces`: CIDRs or exact hosts; `*` for every
   namespace, for single-tenant clusters).

The name route admits only the ports the Service declares (its `port`s; for a headless one, the
ports of those EndpointSlices), so a host-network pod behind a headless Service does not open its
node's other ports. Addresses in `cluster_networks` (config `egress.clusterNetworks`: the cluster's
own pod, Service and node ranges) are never public, whatever `is_global` says of them (IPv6
clusters, IPv4 clusters that use public ranges privately).

Public addresses are judged by the global rules alone. Nothing here ever lifts a global rule.

Names are resolved as absolute names (`lookup_name`), never through the resolver's search list: in a
pod (`ndots:5`) `db.internal` would first be asked as `db.internal.svc.cluster.local`, a Service `db`
of a namespace `internal`, which whoever may create that namespace could answer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA: tuple[tuple[str, str], ...] = (
    ("169.254.169.254", "AWS, GCP, Azure IMDS, OpenStack, Oracle Cloud, DigitalOcean, Hetzner, Linode"),
    ("fd00:ec2::254", "AWS instance metadata over IPv6"),
    ("169.254.170.2", "AWS ECS task metadata and credentials"),
    ("169.254.170.23", "AWS EKS Pod Identity Agent (credentials)"),
    ("fd00:ec2::23", "AWS EKS Pod Identity Agent over IPv6"),
    ("fd20:ce::254", "GCP metadata over IPv6"),
    ("100.100.100.200", "Alibaba Cloud ECS metadata"),
    ("168.63.129.16", "Azure WireServer: the VM agent's configuration (in AKS, node bootstrap secrets)"),
    ("192.0.0.192", "Oracle Cloud Classic and Cloud@Customer metadata"),
    ("169.254.42.42", "Scaleway metadata"),
    ("fd00:42::42", "Scaleway metadata over IPv6"),
    ("fd00:a9fe:a9fe::1", "Linode metadata over IPv6"),
    ("169.254.0.23", "Tencent Cloud metadata"),
)
"""The cloud metadata services (and their kin that hand out credentials), by address."""

METADATA_ADDRESSES: frozenset[Address] = frozenset(ipaddress.ip_address(ip) for ip, _ in METADATA)

ALWAYS_GUARDED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack metadata)
        "fe80::/10",  # IPv6 link-local
        "127.0.0.0/8",  # loopback
        "::1/128",
        "0.0.0.0/8",  # "this host"
        "::/128",
    )
)

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: with /96 only
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: any RFC 6052 length from /48
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible (deprecated), :: and ::1 aside
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765)
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def _rfc6052(value: int, length: int) -> ipaddress.IPv4Address:
    """The IPv4 address an RFC 6052 address of prefix length `length` carries (bits 64-71, the
    "u" octet, are never part of it)."""
    bits = f"{value:0128b}"
    bits = bits[:64] + bits[72:]
    start = length if length <= 64 else length - 8
    return ipaddress.IPv4Address(int(bits[start : start + 32], 2))


def embedded_ipv4(address: Address) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 address carries, by the known embeddings (none for IPv4)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    value = int(address)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _TRANSLATED or address in _NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:  # the prefix length is the translator's secret: every one counts
        guesses = (_rfc6052(value, length) for length in (48, 56, 64, 96))
        # a guess in 0.0.0.0/8 is the zero padding of another length (and no translator's target)
        found += [v4 for v4 in guesses if v4 not in _THIS_NETWORK]
    if address in _COMPATIBLE and value > 1:
        found.append(ipaddress.IPv4Address(value))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found += address.teredo  # (server, client)
    return tuple(dict.fromkeys(found))


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


def _address(ip: str) -> Address:
    """The address `ip` names, an IPv6 zone (`%eth0`) dropped: the zone does not change which
    host a global or ULA address reaches, and a scoped address never equals its plain form."""
    return _normalise(ipaddress.ip_address(ip.split("%", 1)[0]))


@dataclass(frozen=True)
class EgressPolicy:
    allow_networks: tuple[Network, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    deny_networks: tuple[Network, ...] = ()
    deny_hosts: frozenset[str] = frozenset()
    api_server: frozenset[Address] = field(default_factory=frozenset)
    """The API server's addresses: denied on every port."""
    api_server_ports: frozenset[tuple[Address, int]] = field(default_factory=frozenset)
    """(address, port) of a loopback kubeconfig server: denied on that port."""

    @classmethod
    def build(
        cls,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        api_server: Iterable[str] = (),
        api_server_ports: Iterable[tuple[str, int]] = (),
    ) -> EgressPolicy:
        allow_networks, allow_hosts = _split(allow)
        deny_networks, deny_hosts = _split(deny)
        return cls(
            tuple(allow_networks),
            frozenset(allow_hosts),
            tuple(deny_networks),
            frozenset(deny_hosts),
            frozenset(_address(ip) for ip in api_server),
            frozenset((_address(ip), port) for ip, port in api_server_ports),
        )

    def with_api_server(self, addresses: Iterable[str]) -> EgressPolicy:
        """This policy, also denying `addresses` (more API server endpoints) on every port."""
        more = frozenset(_address(ip) for ip in addresses)
        if more <= self.api_server:
            return self
        return dataclasses.replace(self, api_server=self.api_server | more)

    @property
    def restricted(self) -> bool:
        """True once `allow` lists anything: then only what it lists is reachable."""
        return bool(self.allow_networks or self.allow_hosts)

    def _forbidden(self, name: str, address: Address, port: int) -> bool:
        """Rules 1-4: the API server, metadata, `deny`, the guarded ranges."""
        if address in self.api_server or (address, port) in self.api_server_ports:
            return True
        if address in METADATA_ADDRESSES and not any(
            net.num_addresses == 1 and address in net for net in self.allow_networks
        ):
            return True
        if name in self.deny_hosts or any(address in net for net in self.deny_networks):
            return True
        by_network = any(address in net for net in self.allow_networks)
        return any(address in net for net in ALWAYS_GUARDED) and not by_network

    def denied(
        self, host: str, ip: str, port: int, *, scheme: str = "https", require_https: bool = False
    ) -> bool:
        """True if a request to `host` (resolved to `ip`) on `port` must not be made."""
        address = _address(ip)
        name = host.lower().rstrip(".")
        if any(self._forbidden(name, a, port) for a in (address, *embedded_ipv4(address))):
            return True
        explicitly = any(address in net for net in self.allow_networks) or name in self.allow_hosts
        if self.restricted and not explicitly:
            return True
        return require_https and scheme != "https" and not explicitly


NOT_PUBLIC: tuple[Network, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # CGNAT (RFC 6598), Alibaba's metadata among it
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "fc00::/7",  # unique local (ULA)
        "fe80::/10",
        "fec0::/10",  # site-local (deprecated, still routed somewhere)
        "ff00::/8",  # multicast
        "::1/128",
        "::/128",
    )
)
"""Never public, whatever `is_global` of the running Python says (it changed across versions)."""


def _public_one(address: Address) -> bool:
    return address.is_global and not any(address in net for net in NOT_PUBLIC)


def is_public(ip: str, private: Iterable[Network] = ()) -> bool:
    """True if `ip` and every IPv4 address it carries (see `embedded_ipv4`) are public: not in
    `NOT_PUBLIC`, global to Python, and in none of the `private` networks."""
    address = _address(ip)
    ranges = tuple(private)
    return all(
        _public_one(a) and not any(a in net for net in ranges) for a in (address, *embedded_ipv4(address))
    )


def lookup_name(host: str, cluster_domain: str = "cluster.local") -> str:
    """The name to hand the resolver for `host`, so that the resolver's search list never applies:
    an address literal as it is; `NAME.NS.svc` (with or without a trailing dot) as
    `NAME.NS.svc.<cluster_domain>.`; any other name with a dot made absolute (`db.internal` →
    `db.internal.`). A single label (`localhost`, a Service of the operator's own namespace, as
    written in the operator's config) is left to the hosts file and the search list, whose first
    domain is the operator's own namespace."""
    name = host[:-1] if host.endswith(".") else host
    if not name or ("." not in name and name == host):
        return host
    try:
        ipaddress.ip_address(name)
        return host
    except ValueError:
        pass
    domain = cluster_domain.strip(".")
    if name.lower().rsplit(".", 1)[-1] == "svc" and domain:
        return f"{name}.{domain}."
    return f"{name}."


_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _dns_label(label: str) -> bool:
    return 0 < len(label) <= 63 and set(label) <= _LABEL_CHARS and label[0] != "-" and label[-1] != "-"


def service_name(host: str, namespace: str, cluster_domain: str = "cluster.local") -> str | None:
    """The Service of `namespace` that `host` names (`NAME.NAMESPACE.svc` or
    `NAME.NAMESPACE.svc.CLUSTER_DOMAIN`, label by label), or None."""
    labels = host.lower().removesuffix(".").split(".")
    domain = cluster_domain.lower().strip(".").split(".") if cluster_domain.strip(".") else []
    for tail in (["svc"], ["svc", *domain]):
        if (
            len(labels) == 2 + len(tail)
            and labels[1] == namespace.lower()
            and labels[2:] == tail
            and _dns_label(labels[0])
        ):
            return labels[0]
    return None


@dataclass(frozen=True)
class ServiceFacts:
    """What the API server says of a Service, for the name route: its type, its cluster IPs
    (`None` for a headless one) and, if headless, the addresses of its EndpointSlices that the
    EndpointSlice controller manages (from the Service's selector: pods of its namespace)."""

    type: str
    cluster_ips: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    """The ports the Service declares (`spec.ports[].port`), or for a headless one the ports of
    its controller-made EndpointSlices (the pods' ports); a connection to any other is refused."""

    def admits(self, ip: str, port: int) -> bool:
        """True if a connection to `ip`:`port` reaches this Service (and nothing else by its name)."""
        if self.type == "ExternalName" or port not in self.ports:
            return False
        target = _address(ip)
        assigned = [c for c in self.cluster_ips if c and c != "None"]
        known = assigned if assigned else list(self.endpoints)
        return any(_same(target, other) for other in known)


def _same(address: Address, other: str) -> bool:
    try:
        return address == _address(other)
    except ValueError:
        return False


@dataclass(frozen=True)
class NamespaceGrant:
    """One entry of `egress.namespaces`: private addresses (CIDRs) and hosts these namespaces'
    Playbook requests may reach."""

    namespaces: frozenset[str]
    """Namespace names, or `*` for every namespace."""
    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    def covers(self, namespace: str) -> bool:
        return "*" in self.namespaces or namespace in self.namespaces

    def grants(self, host: str, address: Address) -> bool:
        return host in self.hosts or any(address in net for net in self.networks)


@dataclass(frozen=True)
class TenantEgress:
    """The per-namespace policy of Playbook requests (see the module's docstring)."""

    grants: tuple[NamespaceGrant, ...] = ()
    cluster_domain: str = "cluster.local"
    cluster_networks: tuple[Network, ...] = ()
    """The cluster's own ranges (pods, Services, nodes): never public, even if `is_global`."""

    @classmethod
    def build(
        cls,
        grants: Iterable[tuple[Iterable[str], Iterable[str]]] = (),
        cluster_domain: str = "cluster.local",
        cluster_networks: Iterable[str] = (),
    ) -> TenantEgress:
        """From (namespaces, allow entries) pairs and the cluster's own CIDRs. Raises EgressError
        on a bad entry."""
        built = []
        for namespaces, allow in grants:
            networks, hosts = _split(allow)
            built.append(NamespaceGrant(frozenset(namespaces), networks, hosts))
        ranges = []
        for cidr in cluster_networks:
            net = _network(cidr)
            if net is None:
                raise EgressError(f"cluster network {cidr!r} is not a CIDR")
            ranges.append(net)
        return cls(tuple(built), cluster_domain, tuple(ranges))

    def lookup(self, host: str) -> str:
        """The absolute name to resolve for `host` (see `lookup_name`)."""
        return lookup_name(host, self.cluster_domain)

    def service(self, namespace: str, host: str) -> str | None:
        """The Service of `namespace` that `host` names, if it names one."""
        return service_name(host, namespace, self.cluster_domain)

    def granted(self, namespace: str, host: str, ip: str) -> bool:
        """True if the config grants `host` or its address `ip` to `namespace`."""
        name, address = host.lower().rstrip("."), _address(ip)
        return any(g.covers(namespace) and g.grants(name, address) for g in self.grants)

    def allows(
        self, namespace: str, host: str, ip: str, service: ServiceFacts | None = None, *, port: int
    ) -> bool:
        """True if a Playbook of `namespace` may reach `host` at `ip`:`port` (the global policy
        aside). `service`: what the API server says of the Service `host` names (`service()`),
        None if it has none; a host naming a Service of the namespace takes the name route and
        no other."""
        if self.service(namespace, host) is not None:
            return service is not None and service.admits(ip, port)
        return is_public(ip, self.cluster_networks) or self.granted(namespace, host, ip)


def playbook_denied(
    policy: EgressPolicy,
    tenant: TenantEgress,
    namespace: str,
    host: str,
    ip: str,
    *,
    port: int,
    scheme: str = "https",
    service: ServiceFacts | None = None,
) -> bool:
    """True if a request of a Playbook of `namespace` to `host` (resolved to `ip`) on `port` must
    not be made: the global policy first, then the namespace's."""
    if policy.denied(host, ip, port, scheme=scheme):
        return True
    return not tenant.allows(namespace, host, ip, service, port=port)
