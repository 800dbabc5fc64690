"""Resolving a step's target: a fixed workload, or the incident's own targets within bounds. Pure.

A step with `target: {fromIncident: {kind?}}` acts on the incident's `spec.targets` (of that kind),
each of which must be admitted by the Playbook's `allowedTargets` (kinds, name globs, a label
selector on the workload's own labels). The labels are facts the engine reads and passes in
(`labels`, keyed 'Kind/name'; a workload it could not read is absent or None); nothing here reads
the cluster. The answer is all or nothing: one target outside the bounds, or more targets than a
step's status holds (`MAX_TARGETS`), and the step acts on none of them (a person looks at the
incident first); no target at all, and it waits too.

Also the rules of the per-workload lock a run holds (`lock_lease`, `holds_lock`, `run_settled`,
`goes_first`, `waits_for`, `revert_run`); `controllers.targets` claims and gives it back.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from incident_operator.api.actions import MUTATING_ACTIONS
from incident_operator.api.base import WorkloadRef
from incident_operator.api.keys import LOCK_LEASE_PREFIX
from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    PlaybookProgress,
    PlaybookSpec,
    Step,
    StepState,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.targets import MAX_TARGETS, AllowedTargets, StepTarget
from incident_operator.api.timestamps import format_time, parse_time
from incident_operator.core import names

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
        return Resolution(blocked=Reason.OUT_OF_BOUNDS, message=refused_message(refused))
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
(a step's start, or a new run, may be written with its first decision, after the claim), and
however the holder stands (resolved, closed, settled): a claim this young may be one whose action
is still running (a restart, a scale, or the scale revert after the incident resolved), so it is
honoured for the grace whatever the holder's state. The run renews its claim at each mutating
action once it is older than LOCK_RENEW (`controllers.targets.claim`)."""
LOCK_RENEW = timedelta(seconds=20)
"""A run's claim older than this is written again when the run starts another mutating action on
the workload, so that a claim whose action runs is always younger than LOCK_GRACE."""
CLOCK_SKEW = timedelta(seconds=5)
"""How far in the future a claim's time may be (clocks of replicas differ a little): a claim dated
later than this is not fresh (`young`), so a forged far-future claim holds no longer than the
holder's run does."""
REVERT_RUN = "revert"
"""The run id a scale revert claims under (`revert_run`): `<run>.revert`."""
_FINAL = (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED)


def lock_lease(ref: WorkloadRef) -> str:
    """The name of the Lease that locks `ref`: a DNS subdomain of at most 253 characters (a long
    one is cut and ends in a hash of the whole; the cut never leaves a `.` or `-` before it)."""
    name = f"{LOCK_LEASE_PREFIX}{str(ref.kind).lower()}-{ref.name}"
    return names.bounded(name)


class Holder(NamedTuple):
    """Who holds a workload lock: the incident (name and uid), since when, for which run."""

    incident: str
    uid: str
    claimed: datetime | None
    run: str
    """The run's id (`status.playbook.runId`); empty in a holder written before runs were named."""


def lock_value(incident: str, uid: str, now: datetime, run: str = "") -> str:
    """The lock Lease's holder: `<incident>/<uid>/<run>/<claimed at>` (no part holds a `/`)."""
    return f"{incident}/{uid}/{run}/{format_time(now)}"


def revert_run(run: str) -> str:
    """The run id of the scale revert after run `run` (a claim of its own, written fresh just
    before the revert acts, so that it holds for LOCK_GRACE although the incident is resolved)."""
    return f"{run or 'r1'}.{REVERT_RUN}"


def lock_holder(value: str) -> Holder:
    """The holder a lock Lease names; `<incident>/<uid>/<claimed at>` (before runs were named)
    reads as a holder of no particular run."""
    parts = value.split("/")
    name = parts[0]
    uid = parts[1] if len(parts) > 1 else ""
    run = parts[2] if len(parts) > 3 else ""
    since = parts[-1] if len(parts) > 2 else ""
    try:
        claimed = parse_time(since) if since else None
    except ValueError:
        claimed = None
    return Holder(name, uid, claimed, run)


