"""The operator's own watch of Incidents and what each event does: the compact indexes, the
loops' supervisor, the gauges.

kopf does not watch Incidents (it keeps a worker, a queue and a memory per object it has seen, and
holds a listing's or a burst's decoded bodies until its workers get to them: hundreds of megabytes
at 10,000 incidents with a realistic history). `adapters.watch.ObjectWatch` takes their first state
(streamed, or listed where the API server does not stream it) and watches them instead, one stream
per watched namespace (or one cluster-wide), and hands each event here in order; nothing of an
incident is kept beyond its compact facts (`index_incident`) unless it has a loop (`Supervisor`:
the open incidents' latest bodies).

Two guarantees kopf gave are kept here:
- **the first incident judged sees every earlier one**: in a scope's first state (streamed or
  listed), the incidents that need a loop are started only once all of it was indexed (their
  repeats and their place under the cap on open incidents count every incident of the namespace);
- **the Playbook index is complete before any incident is planned**: the incident watch starts
  once kopf's Playbook index holds every Playbook the API lists in the watched namespaces
  (`playbooks_caught_up`, bounded: PLAYBOOKS_CATCH_UP_S).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from incident_operator.adapters.kube import Kube
from incident_operator.adapters.watch import ObjectWatch
from incident_operator.controllers.incident import Playbooks
from incident_operator.controllers.incident.inputs import index_behind
from incident_operator.controllers.supervisor import Supervisor, wants_loop
from incident_operator.core import openlimit
from incident_operator.runtime.context import RuntimeContext

logger = logging.getLogger(__name__)

PLAYBOOKS_CATCH_UP_S = 30.0
"""At most this long, the incident watch waits for kopf's Playbook index at start."""
CATCH_UP_POLL_S = 0.1
RELIST_EVERY_S = 5.0
"""While the index is behind, the Playbooks are listed again this often (one deleted between the
listing and kopf's never comes)."""


def index_incident(ctx: RuntimeContext, event_type: str | None, body: Mapping[str, Any]) -> None:
    """Keep the compact facts of one Incident from its watch event: its repeat key and detection
    time (`repeats.History`) and its place under the cap on open incidents (`openlimit.Rankings`,
    open ones only)."""
    metadata = body.get("metadata") or {}
    namespace, uid = str(metadata.get("namespace") or ""), str(metadata.get("uid") or "")
    if event_type == "DELETED":
        ctx.history.remove(uid)
        ctx.open_ranks.put(namespace, uid, None)
        return
    spec, status = body.get("spec") or {}, body.get("status") or {}
    ctx.history.put(namespace, uid, spec, metadata, status)
    ctx.open_ranks.put(
        namespace, uid, openlimit.entry_of(str(metadata.get("name") or ""), uid, spec, metadata, status)
    )


def observe_incident(
    ctx: RuntimeContext, supervisor: Supervisor, type: str | None, body: Mapping[str, Any]
) -> None:
    """One Incident seen (a watch event, or the intake's creation): index it, start, wake or
    stop its loop, and keep the gauges."""
    namespace = body.get("metadata", {}).get("namespace") or ""
    uid = body.get("metadata", {}).get("uid", "")
    ranking = ctx.open_ranks.of(namespace)
    index_incident(ctx, type, body)
    supervisor.observe(type, body)
    # A slot under the cap on open incidents freed, or one more incident came: wake the incidents
    # of the namespace whose place now differs from what their status says (usually none).
    for waking in ranking.to_wake(ctx.config.file.limits.maxOpenIncidentsPerNamespace, also=uid):
        supervisor.wake(waking)
    spec = body.get("spec") or {}
    if type == "DELETED":
        ctx.open_incidents.update(uid, None, None)
        ctx.action_items.update(uid, 0)
    elif not spec.get("drill"):
        ctx.action_items.update(uid, sum(1 for item in spec.get("actionItems") or [] if not item.get("done")))


