"""Resolving a step's target: a fixed workload, or the incident's own targets within bounds. Pure.

A step with `target: {fromIncident: {kind?}}` acts on the incident's `spec.targets` (of that kind),
each of which must be admitted by the Playbook's `allowedTargets` (kinds, name globs, a label
selector on the workload's own labels). The labels are facts the engine reads and passes in
(`labels`, keyed 'Kind/name'; a workload it could not read is absent or None); nothing here reads
the cluster. The answer is all or nothing: one target outside the bounds, or more targets than a
step's status holds (`MAX_TARGETS`), and the step acts on none of them (a person looks at the
incident first); no target at all, and it waits too.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from incident_operator.api.base import WorkloadRef
from incident_operator.api.keys import LOCK_LEASE_PREFIX
from incident_operator.api.models import PlaybookSpec, Step, StepState
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.targets import MAX_TARGETS, AllowedTargets, StepTarget
from incident_operator.api.timestamps import format_time, parse_time

Labels = Mapping[str, Mapping[str, str] | None]
"""The labels of the incident's workloads, keyed 'Kind/name' (None or absent: not read)."""


def key(ref: WorkloadRef) -> str:
    return f"{ref.kind}/{ref.name}"


@dataclass(frozen=True)
class Resolution:
    """The workloads a step acts on, or why it acts on none (`blocked`, with the message)."""

    targets: tuple[WorkloadRef, ...] = ()
    blocked: Reason | None = None
    message: str = ""


def refusal(ref: WorkloadRef, bounds: AllowedTargets, labels: Labels) -> str | None:
    """Which bound refuses `ref` (said for people), or None: it is admitted."""
    if bounds.kinds is not None and ref.kind not in bounds.kinds:
        return f"allowedTargets.kinds {[str(k) for k in bounds.kinds]}"
    if bounds.names is not None and not any(fnmatch.fnmatchcase(ref.name, glob) for glob in bounds.names):
        return f"allowedTargets.names {bounds.names}"
    if bounds.selector is not None:
        wanted = bounds.selector.matchLabels
        have = labels.get(key(ref))
        shown = ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
        if have is None:
            return f"allowedTargets.selector {shown} (its labels could not be read)"
        if any(have.get(k) != v for k, v in wanted.items()):
            return f"allowedTargets.selector {shown}"
    return None


def resolve(
    target: StepTarget,
    incident_targets: Sequence[WorkloadRef] | None,
    bounds: AllowedTargets | None,
    labels: Labels,
    source: str = "spec.targets",
) -> Resolution:
    """What a step's `target` acts on for an incident naming `incident_targets` (said as `source`:
    spec.targets, or the run's pin of them)."""
    fixed = target.fixed
    if fixed is not None:
        return Resolution((fixed,))
    assert target.fromIncident is not None  # noqa: S101 - a StepTarget is one or the other
    kind = target.fromIncident.kind
    unique: dict[str, WorkloadRef] = {}
    for ref in incident_targets or []:
        if kind is None or ref.kind == kind:
            unique.setdefault(key(ref), ref)
    if not unique:
        named = ", ".join(key(r) for r in incident_targets or []) or "none"
        return Resolution(
            blocked=Reason.NO_TARGET,
            message=f"the incident names no {kind or 'workload'} target to act on ({source}: {named})",
        )
    if len(unique) > MAX_TARGETS:  # refused at admission; a status holding them all would be too
        return Resolution(
            blocked=Reason.OUT_OF_BOUNDS,
            message=f"the incident names {len(unique)} {kind or 'workload'} targets, more than the "
            f"{MAX_TARGETS} a step acts on: nothing is touched (name fewer in {source})",
        )
    if bounds is None:  # refused at admission and by validation; never act unbounded
        return Resolution(
            blocked=Reason.OUT_OF_BOUNDS, message="the Playbook states no allowedTargets: nothing is touched"
        )
    refused = [(ref, why) for ref in unique.values() if (why := refusal(ref, bounds, labels)) is not None]
    if refused:
        said = "; ".join(f"{key(ref)} is outside {why}" for ref, why in refused)
        return Resolution(blocked=Reason.OUT_OF_BOUNDS, message=f"{said}: nothing is touched")
    return Resolution(tuple(unique.values()))


def resolve_step(
    step: Step,
    incident_targets: Sequence[WorkloadRef] | None,
    playbook: PlaybookSpec,
    labels: Labels,
    source: str = "spec.targets",
) -> Resolution | None:
    """`resolve` for a step that acts on the incident's own targets; None for any other step."""
    target = step.target
    if target is None or target.fromIncident is None:
        return None
    return resolve(target, incident_targets, playbook.allowedTargets, labels, source)


def needs_labels(playbook: PlaybookSpec | None) -> bool:
    """Whether resolving the playbook's steps needs the workloads' labels (a selector bound)."""
    return (
        playbook is not None
        and playbook.allowedTargets is not None
        and playbook.allowedTargets.selector is not None
        and any(s.from_incident for s in playbook.steps)
    )


LOCK_GRACE = timedelta(seconds=60)
"""A lock is held this long after its claim even if the holder's status does not show its run yet
(a step's start may be written with its first decision, after the claim)."""
_FINAL = (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED)


def lock_lease(ref: WorkloadRef) -> str:
    """The name of the Lease that locks `ref` (a DNS subdomain of at most 253 characters)."""
    name = f"{LOCK_LEASE_PREFIX}{str(ref.kind).lower()}-{ref.name}"
    if len(name) <= 253:
        return name
    return f"{name[:236]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def lock_value(incident: str, uid: str, now: datetime) -> str:
    """The lock Lease's holder: who holds it and since when."""
    return f"{incident}/{uid}/{format_time(now)}"


def lock_holder(value: str) -> tuple[str, str, datetime | None]:
    """(incident, uid, claimed at) of a lock Lease's holder."""
    name, _, rest = value.partition("/")
    uid, _, since = rest.partition("/")
    try:
        claimed = parse_time(since) if since else None
    except ValueError:
        claimed = None
    return name, uid, claimed


def holds_lock(incident: Mapping[str, Any] | None, value: str, now: datetime) -> bool:
    """Whether the lock `value` on a workload still holds, given its holder incident's body as
    the API returns it (None: gone). Free when the holder is gone (or another object took its
    name), resolved or closed, or when its run is over (no step left to run) and the claim is
    older than LOCK_GRACE; a holder that crashed mid-run keeps it (it resumes)."""
    if incident is None:
        return False
    _, uid, claimed = lock_holder(value)
    metadata = incident.get("metadata") or {}
    if uid and metadata.get("uid") != uid:
        return False
    spec = incident.get("spec") or {}
    if spec.get("closed") or spec.get("resolution"):
        return False
    status = incident.get("status") or {}
    conditions = status.get("conditions") or []
    if any(c.get("type") == ConditionType.RESOLVED and c.get("status") == "True" for c in conditions):
        return False
    steps = (status.get("playbook") or {}).get("steps") or []
    if any(s.get("state") not in _FINAL for s in steps):
        return True
    return claimed is not None and now - claimed < LOCK_GRACE
