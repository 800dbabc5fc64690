"""The per-namespace egress policy of Playbook requests: a tenant reaches its own Services and
public addresses, other private addresses only where the config grants them to its namespace;
a Service name of its namespace is honoured only for a real, non-ExternalName Service whose own
address is connected to. Denied addresses are decisions of the policy here: nothing is sent."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from incident_operator.adapters.kube import ENDPOINTSLICE_CONTROLLER, ApiException, Kube
from incident_operator.adapters.outbound import EgressDenied, Outbound, Reply, RequestFailed
from incident_operator.api.models import IncidentSpec, IncidentStatus, PlaybookSpec, StepStatus
from incident_operator.api.reasons import Reason
from incident_operator.controllers import actions
from incident_operator.settings.config import ConfigError, EgressConfig, load_config_file
from incident_operator.settings.egress import (
    EgressPolicy,
    ServiceFacts,
    TenantEgress,
    is_public,
    lookup_name,
    playbook_denied,
    service_name,
)

NONE = TenantEgress()  # no config: own Services and public addresses only
GLOBAL = EgressPolicy.build(api_server=("10.96.0.1",))


def _v4_in_v6(v4: str, how: str) -> str:
    value = int(ipaddress.IPv4Address(v4))
    if how == "nat64":
        return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value))
    if how == "6to4":
        return str(ipaddress.IPv6Address((0x2002 << 112) | (value << 80)))
    return str(ipaddress.IPv6Address((0xFFFF << 32) | value))  # IPv4-mapped


# ------------------------------------------------------------------------------ the name route


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("web.shop.svc", "web"),
        ("web.shop.svc.cluster.local", "web"),
        ("WEB.Shop.SVC.Cluster.Local", "web"),  # DNS is case-insensitive
        ("web.shop.svc.", "web"),  # a trailing dot
        ("web.shop.svc.cluster.local.", "web"),
        ("prom-1.shop.svc", "prom-1"),
    ],
)
def test_a_service_of_the_namespace_is_named_by_its_labels(host: str, name: str) -> None:
    assert service_name(host, "shop") == name
    assert NONE.service("shop", host) == name


@pytest.mark.parametrize(
    "host",
    [
        "web.other.svc",  # another namespace's Service
        "web.other.svc.cluster.local",
        "web.shop.svc.evil.example",  # a lookalike: a public name ending elsewhere
        "web.shop.svc.cluster.local.evil.example",
        "web.shop.svc.cluster",
        "web.shop.svc.other.local",  # not this cluster's domain
        "web.shopx.svc",
        "web.xshop.svc",
        "web.shop.svcx",
        "a.web.shop.svc",  # a pod of a headless Service: not a Service name
        "web.shop",  # left to the resolver's search path: not decided by the name
        "web",
        "shop.svc",
        ".shop.svc",
        "-web.shop.svc",
        "web..shop.svc",
        "web.shop.svc..",
        "10.0.0.1",
    ],
)
def test_lookalike_and_other_namespaces_names_are_not_the_namespaces_services(host: str) -> None:
    assert service_name(host, "shop") is None


def test_the_cluster_domain_is_configurable() -> None:
    tenant = TenantEgress(cluster_domain="corp.internal")
    assert tenant.service("shop", "web.shop.svc.corp.internal") == "web"
    assert tenant.service("shop", "web.shop.svc") == "web"
    assert tenant.service("shop", "web.shop.svc.cluster.local") is None


CLUSTER_IP = ServiceFacts("ClusterIP", ("10.96.5.5",), (), (80, 8080))
DUAL_STACK = ServiceFacts("ClusterIP", ("10.96.5.5", "fd00:10:96::5"), (), (80,))
HEADLESS = ServiceFacts("ClusterIP", ("None",), ("10.244.1.7", "10.244.2.9"), (80,))


def test_an_own_service_name_reaches_that_service_at_a_private_address() -> None:
    assert NONE.allows("shop", "web.shop.svc", "10.96.5.5", CLUSTER_IP, port=80)
    assert NONE.allows("shop", "web.shop.svc.cluster.local", "fd00:10:96::5", DUAL_STACK, port=80)
    assert NONE.allows("shop", "db.shop.svc", "10.244.2.9", HEADLESS, port=80)  # headless: its endpoints
    assert not playbook_denied(GLOBAL, NONE, "shop", "web.shop.svc", "10.96.5.5", port=80, service=CLUSTER_IP)


def test_an_own_service_name_reaches_nothing_but_that_service() -> None:
    assert not NONE.allows("shop", "web.shop.svc", "10.96.5.5", None, port=80)  # no such Service
    assert not NONE.allows("shop", "web.shop.svc", "10.96.7.7", CLUSTER_IP, port=80)  # another address
    assert not NONE.allows("shop", "db.shop.svc", "10.244.3.3", HEADLESS, port=80)
    assert not NONE.allows("shop", "web.shop.svc", "10.96.5.5", ServiceFacts("ClusterIP", ("None",)), port=80)
    # ExternalName: x.shop.svc is a CNAME to anything, another tenant's Service included
    external = ServiceFacts("ExternalName", ())
    assert not NONE.allows("shop", "x.shop.svc", "10.96.9.9", external, port=80)
    assert not NONE.allows("shop", "x.shop.svc", "8.8.8.8", external, port=80)
    # the name route is the only route of such a name: a grant does not lift it
    granted = TenantEgress.build([(["shop"], ["10.0.0.0/8"])])
    assert not granted.allows("shop", "x.shop.svc", "10.96.9.9", external, port=80)


def test_the_global_policy_still_guards_an_own_service_name() -> None:
    """Metadata and the API server stay denied, even behind a Service of the namespace."""
    metadata = ServiceFacts("ClusterIP", ("None",), ("169.254.169.254",), (80, 443))
    assert NONE.allows("shop", "meta.shop.svc", "169.254.169.254", metadata, port=80)  # the tenant's rule...
    assert playbook_denied(
        GLOBAL, NONE, "shop", "meta.shop.svc", "169.254.169.254", port=80, service=metadata
    )
    api = ServiceFacts("ClusterIP", ("None",), ("10.96.0.1",), (80, 443))
    assert playbook_denied(GLOBAL, NONE, "shop", "kube.shop.svc", "10.96.0.1", port=443, service=api)
    loopback = ServiceFacts("ClusterIP", ("None",), ("127.0.0.1",), (80, 443))
    assert playbook_denied(GLOBAL, NONE, "shop", "lo.shop.svc", "127.0.0.1", port=80, service=loopback)
    # and a global allow-list still rules: the Service's address must be on it
    listed = EgressPolicy.build(allow=["hooks.example.com"])
    assert playbook_denied(listed, NONE, "shop", "web.shop.svc", "10.96.5.5", port=80, service=CLUSTER_IP)


# ------------------------------------------------------------------------ private and public


PRIVATE = [
    "10.1.2.3",
    "172.16.0.9",
    "192.168.1.1",
    "100.64.0.1",  # CGNAT
    "127.0.0.1",
    "169.254.1.1",
    "0.0.0.1",
    "224.0.0.251",  # multicast (is_global says True)
    "198.18.0.1",
    "fd12:3456::1",  # ULA
    "fc00::1",
    "fe80::1",
    "fec0::1",  # site-local (is_global says True)
    "ff02::1",  # multicast (is_global says True)
    "::1",
    "2001:db8::1",
    _v4_in_v6("10.1.2.3", "mapped"),
    _v4_in_v6("10.1.2.3", "nat64"),  # 64:ff9b::/96 is global: the IPv4 it carries is not
    _v4_in_v6("192.168.1.1", "6to4"),
    _v4_in_v6("100.64.0.1", "nat64"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", _v4_in_v6("8.8.8.8", "nat64")]


@pytest.mark.parametrize("ip", PRIVATE)
def test_a_private_address_is_refused_without_a_grant(ip: str) -> None:
    assert not is_public(ip)
    assert not NONE.allows("shop", "db.internal", ip, port=80)
    assert not NONE.allows("shop", ip, ip, port=80)
    assert not NONE.allows("shop", "web.other.svc", ip, port=80)  # another namespace's Service


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_are_the_global_policys_alone(ip: str) -> None:
    assert is_public(ip)
    assert NONE.allows("shop", "api.example.com", ip, port=80)
    assert not playbook_denied(GLOBAL, NONE, "shop", "api.example.com", ip, port=443)
    listed = EgressPolicy.build(allow=["api.example.com"])  # the global allow-list still rules
    assert playbook_denied(listed, NONE, "shop", "other.example.com", ip, port=443)


def test_a_grant_opens_its_cidrs_and_hosts_to_its_namespaces_only() -> None:
    tenant = TenantEgress.build(
        [(["team-a", "team-b"], ["10.20.0.0/16", "db.internal"]), (["team-c"], ["fd00:20::/32"])]
    )
    for ns in ("team-a", "team-b"):
        assert tenant.allows(ns, "10.20.1.1", "10.20.1.1", port=80)
        assert tenant.allows(ns, "db.internal", "10.99.1.1", port=80)  # the host, wherever it resolves
        assert tenant.allows(ns, "DB.Internal.", "10.99.1.1", port=80)
        assert not tenant.allows(ns, "10.21.1.1", "10.21.1.1", port=80)
        assert not tenant.allows(ns, "db.internal.evil.example", "10.99.1.1", port=80)
        assert not tenant.allows(ns, "web.other.svc", "10.96.5.5", port=80)
    assert tenant.allows("team-c", "x.example", "fd00:20::9", port=80)
    for ns in ("team-c", "team-d", "default"):
        assert not tenant.allows(ns, "10.20.1.1", "10.20.1.1", port=80)
        assert not tenant.allows(ns, "db.internal", "10.99.1.1", port=80)
    # a grant names the connected address: a granted IPv4 address in NAT64 form is not granted
    assert not tenant.allows("team-d", "x", _v4_in_v6("10.20.1.1", "nat64"), port=80)


def test_a_grant_never_lifts_the_global_policy() -> None:
    tenant = TenantEgress.build([(["*"], ["0.0.0.0/0", "::/0", "metadata.google.internal"])])
    for ip in ("169.254.169.254", "10.96.0.1", "127.0.0.1", "100.100.100.200"):
        assert tenant.allows("shop", "x.example", ip, port=80)
        assert playbook_denied(GLOBAL, tenant, "shop", "x.example", ip, port=80), ip
    assert playbook_denied(GLOBAL, tenant, "shop", "metadata.google.internal", "169.254.169.254", port=80)


def test_star_grants_every_namespace() -> None:
    tenant = TenantEgress.build([(["*"], ["127.0.0.0/8"])])
    for ns in ("shop", "default", "team-z"):
        assert tenant.allows(ns, "127.0.0.1", "127.0.0.1", port=80)
        assert not tenant.allows(ns, "10.0.0.1", "10.0.0.1", port=80)


# ------------------------------------------------------------------------------- the config


def test_the_config_takes_grants_per_namespace_and_refuses_bad_ones(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "egress:\n"
        "  clusterDomain: corp.internal\n"
        "  namespaces:\n"
        "    - {namespaces: [team-a, team-b], allow: ['10.20.0.0/16', db.internal]}\n"
        "    - {namespaces: ['*'], allow: ['192.168.5.0/24']}\n"
    )
    egress = load_config_file(path).egress
    tenant = egress.tenant_policy()
    assert tenant.cluster_domain == "corp.internal"
    assert tenant.allows("team-b", "db.internal", "10.99.0.1", port=80)
    assert tenant.allows("anyone", "x", "192.168.5.5", port=80)
    assert not tenant.allows("anyone", "db.internal", "10.99.0.1", port=80)
    assert EgressConfig().tenant_policy() == TenantEgress()  # nothing granted by default
    for bad in (
        "{namespaces: [team-a], allow: ['http://x/']}",  # neither a CIDR nor a host
        "{namespaces: [team-a], allow: []}",
        "{namespaces: [], allow: ['10.0.0.0/8']}",
        "{namespaces: ['*', team-a], allow: ['10.0.0.0/8']}",
        "{namespaces: [Team_A], allow: ['10.0.0.0/8']}",
        "{namespaces: [\"team-a\\n\"], allow: ['10.0.0.0/8']}",  # a trailing newline
        "{namespaces: [team-a], allow: ['10.0.0.0/8'], deny: ['x']}",  # unknown key
    ):
        path.write_text(f"egress:\n  namespaces:\n    - {bad}\n")
        with pytest.raises(ConfigError):
            load_config_file(path)
    path.write_text("egress: {clusterDomain: 'cluster.local/evil'}\n")
    with pytest.raises(ConfigError):
        load_config_file(path)


# ------------------------------------------------- the outbound client: what is sent, and when


class Services:
    """Stands in for `Kube.service_facts`: answers per Service, records what was asked."""

    def __init__(self, answers: dict[tuple[str, str], ServiceFacts | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, namespace: str, name: str) -> ServiceFacts | None:
        self.asked.append((namespace, name))
        answer = self.answers.get((namespace, name))
        if isinstance(answer, Exception):
            raise answer
        return answer


ANSWER = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
}


def _outbound(
    resolved: str, services: Services | None = None, tenant: TenantEgress = NONE
) -> tuple[Outbound, list[httpx.Request], list[str]]:
    sent: list[httpx.Request] = []
    resolving: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=ANSWER)  # a health check passes, a query holds

    async def resolver(host: str, port: int) -> str:
        resolving.append(host)
        return resolved

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Outbound(client, GLOBAL, resolver, tenant=tenant, services=services), sent, resolving


def _get(outbound: Outbound, url: str, namespace: str | None) -> Reply:
    return asyncio.run(outbound.request("GET", url, timeout=2.0, namespace=namespace))


def test_an_externalname_service_is_refused_before_its_name_is_resolved() -> None:
    services = Services({("shop", "alias"): ServiceFacts("ExternalName")})
    outbound, sent, resolving = _outbound("10.96.9.9", services)
    with pytest.raises(EgressDenied, match=r"^egress denied: alias.shop.svc$"):
        _get(outbound, "http://alias.shop.svc/", "shop")
    assert services.asked == [("shop", "alias")]
    assert resolving == []
    assert sent == []


def test_a_missing_or_unreadable_service_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    services = Services({("shop", "secret"): ApiException(status=403, reason="Forbidden")})
    outbound, sent, resolving = _outbound("10.96.5.5", services)
    with pytest.raises(EgressDenied):
        _get(outbound, "http://ghost.shop.svc/", "shop")
    with caplog.at_level(logging.WARNING), pytest.raises(EgressDenied):
        _get(outbound, "http://secret.shop.svc.cluster.local/", "shop")
    assert "get services" in caplog.text
    assert resolving == []
    assert sent == []
    bare, sent, _ = _outbound("10.96.5.5", None)  # no way to read Services: no Service name either
    with pytest.raises(EgressDenied):
        _get(bare, "http://web.shop.svc/", "shop")
    assert sent == []


def test_a_service_name_is_sent_only_to_that_services_own_address() -> None:
    services = Services({("shop", "web"): CLUSTER_IP})
    outbound, sent, _ = _outbound("10.96.5.5", services)
    assert _get(outbound, "http://web.shop.svc:8080/healthz", "shop").status_code == 200
    assert sent[0].url.host == "10.96.5.5"
    assert sent[0].headers["Host"] == "web.shop.svc:8080"
    rebound, sent, _ = _outbound("10.244.7.7", services)  # the name now resolves elsewhere
    with pytest.raises(EgressDenied):
        _get(rebound, "http://web.shop.svc/", "shop")
    assert sent == []


def test_other_namespaces_and_private_addresses_are_refused_channels_are_not() -> None:
    services = Services({("other", "db"): CLUSTER_IP})
    outbound, sent, _ = _outbound("10.96.5.5", services)
    for url in ("http://db.other.svc/", "http://db.other.svc.cluster.local/", "http://10.96.5.5/"):
        with pytest.raises(EgressDenied):
            _get(outbound, url, "shop")
    assert services.asked == []  # another namespace's Service is never the name route
    assert sent == []
    # a notification channel of the operator's config keeps the global policy only
    assert _get(outbound, "http://db.other.svc/", None).status_code == 200
    granted, sent, _ = _outbound("10.96.5.5", services, TenantEgress.build([(["shop"], ["db.other.svc"])]))
    assert _get(granted, "http://db.other.svc/", "shop").status_code == 200
    with pytest.raises(EgressDenied):
        _get(granted, "http://db.other.svc/", "team-b")
    assert len(sent) == 1


# ------------------------------------------------- gaps a review found: names, ports, own ranges


@pytest.mark.parametrize(
    ("host", "lookup"),
    [
        ("db.internal", "db.internal."),  # never db.internal.svc.cluster.local (namespace "internal")
        ("hooks.example.com", "hooks.example.com."),
        ("web.shop.svc", "web.shop.svc.cluster.local."),
        ("web.shop.svc.cluster.local", "web.shop.svc.cluster.local."),
        ("db.internal.", "db.internal."),  # already absolute
        ("web.shop.svc.", "web.shop.svc.cluster.local."),  # a Service name, with its trailing dot
        ("localhost", "localhost"),  # one label: the hosts file, then the operator's own namespace
        ("10.1.2.3", "10.1.2.3"),
        ("fd00::1", "fd00::1"),
    ],
)
def test_every_name_is_resolved_as_an_absolute_name(host: str, lookup: str) -> None:
    assert lookup_name(host) == lookup
    assert lookup_name("web.shop.svc", "corp.internal") == "web.shop.svc.corp.internal."


def test_the_resolver_is_asked_the_absolute_name_never_a_search_list_candidate() -> None:
    """In a pod (ndots:5) a relative `db.internal` is asked as `db.internal.svc.cluster.local`
    first: Service `db` of a namespace `internal`, which a tenant who may create namespaces owns."""
    grant = TenantEgress.build([(["shop"], ["db.internal"])], cluster_domain="corp.internal")
    services = Services({("shop", "web"): CLUSTER_IP})
    outbound, sent, resolving = _outbound("10.96.5.5", services, grant)
    _get(outbound, "http://db.internal/x", "shop")
    _get(outbound, "http://web.shop.svc/", "shop")
    _get(outbound, "http://hooks.example.com/", None)  # a channel's name too
    assert resolving == ["db.internal.", "web.shop.svc.corp.internal.", "hooks.example.com."]
    assert [r.headers["Host"] for r in sent] == ["db.internal", "web.shop.svc", "hooks.example.com"]


def test_the_name_route_reaches_only_the_ports_the_service_declares() -> None:
    """A host-network pod behind a tenant's headless Service has its node's address: only the
    ports of the Service's EndpointSlices are reachable through it, never the kubelet's."""
    node_pod = ServiceFacts("ClusterIP", ("None",), ("10.0.0.12",), (8080,))
    services = Services({("shop", "web"): CLUSTER_IP, ("shop", "hostnet"): node_pod})
    outbound, sent, resolving = _outbound("10.0.0.12", services)
    assert _get(outbound, "http://hostnet.shop.svc:8080/", "shop").status_code == 200
    for port in (10250, 30080, 80):
        with pytest.raises(EgressDenied):
            _get(outbound, f"http://hostnet.shop.svc:{port}/", "shop")
    assert len(sent) == 1
    assert len(resolving) == 1  # refused before the name is even resolved
    clusterip, sent, _ = _outbound("10.96.5.5", services)
    with pytest.raises(EgressDenied):
        _get(clusterip, "http://web.shop.svc:9999/", "shop")
    assert sent == []
    assert not ServiceFacts("ClusterIP", ("None",), ("10.0.0.12",), ()).admits("10.0.0.12", 8080)


def test_an_ipv6_zone_neither_hides_an_address_nor_reaches_one() -> None:
    """`fd00:ec2::254%2` is the metadata address to the kernel, whatever the policy's equality."""
    assert GLOBAL.denied("x", "fd00:ec2::254%2", 80)
    assert EgressPolicy.build(api_server=["fd00:10:96::1"]).denied("x", "fd00:10:96::1%eth0", 443)
    outbound, sent, _ = _outbound("10.96.5.5")
    for url in ("http://[fd00:ec2::254%252]/", "http://[2600:1f18::5%25eth0]/"):
        with pytest.raises(RequestFailed, match="bad host name"):
            _get(outbound, url, None)
    assert sent == []