def young(holder: Holder, now: datetime, within: timedelta) -> bool:
    """Whether `holder`'s claim is younger than `within` at `now`; one dated more than CLOCK_SKEW
    ahead of `now` is not (nor one with no time)."""
    if holder.claimed is None:
        return False
    age = now - holder.claimed
    return -CLOCK_SKEW <= age < within


def _resolved(spec: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]]) -> bool:
    return bool(spec.get("resolution")) or any(
        c.get("type") == ConditionType.RESOLVED and c.get("status") == "True" for c in conditions
    )


def revert_pending(progress: Mapping[str, Any]) -> bool:
    """Whether the run (`status.playbook` as the API returns it) still has a scale to undo once
    resolved: its pinned Playbook says `revertOnResolve` and a scale step succeeded, with replicas
    recorded, and is not yet reverted (the planner's `after_resolution` reverts it next)."""
    if not (progress.get("snapshot") or {}).get("revertOnResolve"):
        return False
    return any(
        s.get("action") == "scale"
        and s.get("state") == StepState.SUCCEEDED
        and not s.get("reverted")
        and (
            s.get("replicasBefore") is not None
            or any(t.get("replicasBefore") is not None for t in s.get("targets") or [])
        )
        for s in progress.get("steps") or []
    )


def _run_settled(
    spec: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]], progress: Mapping[str, Any]
) -> bool:
    """Whether an incident's current run is done with its workloads (see `holds_lock`)."""
    if spec.get("closed"):
        return True
    if revert_pending(progress):
        return False  # the scale revert, after the resolution, acts on the workloads still
    if _resolved(spec, conditions):
        return True
    for c in conditions:
        if c.get("status") != "True":
            continue
        if c.get("type") == ConditionType.STALLED and c.get("reason") == Reason.STEP_FAILED:
            return True  # stopped on a failed step: only a new run (or a person) goes on
    return _steps_done(progress)


def _steps_done(progress: Mapping[str, Any]) -> bool:
    """Whether no mutating step of the run (`status.playbook` as the API returns it) is left to
    run: each is final (succeeded, failed, skipped) or Blocked with continueOnFailure."""
    snapshot = progress.get("snapshot") or {}
    goes_on = {s.get("name") for s in snapshot.get("steps") or [] if s.get("continueOnFailure")}
    for s in progress.get("steps") or []:
        state, action = s.get("state"), s.get("action")
        if state in _FINAL or (state == StepState.BLOCKED and s.get("name") in goes_on):
            continue  # a Blocked step with continueOnFailure never runs again
        if action is None or action in MUTATING_ACTIONS:
            return False
    return True


def run_settled(spec: IncidentSpec, status: IncidentStatus) -> bool:
    """Whether the incident's run (if any) holds its workloads no longer: the incident is closed;
    else, while the run has a scale to revert once resolved (`revert_pending`), it holds them;
    else the incident is resolved, the run stopped on a failed step, or no mutating step of it is
    left to run (all final, skipped, or read-only). The loop gives its locks back when this becomes true."""
    progress = status.playbook
    return _run_settled(
        spec.model_dump(include={"closed", "resolution"}, exclude_none=True),
        [c.model_dump(mode="json") for c in status.conditions or []],
        progress.model_dump(mode="json", include={"snapshot", "steps"}, exclude_none=True)
        if progress is not None
        else {},
    )


