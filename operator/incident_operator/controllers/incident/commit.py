"""Committing decisions: the Incident's status write, and what follows only once it succeeded.

Owns the incident's status as the loop knows it, under these names:
- `written`: the status the API server holds (the last write that succeeded, or what the loop
  was started from);
- `current`: what the loop plans from: `written` plus the `held` decisions (the same object as
  `written` when nothing is held);
- `held`: decisions made but not written yet (a start whose action writes its own decision, an
  outcome that goes out with the next plan), each with the Playbook run counts it carries;
- `late_records`: records made outside the loop (failed notification deliveries), committed at
  the start of the next iteration;
- `deliveries`: notification tasks still running (with `late_records`, the loop is `busy`: an
  incident is not settled while they last).

`commit` sends one status patch for a decision and everything held; only after it succeeded are
the records posted as Events (through `eventhold`: the Normal ones of the writes within a second
folded into one, `planner.events`),
counted as metrics and on the Playbook (`ledger`), and the notices
sent. A failed write raises and keeps everything held for the next attempt. The post-mortem
draft (`draft`) is written before the status that names it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import Kube
from incident_operator.api.keys import page_id_annotation
from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase
from incident_operator.api.reasons import Reason
from incident_operator.controllers.incident.draft import PostmortemDraft
from incident_operator.controllers.incident.eventhold import HOLD_S, EventPoster, HeldEvents
from incident_operator.controllers.incident.inputs import PlaybookEntry
from incident_operator.controllers.incident.ledger import RunLedger
from incident_operator.controllers.notifier import Notifier
from incident_operator.core.notices import IncidentView, notices
from incident_operator.core.planner import Decision, Record, with_records

logger = logging.getLogger(__name__)

FINAL_WRITE_TIMEOUT_S = 5.0  # on the way out, a held status gets this long to be written


def status_patch(old: IncidentStatus, new: IncidentStatus) -> dict[str, Any]:
    """A merge patch from `old` to `new`: changed keys, and explicit nulls for removed ones."""
    before = old.model_dump(mode="json", exclude_none=True)
    after = new.model_dump(mode="json", exclude_none=True)
    patch: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    return patch


@dataclass(frozen=True)
class Held:
    """A decision not written yet, with the playbook whose counters it carries (`claimed`: its
    run was counted by the cooldown claim already)."""

    decision: Decision
    playbook: PlaybookEntry | None
    claimed: bool


Counts = tuple[PlaybookEntry | None, bool]
"""The playbook a decision's counters go to, and whether its run was claimed (counted) already."""


