"""Leader election for replicas of the operator: reads and writes the Lease, one actor at a time.

`Elector.campaign` returns once this replica holds the Lease; `Elector.hold` then renews it until
the operator stops or the Lease cannot be renewed within the renew deadline (it returns, and the
caller stops acting and exits: Kubernetes restarts the pod as a standby). `Elector.release` hands
the Lease over on a clean shutdown so a standby takes over at once. The decisions are pure
(`leadership`); this module only talks to the API, with a timeout on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from incident_operator.adapters.kube import ApiException, Kube, api_reason
from incident_operator.adapters.leases import LeaseStore
from incident_operator.api.timestamps import utc_now
from incident_operator.core import leadership
from incident_operator.core.leadership import LeaseRecord, Observation, Verdict
from incident_operator.settings.config import LeaderElection

logger = logging.getLogger(__name__)


def identity() -> str:
    """Unique per process: the pod's name (hostname) and a random suffix (a restarted pod is new)."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class Elector:
    """One replica's view of the Lease `namespace/name`."""

    def __init__(
        self,
        kube: Kube,
        settings: LeaderElection,
        *,
        default_namespace: str = "incident-operator",
        me: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        on_observed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace or default_namespace
        self.name = settings.leaseName
        self.leases = LeaseStore(kube, self.namespace, self.name)
        self.me = me or identity()
        self.clock = clock
        self.on_observed = on_observed or (lambda: None)
        self.observation: Observation | None = None
        self.resource_version: str | None = None
        self.last_renewed: datetime | None = None
        self._standby_logged = False

    @property
    def timeout(self) -> float:
        return float(self.settings.retryPeriodSeconds) + 3.0

    async def _read(self) -> LeaseRecord | None:
        lease = await self.leases.read(self.timeout)
        if lease is None:
            self.observation, self.resource_version = None, None
            self.on_observed()
            return None
        self.resource_version = lease.resource_version
        self.observation = leadership.observe(self.observation, lease.record, self.clock())
        self.on_observed()
        return lease.record

    async def _write(self, record: LeaseRecord) -> bool:
        """Create or replace the Lease with `record`; False if another replica wrote first."""
        return await self.leases.write(record, self.resource_version, self.timeout)

    async def try_once(self) -> bool:
        """Read the Lease and take or renew it if the rules allow; True if this replica holds it."""
        lease = await self._read()
        now = self.clock()
        action = leadership.verdict(self.observation, self.me, now)
        if action is Verdict.FOLLOW:
            holder = self.observation.record.holder if self.observation else None
            if not self._standby_logged:
                logger.info("standby: Lease %s/%s is held by %s", self.namespace, self.name, holder)
                self._standby_logged = True
            return False
        record = leadership.claimed(lease, self.me, self.settings.leaseDurationSeconds, now)
        if not await self._write(record):
            return False
        self.last_renewed = now
        if action is Verdict.TAKE:
            logger.info("leader: took Lease %s/%s as %s", self.namespace, self.name, self.me)
        return True

    async def campaign(self, stopped: Callable[[], bool]) -> bool:
        """Wait until this replica leads (True), or until `stopped()` (False)."""
        while not stopped():
            try:
                if await self.try_once():
                    return True
            except Exception as exc:  # the API is unreachable or refuses: try again later
                logger.warning("leader election: %s", _reason(exc))
            await asyncio.sleep(self.settings.retryPeriodSeconds)
        return False

    async def hold(self, stopped: Callable[[], bool]) -> None:
        """Renew the Lease every retry period; return when stopped, when another replica holds it,
        or when the renew deadline passes (a hung API call counts against the deadline too)."""
        deadline = timedelta(seconds=self.settings.renewDeadlineSeconds)
        while not stopped():
            await asyncio.sleep(self.settings.retryPeriodSeconds)
            if stopped():
                return
            assert self.last_renewed is not None  # noqa: S101 - set by the winning campaign
            remaining = (self.last_renewed + deadline - self.clock()).total_seconds()
            try:
                renewed = await asyncio.wait_for(self.try_once(), timeout=max(remaining, 0.001))
            except Exception as exc:
                logger.warning("leader election: could not renew: %s", _reason(exc))
                renewed = False
            holder = self.observation.record.holder if self.observation else None
            if not renewed and holder not in (None, self.me):
                logger.error(
                    "leader election: Lease %s/%s is held by %s; stepping down",
                    self.namespace,
                    self.name,
                    holder,
                )
                return
            if not renewed and leadership.must_step_down(self.last_renewed, deadline, self.clock()):
                logger.error(
                    "leader election: Lease %s/%s not renewed for %ss; stepping down",
                    self.namespace,
                    self.name,
                    self.settings.renewDeadlineSeconds,
                )
                return

    async def release(self) -> None:
        """Give the Lease up (only if still ours), so a standby need not wait for it to expire."""
        with contextlib.suppress(Exception):
            lease = await self._read()
            if lease is None or self.observation is None or self.observation.record.holder != self.me:
                return
            if await self._write(leadership.released(self.observation.record, self.clock())):
                logger.info("leader: released Lease %s/%s", self.namespace, self.name)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return api_reason(exc)
    return "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
