"""Runs one Drill: waits until a run is due, breaks the target, opens the drill incident, follows
the response, scores it, restores what the response did not, and records the run.

The order keeps a crash harmless: the run (with the replicas to restore) is written to the Drill's
status before anything is broken, the incident is created under a name derived from the run
(a second create is a no-op), and a run found `Running` after a restart is followed up, not
started again. A drill never acts outside its namespace, needs the same opt-in as remediation
(the access reviews of `access`), and never runs while a real incident on the same target is
open (the run is recorded `Skipped`, with why).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import (
    AccessReviews,
    ApiException,
    Kube,
    api_reason,
    conflict,
    not_found,
    pod_name,
)
from incident_operator.api import keys
from incident_operator.api.models import (
    DrillResult,
    DrillRun,
    DrillSpec,
    DrillStatus,
    IncidentSpec,
    IncidentStatus,
    Phase,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import format_time, parse_time, utc_now
from incident_operator.controllers.intake import Intake
from incident_operator.core import alerts, conditions, drills

logger = logging.getLogger(__name__)

POLL_S = 2.0  # while a run is in progress
IDLE_S = 5.0  # between looks at the schedule and the request annotation


class DrillLoop:
    def __init__(
        self,
        *,
        kube: Kube,
        intake: Intake,
        access: AccessReviews | None,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.kube, self.intake, self.access = kube, intake, access
        self.namespace, self.name, self.body, self.clock = namespace, name, body, clock
        self.written: dict[str, Any] | None = None  # the status as last written (ours alone)
        self.alert_resolved_for: str | None = None  # the run whose fireAlert alert was resolved

    # ------------------------------------------------------------------ the loop

    async def run(self, stopped: Callable[[], bool]) -> None:
        while not stopped():
            try:
                delay = await self.step()
            except asyncio.CancelledError:
                raise
            except (ApiException, OSError) as exc:
                reason = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
                logger.warning("drill %s/%s: %s; retrying", self.namespace, self.name, reason)
                delay = 10.0
            await asyncio.sleep(delay)

    def _raw_status(self) -> dict[str, Any]:
        """Our last write, else the watched body's (the watch may lag behind our own writes)."""
        return dict(self.written if self.written is not None else self.body.get("status") or {})

    def _spec_status(self) -> tuple[DrillSpec, DrillStatus]:
        return (
            DrillSpec.model_validate(dict(self.body.get("spec") or {})),
            DrillStatus.model_validate(self._raw_status()),
        )

    async def step(self) -> float:
        try:
            spec, status = self._spec_status()
        except ValidationError as exc:
            await self._condition(
                ConditionType.READY, "False", Reason.INVALID_SPEC, str(exc.errors()[0]["msg"])
            )
            return 60.0
        runs = list(status.runs or [])
        if runs and runs[-1].result is DrillResult.RUNNING:
            return await self._follow(spec, status, runs)
        metadata = self.body.get("metadata") or {}
        created = parse_time(str(metadata.get("creationTimestamp") or format_time(self.clock())))
        now = self.clock()
        try:
            due = drills.due(
                spec, metadata.get("annotations") or {}, status.lastRequest, status.lastRun, created, now
            )
        except drills.ScheduleError as exc:
            await self._condition(ConditionType.READY, "False", Reason.INVALID_SCHEDULE, str(exc))
            return 60.0
        if due.reason is None:
            next_at = format_time(due.next_at) if due.next_at else None
            if status.nextRunAt != due.next_at or not conditions.is_true(
                self._conds(status), ConditionType.READY
            ):
                await self._patch(
                    {
                        "nextRunAt": next_at,
                        "conditions": self._set(
                            status, ConditionType.READY, "True", Reason.READY, "waiting for its next run"
                        ),
                    }
                )
            return IDLE_S
        return await self._start(spec, status, runs, due, now)

    # ------------------------------------------------------------------ start

    async def _start(
        self, spec: DrillSpec, status: DrillStatus, runs: list[DrillRun], due: drills.Due, now: datetime
    ) -> float:
        run_id = f"r{int(now.timestamp())}"
        requested_by = due.request.split(" by ", 1)[1] if due.request and " by " in due.request else None
        skip = await self._why_not(spec)
        if skip is not None:
            run = DrillRun(
                id=run_id,
                start=now,
                finished=now,
                result=DrillResult.SKIPPED,
                reasons=[skip],
                requestedBy=requested_by,
            )
            await self._record(status, [*runs, run], due, now)
            metrics.drill_done(DrillResult.SKIPPED)
            return IDLE_S
        before = None
        target = spec.scenario.scaleToZero.target if spec.scenario.scaleToZero else None
        if target is not None:
            workload = await self.kube.read_workload(str(target.kind), target.name, self.namespace)
            before = workload.spec.replicas if workload.spec.replicas is not None else 1
        incident = f"{self.name}-{run_id}" if spec.scenario.fireAlert is None else None
        run = DrillRun(
            id=run_id,
            start=now,
            incident=incident,
            result=DrillResult.RUNNING,
            requestedBy=requested_by,
            replicasBefore=before,
        )
        await self._record(status, [*runs, run], due, now)  # written before anything is broken
        logger.info(
            "drill %s/%s: run %s starts (%s): %s",
            self.namespace,
            self.name,
            run_id,
            due.reason,
            drills.scenario_name(spec),
        )
        incident_name = await self._break(spec, run)
        if incident_name != incident:
            run = run.model_copy(update={"incident": incident_name})
            current = DrillStatus.model_validate(self._raw_status())
            await self._patch({"runs": self._dump([*(current.runs or [])[:-1], run])})
        return POLL_S

    async def _why_not(self, spec: DrillSpec) -> str | None:
        """Why the drill may not run now, or None."""
        needed = drills.needs(spec)
        scenario = spec.scenario
        if self.access is not None:
            denied = await self.access.denied(self.namespace, needed, asyncio.get_running_loop().time())
            if denied:
                return "the namespace has not opted in to remediation: " + ", ".join(
                    p.describe() for p in denied
                )
        if scenario.scaleToZero is None:
            return None
        target = scenario.scaleToZero.target
        for item in await self.kube.list_incidents(self.namespace):
            spec_raw, status_raw = item.get("spec") or {}, item.get("status") or {}
            if (
                spec_raw.get("drill")
                or status_raw.get("phase") in (Phase.RESOLVED, Phase.CLOSED)
                or spec_raw.get("closed")
            ):
                continue
            if {"kind": str(target.kind), "name": target.name} in (spec_raw.get("targets") or []):
                return f"a real incident on {target.kind} {target.name} is open: {item['metadata']['name']}"
        return None

    async def _break(self, spec: DrillSpec, run: DrillRun) -> str | None:
        scenario = spec.scenario
        if scenario.scaleToZero is not None:
            target = scenario.scaleToZero.target
            await self.kube.scale_workload(str(target.kind), target.name, self.namespace, 0)
        if scenario.deletePods is not None:
            pods = await self.kube.pods(self.namespace, scenario.deletePods.selector)
            for pod in pods[: scenario.deletePods.count]:
                try:
                    await self.kube.delete_pod(self.namespace, pod_name(pod))
                except ApiException as exc:
                    if not not_found(exc):
                        raise
        if scenario.fireAlert is not None:
            result = await self.intake.accept(self._alert(spec, "firing"))
            return result.get("incident")
        body = drills.incident_body(self.name, run.id, spec)
        try:
            await self.kube.create_object("incidents", self.namespace, body)
        except ApiException as exc:
            if not conflict(exc):
                raise
        return run.incident

    def _alert(self, spec: DrillSpec, state: str) -> alerts.Alert:
        fire = spec.scenario.fireAlert
        assert fire is not None  # noqa: S101
        labels = {
            **fire.labels,
            "alertname": fire.alertname,
            "namespace": self.namespace,
            keys.DRILL_ALERT_LABEL: self.name,
        }
        annotations = dict(fire.annotations) or {"summary": f"drill {self.name}"}
        return alerts.Alert.model_validate({"status": state, "labels": labels, "annotations": annotations})

    # ------------------------------------------------------------------ follow and finish

    async def _follow(self, spec: DrillSpec, status: DrillStatus, runs: list[DrillRun]) -> float:
        run = runs[-1]
        incident: IncidentStatus | None = None
        if run.incident:
            try:
                found = await self.kube.get_object("incidents", self.namespace, run.incident)
                incident = IncidentStatus.model_validate(found.get("status") or {})
                incident_spec = IncidentSpec.model_validate(found.get("spec") or {})
            except ApiException as exc:
                if not not_found(exc):
                    raise
            except ValidationError:
                incident = None
            else:
                if incident.monitoringSince is not None and incident_spec.source is not None:
                    await self._resolve_alert(spec, run)  # the response has run: the outage is over
        now = self.clock()
        if not drills.finished(run.start, incident, spec.timeoutSeconds, now):
            return POLL_S
        measured = drills.timings(run.start, incident or IncidentStatus())
        result, reasons = drills.score(spec.expect, measured)
        if incident is None:
            result, reasons = (
                DrillResult.FAILED,
                [f"the drill incident {run.incident} was not found", *reasons],
            )
        restored = await self._restore(spec, run) if spec.restore else None
        await self._resolve_alert(spec, run)
        done = run.model_copy(
            update={
                "finished": now,
                "result": result,
                "reasons": reasons or None,
                "restored": restored,
                "timeToDetectSeconds": measured.detect,
                "timeToAcknowledgeSeconds": measured.acknowledge,
                "timeToMitigateSeconds": measured.mitigate,
                "timeToResolveSeconds": measured.resolve,
            }
        )
        await self._patch(
            {
                "runs": self._dump([*runs[:-1], done]),
                "conditions": self._set(
                    status,
                    ConditionType.RUNNING,
                    "False",
                    Reason(str(result)),
                    "; ".join(reasons) or "the response met every expectation",
                ),
            }
        )
        metrics.drill_done(str(result), measured)
        logger.info(
            "drill %s/%s: run %s %s %s", self.namespace, self.name, run.id, result, "; ".join(reasons)
        )
        return IDLE_S

    async def _resolve_alert(self, spec: DrillSpec, run: DrillRun) -> None:
        """A fireAlert drill's alert resolves once per run (sent again only after a restart)."""
        if spec.scenario.fireAlert is None or self.alert_resolved_for == run.id:
            return
        await self.intake.accept(self._alert(spec, "resolved"))
        self.alert_resolved_for = run.id

    async def _restore(self, spec: DrillSpec, run: DrillRun) -> bool:
        """Put the scaled-down target back if the response did not; True if it had to."""
        scenario = spec.scenario.scaleToZero
        if scenario is None or run.replicasBefore is None:
            return False
        target = scenario.target
        try:
            workload = await self.kube.read_workload(str(target.kind), target.name, self.namespace)
        except ApiException as exc:
            if not_found(exc):
                return False
            raise
        if (workload.spec.replicas or 0) > 0:
            return False
        await self.kube.scale_workload(str(target.kind), target.name, self.namespace, run.replicasBefore)
        return True

    # ------------------------------------------------------------------ status

    @staticmethod
    def _dump(runs: list[DrillRun]) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json", exclude_none=True) for r in runs[-drills.MAX_RUNS :]]

    @staticmethod
    def _conds(status: DrillStatus) -> list[conditions.ConditionDict]:
        return [c.model_dump(mode="json", exclude_none=True) for c in status.conditions or []]

    def _set(
        self,
        status: DrillStatus,
        type_: ConditionType,
        value: Literal["True", "False"],
        reason: Reason,
        message: str,
    ) -> list[conditions.ConditionDict]:
        generation = (self.body.get("metadata") or {}).get("generation")
        return conditions.set_condition(
            self._conds(status), type_, value, reason, message, generation=generation, now=self.clock()
        )

    async def _record(
        self, status: DrillStatus, runs: list[DrillRun], due: drills.Due, now: datetime
    ) -> None:
        running = runs[-1].result is DrillResult.RUNNING
        patch: dict[str, Any] = {
            "runs": self._dump(runs),
            "lastRun": format_time(now),
            "nextRunAt": format_time(due.next_at) if due.next_at else None,
            "conditions": self._set(
                status,
                ConditionType.RUNNING,
                "True" if running else "False",
                Reason.RUNNING if running else Reason.SKIPPED,
                (runs[-1].reasons or ["run " + runs[-1].id])[0],
            ),
        }
        if due.request:
            patch["lastRequest"] = due.request
        await self._patch(patch)

    async def _condition(
        self, type_: ConditionType, value: Literal["True", "False"], reason: Reason, message: str
    ) -> None:
        status = DrillStatus.model_validate(self._raw_status())
        await self._patch({"conditions": self._set(status, type_, value, reason, message)})

    async def _patch(self, status: dict[str, Any]) -> None:
        written = await self.kube.patch_object_status("drills", self.namespace, self.name, {"status": status})
        self.written = dict(written.get("status") or {})
