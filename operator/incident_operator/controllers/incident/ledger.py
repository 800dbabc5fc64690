"""The Playbook run ledger of one incident: cooldown claims and run counts on the Playbook.

Owns the writes to a Playbook's status an incident makes: the atomic cooldown claim before a
run's first action (`claim`, GET then PATCH with the resourceVersion), and the counters and
per-target stamps recorded once a decision is written (`count`, through the shared
`adapters.runledger.RunRecorder`, which batches them). Holds no state: what is still to be
counted is held by `commit` with the decision it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from incident_operator.adapters.kube import ApiException, Kube
from incident_operator.adapters.runledger import RunRecorder
from incident_operator.api.models import IncidentSpec, IncidentStatus, PlaybookStatus
from incident_operator.api.timestamps import format_time
from incident_operator.controllers import actions
from incident_operator.controllers.incident.inputs import PlaybookEntry
from incident_operator.core.planner import Decision, cooldown_until

CLAIM_ATTEMPTS = 5


def starts_run(decision: Decision) -> bool:
    return any(r.playbook_counter == "runs" for r in decision.records)


@dataclass(frozen=True)
class RunLedger:
    kube: Kube
    namespace: str
    name: str  # the incident's: claims read `<incident>/<runId>`
    clock: Callable[[], datetime]
    run_records: RunRecorder | None = None  # shared by all incidents; None (tests): write at once

    def targets(self, spec: IncidentSpec, chosen: PlaybookEntry) -> list[str]:
        return [f"{r.kind}/{r.name}" for r in actions.workload_targets(spec, chosen.spec)] or ["*"]

    def cooldown(
        self, spec: IncidentSpec, chosen: PlaybookEntry | None, status: IncidentStatus
    ) -> tuple[datetime | None, str | None]:
        """Before a run starts: until when the chosen playbook's cooldown holds its targets, and
        the incident holding it (as the Playbook's status seen last says)."""
        if chosen is None or status.playbook is not None:
            return None, None
        targets = self.targets(spec, chosen)
        holders = chosen.status.lastRunBy or {}
        next_run = f"{self.name}/r{(status.runs or 0) + 1}"  # the run id the planner will give it
        if all(holders.get(t) == next_run for t in targets):
            return None, None  # our own claim, whose run was not written before a crash: go on
        return (
            cooldown_until(chosen.spec, targets, chosen.status.lastRuns),
            next((holders[t].split("/")[0] for t in targets if t in holders), None),
        )

    async def claim(
        self, chosen: PlaybookEntry, spec: IncidentSpec, run_id: str
    ) -> tuple[datetime, str] | None:
        """Claim the playbook's cooldown on every target for this run (counting the run), or say who
        holds it: None when claimed (or already ours, e.g. after a crash), else (until, holder).

        A GET then a PATCH carrying the resourceVersion: a concurrent claim makes it fail (409)
        and the claim is decided again on the fresh status.
        """
        targets = self.targets(spec, chosen)
        me = f"{self.name}/{run_id}"
        for _ in range(CLAIM_ATTEMPTS):
            current = await self.kube.get_playbook(self.namespace, chosen.name)
            raw = current.get("status") or {}
            holders: dict[str, str] = dict(raw.get("lastRunBy") or {})
            if all(holders.get(t) == me for t in targets):
                return None
            last_runs = PlaybookStatus.model_validate({"lastRuns": raw.get("lastRuns")}).lastRuns
            until = cooldown_until(chosen.spec, targets, last_runs)
            if until is not None and self.clock() < until:
                holder = next((holders[t] for t in targets if t in holders), "another incident/")
                return until, holder.split("/")[0]
            stamp = format_time(self.clock())
            patch = {
                "runs": int(raw.get("runs") or 0) + 1,
                "lastRun": stamp,
                "lastRuns": dict.fromkeys(targets, stamp),
                "lastRunBy": dict.fromkeys(targets, me),
            }
            try:
                await self.kube.patch_playbook_status(
                    self.namespace,
                    chosen.name,
                    patch,
                    resource_version=current["metadata"]["resourceVersion"],
                )
                return None
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise ApiException(status=409, reason=f"Conflict: cooldown claim contended {CLAIM_ATTEMPTS} times")

    async def count(
        self, decision: Decision, chosen: PlaybookEntry | None, spec: IncidentSpec, *, claimed: bool = False
    ) -> None:
        """Record a run on the Playbook: counters, and on a start the cooldown stamps per target
        (unless `claimed` before acting, which counted the run and stamped already).

        Added to the shared `RunRecorder`, which writes each Playbook's tally about once a
        second (optimistic concurrency), so a thousand incidents on one Playbook do not fight
        over its status.
        """
        counters = [
            r.playbook_counter
            for r in decision.records
            if r.playbook_counter and not (claimed and r.playbook_counter == "runs")
        ]
        if not counters or chosen is None:
            return
        extra: dict[str, Any] = {}
        if "runs" in counters:
            stamp = format_time(self.clock())
            targets = self.targets(spec, chosen)
            run_id = decision.status.playbook.runId if decision.status.playbook else None
            extra = {
                "lastRun": stamp,
                "lastRuns": dict.fromkeys(targets, stamp),
                "lastRunBy": dict.fromkeys(targets, f"{self.name}/{run_id or 'r1'}"),
            }
        if self.run_records is not None:
            self.run_records.add(self.namespace, chosen.name, counters, extra)
            return
        recorder = RunRecorder(self.kube)
        recorder.add(self.namespace, chosen.name, counters, extra)
        await recorder.flush()