class Commit:
    def __init__(
        self,
        *,
        kube: Kube,
        namespace: str,
        name: str,
        uid: str,
        body: Mapping[str, Any],
        clock: Callable[[], datetime],
        post_event: EventPoster,
        ledger: RunLedger,
        wake: Callable[[], None],
        open_incidents: metrics.OpenIncidents | None = None,
        notifier: Notifier | None = None,
        event_hold_s: float = HOLD_S,
    ) -> None:
        self.kube, self.namespace, self.name, self.uid = kube, namespace, name, uid
        self.body, self.clock = body, clock
        self.ledger, self.wake = ledger, wake
        self.open_incidents, self.notifier = open_incidents, notifier
        self.events = HeldEvents(post_event, event_hold_s)
        self.draft = PostmortemDraft(kube, namespace, name, uid, clock)
        self.written = IncidentStatus.model_validate(dict(body.get("status") or {}))
        self.current = self.written
        self.held: list[Held] = []
        self.late_records: list[Record] = []
        self.deliveries: set[asyncio.Task[None]] = set()
        self.lock = asyncio.Lock()  # a waiting step's deadline check may commit meanwhile

    @property
    def dirty(self) -> bool:
        """Whether the loop holds status or records the API has not seen yet."""
        return any(h.decision.records for h in self.held) or self.current is not self.written

    @property
    def busy(self) -> bool:
        return bool(self.deliveries or self.late_records)

    def hold(self, decision: Decision, *, counts: Counts) -> None:
        """Keep a decision in memory, to be written with the next one (see the package's order)."""
        self.current = decision.status
        self.held.append(Held(decision, *counts))

    async def write_held(self, spec: IncidentSpec) -> None:
        if self.dirty:
            await self.commit(Decision(self.current), spec)

    async def write_held_before_exit(self, spec: Callable[[], IncidentSpec]) -> None:
        """Stopping with an outcome not yet written: write it (bounded), so a restart does not run
        the step again; if that fails the step is resumed as after a crash."""
        if not self.dirty:
            return
        try:
            await asyncio.wait_for(self.write_held(spec()), timeout=FINAL_WRITE_TIMEOUT_S)
        except Exception as exc:  # on the way out: log, never raise
            logger.warning("incident %s/%s: last status not written: %s", self.namespace, self.name, exc)

    async def persist(self, working: IncidentStatus, spec: IncidentSpec) -> None:
        """Persist what an action recorded it is about to do, before it does it (with the held
        start of its step, if any)."""
        await self.commit(Decision(working.model_copy(deep=True)), spec)

    async def commit_late_records(self, spec: IncidentSpec) -> None:
        if self.late_records:
            records, self.late_records = self.late_records, []
            status = with_records(self.current, records, self.clock())
            await self.commit(Decision(status, records=records), spec)

    async def commit(self, decision: Decision, spec: IncidentSpec, *, counts: Counts | None = None) -> None:
        """Write `decision` together with whatever is held: one status patch, then its Events,
        counters, Playbook run records and notices (only once the patch succeeded: a failed
        write keeps everything held for the next attempt)."""
        async with self.lock:
            await self._commit_locked(decision, spec, counts)

    async def _commit_locked(self, decision: Decision, spec: IncidentSpec, counts: Counts | None) -> None:
        old = self.written
        records = [*(r for h in self.held for r in h.decision.records), *decision.records]
        new = decision.status
        found = []
        view = IncidentView(
            self.namespace,
            self.name,
            spec,
            new.phase or Phase.DETECTED,
            self._page_ids(),
            new.effectiveSeverity,
        )
        if self.notifier is not None and records:
            found = notices(old, new, records, view)
            if new.settled and not old.settled and self.notifier.would_send(found, view):
                new = new.model_copy(update={"settled": None})  # settles once they are delivered
        new, refused = await self.draft.update(spec, new, self.written)
        records += refused
        patch = status_patch(old, new)
        if patch:
            await self.kube.patch_incident_status(self.namespace, self.name, patch)
            metrics.observe_transition(spec, old, new)
        self.written = self.current = new
        to_count, self.held = self.held, []
        if counts is not None:
            to_count.append(Held(decision, *counts))
        self.events.add(records)  # Normal ones held briefly, to share an Event with the next write
        for record in records:
            if record.reason == Reason.RESPONSE_TARGET_BREACHED:
                metrics.breach(spec)
            elif record.reason in (
                Reason.OPEN_INCIDENT_LIMIT,
                Reason.CIRCUIT_OPEN,
                Reason.STORM_GUARD,
                Reason.BREAKER_UNAVAILABLE,
                Reason.ACTIONS_ABOVE_LIMIT,
            ):
                metrics.action_deferred(record.reason)
        if self.open_incidents is not None:
            self.open_incidents.update(self.uid, spec, new.phase)
        for held in to_count:
            await self.ledger.count(held.decision, held.playbook, spec, claimed=held.claimed)
        if self.notifier is not None and found:
            for task in self.notifier.send_all(found, view, self._delivery_failed):
                self.deliveries.add(task)
                task.add_done_callback(self._delivered)

    def _page_ids(self) -> dict[str, str]:
        """Statuspage incident ids recorded on the Incident, by channel."""
        prefix = page_id_annotation("")
        annotations = (self.body.get("metadata") or {}).get("annotations") or {}
        return {k.removeprefix(prefix): str(v) for k, v in annotations.items() if k.startswith(prefix)}

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self.deliveries.discard(task)
        self.wake()  # may settle now

    def _delivery_failed(self, message: str) -> None:
        self.late_records.append(Record(Reason.NOTIFICATION_FAILED, message, warning=True))
        self.wake()
