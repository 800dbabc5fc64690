"""The cap on open incidents per namespace (`limits.maxOpenIncidentsPerNamespace`): whose
automation runs and whose waits. Pure.

One tenant opening thousands of incidents must not make the operator run thousands of
playbooks for everyone. Every incident is recorded, timed, escalated and can be acknowledged and
resolved by people; only its playbook automation waits for a slot: the oldest `limit` open
incidents of a namespace run automation, the others wait (condition `AutomationPaused`, reason
`OpenIncidentLimit`) and start, oldest first, as earlier ones resolve.

The order is stable: incidents with a run in flight come first (a run is never paused because an
older incident reopened), then by creation (`metadata.creationTimestamp`, which never changes;
`detectedAt` only where it is missing), then by name. Open means neither Resolved nor Closed nor
declared so by a person (`spec.resolution`, `spec.closed`). Drill incidents are neither counted
nor held: a Drill runs one at a time, and a drill held behind production incidents would score
the queue, not the response.

Only incidents that use a slot count and are held: a run in flight (`status.playbook`, whatever
its state: running, stalled on a failed step or a misconfiguration, paused by `spec.paused`
partway; it holds a run and goes on without asking again), or a playbook to start. Not counted,
never held and never told they wait: an incident with `spec.paused` and no run, and one whose
plan found no playbook to run (`Stalled` with `NoMatchingPlaybook`, `PlaybookNotFound` or
`InvalidPlaybook`, and no run). An incident not planned yet counts until its first plan says so.

Works on raw objects, because the operator keeps one `OpenIncident` per open incident in a kopf
index (cheap per watch event; no listing of the API on a reconcile).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from incident_operator.api.models import Phase
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import parse_time

LATEST = datetime.max.replace(tzinfo=UTC)
"""Where an incident with no readable creation time goes: last."""


@dataclass(frozen=True)
class OpenIncident:
    """One open incident of a namespace, as the cap ranks it."""

    name: str
    uid: str
    created: datetime
    running: bool = False
    """A playbook run is in flight (`status.playbook`): it keeps its place."""
    run: str | None = None
    """The run in flight's id (`status.playbook.runId`), if any."""
    waiting: bool = False
    """Its watched status says it waits (`AutomationPaused` True, `OpenIncidentLimit`)."""

    @property
    def key(self) -> tuple[bool, datetime, str]:
        return (not self.running, self.created, self.name)


def is_drill(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("drill")) or (spec.get("source") or {}).get("type") == "drill"


def created_of(metadata: Mapping[str, Any], status: Mapping[str, Any]) -> datetime:
    for stamp in (metadata.get("creationTimestamp"), status.get("detectedAt")):
        if stamp:
            try:
                return parse_time(str(stamp))
            except ValueError:
                continue
    return LATEST


def waits_in(status: Mapping[str, Any]) -> bool:
    """Whether a watched status says the incident waits for a slot."""
    return any(
        c.get("type") == ConditionType.AUTOMATION_PAUSED
        and c.get("status") == "True"
        and c.get("reason") == Reason.OPEN_INCIDENT_LIMIT
        for c in status.get("conditions") or []
    )


def counted(spec: Mapping[str, Any], phase: object) -> bool:
    """Whether the cap counts an incident: open (its phase and its spec say so) and no drill."""
    if is_drill(spec) or spec.get("resolution") or spec.get("closed"):
        return False
    return phase not in (Phase.RESOLVED, Phase.CLOSED)


NO_PLAYBOOK = (Reason.NO_MATCHING_PLAYBOOK, Reason.PLAYBOOK_NOT_FOUND, Reason.INVALID_PLAYBOOK)
"""Stalled so with no run in flight: the incident has no playbook to run, and uses no slot."""


def without_playbook(status: Mapping[str, Any]) -> bool:
    """Whether its watched status says it has no playbook to run (and no run in flight)."""
    return status.get("playbook") is None and any(
        c.get("type") == ConditionType.STALLED
        and c.get("status") == "True"
        and c.get("reason") in NO_PLAYBOOK
        for c in status.get("conditions") or []
    )


def entry_of(
    name: str, uid: str, spec: Mapping[str, Any], metadata: Mapping[str, Any], status: Mapping[str, Any]
) -> OpenIncident | None:
    """The incident as the cap counts it, or None when it does not count: not open, a drill,
    or using no slot (paused with no run, or no playbook to run)."""
    if not counted(spec, status.get("phase")):
        return None
    playbook = status.get("playbook")
    if playbook is None and (spec.get("paused") or without_playbook(status)):
        return None
    return OpenIncident(
        name=name,
        uid=uid,
        created=created_of(metadata, status),
        running=playbook is not None,
        run=str(playbook.get("runId") or "") if playbook is not None else None,
        waiting=waits_in(status),
    )


WAKE_WINDOW = 32
"""How far either side of the cut-off `Ranking.to_wake` looks. One index change moves the cut-off
by one place at most; the margin covers wake-ups still pending when several changes come close
together. Farther from it nothing changes place (a new incident plans by itself when it starts)."""


