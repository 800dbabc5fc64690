"""Which Incidents have a running loop: started, woken and stopped from watch events.

Owns the asyncio tasks of the incident loops (`incident.IncidentLoop`), one per incident that has
something to do (`attention.needs_loop`). A loop starts on the first watch event that shows work
(no finalizer round trip first), later events of its incident wake it, it is asked to stop when
the incident settles or is deleted (it finishes the step in hand, writes what it holds and
exits), and all of them stop together on shutdown within a bound.

This replaces a per-object framework daemon: kopf blocks deletion of an object with a daemon
by a finalizer, which cost two writes per incident (add and remove) and delayed every new
incident by one round trip. Nothing here blocks deletion: deleting an Incident stops its loop.

It also remembers the incidents of the last RECENT events (uids only), so that a body observed
from elsewhere than the watch (the intake's create response: `seen`) never starts a loop for an
incident the watch already showed, settled or deleted.

New loops are admitted ADMITTED_AT_ONCE at a time to their first plan (`Admission`): a burst of
thousands of incidents (a listing after a restart, a flood of alerts) otherwise plans all of them
at once, each plan's model copies, request bodies and answers alive together, and the allocator
keeps that peak long after (simulated without the operator: 5,000 decoded incidents with their
models at once left 726 MB, 100 at a time 174 MB). A loop gives its place back when its first
plan has written its decision (`planned`: before a step acts, so a long step holds no place),
when that plan fails, when the loop ends, or after ADMISSION_HOLD_S at the latest (an API server
that answers that slowly must not stop new incidents altogether). Later plans are not bounded.
Places go to the most severe incident waiting (its effective severity), then the first to
arrive: a P1 alert during a restart's listing of thousands does not wait behind them. A waiting
loop is already built (its body and status are held as an open incident's are): what waits is
its plan's working memory.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from incident_operator.core.attention import needs_loop

logger = logging.getLogger(__name__)
CANCEL_GRACE_S = 1.0
"""How long `stop` waits for the loops it cancelled before it leaves them (see `stop`)."""
RECENT = 4096
"""How many incidents' uids `seen` remembers (the last events'): tens of kilobytes."""
ADMITTED_AT_ONCE = 128
"""New loops making their first plan at once (see the module's docstring)."""
ADMISSION_HOLD_S = 10.0
"""A loop's place among them is given back after this long even if its first plan goes on."""
SEVERITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}
UNKNOWN_RANK = 5


