"""Every outgoing HTTP request of the operator, through the egress policy (see `egress`).

Owns name resolution and the connection target: the host is resolved here, the resolved address
is checked, and the request goes to that very address (the Host header and TLS server name stay
the original host, so certificates are still verified against it). So DNS rebinding between the
check and the connection cannot reach a denied address. Response bodies are read up to a small
cap and redirects are never followed. Failures are reported as one-line reasons without URLs,
headers or bodies (a webhook URL is a secret).

The HTTP client (`http_client`) ignores `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY` and
netrc (only the CA bundle variables count): a proxy would connect wherever it resolves the name, past the
policy, and through a CONNECT tunnel httpcore checks TLS against the address, not the host, so no
proxy is used at all. The API server's endpoints (`apiendpoints`) join the policy on each check.

A Playbook's request names its namespace (`namespace=`) and passes the per-namespace policy too
(`TenantEgress`): for a host naming a Service of that namespace, the Service is read first
(`services`), and an ExternalName, a missing or unreadable Service is refused before the name is
even resolved; the address resolved must then be that Service's, on one of its ports. A
channel's request names none. Every name is resolved as an absolute name (`lookup_name`), channels'
too: the search list of a pod would otherwise ask `db.internal` as a Service of a namespace
`internal` first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from incident_operator.settings.egress import (
    EgressPolicy,
    ServiceFacts,
    TenantEgress,
    is_public,
    playbook_denied,
)

MAX_BODY_BYTES = 65_536
Resolver = Callable[[str, int], Awaitable[str]]
ApiServerSource = Callable[[], Awaitable[Iterable[str]]]
"""The API server's current endpoint addresses (denied on every port, on top of the policy's)."""
ServiceSource = Callable[[str, str], Awaitable[ServiceFacts | None]]
"""(namespace, name) → what the API server says of that Service, None if there is none."""

logger = logging.getLogger(__name__)


def http_client() -> httpx.AsyncClient:
    """The client every outgoing request uses: no redirects, no proxy and no netrc credentials
    from the environment. The CA bundle still honours `SSL_CERT_FILE`/`SSL_CERT_DIR`, as before."""
    tls = httpx.create_ssl_context(trust_env=True)
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=tls)


class EgressDenied(Exception):
    """The policy refused the request; `str()` is `egress denied: <host>`."""

    def __init__(self, host: str) -> None:
        super().__init__(f"egress denied: {host}")
        self.host = host


class RequestFailed(Exception):
    """No HTTP response: a one-line reason (exception type), never the URL. `permanent` when
    trying again cannot help (the URL itself is unusable); `misconfigured` when a person must fix
    what was written (an invalid URL, a host name that does not exist), which is no outage of the
    service the request was for. A DNS timeout or server failure is neither: the service's own
    name service may be what is down."""

    def __init__(self, reason: str, *, permanent: bool = False, misconfigured: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.misconfigured = misconfigured


_NO_SUCH_NAME = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)
"""getaddrinfo's answers that the name does not exist (NXDOMAIN) or has no address: not EAI_AGAIN
(a timeout, or SERVFAIL from glibc) nor EAI_FAIL (a non-recoverable server failure)."""


def _unresolved(exc: OSError | UnicodeError) -> RequestFailed:
    if isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_NAME:
        return RequestFailed("host not found (no such name in DNS)", misconfigured=True)
    if isinstance(exc, UnicodeError):
        return RequestFailed("invalid URL: bad host name", permanent=True, misconfigured=True)
    return RequestFailed(f"cannot resolve host ({type(exc).__name__})")


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Reply:
    status_code: int
    body: bytes
    """At most MAX_BODY_BYTES of the response body."""
    retry_after: str | None = None
    """The Retry-After header, if any."""


async def system_resolver(host: str, port: int) -> str:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} has no address")
    return str(infos[0][4][0])


class Outbound:
    def __init__(
        self,
        http: httpx.AsyncClient,
        policy: EgressPolicy,
        resolver: Resolver = system_resolver,
        *,
        api_servers: ApiServerSource | None = None,
        tenant: TenantEgress | None = None,
        services: ServiceSource | None = None,
    ) -> None:
        self.http = http
        self.policy = policy
        self.resolver = resolver
        self.api_servers = api_servers
        self.tenant = tenant or TenantEgress()
        """The per-namespace policy of Playbook requests (nothing granted: Services and public only)."""
        self.services = services
        """Reads a Service for the name route; without it, no Service name is reachable."""
        self._derived: tuple[frozenset[str], EgressPolicy] = (frozenset(), policy)

    async def current_policy(self) -> EgressPolicy:
        """The policy with the API server's endpoints as last read added (see `apiendpoints`)."""
        if self.api_servers is None:
            return self.policy
        addresses = frozenset(await self.api_servers())
        if addresses != self._derived[0]:
            self._derived = (addresses, self.policy.with_api_server(addresses))
            self._warn_if_global(addresses)
        return self._derived[1]

    def _warn_if_global(self, addresses: Iterable[str]) -> None:
        """The API server's own addresses are the cluster's: if the per-namespace policy would
        call one public, the cluster uses global addresses that `egress.clusterNetworks` misses,
        and other tenants' pods may count as public to Playbook requests too."""
        public = sorted(a for a in addresses if is_public(a, self.tenant.cluster_networks))
        if public:
            logger.warning(
                "the API server's addresses %s are global and not in egress.clusterNetworks: if "
                "the cluster's pods, Services or nodes use global addresses, list their ranges in "
                "egress.clusterNetworks, or other tenants' pods count as public to Playbook requests",
                ", ".join(public),
            )

    async def _service(self, namespace: str, name: str, host: str) -> ServiceFacts:
        """The Service `host` names, if it may be the name route's; else EgressDenied."""
        if self.services is None:
            raise EgressDenied(host)
        try:
            facts = await self.services(namespace, name)
        except Exception as exc:  # forbidden (RBAC), unreachable: refused, as an unknown Service is
            logger.warning(
                "cannot read Service %s/%s for the egress policy (%s): a request to it is refused "
                "(the remediator ClusterRole grants get services, list endpointslices and list pods)",
                namespace,
                name,
                type(exc).__name__,
            )
            raise EgressDenied(host) from exc
        if facts is None or facts.type == "ExternalName":
            raise EgressDenied(host)
        return facts

    async def address(
        self,
        host: str,
        port: int,
        *,
        scheme: str,
        require_https: bool = False,
        namespace: str | None = None,
    ) -> str:
        """The address to connect to for `host`, once resolved and allowed by the policy (the
        connection then goes to that address, so a later DNS answer cannot redirect it). With
        `namespace` (a Playbook's request), the per-namespace policy too.
        Raises EgressDenied or RequestFailed."""
        if (not _HOSTNAME.match(host) and ":" not in host) or "%" in host:  # IPv6 literals have ':'
            # (an IPv6 zone, `[fd00::1%25eth0]`, is refused: no request of ours needs one)
            raise RequestFailed("invalid URL: bad host name", permanent=True, misconfigured=True)
        service: ServiceFacts | None = None
        if namespace is not None:
            name = self.tenant.service(namespace, host)
            if name is not None:  # refused before resolving: an ExternalName is not looked up
                service = await self._service(namespace, name, host)
                if port not in service.ports:  # nor a port the Service does not declare
                    raise EgressDenied(host)
        try:
            ipaddress.ip_address(host)
            ip = host
        except ValueError:
            try:  # as an absolute name: the search list must not pick a tenant's namespace
                ip = await self.resolver(self.tenant.lookup(host), port)
            except (OSError, UnicodeError) as exc:
                raise _unresolved(exc) from exc
        policy = await self.current_policy()
        if namespace is None:  # the operator's own request (a channel): the global policy alone
            denied = policy.denied(host, ip, port, scheme=scheme, require_https=require_https)
        else:
            denied = playbook_denied(
                policy, self.tenant, namespace, host, ip, port=port, scheme=scheme, service=service
            )
        if denied:
            raise EgressDenied(host)
        return ip

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout: httpx.Timeout | float,
        headers: dict[str, str] | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        require_https: bool = False,
        namespace: str | None = None,
    ) -> Reply:
        """Make one request if the policy allows it; `namespace`: a Playbook's request, from that
        namespace (the per-namespace policy applies). Raises EgressDenied or RequestFailed."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise RequestFailed("invalid URL", permanent=True, misconfigured=True) from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise RequestFailed(
                "invalid URL: only http and https are supported", permanent=True, misconfigured=True
            )
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        ip = await self.address(
            host, port, scheme=parsed.scheme, require_https=require_https, namespace=namespace
        )
        target = parsed.copy_with(host=ip)
        send_headers = {**(headers or {}), "Host": parsed.netloc.decode("ascii")}
        extensions = {"sni_hostname": host} if parsed.scheme == "https" and ip != host else {}
        try:
            async with self.http.stream(
                method,
                target,
                headers=send_headers,
                json=json,
                content=content,
                timeout=timeout,
                extensions=extensions,
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_BODY_BYTES:
                        break
                return Reply(
                    response.status_code, bytes(body[:MAX_BODY_BYTES]), response.headers.get("Retry-After")
                )
        except httpx.TimeoutException as exc:
            raise RequestFailed("timed out") from exc
        except httpx.HTTPError as exc:
            raise RequestFailed(type(exc).__name__) from exc