def holds_lock(incident: Mapping[str, Any] | None, value: str, now: datetime) -> bool:
    """Whether the lock `value` on a workload still holds, given its holder incident's body as
    the API returns it (None: gone). The lock is held for a run: from the run's first mutating
    action on the workload until the run settles (`run_settled`). Free when the holder is gone
    (or another object took its name) or closed; held while its run has a scale to revert
    (`revert_pending`: the run's claim and the revert's); else free when resolved, stopped on a
    failed step, or has no
    mutating step left to run, or when it runs another run than the one that claimed it (a
    re-fire: the new run claims it again at its own first action; a scale revert's claim,
    `revert_run`); each of those only once the claim is older than LOCK_GRACE (or dated more than
    CLOCK_SKEW ahead of `now`: `young`): a fresh claim holds
    whatever the holder's state (its action may still be running, and the scale revert runs after
    the incident resolved), except when the status shows the claim's own run with every mutating
    step done and nothing to revert (`_claimed_run_done`: each step's outcome is written after its
    action, so none of that run runs). A paused incident, or one waiting (approval, a stall, a
    crash it resumes from) keeps it.

    This is what frees a settled run's lock: the run does not delete its Lease when it settles
    (a write per workload per run saved); the Lease stays, naming the settled run, until the next
    claim replaces it (resourceVersion-checked)."""
    if incident is None:
        return False
    holder = lock_holder(value)
    metadata = incident.get("metadata") or {}
    if holder.uid and metadata.get("uid") != holder.uid:
        return False
    spec = incident.get("spec") or {}
    status = incident.get("status") or {}
    conditions = status.get("conditions") or []
    progress = status.get("playbook") or {}
    run = str(progress.get("runId") or "")
    if young(holder, now, LOCK_GRACE):
        # its action may be running still, even if a person resolved the incident; unless the
        # status shows the claim's own run done with its steps (each outcome is written after
        # its action): the lock of a run that settled is free at once, its Lease left in place
        return not _claimed_run_done(holder, progress)
    if spec.get("closed"):
        return False
    if revert_pending(progress) and holder.run in ("", run, revert_run(run)):
        return True  # held until the scale revert is done, by the run that scaled or the revert
    if _resolved(spec, conditions):
        return False
    if holder.run and progress.get("runId") != holder.run:
        return False  # a re-fire's run, or a scale revert done: past the grace
    return not _run_settled(spec, conditions, progress)


def _claimed_run_done(holder: Holder, progress: Mapping[str, Any]) -> bool:
    """Whether the holder's status shows the run that claimed the lock with every mutating step
    done (`_steps_done`) and no scale to revert: no action of that run is left, so none runs. A
    claim of another run (a re-fire's, a scale revert's), or of none named, is not judged so."""
    steps = progress.get("steps") or []
    return (
        bool(holder.run)
        and holder.run == str(progress.get("runId") or "")
        and bool(steps)
        and not revert_pending(progress)
        and _steps_done(progress)
    )


_WAITS_FOR = re.compile(r"(?:^|: )([A-Za-z]+/[a-z0-9][-a-z0-9.]*) is busy: incident ")


def waits_for(incident: Mapping[str, Any]) -> str | None:
    """The workload ('Kind/name') an incident's run waits for, by its body as the API returns it:
    its `Stalled` condition True with reason TargetBusy names it (`busy_message`); else None."""
    status = incident.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == ConditionType.STALLED and c.get("status") == "True":
            if c.get("reason") != Reason.TARGET_BUSY:
                return None
            found = _WAITS_FOR.search(str(c.get("message") or ""))
            return found.group(1) if found else None
    return None


def goes_first(holder: Mapping[str, Any], holder_name: str, created: datetime | None, name: str) -> bool:
    """Whether the holder incident (its body's metadata) ranks before incident `name`, created at
    `created`: the older one, then by name. Of two runs that each hold a workload the other wants,
    the later one gives its locks back, so the two never wait for each other for ever."""
    stamp = (holder.get("metadata") or {}).get("creationTimestamp")
    try:
        theirs = parse_time(str(stamp)) if stamp else None
    except ValueError:
        theirs = None
    if theirs is not None and created is not None and theirs != created:
        return theirs < created
    if (theirs is None) != (created is None):
        return theirs is not None  # a known age ranks first
    return holder_name < name


def run_workloads(playbook: PlaybookSpec, progress: PlaybookProgress | None) -> list[WorkloadRef]:
    """The workloads a run's mutating steps act on, as far as known: the fixed targets and the
    targets each step resolved (what a settled run gives back)."""
    if progress is None:
        return []
    found: dict[str, WorkloadRef] = {}
    by_name = {s.name: s for s in playbook.steps}
    for status in progress.steps:
        step = by_name.get(status.name)
        if step is None or not step.mutates or step.target is None:
            continue
        fixed = step.target.fixed
        for ref in [fixed] if fixed is not None else [t.ref for t in status.targets or []]:
            found.setdefault(key(ref), ref)
    return list(found.values())


def refused_message(refused: Sequence[tuple[WorkloadRef, str]]) -> str:
    """What a step outside its bounds says (at resolution, and when labels changed since)."""
    said = "; ".join(f"{key(ref)} is outside {why}" for ref, why in refused)
    return f"{said}: nothing is touched"
