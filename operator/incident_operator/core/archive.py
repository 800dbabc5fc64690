"""Retention's pure half: which Closed incidents are due, an incident compacted into an archive
entry (and back into the shape the report and repeat detection read), the month an entry is filed
under, and the entries placed into `IncidentArchive` objects under a size bound.

Pure: no client, no clock (`now` is passed in). The controller (`controllers.retention`) lists,
writes and deletes; everything it decides comes from here.

An entry keeps raw strings as the API returned them (times included), so an incident read back
from the archive gives the report exactly the figures the live object gave. Entries are keyed by
the incident's uid: archiving one again (a crash between the archive's write and the incident's
delete) replaces its entry and never adds a second.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from incident_operator.api.keys import API_GROUP_VERSION, LABEL_ARCHIVE_MONTH
from incident_operator.api.models import ARCHIVE_POSTMORTEM_MAX, Phase
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import parse_time
from incident_operator.core import repeats
from incident_operator.core.repeats import RepeatKey, Seen

KIND = "IncidentArchive"
PLURAL = "incidentarchives"
MAX_ARCHIVE_BYTES = 1_048_576
"""The most an IncidentArchive may weigh serialized (JSON, compact): well under the API server's
1.5 MiB request limit, with room for metadata the server adds."""
NAME_PREFIX = "incidents-"

_SPEC_FIELDS = ("title", "severity", "category", "drill", "targets", "commander", "resolution", "actionItems")
_STATUS_FIELDS = (
    "detectedAt",
    "acknowledgedAt",
    "mitigatedAt",
    "resolvedAt",
    "closedAt",
    "repeatOf",
    "escalations",
    "escalation",
    "effectiveSeverity",
    "severityHistory",
)
_SOURCE_FIELDS = ("type", "alertname", "startsAt")


class ArchiveError(ValueError):
    """An incident the archive cannot take (no month to file it under); the message says why."""


def is_closed(status: Mapping[str, Any]) -> bool:
    return status.get("phase") == Phase.CLOSED and bool(status.get("closedAt"))


def due(
    incidents: Iterable[Mapping[str, Any]], now: datetime, closed_for: timedelta
) -> list[Mapping[str, Any]]:
    """The Closed incidents whose `status.closedAt` is at least `closed_for` before `now`, oldest
    closed first. An unreadable closedAt is never due (kept, not guessed)."""
    found: list[tuple[datetime, Mapping[str, Any]]] = []
    for incident in incidents:
        status = incident.get("status") or {}
        if not is_closed(status):
            continue
        try:
            closed = parse_time(str(status["closedAt"]))
        except ValueError:
            continue
        if closed <= now - closed_for:
            found.append((closed, incident))
    found.sort(key=lambda pair: pair[0])
    return [incident for _, incident in found]


def detected_stamp(incident: Mapping[str, Any]) -> str:
    """When the incident was detected (status.detectedAt, else its creation), as written."""
    status = incident.get("status") or {}
    metadata = incident.get("metadata") or {}
    return str(status.get("detectedAt") or metadata.get("creationTimestamp") or "")


def month_of(stamp: str) -> str:
    """YYYY-MM of an RFC 3339 time (in UTC, as the report files incidents)."""
    try:
        return parse_time(stamp).strftime("%Y-%m")
    except ValueError:
        raise ArchiveError(f"no month to file it under: time {stamp[:40]!r} unreadable") from None


def archive_name(month: str, index: int) -> str:
    """`incidents-YYYY-MM` for the first object of a month, then `incidents-YYYY-MM-2`, `-3`..."""
    return f"{NAME_PREFIX}{month}" if index <= 1 else f"{NAME_PREFIX}{month}-{index}"


def _cut(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode()
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode(errors="ignore"), True


def compact(incident: Mapping[str, Any], postmortem: str | None) -> dict[str, Any]:
    """The archive entry of a raw Incident: its facts, times, severity history, breach,
    escalations, action items, and the post-mortem text (cut at ARCHIVE_POSTMORTEM_MAX bytes)."""
    metadata = incident.get("metadata") or {}
    spec = incident.get("spec") or {}
    status = incident.get("status") or {}
    entry: dict[str, Any] = {"name": str(metadata.get("name") or "")}
    for key in _SPEC_FIELDS:
        if spec.get(key) is not None:
            entry[key] = spec[key]
    source = spec.get("source") or {}
    if source:
        entry["source"] = {k: source[k] for k in _SOURCE_FIELDS if source.get(k) is not None}
    if metadata.get("creationTimestamp"):
        entry["createdAt"] = metadata["creationTimestamp"]
    for key in _STATUS_FIELDS:
        if status.get(key) is not None:
            entry[key] = status[key]
    for condition in status.get("conditions") or []:
        breached = condition.get("type") == ConditionType.RESPONSE_TARGET_BREACHED
        if breached and condition.get("status") == "True":
            entry["breachedAt"] = condition.get("lastTransitionTime")
    if postmortem:
        entry["postmortem"], truncated = _cut(postmortem, ARCHIVE_POSTMORTEM_MAX)
        if truncated:
            entry["postmortemTruncated"] = True
    return entry


def as_incident(namespace: str, uid: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """An archive entry in the shape of the Incident it was (the fields the monthly report and
    repeat detection read), so archived and live incidents are counted by the same code."""
    spec = {key: entry[key] for key in _SPEC_FIELDS if entry.get(key) is not None}
    if entry.get("source"):
        spec["source"] = dict(entry["source"])
    status: dict[str, Any] = {key: entry[key] for key in _STATUS_FIELDS if entry.get(key) is not None}
    status["phase"] = Phase.CLOSED.value
    if entry.get("breachedAt"):
        status["conditions"] = [
            {
                "type": ConditionType.RESPONSE_TARGET_BREACHED.value,
                "status": "True",
                "reason": Reason.RESPONSE_TARGET_BREACHED.value,
                "lastTransitionTime": entry["breachedAt"],
                "message": "",
            }
        ]
    metadata: dict[str, Any] = {"name": entry.get("name", ""), "namespace": namespace, "uid": uid}
    if entry.get("createdAt"):
        metadata["creationTimestamp"] = entry["createdAt"]
    return {"metadata": metadata, "spec": spec, "status": status}


def archived_incidents(archives: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every entry of raw IncidentArchive objects as an incident (`as_incident`), each uid once
    even if two objects held it (a crash between two writes never counts one twice)."""
    seen: set[str] = set()
    found = []
    for archive in archives:
        namespace = str((archive.get("metadata") or {}).get("namespace") or "")
        for uid, entry in sorted(((archive.get("spec") or {}).get("entries") or {}).items()):
            if uid in seen:
                continue
            seen.add(uid)
            found.append(as_incident(namespace, uid, entry))
    return found


