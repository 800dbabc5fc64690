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

Works on raw objects, because the operator keeps one `OpenIncident` per open incident in a kopf
index (cheap per watch event; no listing of the API on a reconcile).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping
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


def entry_of(
    name: str, uid: str, spec: Mapping[str, Any], metadata: Mapping[str, Any], status: Mapping[str, Any]
) -> OpenIncident | None:
    """The incident as the cap counts it, or None when it does not count: not open, or a drill."""
    if not counted(spec, status.get("phase")):
        return None
    playbook = status.get("playbook")
    return OpenIncident(
        name=name,
        uid=uid,
        created=created_of(metadata, status),
        running=playbook is not None,
        run=str(playbook.get("runId") or "") if playbook is not None else None,
        waiting=waits_in(status),
    )


def waits(
    me: OpenIncident,
    others: Iterable[OpenIncident],
    limit: int,
    namespace: str,
    started: Collection[str] = (),
) -> str | None:
    """Why `me`'s automation waits (the condition's message), or None when it may run.

    It may run when fewer than `limit` open incidents of the namespace rank before it. `others`
    may include `me` (by name): it is counted once. `started`: uids of incidents whose run has
    started though the watch does not show it yet (they count as running: without them, two
    incidents deciding at once from the same view could both take the last slot).

    A run already in flight never waits, whatever the count (a restart with a lower limit, or 0):
    holding it would freeze a step partway (a workload left scaled, Monitoring never ending)."""
    if me.running:
        return None
    ahead = 0
    count = 1
    for other in others:
        if other.name == me.name:
            continue
        count += 1
        key = (False, other.created, other.name) if other.uid in started else other.key
        if key < me.key:
            ahead += 1
    if ahead < limit:
        return None
    if limit == 0:
        return (
            f"automation waits: limits.maxOpenIncidentsPerNamespace is 0, so no playbook runs in "
            f"namespace {namespace} ({count} open incidents); the incident is recorded and people are told"
        )
    return (
        f"automation waits: namespace {namespace} has {count} open incidents, more than "
        f"limits.maxOpenIncidentsPerNamespace ({limit}); it starts when an older one resolves "
        f"({ahead} ahead of it); the incident is recorded and people are told"
    )


def to_wake(entries: Iterable[OpenIncident], limit: int) -> list[str]:
    """The uids of the incidents of one namespace whose place disagrees with their watched
    status: among the first `limit` but waiting (a slot freed: they start), or after them but not
    waiting (they wait). Woken, each plans and says so; once it has, it agrees and is left alone.
    A running incident is never woken to wait (its run finishes, see `waits`)."""
    listed = list(entries)
    if len(listed) <= limit:
        return [e.uid for e in listed if e.waiting]
    first = {e.name for e in heapq.nsmallest(limit, listed, key=lambda e: e.key)}
    return [e.uid for e in listed if e.waiting if e.name in first or e.running] + [
        e.uid for e in listed if not e.waiting and not e.running and e.name not in first
    ]
