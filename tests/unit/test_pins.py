"""Pinned runs: the snapshot and digest a run executes, and approvals that belong to one run."""

from __future__ import annotations

from typing import Any

from incident_operator.api.models import (
    ApprovalRun,
    IncidentSpec,
    IncidentStatus,
    PlaybookProgress,
    PlaybookSpec,
)
from incident_operator.core import pins

SCALE: dict[str, Any] = {
    "name": "scale",
    "requiresApproval": True,
    "scale": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 3},
}


def spec(**extra: Any) -> PlaybookSpec:
    return PlaybookSpec.model_validate({"steps": [SCALE], **extra})


def incident(*approvals: dict[str, str]) -> IncidentSpec:
    return IncidentSpec.model_validate(
        {"title": "t", "severity": "P2", "category": "availability", "approvals": list(approvals)}
    )


def in_run(run: str, bound: list[ApprovalRun] | None = None) -> IncidentStatus:
    return IncidentStatus(playbook=PlaybookProgress(name="pb", runId=run), approvalRuns=bound)


def test_the_digest_follows_what_runs_and_nothing_else() -> None:
    base = pins.digest(spec())
    assert base.startswith("sha256:")
    assert base == pins.digest(spec())
    assert pins.digest(spec(priority=50, match={"severities": ["P1"]})) == base  # choosing, not running
    assert pins.digest(spec(steps=[{**SCALE, "scale": {**SCALE["scale"], "replicas": 9}}])) != base
    assert pins.digest(spec(steps=[{**SCALE, "requiresApproval": False}])) != base
    assert pins.digest(spec(guardrails={"maxReplicas": 5})) != base
    assert pins.digest(spec(stabilizationSeconds=5)) != base
    assert pins.digest(spec(onAlertResolved="Continue")) != base
    assert pins.digest(spec(onAlertResolved="SkipMutatingSteps")) == base  # the default: as before it existed


def test_the_pinned_spec_is_the_snapshot_whatever_the_playbook_says_now() -> None:
    pinned = pins.snapshot(
        spec(guardrails={"maxReplicas": 5}, revertOnResolve=True, onAlertResolved="Continue")
    )
    edited = spec(steps=[{**SCALE, "scale": {**SCALE["scale"], "replicas": 9}}], priority=7)
    runs = pins.pinned_spec(pinned, edited)
    assert runs.steps[0].scale is not None
    assert runs.steps[0].scale.replicas == 3
    assert runs.guardrails.maxReplicas == 5
    assert runs.revertOnResolve
    assert runs.onAlertResolved == "Continue"
    assert runs.priority == 7  # match and priority only choose a playbook: the live ones
    assert pins.digest_of(pinned) == pins.digest(runs)


def test_an_approval_without_run_binds_to_the_run_in_flight_and_never_carries_over() -> None:
    approval = {"step": "scale", "by": "alice"}
    status = in_run("r1")
    pins.bind_approvals(incident(approval), status)
    assert status.approvalRuns == [ApprovalRun(step="scale", by="alice", run="r1")]
    assert pins.approval_for(incident(approval), status, "scale") is not None
    # a re-fire: run r2 starts; the same approval still belongs to r1
    status.playbook = PlaybookProgress(name="pb", runId="r2")
    pins.bind_approvals(incident(approval), status)
    assert status.approvalRuns == [ApprovalRun(step="scale", by="alice", run="r1")]
    assert pins.approval_for(incident(approval), status, "scale") is None
    # withdrawn and given again: it binds to the run in flight now
    pins.bind_approvals(incident(), status)
    assert status.approvalRuns is None
    pins.bind_approvals(incident(approval), status)
    assert pins.approval_for(incident(approval), status, "scale") is not None


def test_an_approval_naming_its_run_counts_for_that_run_only() -> None:
    given = incident({"step": "scale", "by": "alice", "run": "r1"})
    assert pins.approval_for(given, in_run("r1"), "scale") is not None
    assert pins.approval_for(given, in_run("r2"), "scale") is None
    assert pins.approval_for(given, in_run("r1"), "other") is None
    assert pins.approval_for(given, IncidentStatus(), "scale") is None  # no run in flight


def test_without_a_run_in_flight_nothing_is_bound_yet() -> None:
    status = IncidentStatus()
    pins.bind_approvals(incident({"step": "scale", "by": "alice"}), status)
    assert status.approvalRuns is None
