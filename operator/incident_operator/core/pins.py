"""Pinned runs: what a playbook run executes, fixed when it starts. Pure.

A run copies the Playbook's steps and the settings that steer them (guardrails, stabilization,
revert, cooldown, allowedTargets) into the incident's status (`status.playbook.snapshot`), with the
Playbook's
generation and a digest of that copy. The run then executes the copy: editing the Playbook, even
an approval-gated step of it, never changes a run in flight; the next run uses the edit.

Approvals belong to runs too (`approval_for`): one that names its `run` counts for that run only;
one without `run` is bound to the run in flight when the operator first sees it
(`bind_approvals`, recorded in `status.approvalRuns`), and never carries over to another run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from incident_operator.api.models import (
    Approval,
    ApprovalRun,
    IncidentSpec,
    IncidentStatus,
    PinnedPlaybook,
    PlaybookSpec,
)


@dataclass(frozen=True)
class LiveVersion:
    """The Playbook as it is now, compared with the run's pin."""

    generation: int | None
    digest: str | None
    """None: the Playbook is Invalid now (it cannot be the next run's)."""
    spec: PlaybookSpec | None = None
    """The Playbook now (valid ones): what a run that ends on an edit continues with."""


def snapshot(spec: PlaybookSpec) -> PinnedPlaybook:
    """The part of a Playbook a run executes, as it is now."""
    return PinnedPlaybook(
        steps=[step.model_dump(mode="json", exclude_none=True) for step in spec.steps],
        guardrails=spec.guardrails.model_dump(mode="json", exclude_none=True) or None,
        revertOnResolve=spec.revertOnResolve,
        stabilizationSeconds=spec.stabilizationSeconds,
        cooldownSeconds=spec.cooldownSeconds,
        # the default is left out, so runs pinned before the field existed keep their digest
        onAlertResolved=None if spec.onAlertResolved == "SkipMutatingSteps" else spec.onAlertResolved,
        allowedTargets=(
            spec.allowedTargets.model_dump(mode="json", exclude_none=True) if spec.allowedTargets else None
        ),
    )


def digest(spec: PlaybookSpec) -> str:
    """sha256 over the snapshot's canonical JSON: equal for Playbooks that run the same way."""
    return digest_of(snapshot(spec))


def digest_of(pinned: PinnedPlaybook) -> str:
    canonical = json.dumps(pinned.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


_SPECS: dict[str, PlaybookSpec] = {}
_SPECS_KEPT = 256


def pinned_spec(pinned: PinnedPlaybook, live: PlaybookSpec | None = None) -> PlaybookSpec:
    """The PlaybookSpec a run executes: its snapshot (match and priority, which only choose the
    playbook, are the live ones if given). Parsed once per snapshot digest (a few hundred kept),
    since the loop asks on every plan; the specs are shared, never changed."""
    key = digest_of(pinned)
    spec = _SPECS.get(key)
    if spec is None:
        spec = PlaybookSpec.model_validate(
            {
                "steps": pinned.steps,
                "guardrails": pinned.guardrails or {},
                "revertOnResolve": bool(pinned.revertOnResolve),
                "stabilizationSeconds": pinned.stabilizationSeconds or 0,
                "cooldownSeconds": pinned.cooldownSeconds or 0,
                "onAlertResolved": pinned.onAlertResolved or "SkipMutatingSteps",
                "allowedTargets": pinned.allowedTargets,
            }
        )
        if len(_SPECS) >= _SPECS_KEPT:
            _SPECS.pop(next(iter(_SPECS)))  # the oldest
        _SPECS[key] = spec
    if live is None:
        return spec
    return spec.model_copy(update={"match": live.match, "priority": live.priority})


def targets(spec: PlaybookSpec) -> set[str]:
    """The workloads ('Kind/name') the steps of `spec` name as their target."""
    found = set()
    for step in spec.steps:
        target = step.target
        if target is not None:
            found.add(target.describe())
    return found


def bind_approvals(spec: IncidentSpec, status: IncidentStatus) -> None:
    """Bind each approval without `run` to the run in flight (once, when first seen with a run in
    flight); forget bindings whose approval is gone, so that giving it again binds it anew."""
    given = [a for a in spec.approvals or [] if a.run is None]
    bound = [b for b in status.approvalRuns or [] if any(a.step == b.step and a.by == b.by for a in given)]
    run = status.playbook.runId if status.playbook is not None else None
    if run is not None:
        for approval in given:
            if not any(b.step == approval.step and b.by == approval.by for b in bound):
                bound.append(ApprovalRun(step=approval.step, by=approval.by, run=run))
    status.approvalRuns = bound or None


def approval_for(spec: IncidentSpec, status: IncidentStatus, step: str) -> Approval | None:
    """The approval of `step` for the run in flight, if any."""
    run = status.playbook.runId if status.playbook is not None else None
    if run is None:
        return None
    for approval in spec.approvals or []:
        if approval.step != step:
            continue
        if approval.run is not None:
            if approval.run == run:
                return approval
            continue
        if any(b.step == step and b.by == approval.by and b.run == run for b in status.approvalRuns or []):
            return approval
    return None