class LiveBody(Mapping[str, Any]):
    """The latest watched body of one incident: the loop reads spec changes through it."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.current = body

    def __getitem__(self, key: str) -> Any:
        return self.current[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)


class Loop(Protocol):
    """What the supervisor needs of an incident loop."""

    namespace: str

    @property
    def finished(self) -> bool: ...

    def concerned_by(self, playbook: str) -> bool: ...

    async def run(
        self, stopped: Callable[[], bool], wake: asyncio.Event, planned: Callable[[], None] = ...
    ) -> None:
        """Run until `stopped()`, planning again on `wake`; call `planned()` each time a plan has
        ended or written its decision, whatever its outcome (the supervisor gives the loop's
        place back at the first call; the later ones change nothing)."""


LoopFactory = Callable[[str, LiveBody], Loop]
"""Builds the loop of an incident (uid, live body); may raise: the incident is then unreadable."""


@dataclass
class _Slot:
    body: LiveBody
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    loop: Loop | None = None
    task: asyncio.Task[None] | None = None


class Admission:
    """`places` places, handed to waiters by rank (lower first), then arrival."""

    def __init__(self, places: int) -> None:
        self.places = places
        self.free = places
        self.waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self.arrivals = itertools.count()

    async def take(self, rank: int) -> None:
        """Wait for a place (at once if one is free and nobody waits)."""
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        given: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiting, (rank, next(self.arrivals), given))
        try:
            await given
        except asyncio.CancelledError:
            if given.done() and not given.cancelled():  # handed a place as it was cancelled: pass it on
                self.give()
            raise

    def give(self) -> None:
        """A place back: to the first waiter by rank and arrival, else free."""
        while self.waiting:
            _, _, given = heapq.heappop(self.waiting)
            if not given.done():  # a waiter cancelled meanwhile is skipped
                given.set_result(None)
                return
        self.free = min(self.places, self.free + 1)


class _Place:
    """A new loop's place among those making their first plan (`Supervisor.admission`), given back
    once, by whichever comes first to `give_back` (or its hold timer)."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.held = False
        self.timer: asyncio.TimerHandle | None = None

    async def take(self, rank: int) -> None:
        await self.admission.take(rank)
        self.held = True
        self.timer = asyncio.get_running_loop().call_later(ADMISSION_HOLD_S, self.give_back)

    def give_back(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held:
            self.held = False
            self.admission.give()


def rank_of(body: Mapping[str, Any]) -> int:
    """Where an incident waits for its first plan: by its effective severity (P1 first)."""
    status, spec = body.get("status") or {}, body.get("spec") or {}
    return SEVERITY_RANK.get(str(status.get("effectiveSeverity") or spec.get("severity") or ""), UNKNOWN_RANK)


def wants_loop(body: Mapping[str, Any]) -> bool:
    """Whether the incident of `body` has something to do (`attention.needs_loop`)."""
    metadata = body.get("metadata") or {}
    return needs_loop(
        body.get("spec") or {},
        body.get("status") or {},
        metadata.get("annotations") or {},
        metadata.get("generation"),
    )


class Supervisor:
    """The incident loops of this operator, keyed by incident uid."""

    def __init__(self, factory: LoopFactory, on_unreadable: Callable[[Mapping[str, Any], str], None]) -> None:
        self.factory = factory
        self.on_unreadable = on_unreadable
        self.slots: dict[str, _Slot] = {}
        self.unreadable: dict[str, str] = {}  # uid -> resourceVersion last found unreadable
        self.recent: OrderedDict[str, None] = OrderedDict()  # uids of the last RECENT events
        self.closing = False
        self.admission = Admission(ADMITTED_AT_ONCE)

    def __len__(self) -> int:
        return len(self.slots)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event of an Incident (None: seen in the initial listing)."""
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if not uid:
            return
        self.recent[uid] = None
        self.recent.move_to_end(uid)
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        slot = self.slots.get(uid)
        if event_type == "DELETED":
            self.unreadable.pop(uid, None)
            if slot is not None:
                slot.stopping = True
                slot.wake.set()
            return
        wanted = wants_loop(body)
        if slot is not None:
            slot.body.current = body
            slot.stopping = not wanted
            slot.wake.set()
            return
        if wanted and not self.closing:
            self._start(uid, body)

    def seen(self, uid: str) -> bool:
        """Whether incident `uid` has a loop or was in one of the last RECENT events."""
        return uid in self.slots or uid in self.recent

    def wake(self, uid: str) -> None:
        slot = self.slots.get(uid)
        if slot is not None:
            slot.wake.set()

    def wake_concerned(self, namespace: str | None, playbook: str) -> None:
        """Wake the loops a change of Playbook `namespace/playbook` may concern."""
        for slot in list(self.slots.values()):
            loop = slot.loop
            if loop is not None and loop.namespace == namespace and loop.concerned_by(playbook):
                slot.wake.set()

    def _start(self, uid: str, body: Mapping[str, Any]) -> None:
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if self.unreadable.get(uid) == version:
            return  # reported already; a new version may be readable
        slot = _Slot(LiveBody(body))
        try:
            slot.loop = self.factory(uid, slot.body)
        except Exception as exc:  # one unreadable incident must not stop the others
            self.unreadable[uid] = version
            self.on_unreadable(body, f"{type(exc).__name__}: {exc}".splitlines()[0])
            return
        self.unreadable.pop(uid, None)
        slot.task = asyncio.create_task(self._run(uid, slot), name=f"incident/{uid}")
        self.slots[uid] = slot

    async def _run(self, uid: str, slot: _Slot) -> None:
        loop = slot.loop
        assert loop is not None  # noqa: S101 - set before the task starts
        place = _Place(self.admission)
        try:
            await place.take(rank_of(slot.body.current))
            while True:
                await loop.run(lambda: slot.stopping or self.closing, slot.wake, place.give_back)
                # No await between here and the removal below: an event either came before
                # (and cleared `stopping`: go on with the same loop and what it knows) or comes
                # after (and finds no slot: a new loop starts from the body it brings).
                if self.closing or slot.stopping or loop.finished:
                    break
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop survives API errors itself: this would be a bug
            logger.exception("incident loop %s ended with an error", uid)
        finally:
            place.give_back()
            if self.slots.get(uid) is slot:
                del self.slots[uid]

    async def stop(self, timeout: float) -> None:
        """Ask every loop to stop; cancel those still running after `timeout` seconds."""
        self.closing = True
        tasks = [slot.task for slot in self.slots.values() if slot.task is not None]
        for slot in self.slots.values():
            slot.wake.set()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if not pending:
            return
        # A cancelled loop may still await the API on its way out (a `finally` giving back a
        # workload lock): given CANCEL_GRACE_S, then cancelled again and left. An API server that
        # does not answer must not hold the exit; a lock not given back goes stale (its run is
        # judged settled or gone by the next claimant, `core.targets.holds_lock`).
        _, hung = await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        for task in hung:
            task.cancel()
        for task in pending - hung:
            if not task.cancelled():
                task.exception()  # retrieved: an error on the way out is not reported again
        logger.warning(
            "%d incident loops cancelled on shutdown (they resume on restart), %d of them still "
            "waiting for the API server",
            len(pending),
            len(hung),
        )