class Ranking:
    """The open incidents of one namespace in the cap's order, kept as the index changes.

    `put` is O(1); the order is sorted again only on the next question after an entry was added,
    removed, or changed its place (`key`); a change of its watched `waiting` alone keeps the
    order. Then `waits` is a rank lookup plus a look at the runs claimed (a handful), and
    `to_wake` looks only near the cut-off: no question goes over every incident of a namespace,
    however many thousands it holds (a flood)."""

    def __init__(self, entries: Iterable[OpenIncident] = ()) -> None:
        self._by_uid: dict[str, OpenIncident] = {}
        self._order: list[OpenIncident] = []
        self._keys: list[tuple[bool, datetime, str]] = []
        self._rank: dict[str, int] = {}
        self._stale = False
        self.sorts = 0
        """How often the order was sorted (the tests count it)."""
        for entry in entries:
            self.put(entry.uid, entry)

    def __len__(self) -> int:
        return len(self._by_uid)

    def __iter__(self) -> Iterator[OpenIncident]:
        return iter(self._by_uid.values())

    def get(self, uid: str) -> OpenIncident | None:
        return self._by_uid.get(uid)

    def put(self, uid: str, entry: OpenIncident | None) -> None:
        """The incident as indexed now; None: it no longer counts (resolved, closed, deleted)."""
        old = self._by_uid.get(uid)
        if entry is None:
            if old is not None:
                del self._by_uid[uid]
                self._stale = True
            return
        self._by_uid[uid] = entry
        if old is None or old.key != entry.key:
            self._stale = True

    def _sorted(self) -> list[OpenIncident]:
        if self._stale:
            self._order = sorted(self._by_uid.values(), key=lambda e: e.key)
            self._keys = [e.key for e in self._order]
            self._rank = {e.uid: i for i, e in enumerate(self._order)}
            self._stale = False
            self.sorts += 1
        return self._order

    def waits(
        self, me: OpenIncident, limit: int, namespace: str, started: Collection[str] = ()
    ) -> str | None:
        """Why `me`'s automation waits (the condition's message), or None when it may run.

        It may run when fewer than `limit` open incidents of the namespace rank before it. `me`
        may be in the ranking already (by uid): it is counted once. `started`: uids of incidents
        whose run has started though the watch does not show it yet (they count as running:
        without them, two incidents deciding at once from the same view could both take the last
        slot).

        A run already in flight never waits, whatever the count (a restart with a lower limit,
        or 0): holding it would freeze a step partway (a workload left scaled, Monitoring never
        ending)."""
        if me.running:
            return None
        self._sorted()
        indexed = self._by_uid.get(me.uid)
        count = len(self._by_uid) + (indexed is None)
        if indexed is not None and indexed.key == me.key:
            ahead = self._rank[me.uid]
        else:
            ahead = bisect.bisect_left(self._keys, me.key)
            if indexed is not None and indexed.key < me.key:
                ahead -= 1  # its own (older) place
        for uid in started:  # claimed runs ranked after it go before it now
            other = self._by_uid.get(uid)
            if uid != me.uid and other is not None and not other.running and other.key > me.key:
                ahead += 1
        if ahead < limit:
            return None
        if limit == 0:
            return (
                f"automation waits: limits.maxOpenIncidentsPerNamespace is 0, so no playbook runs in "
                f"namespace {namespace} ({count} open incidents); the incident is recorded and "
                "people are told"
            )
        return (
            f"automation waits: namespace {namespace} has {count} open incidents, more than "
            f"limits.maxOpenIncidentsPerNamespace ({limit}); it starts when an older one resolves "
            f"({ahead} ahead of it); the incident is recorded and people are told"
        )

    def to_wake(self, limit: int, also: str | None = None) -> list[str]:
        """The uids of the incidents near the cut-off whose place disagrees with their watched
        status: among the first `limit` but waiting (a slot freed: they start), or after them but
        not waiting (they wait). Woken, each plans and says so; once it has, it agrees and is left
        alone. A running incident is never woken to wait (its run finishes, see `waits`).
        `also`: the incident whose event this is, looked at wherever it ranks (its status saying
        it waits may come back after its slot freed, far from the cut-off by then)."""
        order = self._sorted()
        ranks = range(max(0, limit - WAKE_WINDOW), min(len(order), limit + WAKE_WINDOW))
        woken = [order[rank].uid for rank in ranks if self._disagrees(rank, limit)]
        if also is not None and also in self._rank and self._rank[also] not in ranks:
            woken += [also] if self._disagrees(self._rank[also], limit) else []
        return woken

    def _disagrees(self, rank: int, limit: int) -> bool:
        entry = self._by_uid[self._order[rank].uid]  # its waiting flag as indexed now
        return entry.waiting if rank < limit or entry.running else not entry.waiting


class Rankings:
    """One `Ranking` per namespace, fed from the open-incidents index as it changes."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, Ranking] = {}

    def of(self, namespace: str) -> Ranking:
        return self._by_namespace.setdefault(namespace, Ranking())

    def put(self, namespace: str, uid: str, entry: OpenIncident | None) -> None:
        self.of(namespace).put(uid, entry)


def waits(
    me: OpenIncident,
    others: Iterable[OpenIncident],
    limit: int,
    namespace: str,
    started: Collection[str] = (),
) -> str | None:
    """`Ranking.waits` over a list of entries (as the index holds them)."""
    return Ranking(others).waits(me, limit, namespace, started)


def to_wake(entries: Iterable[OpenIncident], limit: int) -> list[str]:
    """`Ranking.to_wake` over a list of entries."""
    return Ranking(entries).to_wake(limit)