class IncidentStream:
    """One scope's Incident events (a namespace, or None: the cluster) to `observe_incident`."""

    def __init__(
        self,
        ctx: RuntimeContext,
        supervisor: Supervisor,
        namespace: str | None,
        *,
        kube: Kube | None = None,
        listing: asyncio.Lock | None = None,
    ) -> None:
        self.ctx, self.supervisor, self.namespace = ctx, supervisor, namespace
        self.deferred: dict[str, dict[str, Any]] | None = {}
        """uid -> body of the first state's incidents that need a loop (None once it is complete)."""
        self.watch = ObjectWatch(
            kube or ctx.kube, "incidents", namespace, self.on_event, on_synced=self.on_synced, listing=listing
        )

    @property
    def synced(self) -> bool:
        """Whether the scope's first state is complete (every incident of it indexed)."""
        return self.deferred is None

    def on_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        if self.deferred is not None:  # a first state (maybe taken again) is not complete yet
            uid = str((body.get("metadata") or {}).get("uid") or "")
            self.deferred.pop(uid, None)  # its latest body decides, or it is gone
            if event_type is None and wants_loop(body):
                index_incident(self.ctx, None, body)  # counted now; its loop starts after the listing
                self.deferred[uid] = body
                return
        observe_incident(self.ctx, self.supervisor, event_type, body)

    def on_synced(self) -> None:
        deferred, self.deferred = self.deferred, None
        for uid, body in (deferred or {}).items():
            try:
                observe_incident(self.ctx, self.supervisor, None, body)
            except Exception:  # one incident that fails must not keep the others from their loops
                logger.exception("incident %s: starting its loop after the listing failed", uid)


async def playbooks_caught_up(
    ctx: RuntimeContext,
    playbooks: Callable[[str], Playbooks],
    *,
    deadline_s: float = PLAYBOOKS_CATCH_UP_S,
) -> list[str]:
    """Wait until kopf's Playbook index (`playbooks(namespace)`) holds every Playbook the API lists
    in the watched namespaces, at its generation. Returns those still missing at the deadline
    (logged: the incident watch starts anyway; an incident that finds no Playbook then waits for
    the index on its own, `IncidentLoop._index_behind`). The deadline bounds the listings too."""
    behind: list[str] = ["(playbooks not listed)"]
    try:
        async with asyncio.timeout(deadline_s):
            return await _catch_up(ctx, playbooks, behind)
    except TimeoutError:
        logger.warning(
            "the playbook index still lacks %s after %.0fs: watching incidents anyway",
            ", ".join(behind),
            deadline_s,
        )
        return behind


async def _catch_up(
    ctx: RuntimeContext, playbooks: Callable[[str], Playbooks], behind: list[str]
) -> list[str]:
    """`playbooks_caught_up` without its deadline; `behind` says what is missing meanwhile."""
    loop = asyncio.get_running_loop()
    scopes: list[str | None] = list(ctx.config.namespaces) or [None]
    listed: dict[str, list[Mapping[str, Any]]] | None = None
    listed_at = loop.time()
    while True:
        now = loop.time()
        if listed is None or now - listed_at >= RELIST_EVERY_S:
            listed_at = now
            try:
                listed = {}
                for scope in scopes:
                    for item in await ctx.kube.list_objects("playbooks", scope):
                        namespace = str((item.get("metadata") or {}).get("namespace") or "")
                        listed.setdefault(namespace, []).append(item)
            except Exception as exc:  # the API server may not answer yet: try again
                logger.info("cannot list playbooks yet: %s", exc)
                listed = None
        if listed is not None:
            behind[:] = [
                f"{namespace}/{name}"
                for namespace, items in sorted(listed.items())
                for name in index_behind(items, playbooks(namespace))
            ]
            if not behind:
                return []
        await asyncio.sleep(CATCH_UP_POLL_S)


async def watch_incidents(
    ctx: RuntimeContext, supervisor: Supervisor, playbooks: Callable[[str], Playbooks]
) -> None:
    """Once the Playbook index caught up, list and watch the Incidents of every watched scope
    (until cancelled). The watches have a connection pool of their own (each holds a connection
    for good: on the shared pool, many namespaces would starve the loops' calls), and the scopes'
    listings go one at a time (their pages are the memory peak)."""
    try:
        await playbooks_caught_up(ctx, playbooks)
    except Exception:  # a bug: said; the incidents must be watched all the same
        logger.exception("waiting for the playbook index failed: watching incidents anyway")
    scopes: list[str | None] = list(ctx.config.namespaces) or [None]
    kube = ctx.kube.separate(len(scopes) + 1)
    listing = asyncio.Lock()
    ctx.incident_streams = [
        IncidentStream(ctx, supervisor, scope, kube=kube, listing=listing) for scope in scopes
    ]
    try:
        await asyncio.gather(*(stream.watch.run() for stream in ctx.incident_streams))
    finally:
        await kube.close()


def synced_stream(ctx: RuntimeContext, namespace: str) -> IncidentStream | None:
    """The stream of `namespace` once all of its incidents are indexed (its first state is
    complete); None before, or if no stream watches it."""
    return next((s for s in ctx.incident_streams if s.synced and s.namespace in (None, namespace)), None)
