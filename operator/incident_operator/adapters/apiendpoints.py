"""Where the API server listens, for the egress policy: never a destination of an outgoing request.

The fixed part is learned once at start (`fixed_api_server`): the in-cluster Service address
(`KUBERNETES_SERVICE_HOST`) and the kubeconfig's server, resolved. The endpoints themselves (the
control-plane addresses behind the Service) are the `kubernetes` EndpointSlices in `default`,
read through `Kube` and kept for `ttl` seconds (`ApiServerEndpoints`). When they cannot be read,
the last ones read stay denied (with the fixed part), and the failure is logged once.
The policy itself stays pure (`settings.egress`): `Outbound` adds these addresses to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import httpx

from incident_operator.adapters.kube import Kube

logger = logging.getLogger(__name__)

TTL_S = 60.0


def fixed_api_server(
    server: str, environ: Mapping[str, str] = os.environ
) -> tuple[list[str], list[tuple[str, int]]]:
    """(addresses denied on every port, (address, port) denied on that port): the in-cluster
    Service address and the kubeconfig's server, resolved. A loopback kubeconfig server (a
    development cluster) is denied on its port only: loopback is guarded by the policy anyway,
    and a CIDR that opens loopback must still reach the tests' servers beside it."""
    every_port: list[str] = []
    one_port: list[tuple[str, int]] = []
    service_host = environ.get("KUBERNETES_SERVICE_HOST")
    if service_host:
        every_port.append(service_host.strip("[]"))
    url = httpx.URL(server)
    port = url.port or 443
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    for info in infos:
        address = str(info[4][0])
        if ipaddress.ip_address(address).is_loopback:
            one_port.append((address, port))
        else:
            every_port.append(address)
    return every_port, one_port


class ApiServerEndpoints:
    """The `kubernetes` EndpointSlices' addresses, read at most once per `ttl` seconds."""

    def __init__(self, kube: Kube, ttl: float = TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.ttl = ttl
        self.clock = clock
        self.addresses: frozenset[str] = frozenset()
        self.read_at: float | None = None
        self.failing = False
        self.read_once = False
        self._lock = asyncio.Lock()

    async def current(self) -> frozenset[str]:
        """The addresses as last read; read again first when older than the TTL."""
        if self.read_at is not None and self.clock() - self.read_at < self.ttl:
            return self.addresses
        async with self._lock:
            if self.read_at is None or self.clock() - self.read_at >= self.ttl:
                await self.refresh()
        return self.addresses

    async def refresh(self) -> None:
        self.read_at = self.clock()
        try:
            found = await self.kube.api_server_addresses()
        except Exception as exc:  # forbidden, unreachable, timed out: keep what we had
            if not self.failing:
                logger.warning(
                    "cannot read the API server's EndpointSlices (%s): outgoing requests are still "
                    "denied the kubernetes Service address and the kubeconfig's server on every port, "
                    "and the endpoints read last",
                    type(exc).__name__,
                )
            self.failing = True
            return
        if self.failing or not self.read_once or self.addresses != frozenset(found):
            logger.info(
                "API server endpoints denied to outgoing requests: %s",
                ", ".join(sorted(found)) or "none found",
            )
        self.failing, self.read_once = False, True
        self.addresses = frozenset(found)
