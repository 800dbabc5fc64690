"""Repeat incidents (seed 9.1): is this incident the same problem as an earlier one?

Pure. Two incidents of one namespace are the same problem when they have the same key: the
alertname for incidents from an alert (else the category), and the same set of targets. A new
incident repeats the latest earlier one with its key detected within the window (config
`repeats.windowDays`, 30 by default). Drills neither repeat nor are repeated.

Works on raw objects: the operator keeps these keys in a `History` over every incident it
watches (cheap per watch event, no parsing of whole incidents), and keeps nothing else of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from incident_operator.api.timestamps import parse_time

RepeatKey = tuple[str, str]
"""(what: `alert:NAME` or `category:NAME`, targets: `Kind/name,...` sorted)."""

Seen = tuple[str, str]
"""(incident name, when it was detected or created: RFC 3339)."""


def key_of(spec: Mapping[str, Any]) -> RepeatKey | None:
    """The repeat key of an incident spec, or None when it has none: a drill, or an incident
    with neither an alertname nor targets (a category alone says too little)."""
    source = spec.get("source") or {}
    if spec.get("drill") or source.get("type") == "drill":
        return None
    targets = sorted(f"{t.get('kind')}/{t.get('name')}" for t in spec.get("targets") or [])
    if not source.get("alertname") and not targets:
        return None
    what = f"alert:{source['alertname']}" if source.get("alertname") else f"category:{spec.get('category')}"
    return what, ",".join(targets)


def seen_of(name: str, metadata: Mapping[str, Any], status: Mapping[str, Any]) -> Seen:
    return name, str(status.get("detectedAt") or metadata.get("creationTimestamp") or "")


def previous(name: str, now: datetime, earlier: Iterable[Seen], window: timedelta) -> str | None:
    """The latest other incident among `earlier` (same key) seen within `window` before `now`."""
    best: tuple[datetime, str] | None = None
    for other, stamp in earlier:
        if other == name or not stamp:
            continue
        try:
            when = parse_time(stamp)
        except ValueError:
            continue
        if now - window <= when <= now and (best is None or when > best[0]):
            best = (when, other)
    return best[1] if best else None


class History:
    """The repeat facts of every watched incident: (namespace, key) -> {uid: Seen}.

    All the operator keeps of a settled incident for repeat detection: its name and when it was
    detected (two short strings), never its body. Fed from watch events (`put`, `remove`) and,
    at start, from a paged listing, so that the first incident judged sees all earlier ones.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, RepeatKey], dict[str, Seen]] = {}
        self._key_of: dict[str, tuple[str, RepeatKey]] = {}

    def __len__(self) -> int:
        return len(self._key_of)

    def put(
        self,
        namespace: str,
        uid: str,
        spec: Mapping[str, Any],
        metadata: Mapping[str, Any],
        status: Mapping[str, Any],
    ) -> None:
        """Index (or index again) incident `uid` from its raw spec, metadata and status."""
        key = key_of(spec)
        self.remove(uid)
        if key is None:
            return
        where = (namespace, key)
        self._by_key.setdefault(where, {})[uid] = seen_of(str(metadata.get("name") or ""), metadata, status)
        self._key_of[uid] = where

    def remove(self, uid: str) -> None:
        where = self._key_of.pop(uid, None)
        if where is None:
            return
        entries = self._by_key.get(where)
        if entries is not None:
            entries.pop(uid, None)
            if not entries:
                del self._by_key[where]

    def of(self, namespace: str, key: RepeatKey) -> list[Seen]:
        """The incidents of `namespace` with `key` (in no particular order)."""
        return list(self._by_key.get((namespace, key), {}).values())
