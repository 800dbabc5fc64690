"""The circuit breaker and the storm guard at run time: one `Breaker` shared by every incident loop.

Owns the reservation of a slot before a mutating action, and giving it back when the attempt
acted on nothing (`release`): the decision is `core.breaker.reserve`'s,
the state is the ConfigMap of `adapters.breakerstate`, read and replaced with its resourceVersion
(a conflict, from a replica taking over or a person resuming automation, reads again and decides
again). Reservations of this process are written one at a time (an asyncio lock), so the copy it
holds is the API's unless someone else wrote; those that arrive while one is written go together
in the next write (each decided in order of arrival on the state the one before it left, so the
limits hold within a write as across writes): under a storm of mutating steps the reservations
wait for about two writes, not for one write per step ahead of them. A refusal may be decided
from a copy up to
`CACHE_SECONDS` old (it writes nothing unless it opens or refreshes a trip, and a refused step
asks again within seconds), a grant never without writing. Also answers the paused gauge (the
scopes in which a step of this process waits now).

State that cannot be read or written (a Role that does not cover a changed `stateNamespace` or
`stateConfigMap`, a missing namespace, a state the API refuses as too large, writers contending
`WRITE_ATTEMPTS` times in a row) refuses the action with reason `BreakerUnavailable` and the cause:
the step waits (the incident `Stalled`, a warning Event) and asks again within `breaker.RECHECK`;
each failed read or write counts once in `incident_operator_breaker_errors_total` (a write that
carried several reservations refuses them all and counts once). Never granted unrecorded, never a
silent retry loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from incident_operator.adapters import metrics
from incident_operator.adapters.breakerstate import BreakerStore
from incident_operator.adapters.kube import ApiException, Kube, api_reason
from incident_operator.api.reasons import Reason
from incident_operator.api.timestamps import utc_now
from incident_operator.core import breaker, openlimit
from incident_operator.settings.config import AutomationConfig

logger = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
BATCH = 64  # reservations decided and written together at most (each decision scans the window)
WRITE_ATTEMPTS = 8
WAITING_SECONDS = 2 * breaker.RECHECK.total_seconds() + CACHE_SECONDS


class Breaker:
    """Reserves slots for mutating actions in the API (see `core.breaker`)."""

    def __init__(
        self,
        kube: Kube,
        config: AutomationConfig,
        namespace: str,
        *,
        in_flight: breaker.InFlight | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = BreakerStore(kube, config.stateNamespace or namespace, config.stateConfigMap)
        self.in_flight = in_flight
        self.clock = clock
        self.monotonic = monotonic
        self._lock = asyncio.Lock()
        self._queue: list[tuple[breaker.Request, asyncio.Future[breaker.Verdict]]] = []
        """Reservations waiting for the next write (`reserve`)."""
        self._state: breaker.State | None = None
        self._version: str | None = None
        self._read_at = float("-inf")
        self._refused: dict[str, float] = {}
        """Scopes by the last refusal of this process (monotonic): what waits now."""
        metrics.automation_paused_by(self.paused)

    def _seen(self, verdict: breaker.Verdict) -> breaker.Verdict:
        """Keep where a step waits for the paused gauge: a limit reached, not a step no window can
        hold (`ActionsAboveLimit`: Stalled, nothing is paused) nor a state that cannot be kept."""
        if not verdict.granted and verdict.scope is not None and verdict.reason != Reason.ACTIONS_ABOVE_LIMIT:
            self._refused[verdict.scope] = self.monotonic()
        return verdict

    def paused(self) -> dict[str, int]:
        """Scopes by kind in which a mutating step waits now: refused within `WAITING_SECONDS`
        (a refused step asks again within `breaker.RECHECK`). Read at each scrape."""
        now = self.monotonic()
        for scope, at in list(self._refused.items()):
            if now - at > WAITING_SECONDS:
                del self._refused[scope]
        return breaker.tripped_counts(self._refused)

    def expects_refusal(self, request: breaker.Request) -> bool:
        """A hint, from the copy this process holds (nothing read, nothing written): `request`
        would be refused now. Only `reserve` decides; this keeps work that waits on a grant (an
        early lock claim) from being done for a step the breaker holds."""
        if self._state is None:
            return False
        _, verdict = breaker.reserve(self._state, request, self.config, self.clock(), self.in_flight)
        return not verdict.granted

    async def _refresh(self) -> breaker.State:
        read = await self.store.read()
        self._state, self._version, self._read_at = read.state, read.resource_version, self.monotonic()
        return read.state

    async def reserve(self, request: breaker.Request) -> breaker.Verdict:
        """Take a slot for `request` in the API, or say why it waits (`BreakerUnavailable` when the
        state cannot be read or written). Queued, then decided by whichever waiter holds the lock
        next, together with those queued by then (up to BATCH: one write for all of them). A
        caller cancelled before the write carrying its request started is never counted; one
        cancelled while that write is in flight may be (asked again, a reservation counts once;
        the slot leaves with the window). One cancelled while it writes for others hands theirs
        to the next waiter."""
        decided: asyncio.Future[breaker.Verdict] = asyncio.get_running_loop().create_future()
        entry = (request, decided)
        self._queue.append(entry)
        try:
            async with self._lock:
                while not decided.done():  # BATCH at a time, those queued first first
                    await self._reserve_queued()
        finally:
            if not decided.done():  # cancelled: out of the queue, and never decided if in a batch
                decided.cancel()
                if entry in self._queue:
                    self._queue.remove(entry)
        return decided.result()

    async def _reserve_queued(self) -> None:
        waiting = [e for e in self._queue if not e[1].done()]
        batch, self._queue = waiting[:BATCH], waiting[BATCH:]
        try:
            try:
                verdicts = await self._reserve([r for r, _ in batch])
            except Exception as exc:  # any failure holds the actions, visibly
                verdicts = [self._failed(exc)] * len(batch)
            for (_, decided), verdict in zip(batch, verdicts, strict=True):
                if not decided.done():  # its caller may have gone meanwhile
                    decided.set_result(verdict)
        finally:  # cancelled meanwhile: the next waiter decides what is left
            self._queue[:0] = [e for e in batch if not e[1].done()]

    def _failed(self, exc: Exception) -> breaker.Verdict:
        self._read_at = float("-inf")  # read afresh next time
        kind, cause = self._unavailable(exc)
        metrics.breaker_error(kind)
        logger.warning("breaker state %s/%s: %s", self.store.namespace, self.store.name, cause)
        return breaker.Verdict(
            granted=False,
            reason=Reason.BREAKER_UNAVAILABLE,
            message=f"the breaker's state, ConfigMap {self.store.namespace}/{self.store.name}, "
            f"cannot be {cause}; mutating steps wait until it can",
            retry_at=self.clock() + breaker.RECHECK,
        )

    async def release(self, request: breaker.Request) -> bool:
        """Give back the slots `request` reserved, its attempt having acted on nothing
        (`core.breaker.release`): written with the resourceVersion like a reservation (a conflict
        reads again and decides again; asked twice, the second writes nothing). Best effort: a
        failure is logged and counted (the slots then leave with the window). True: given back or
        nothing to give back."""
        async with self._lock:
            try:
                state = await self._refresh()
                for _ in range(WRITE_ATTEMPTS):
                    new = breaker.release(state, request)
                    if new is None:
                        return True
                    written = await self.store.write(new, self._version)
                    if written is not None:
                        self._state, self._version, self._read_at = new, written, self.monotonic()
                        return True
                    state = await self._refresh()
                raise Contended(f"another writer came first {WRITE_ATTEMPTS} times in a row")
            except Exception as exc:
                self._read_at = float("-inf")
                kind, cause = self._unavailable(exc)
                metrics.breaker_error(kind)
                logger.warning(
                    "breaker state %s/%s: slots of %s not given back: %s",
                    self.store.namespace,
                    self.store.name,
                    request.key,
                    cause,
                )
                return False

    def _unavailable(self, exc: Exception) -> tuple[str, str]:
        """(the metric's reason, what people read) for a failed read or write."""
        if isinstance(exc, Contended):
            return "Contended", f"written: {exc}"
        if isinstance(exc, breaker.StateTooLarge):
            return "TooLarge", f"written: {exc}"
        if not isinstance(exc, ApiException):
            return type(exc).__name__, f"read or written: {type(exc).__name__}"
        status = exc.status or 0
        if status == 403:
            return "Forbidden", (
                f"read or written ({api_reason(exc)}): the operator's Role must grant get, create "
                "and update on it (change the Role with automation.stateNamespace or stateConfigMap)"
            )
        if status == 404:
            return "NotFound", f"created ({api_reason(exc)}): does namespace {self.store.namespace} exist?"
        if status in (413, 422):
            return ("TooLarge" if status == 413 else "Invalid"), f"written ({api_reason(exc)})"
        return f"HTTP{status}", f"read or written ({api_reason(exc)})"

    async def _reserve(self, requests: list[breaker.Request]) -> list[breaker.Verdict]:
        """Decide `requests` in order, each on the state the one before left; one write for all."""
        fresh = self.monotonic() - self._read_at < CACHE_SECONDS
        state = self._state if self._state is not None and fresh else await self._refresh()
        for _ in range(WRITE_ATTEMPTS):
            now, new, verdicts = self.clock(), state, []
            for request in requests:
                new, verdict = breaker.reserve(new, request, self.config, now, self.in_flight)
                verdicts.append(verdict)
            if not any(v.write for v in verdicts):
                self._state = new
                return [self._seen(v) for v in verdicts]
            written = await self.store.write(new, self._version)
            if written is not None:
                self._state, self._version, self._read_at = new, written, self.monotonic()
                return [self._seen(v) for v in verdicts]
            state = await self._refresh()  # another writer came first: decide again
        raise Contended(f"another writer came first {WRITE_ATTEMPTS} times in a row")


class Contended(Exception):
    """Every write of one reservation conflicted with another writer's."""


def in_flight_from(index: Callable[[str], openlimit.Ranking]) -> breaker.InFlight:
    """An `InFlight` over the open-incidents index (`openlimit.Rankings.of`): a run is in flight
    while its incident is open with that very run (`OpenIncident.run`). Drills are not indexed:
    their runs count for `breaker.RUN_GRACE` only."""

    def check(namespace: str, uid: str, run: str) -> bool | None:
        entry = index(namespace).get(uid)
        return entry is not None and entry.run == run

    return check