def test_the_api_servers_global_addresses_warn_that_cluster_networks_is_unset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def api_servers() -> list[str]:
        return ["2600:1f18:4000::1"]

    def policy(tenant: TenantEgress) -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200)))
        asyncio.run(Outbound(client, GLOBAL, api_servers=api_servers, tenant=tenant).current_policy())

    with caplog.at_level(logging.WARNING):
        policy(NONE)
    assert "egress.clusterNetworks" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        policy(TenantEgress.build(cluster_networks=["2600:1f18:4000::/48"]))
    assert caplog.text == ""


def test_the_clusters_own_ranges_are_never_public_even_when_global() -> None:
    pod = "2600:1f18:4000::17"  # an IPv6 cluster's pod address: global to Python
    assert is_public(pod)
    assert NONE.allows("shop", pod, pod, port=80)  # without the setting: any tenant's pod is "public"
    own = TenantEgress.build(cluster_networks=["2600:1f18:4000::/48", "34.118.224.0/20"])
    assert not own.allows("shop", pod, pod, port=80)
    assert not own.allows("shop", "x.example", "34.118.230.9", port=80)  # public range used privately
    assert not own.allows("shop", "x", _v4_in_v6("34.118.230.9", "nat64"), port=80)  # embedded too
    assert own.allows("shop", "api.example.com", "93.184.216.34", port=443)  # the rest stays public
    granted = TenantEgress.build(
        [(["shop"], ["2600:1f18:4000:1::/64"])], cluster_networks=["2600:1f18:4000::/48"]
    )
    assert granted.allows("shop", "2600:1f18:4000:1::9", "2600:1f18:4000:1::9", port=80)
    assert not granted.allows("team-b", "2600:1f18:4000:1::9", "2600:1f18:4000:1::9", port=80)


