"""Drills (seed 8.2), the pure part: when a Drill runs, what incident it opens, how its response
is scored against the expectations.

A run is due when someone asked for it (`kubectl incident drill run`, which writes the request
annotation; a request is handled once) or when its cron schedule (UTC) comes round and it is not
suspended. Every figure is measured from the run's start (the moment the operator broke the
target), so "mitigated within 120 s" means what an on-call engineer would mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsim import CronSim, CronSimError

from incident_operator.api.keys import API_GROUP, DRILL_LABEL, REQUEST_ANNOTATION
from incident_operator.api.models import DrillExpectations, DrillResult, DrillSpec, IncidentStatus
from incident_operator.api.rbac import Permission, on_workload

MAX_RUNS = 20


class ScheduleError(ValueError):
    pass


def next_scheduled(schedule: str, after: datetime) -> datetime:
    """The first time the cron schedule fires strictly after `after` (UTC)."""
    try:
        return next(CronSim(schedule, after.replace(second=0, microsecond=0)))
    except (CronSimError, StopIteration) as exc:
        raise ScheduleError(f"schedule {schedule!r} is not a cron expression: {exc}") from None


@dataclass(frozen=True)
class Due:
    reason: str | None
    """Why a run starts now (None: not now)."""
    request: str | None
    """The request being handled (to remember it), if any."""
    next_at: datetime | None
    """When the schedule fires next."""


def due(  # noqa: PLR0917 - one call site, every argument a different fact
    spec: DrillSpec,
    annotations: Mapping[str, str],
    last_request: str | None,
    last_run: datetime | None,
    created: datetime,
    now: datetime,
) -> Due:
    request = annotations.get(REQUEST_ANNOTATION)
    next_at = None
    if spec.schedule:
        next_at = next_scheduled(spec.schedule, last_run or created)
    if request and request != last_request:
        who = request.split(" by ", 1)[1] if " by " in request else "a person"
        return Due(f"requested by {who}", request, next_at)
    if next_at is not None and not spec.suspend and next_at <= now:
        return Due(f"scheduled ({spec.schedule})", None, next_scheduled(spec.schedule or "", now))
    return Due(None, None, next_at)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 1)


@dataclass(frozen=True)
class Timings:
    detect: float | None
    acknowledge: float | None
    mitigate: float | None
    resolve: float | None


def timings(start: datetime, status: IncidentStatus) -> Timings:
    """From the run's start (the break) to each moment of the drill incident."""
    return Timings(
        _seconds(start, status.detectedAt),
        _seconds(start, status.acknowledgedAt),
        _seconds(start, status.mitigatedAt),
        _seconds(start, status.resolvedAt),
    )


def finished(start: datetime, status: IncidentStatus | None, timeout: int, now: datetime) -> bool:
    """A run is scored once its incident is resolved (or closed), or when the timeout passes."""
    if status is not None and status.resolvedAt is not None:
        return True
    return now >= start + timedelta(seconds=timeout)


def score(expect: DrillExpectations, measured: Timings) -> tuple[DrillResult, list[str]]:
    reasons = []
    for what, limit, value in (
        ("acknowledged", expect.acknowledgedWithinSeconds, measured.acknowledge),
        ("mitigated", expect.mitigatedWithinSeconds, measured.mitigate),
        ("resolved", expect.resolvedWithinSeconds, measured.resolve),
    ):
        if limit is None:
            continue
        if value is None:
            reasons.append(f"not {what} (expected within {limit}s)")
        elif value > limit:
            reasons.append(f"{what} after {value:.0f}s (expected within {limit}s)")
    return (DrillResult.FAILED if reasons else DrillResult.PASSED), reasons


def scenario_name(spec: DrillSpec) -> str:
    scenario = spec.scenario
    if scenario.scaleToZero is not None:
        target = scenario.scaleToZero.target
        return f"{target.kind} {target.name} scaled to zero"
    if scenario.deletePods is not None:
        selector = ",".join(f"{k}={v}" for k, v in sorted(scenario.deletePods.selector.items()))
        return f"{scenario.deletePods.count} pods of {selector} deleted"
    assert scenario.fireAlert is not None  # noqa: S101 - exactly one, by the CRD's rule
    return f"alert {scenario.fireAlert.alertname} fired"


def incident_body(drill: str, run_id: str, spec: DrillSpec) -> dict[str, object]:
    """The drill incident for scaleToZero and deletePods (fireAlert's comes from the alert)."""
    targets = []
    if spec.scenario.scaleToZero is not None:
        target = spec.scenario.scaleToZero.target
        targets = [{"kind": str(target.kind), "name": target.name}]
    title = spec.incident.title or f"Drill {drill}: {scenario_name(spec)}"
    body: dict[str, object] = {
        "title": title,
        "severity": str(spec.incident.severity),
        "category": str(spec.incident.category),
        "drill": True,
        "source": {"type": "drill"},
    }
    if targets:
        body["targets"] = targets
    if spec.incident.playbookRef is not None:
        body["playbookRef"] = {"name": spec.incident.playbookRef.name}
    return {
        "apiVersion": f"{API_GROUP}/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": f"{drill}-{run_id}", "labels": {DRILL_LABEL: drill}},
        "spec": body,
    }


def needs(spec: DrillSpec) -> list[Permission]:
    """What a run of the Drill must be allowed in its namespace: open the drill incident, and break
    its target with the remediation permissions (`api.actions.DRILL_RBAC` is the most it needs)."""
    needed = [Permission("create", "incidents", API_GROUP)]
    scenario = spec.scenario
    if scenario.scaleToZero is not None:
        kind = scenario.scaleToZero.target.kind
        needed += [on_workload("get", kind), on_workload("patch", kind, "scale")]
    if scenario.deletePods is not None:
        needed += [Permission("list", "pods"), Permission("delete", "pods")]
    return needed