def history(
    live: Iterable[Mapping[str, Any]], archives: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Live incidents and archived ones alike; an incident both live and archived (archived, not
    deleted yet) is counted once, as the live object."""
    live = list(live)
    uids = {(i.get("metadata") or {}).get("uid") for i in live}
    return live + [i for i in archived_incidents(archives) if i["metadata"]["uid"] not in uids]


@dataclass
class Archive:
    """One IncidentArchive as the controller reads and writes it."""

    name: str
    month: str
    entries: dict[str, Any] = field(default_factory=dict)
    resource_version: str | None = None
    """None: not in the API yet (create it)."""

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Archive:
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        return cls(
            str(metadata.get("name") or ""),
            str(spec.get("month") or ""),
            dict(spec.get("entries") or {}),
            metadata.get("resourceVersion"),
        )

    def body(self, namespace: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": namespace,
            "labels": {LABEL_ARCHIVE_MONTH: self.month},
        }
        if self.resource_version is not None:
            metadata["resourceVersion"] = self.resource_version
        return {
            "apiVersion": API_GROUP_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": {"month": self.month, "count": len(self.entries), "entries": self.entries},
        }


def size_of(body: Mapping[str, Any]) -> int:
    """Bytes of `body` serialized as compact JSON (what the request carries, near enough)."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def _entry_bytes(uid: str, entry: Mapping[str, Any]) -> int:
    return size_of({uid: entry}) - 1  # `"uid":{...}` plus a comma, less the braces


@dataclass
class Slot:
    """One IncidentArchive as placing needs it: its name, its size and which uids it holds, not
    its entries (a month of a busy namespace is tens of MB of them)."""

    name: str
    month: str
    size: int
    uids: set[str]
    resource_version: str | None = None

    @classmethod
    def of(cls, archive: Archive, namespace: str) -> Slot:
        return cls(
            archive.name,
            archive.month,
            size_of(archive.body(namespace)),
            set(archive.entries),
            archive.resource_version,
        )


def month_of_all(namespace: str, additions: Mapping[str, Mapping[str, Any]]) -> str:
    """The one month of detection of `additions`; ArchiveError if they are of several."""
    months = {month_of(detected_stamp(as_incident(namespace, u, e))) for u, e in additions.items()}
    if len(months) != 1:
        raise ArchiveError(f"entries of several months placed at once: {sorted(months)}")
    return months.pop()


def assign(
    slots: Iterable[Slot],
    namespace: str,
    month: str,
    additions: Mapping[str, Mapping[str, Any]],
    bound: int = MAX_ARCHIVE_BYTES,
    *,
    taken: Iterable[str] = (),
) -> dict[str, list[str]]:
    """Where each of `additions` (uid → entry, all of `month`) goes among the month's archives of
    `namespace` (`slots`; those of other months are ignored): an uid already archived stays where it
    is; a new one goes into the first archive it fits in under `bound`, else into a new one (the next
    free name). Returns archive name → the uids it takes, in the order first touched; a name not
    among `slots` is a new archive, never one of their names (even one filed under another month)
    nor one of `taken` (names known to exist though not among the month's). Raises ArchiveError
    for an entry that cannot fit into an empty archive."""
    slots = list(slots)
    taken = {s.name for s in slots} | set(taken)
    mine = sorted((s for s in slots if s.month == month), key=lambda s: _index_of(s.name, month))
    sizes = {s.name: s.size for s in mine}
    holder = {uid: s.name for s in mine for uid in s.uids}
    names = [s.name for s in mine]
    plan: dict[str, list[str]] = {}
    for uid, entry in additions.items():
        cost = _entry_bytes(uid, entry)
        if uid in holder:  # replaces its entry there; counted as if added (its old size unknown)
            sizes[holder[uid]] += cost
            plan.setdefault(holder[uid], []).append(uid)
            continue
        target = next((n for n in names if sizes[n] + cost <= bound), None)
        if target is None:
            target = next(
                archive_name(month, i) for i in itertools.count(1) if archive_name(month, i) not in taken
            )
            taken.add(target)
            sizes[target] = size_of(Archive(target, month).body(namespace))
            if sizes[target] + cost > bound:
                raise ArchiveError(f"entry {uid} alone weighs {cost} bytes, over the bound {bound}")
            names.append(target)
        sizes[target] += cost
        holder[uid] = target
        plan.setdefault(target, []).append(uid)
    return plan


def place(
    archives: Iterable[Archive],
    namespace: str,
    additions: Mapping[str, Mapping[str, Any]],
    bound: int = MAX_ARCHIVE_BYTES,
) -> list[Archive]:
    """Put `additions` (uid → entry, all of one month) into that month's archives of `namespace`
    as `assign` says. Returns the archives that changed (new ones without a resourceVersion).
    Raises ArchiveError for entries of several months or an entry that cannot fit into an empty
    archive."""
    if not additions:
        return []
    month = month_of_all(namespace, additions)
    mine = {a.name: a for a in archives if a.month == month}
    changed: list[Archive] = []
    for name, uids in assign(
        [Slot.of(a, namespace) for a in mine.values()], namespace, month, additions, bound
    ).items():
        target = mine.get(name) or Archive(name, month)
        for uid in uids:
            target.entries[uid] = dict(additions[uid])
        changed.append(target)
    return changed


def _index_of(name: str, month: str) -> int:
    rest = name.removeprefix(archive_name(month, 1))
    if not rest:
        return 1
    try:
        return int(rest.removeprefix("-"))
    except ValueError:
        return 1_000_000  # not one of ours: last


def grouped(entries: Mapping[str, Mapping[str, Any]], namespace: str) -> dict[str, dict[str, Any]]:
    """uid → entry, grouped by the month of detection."""
    months: dict[str, dict[str, Any]] = {}
    for uid, entry in entries.items():
        month = month_of(detected_stamp(as_incident(namespace, uid, entry)))
        months.setdefault(month, {})[uid] = entry
    return months


def repeat_index(namespace: str, archive: Mapping[str, Any]) -> dict[tuple[str, RepeatKey], Seen]:
    """(namespace, repeat key) → the latest archived incident with that key in one IncidentArchive:
    what a new incident may repeat across the archive's boundary (see `repeats`)."""
    found: dict[tuple[str, RepeatKey], Seen] = {}
    for uid, entry in sorted(((archive.get("spec") or {}).get("entries") or {}).items()):
        incident = as_incident(namespace, uid, entry)
        key = repeats.key_of(incident["spec"])
        if key is None:
            continue
        seen = repeats.seen_of(incident["metadata"]["name"], incident["metadata"], incident["status"])
        kept = found.get((namespace, key))
        if kept is None or _later(seen[1], kept[1]):
            found[(namespace, key)] = seen
    return found


def _later(stamp: str, than: str) -> bool:
    try:
        return parse_time(stamp) > parse_time(than)
    except ValueError:
        return False


class ArchivedRepeats:
    """The repeat facts of the archived incidents, compact: (namespace, repeat key) -> the latest
    `Seen` of that key in each IncidentArchive (`repeat_index`). Filled from a paged listing at
    start and from retention's own writes (only the operator writes archives), so no framework
    index holds the archives' bodies (a year of them is hundreds of MiB of post-mortem text)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, RepeatKey], dict[str, Seen]] = {}
        self._keys_of: dict[tuple[str, str], list[tuple[str, RepeatKey]]] = {}

    def put(self, namespace: str, archive: Mapping[str, Any]) -> None:
        """Index one IncidentArchive as written (replacing what its earlier version gave)."""
        name = str((archive.get("metadata") or {}).get("name") or "")
        self.remove(namespace, name)
        found = repeat_index(namespace, archive)
        for key, seen in found.items():
            self._by_key.setdefault(key, {})[name] = seen
        self._keys_of[(namespace, name)] = list(found)

    def remove(self, namespace: str, name: str) -> None:
        for key in self._keys_of.pop((namespace, name), []):
            kept = self._by_key.get(key, {})
            kept.pop(name, None)
            if not kept:
                self._by_key.pop(key, None)

    def of(self, namespace: str, key: RepeatKey) -> list[Seen]:
        """The archived incidents a new incident of `namespace` with `key` may repeat."""
        return list(self._by_key.get((namespace, key), {}).values())