def test_the_config_names_the_clusters_own_ranges(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("egress:\n  clusterNetworks: ['10.0.0.0/8', 'fd00:10::/48', '34.118.224.0/20']\n")
    tenant = load_config_file(path).egress.tenant_policy()
    assert not tenant.allows("shop", "x", "34.118.224.1", port=80)
    for bad in ("['db.internal']", "['10.0.0.0/33']", "'10.0.0.0/8'"):
        path.write_text(f"egress:\n  clusterNetworks: {bad}\n")
        with pytest.raises(ConfigError):
            load_config_file(path)


# ---------------------------------------------- reading a Service (the adapter), with fake data


@dataclass(frozen=True)
class FakePod:
    name: str
    labels: dict[str, str]
    ips: tuple[str, ...]
    host_network: bool = False


class FakeCore:
    def __init__(self, services: dict[str, Any], pods: tuple[FakePod, ...] = ()) -> None:
        self.services = services
        self.pods = pods
        self.forbidden_pods = False

    async def list_namespaced_pod(self, namespace: str, *, label_selector: str, **_: Any) -> Any:
        if self.forbidden_pods:
            raise ApiException(status=403, reason="Forbidden")
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return SimpleNamespace(
            items=[
                SimpleNamespace(
                    metadata=SimpleNamespace(name=pod.name),
                    spec=SimpleNamespace(host_network=pod.host_network or None),
                    status=SimpleNamespace(
                        pod_ip=pod.ips[0], pod_ips=[SimpleNamespace(ip=ip) for ip in pod.ips]
                    ),
                )
                for pod in self.pods
                if all(pod.labels.get(k) == v for k, v in wanted.items())
            ]
        )

    async def read_namespaced_service(self, name: str, namespace: str, **_: Any) -> Any:
        if name not in self.services:
            raise ApiException(status=404, reason="Not Found")
        return self.services[name]


Endpoint = tuple[str, str | None]
"""(address, the name of the pod its targetRef names)"""


class FakeDiscovery:
    def __init__(self, slices: list[tuple[dict[str, str], list[Endpoint], list[int | None]]]) -> None:
        self.slices = slices
        self.selectors: list[str] = []

    async def list_namespaced_endpoint_slice(self, namespace: str, *, label_selector: str, **_: Any) -> Any:
        self.selectors.append(label_selector)
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        items = [
            SimpleNamespace(
                endpoints=[
                    SimpleNamespace(
                        addresses=[address],
                        target_ref=SimpleNamespace(kind="Pod", name=pod) if pod else None,
                    )
                    for address, pod in endpoints
                ],
                ports=[SimpleNamespace(port=port) for port in ports],
            )
            for labels, endpoints, ports in self.slices
            if all(labels.get(k) == v for k, v in wanted.items())
        ]
        return SimpleNamespace(items=items)


def _service(
    kind: str,
    cluster_ips: list[str] | None,
    external: str | None = None,
    ports: tuple[int, ...] = (),
    selector: dict[str, str] | None = None,
) -> Any:
    spec = SimpleNamespace(
        type=kind,
        cluster_ip=cluster_ips[0] if cluster_ips else None,
        cluster_ips=cluster_ips,
        external_name=external,
        ports=[SimpleNamespace(port=port) for port in ports] or None,
        selector=selector,
    )
    return SimpleNamespace(spec=spec)


DB_PODS = (
    FakePod("db-0", {"app": "db"}, ("10.244.1.7",)),
    FakePod("db-1", {"app": "db"}, ("10.244.1.8", "fd00:10:244::8")),  # dual-stack
    FakePod("agent", {"app": "db"}, ("10.0.0.12",), host_network=True),  # its node's address
    FakePod("other", {"app": "web"}, ("10.244.1.11",)),
)


def test_the_adapter_reads_a_service_and_only_controller_made_endpoint_slices() -> None:
    from kubernetes_asyncio import client

    async def offline() -> Kube:  # its session is made in a loop; it never sends (fakes answer)
        return Kube(client.ApiClient())

    kube = asyncio.run(offline())
    core = FakeCore(
        {
            "alias": _service("ExternalName", None, "db.victim.svc.cluster.local"),
            "web": _service("ClusterIP", ["10.96.5.5"], ports=(80, 8080)),
            "db": _service("ClusterIP", ["None"], selector={"app": "db"}),
            "manual": _service("ClusterIP", ["None"]),  # no selector: its slices are hand-written
        },
        DB_PODS,
    )
    kube.core = core  # type: ignore[assignment]
    managed = {
        "kubernetes.io/service-name": "db",
        "endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_CONTROLLER,
    }
    by_hand = {"kubernetes.io/service-name": "db", "endpointslice.kubernetes.io/managed-by": "someone"}
    kube.discovery = FakeDiscovery(  # type: ignore[assignment]
        [
            (
                managed,
                [
                    ("10.244.1.7", "db-0"),
                    ("fd00:10:244:0:0:0:0:8", "db-1"),  # another spelling of db-1's address
                    ("10.0.0.12", "agent"),  # a host-network pod: its node
                    ("10.244.1.9", "db-gone"),  # deleted between the two reads
                    ("10.244.1.11", "db-0"),  # not db-0's address
                    ("10.244.1.12", None),  # no targetRef
                ],
                [5432, None],
            ),
            (by_hand, [("10.244.66.6", "db-0")], [5432]),
        ]
    )
    try:
        alias = asyncio.run(kube.service_facts("shop", "alias"))
        web = asyncio.run(kube.service_facts("shop", "web"))
        db = asyncio.run(kube.service_facts("shop", "db"))
        manual = asyncio.run(kube.service_facts("shop", "manual"))
        ghost = asyncio.run(kube.service_facts("shop", "ghost"))
        core.forbidden_pods = True
        with pytest.raises(ApiException):  # the caller refuses the request (EgressDenied)
            asyncio.run(kube.service_facts("shop", "db"))
    finally:
        asyncio.run(kube.close())
    assert alias is not None
    assert alias.type == "ExternalName"
    assert not alias.admits("10.96.9.9", 80)
    assert web == ServiceFacts("ClusterIP", ("10.96.5.5",), (), (80, 8080))
    assert db is not None
    # an allow-list: only addresses of live pods the Service selects, and never a host-network
    # pod's, whose address is its node's (on whatever port the tenant declares: 10250, NodePorts)
    assert db.endpoints == ("10.244.1.7", "fd00:10:244:0:0:0:0:8")
    assert db.admits("10.244.1.7", 5432)
    assert db.admits("fd00:10:244::8", 5432)
    assert not db.admits("10.244.1.7", 10250)  # a port "all ports" (None) never opens every port
    assert not db.admits("10.244.66.6", 5432)  # a hand-written slice may point anywhere
    assert not db.admits("10.0.0.12", 5432)
    assert manual == ServiceFacts("ClusterIP", ("None",))
    assert not manual.admits("10.244.66.6", 5432)
    assert ghost is None
    assert NONE.allows("shop", "web.shop.svc", "10.96.5.5", web, port=80)


# ----------------------------------- the actions: a denial is Misconfigured, and nothing is sent


def _context(step: dict[str, Any], outbound: Outbound, namespace: str = "shop") -> actions.ActionContext:
    playbook = PlaybookSpec.model_validate({"steps": [{"name": "s", **step}]})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return actions.ActionContext(
        kube=None,  # no Secret in these steps
        outbound=outbound,
        limits=None,
        namespace=namespace,
        incident="web-outage",
        incident_uid="uid",
        spec=IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "availability"}),
        status=IncidentStatus(),
        playbook=playbook,
        step=playbook.steps[0],
        step_status=StepStatus(name="s", action=next(iter(step)), attempts=1, startedAt=now),
        now=lambda: now,
        persist=None,
    )


