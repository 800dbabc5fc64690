"""Whether the API server answers, for `/readyz`: a cheap `GET /version` every couple of seconds.

A replica that cannot reach the API server is not ready (it could neither take alerts nor act),
and becomes ready again by itself once the server answers: no restart needed.
"""

from __future__ import annotations

import asyncio
import logging

from kubernetes_asyncio import client

from incident_operator.adapters.kube import Kube

logger = logging.getLogger(__name__)

INTERVAL_S = 2.0
TIMEOUT_S = 2.0


class ApiHealth:
    def __init__(self, kube: Kube, interval: float = INTERVAL_S, timeout: float = TIMEOUT_S) -> None:
        self.version = client.VersionApi(kube.api)
        self.kube = kube
        self.interval, self.timeout = interval, timeout
        self.ok = False

    async def check(self) -> bool:
        try:
            await self.kube.call(self.version.get_code, _request_timeout=self.timeout)
        except Exception as exc:  # unreachable, refused, timed out: all "not ready"
            if self.ok:
                logger.warning("API server unreachable (%s): /readyz answers 503", type(exc).__name__)
            self.ok = False
        else:
            if not self.ok:
                logger.info("API server reachable")
            self.ok = True
        return self.ok

    async def watch(self) -> None:
        """Check forever (cancel the task to stop)."""
        while True:
            await self.check()
            await asyncio.sleep(self.interval)
