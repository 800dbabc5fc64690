"""Runs started under the cap on open incidents that the watch does not show yet (`openlimit`).

Owns one set per namespace of incident uids whose loop decided to start a playbook run. The
open-incidents index learns that a run started only when the status write comes back as a watch
event; until then, another incident planning from the same index would not count it, and both
could take the last slot. Every incident loop runs in the operator's one event loop, and a loop
reads these claims, plans and records its own claim with no `await` in between: of two
incidents wanting the last slot, exactly one gets it. A claim is of one run (uid and runId): it is
dropped once the index shows that very run in flight (after a re-fire the index may still show
the earlier run), or the incident no longer open (resolved, closed, deleted).
"""

from __future__ import annotations

from collections.abc import Callable

from incident_operator.core.openlimit import Ranking


class StartedRuns:
    """Claims of this operator's loops, by namespace (memory only: after a restart, every run in
    flight is in the statuses the index is built from)."""

    def __init__(self, on_release: Callable[[str], None] | None = None) -> None:
        self._by_namespace: dict[str, dict[str, str]] = {}
        self._on_release = on_release
        """Called with the namespace when a claim goes without its run having started (the
        cooldown went to another incident): an incident told to wait because of that claim may
        start now, and nothing else would wake it before the idle recheck."""

    def of(self, namespace: str, indexed: Ranking) -> frozenset[str]:
        """The uids whose claims are still needed in `namespace`, given its open incidents as
        indexed now (one lookup per claim, never a pass over the namespace)."""
        claimed = self._by_namespace.get(namespace)
        if not claimed:
            return frozenset()
        for uid, run in list(claimed.items()):
            shown = indexed.get(uid)
            if shown is None or shown.run == run:
                del claimed[uid]
        return frozenset(claimed)

    def claim(self, namespace: str, uid: str, run: str) -> None:
        self._by_namespace.setdefault(namespace, {})[uid] = run

    def release(self, namespace: str, uid: str) -> None:
        if self._by_namespace.get(namespace, {}).pop(uid, None) is not None and self._on_release:
            self._on_release(namespace)