@pytest.mark.parametrize(
    ("step", "host"),
    [
        ({"httpCheck": {"url": "http://10.20.1.1:8080/healthz"}}, "10.20.1.1"),
        ({"httpCheck": {"url": "http://db.other.svc/", "method": "POST", "body": "x"}}, "db.other.svc"),
        (
            {
                "promQuery": {
                    "url": "http://prometheus.monitoring.svc:9090",
                    "query": "up",
                    "expect": {"op": ">", "value": 0},
                }
            },
            "prometheus.monitoring.svc",
        ),
    ],
)
def test_a_playbook_request_to_a_private_address_is_misconfigured_and_never_sent(
    step: dict[str, Any], host: str
) -> None:
    outbound, sent, _ = _outbound("10.20.1.1", Services({}))
    action = actions.http_check if "httpCheck" in step else actions.prom_query
    outcome = asyncio.run(action(_context(step, outbound)))
    assert not outcome.ok
    assert outcome.blocked == Reason.MISCONFIGURED
    assert outcome.message == f"egress denied: {host}"
    assert sent == []
    granted, sent, _ = _outbound(
        "10.20.1.1", Services({}), TenantEgress.build([(["shop"], ["10.20.0.0/16"])])
    )
    assert asyncio.run(action(_context(step, granted))).ok  # the grant lets the same request out
    assert len(sent) == 1


def test_a_notify_step_to_a_private_webhook_is_misconfigured_and_never_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def secret_url(ctx: Any, name: str, key: str) -> str:
        return "http://hooks.internal/x"

    monkeypatch.setattr(actions, "read_secret_url", secret_url)
    outbound, sent, _ = _outbound("10.20.1.1", Services({}))
    step = {"notify": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}, "message": "m"}}
    outcome = asyncio.run(actions.notify(_context(step, outbound)))
    assert (outcome.ok, outcome.blocked, outcome.message) == (
        False,
        Reason.MISCONFIGURED,
        "egress denied: hooks.internal",
    )
    assert sent == []


def test_the_health_check_after_the_steps_passes_the_namespaces_policy_too() -> None:
    outbound, sent, _ = _outbound("10.20.1.1", Services({}))
    playbook = PlaybookSpec.model_validate(
        {"steps": [{"name": "s", "httpCheck": {"url": "http://10.20.1.1/"}}]}
    )
    spec = IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "availability"})
    outcome = asyncio.run(actions.verify_health(None, outbound, "shop", spec, playbook))
    assert not outcome.ok
    assert "egress denied: 10.20.1.1" in outcome.message
    assert sent == []
