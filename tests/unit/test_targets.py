"""Steps on the incident's own targets: resolution within bounds (pure), the planner's waits,
each target exactly once, and the per-workload lock."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import re
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from incident_operator.adapters.kube import ApiException
from incident_operator.api.base import WorkloadRef
from incident_operator.api.models import (
    BOUNDS_NEEDED,
    IncidentSpec,
    IncidentStatus,
    PlaybookSpec,
    StepState,
    StepStatus,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.targets import MAX_TARGETS, AllowedTargets, StepTarget, TargetStatus
from incident_operator.api.timestamps import format_time
from incident_operator.controllers import actions
from incident_operator.controllers import targets as running
from incident_operator.controllers.incident.execute import Execution
from incident_operator.core import alerts, targets
from incident_operator.core.explain import explain
from incident_operator.core.planner import Intent, plan
from incident_operator.settings.config import Limits
from tests.unit.fake_kube import INCIDENT, NAMESPACE, UID, Dropped, Effect, FakeKube
from tests.unit.test_incident_loop import (
    Clock,
    edit_incident,
    edit_playbook,
    fake_api,
    iterate_until,
    new_loop,
    run_until_settled,
)
from tests.unit.test_planner import T0, Candidate, Run, incident

ROOT = Path(__file__).resolve().parents[2]
WEB = WorkloadRef.model_validate({"kind": "Deployment", "name": "web"})
API = WorkloadRef.model_validate({"kind": "Deployment", "name": "api"})
DB = WorkloadRef.model_validate({"kind": "StatefulSet", "name": "db"})
FROM_ANY = StepTarget.model_validate({"fromIncident": {}})
FROM_DEPLOYMENTS = StepTarget.model_validate({"fromIncident": {"kind": "Deployment"}})


def bounds(**given: Any) -> AllowedTargets:
    return AllowedTargets.model_validate(given)


# ----------------------------------------------------------------------------- the API


def test_a_step_target_is_a_fixed_workload_or_from_incident_alone() -> None:
    assert StepTarget.model_validate({"kind": "Deployment", "name": "web"}).fixed == WEB
    assert FROM_DEPLOYMENTS.fixed is None
    for wrong in ({"kind": "Deployment"}, {"fromIncident": {}, "name": "web"}, {}):
        with pytest.raises(ValidationError, match="give kind and name, or fromIncident alone"):
            StepTarget.model_validate(wrong)


def test_a_playbook_with_a_step_on_the_incidents_targets_and_no_bounds_is_refused() -> None:
    steps = [{"name": "restart", "restart": {"target": {"fromIncident": {}}}}]
    with pytest.raises(ValidationError, match=r"needs spec\.allowedTargets"):
        PlaybookSpec.model_validate({"steps": steps})
    PlaybookSpec.model_validate({"steps": steps, "allowedTargets": {"kinds": ["Deployment"]}})
    crd = yaml.safe_load((ROOT / "crds" / "incident-operator.dev_playbooks.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = spec["x-kubernetes-validations"]
    assert any(r["message"] == BOUNDS_NEEDED and "fromIncident" in r["rule"] for r in rules)


# ----------------------------------------------------------------------------- resolution (pure)


def test_from_incident_acts_on_the_incidents_targets_of_its_kind() -> None:
    everything = bounds(kinds=["Deployment", "StatefulSet"])
    assert targets.resolve(FROM_ANY, [WEB, DB], everything, {}).targets == (WEB, DB)
    assert targets.resolve(FROM_DEPLOYMENTS, [WEB, DB, WEB], everything, {}).targets == (WEB,)
    fixed = StepTarget.model_validate({"kind": "StatefulSet", "name": "db"})
    assert targets.resolve(fixed, [WEB], None, {}).targets == (DB,)  # a fixed name is the author's


def test_no_target_of_the_kind_is_no_target() -> None:
    resolution = targets.resolve(FROM_DEPLOYMENTS, [DB], bounds(), {})
    assert resolution.blocked is Reason.NO_TARGET
    assert resolution.targets == ()
    assert "StatefulSet/db" in resolution.message
    assert targets.resolve(FROM_ANY, None, bounds(), {}).blocked is Reason.NO_TARGET


@pytest.mark.parametrize(
    ("given", "refused_by"),
    [
        ({"kinds": ["StatefulSet"]}, "allowedTargets.kinds"),
        ({"names": ["web-*", "api"]}, "allowedTargets.names"),
        ({"selector": {"matchLabels": {"tier": "frontend"}}}, "allowedTargets.selector tier=frontend"),
    ],
)
def test_a_target_outside_any_bound_is_never_touched(given: dict[str, Any], refused_by: str) -> None:
    labels = {"Deployment/web": {"tier": "backend"}}
    resolution = targets.resolve(FROM_ANY, [WEB], bounds(**given), labels)
    assert resolution.blocked is Reason.OUT_OF_BOUNDS
    assert resolution.targets == ()
    assert "Deployment/web is outside" in resolution.message
    assert refused_by in resolution.message


def test_one_target_outside_the_bounds_and_the_step_acts_on_none() -> None:
    resolution = targets.resolve(FROM_ANY, [API, WEB], bounds(names=["ap?"]), {})
    assert resolution.blocked is Reason.OUT_OF_BOUNDS
    assert resolution.targets == ()
    assert "Deployment/web" in resolution.message
    assert "Deployment/api" not in resolution.message


def test_globs_and_selectors_admit_what_they_match() -> None:
    admitted = bounds(
        kinds=["Deployment"], names=["web", "a[p]i*"], selector={"matchLabels": {"team": "shop"}}
    )
    labels = {"Deployment/web": {"team": "shop", "x": "y"}, "Deployment/api": {"team": "shop"}}
    assert targets.resolve(FROM_ANY, [WEB, API], admitted, labels).targets == (WEB, API)


def test_a_selector_bound_refuses_a_workload_whose_labels_are_unknown() -> None:
    resolution = targets.resolve(FROM_ANY, [WEB], bounds(selector={"matchLabels": {"a": "b"}}), {})
    assert resolution.blocked is Reason.OUT_OF_BOUNDS
    assert "could not be read" in resolution.message


def test_labels_are_read_only_for_a_selector_bound() -> None:
    step = {"name": "r", "restart": {"target": {"fromIncident": {}}}}
    by_name = PlaybookSpec.model_validate({"steps": [step], "allowedTargets": {"names": ["web"]}})
    by_labels = PlaybookSpec.model_validate(
        {"steps": [step], "allowedTargets": {"selector": {"matchLabels": {"a": "b"}}}}
    )
    assert not targets.needs_labels(by_name)
    assert targets.needs_labels(by_labels)


# ----------------------------------------------------------------------------- the planner

RESTART_THEIRS = {"name": "restart", "restart": {"target": {"fromIncident": {"kind": "Deployment"}}}}


def generic(**allowed: Any) -> Candidate:
    body = {"steps": [RESTART_THEIRS], "stabilizationSeconds": 30, "allowedTargets": allowed}
    return Candidate("pb", PlaybookSpec.model_validate(body))


def test_the_planner_records_the_resolved_targets_in_the_step_before_it_runs() -> None:
    run = Run(incident(targets=[WEB.model_dump(), API.model_dump()]), generic(names=["web", "api"]))
    decision = run.plan()
    assert decision.intent == Intent("run-step", 0)
    assert [(t.kind, t.name, t.state) for t in run.step(0).targets] == [
        ("Deployment", "web", "Pending"),
        ("Deployment", "api", "Pending"),
    ]


@pytest.mark.parametrize(
    ("targets_named", "reason", "said"),
    [
        ([], Reason.NO_TARGET, "names no Deployment target"),
        ([DB], Reason.NO_TARGET, "spec.targets: StatefulSet/db"),
        ([WEB, API], Reason.OUT_OF_BOUNDS, "Deployment/api is outside allowedTargets.names ['web']"),
    ],
)
def test_no_target_or_one_outside_the_bounds_stalls_the_step_and_acts_on_nothing(
    targets_named: list[WorkloadRef], reason: Reason, said: str
) -> None:
    run = Run(incident(targets=[t.model_dump() for t in targets_named]), generic(names=["web"]))
    decision = run.plan()
    assert decision.intent is None  # nothing runs
    assert run.step(0).state is StepState.BLOCKED
    assert run.step(0).targets is None
    stalled = run.condition(ConditionType.STALLED)
    assert stalled is not None
    assert stalled["status"] == "True"
    assert stalled["reason"] == reason
    assert said in stalled["message"]
    run.now += timedelta(seconds=5)  # before the recheck: still nothing
    assert run.plan().intent is None
    run.spec = incident(targets=[WEB.model_dump()])  # a person fixes the incident's targets
    run.now += timedelta(seconds=30)
    assert run.plan().intent == Intent("run-step", 0)
    assert [t.name for t in run.step(0).targets] == ["web"]
    run.complete(Intent("run-step", 0))
    assert run.condition(ConditionType.STALLED)["status"] == "False"


def test_a_busy_target_is_tried_again_soon() -> None:
    run = Run(incident(targets=[WEB.model_dump()]), generic(names=["web"]))
    run.plan()
    decision = run.complete(
        Intent("run-step", 0),
        ok=False,
        message="Deployment/web is busy: incident other",
        blocked=Reason.TARGET_BUSY,
    )
    assert run.condition(ConditionType.STALLED)["reason"] == Reason.TARGET_BUSY
    assert "incident other" in run.condition(ConditionType.STALLED)["message"]
    assert decision.wake_at == T0 + timedelta(seconds=2)
    run.now += timedelta(seconds=2)
    assert run.plan().intent == Intent("run-step", 0)
    # a holder's run may wait for hours (an approval): after a minute, tried again less often
    busy = {"ok": False, "message": "Deployment/web is busy: incident other", "blocked": Reason.TARGET_BUSY}
    run.now = T0 + timedelta(seconds=60)
    assert run.complete(Intent("run-step", 0), **busy).wake_at == run.now + timedelta(seconds=10)


# ----------------------------------------------------------------------------- a run's targets are pinned

ROLLBACK_THEIRS = {"name": "rollback", "rollback": {"target": {"fromIncident": {"kind": "Deployment"}}}}


def restart_then_rollback(*more: dict[str, Any]) -> Candidate:
    body = {
        "steps": [RESTART_THEIRS, ROLLBACK_THEIRS, *more],
        "stabilizationSeconds": 30,
        "allowedTargets": {"names": ["*"]},
    }
    return Candidate("pb", PlaybookSpec.model_validate(body))


def names(step: Any) -> list[str]:
    return [f"{t.kind}/{t.name}" for t in step.targets]


def test_an_edit_of_the_incidents_targets_mid_run_does_not_retarget_the_run() -> None:
    run = Run(incident(targets=[WEB.model_dump()]), restart_then_rollback())
    assert run.plan().intent == Intent("run-step", 0)
    assert names(run.step(0)) == ["Deployment/web"]
    assert run.status.playbook is not None
    assert run.status.playbook.targets == [WEB]  # pinned, recorded in the run's status
    assert Reason.TARGETS_PINNED in run.records
    run.complete(Intent("run-step", 0))
    run.spec = incident(targets=[API.model_dump()])  # a person (or intake) edits them mid-run
    assert run.plan().intent == Intent("run-step", 1)
    assert names(run.step(1)) == ["Deployment/web"]  # restarted web: rolls back web, not api
    assert run.status.playbook.targets == [WEB]
    said = [e.message for e in run.status.timeline or [] if e.type == Reason.TARGETS_CHANGED]
    assert len(said) == 1
    assert "now Deployment/api" in said[0]
    assert "pinned targets (Deployment/web)" in said[0]
    assert "next run" in said[0]
    run.complete(Intent("run-step", 1))
    run.plan()  # said once per edit, not at every plan
    assert [e.type for e in run.status.timeline or []].count(Reason.TARGETS_CHANGED) == 1


def test_the_explanation_says_which_targets_the_run_acts_on_and_that_an_edit_waits() -> None:
    run = Run(incident(targets=[WEB.model_dump()]), restart_then_rollback())
    run.plan()
    run.complete(Intent("run-step", 0))
    run.spec = incident(targets=[API.model_dump()])
    inp = run.input()
    decision = plan(inp)
    why = explain(inp, decision, run.playbooks, {}, incident="web", namespace="shop")
    assert why.run is not None
    assert "acts on the targets it pinned: Deployment/web" in why.run
    assert "spec.targets now names Deployment/api: the edit applies from the next run" in why.run


def test_targets_empty_at_the_start_are_pinned_when_a_waiting_step_picks_them_up() -> None:
    run = Run(incident(), restart_then_rollback())
    run.plan()
    assert run.step(0).state is StepState.BLOCKED
    assert run.status.playbook is not None
    assert run.status.playbook.targets is None  # nothing pinned while the step waits NoTarget
    run.spec = incident(targets=[WEB.model_dump()])  # an SRE names the target
    run.now += timedelta(seconds=30)
    assert run.plan().intent == Intent("run-step", 0)
    assert run.status.playbook.targets == [WEB]
    run.complete(Intent("run-step", 0))
    run.spec = incident(targets=[WEB.model_dump(), API.model_dump()])
    assert run.plan().intent == Intent("run-step", 1)
    assert names(run.step(1)) == ["Deployment/web"]


def test_a_step_of_a_kind_the_pin_lacks_takes_the_incidents_targets_of_that_kind_then() -> None:
    restart_db = {"name": "restart-db", "restart": {"target": {"fromIncident": {"kind": "StatefulSet"}}}}
    run = Run(incident(targets=[WEB.model_dump()]), restart_then_rollback(restart_db))
    run.plan()
    run.complete(Intent("run-step", 0))
    run.spec = incident(targets=[API.model_dump()])
    run.plan()
    assert names(run.step(1)) == ["Deployment/web"]
    run.complete(Intent("run-step", 1))
    assert run.plan().intent is None  # no StatefulSet pinned nor named: it waits for one
    assert run.condition(ConditionType.STALLED)["reason"] == Reason.NO_TARGET
    assert "(spec.targets: Deployment/api)" in run.condition(ConditionType.STALLED)["message"]
    run.spec = incident(targets=[API.model_dump(), DB.model_dump()])  # an SRE names it
    run.now += timedelta(seconds=30)
    assert run.plan().intent == Intent("run-step", 2)
    assert names(run.step(2)) == ["StatefulSet/db"]
    assert run.status.playbook is not None
    assert run.status.playbook.targets == [WEB, DB]  # added; api never is


def test_a_status_stored_before_the_pin_resolves_as_before_and_pins_then() -> None:
    run = Run(incident(targets=[WEB.model_dump()]), restart_then_rollback())
    run.plan()
    run.complete(Intent("run-step", 0))
    stored = run.status.model_dump(mode="json", exclude_none=True)
    del stored["playbook"]["targets"]  # as an operator without the field wrote it
    run.status = IncidentStatus.model_validate(stored)
    assert run.status.playbook is not None
    assert run.status.playbook.targets is None
    assert run.plan().intent == Intent("run-step", 1)
    assert names(run.step(1)) == ["Deployment/web"]
    assert run.status.playbook.targets == [WEB]


RESTART_DB = {"name": "restart-db", "restart": {"target": {"fromIncident": {"kind": "StatefulSet"}}}}
PG = WorkloadRef.model_validate({"kind": "StatefulSet", "name": "pg-0"})


def web_then_db(names: list[str], generation: int = 1) -> Candidate:
    """The review's repro: a restart of the incident's Deployment, then of its StatefulSet,
    bounded by names."""
    body = {
        "steps": [RESTART_THEIRS, RESTART_DB],
        "stabilizationSeconds": 30,
        "allowedTargets": {"names": names},
    }
    return Candidate("pb", PlaybookSpec.model_validate(body), generation=generation)


def stalled_out_of_bounds_on_db() -> Run:
    run = Run(incident(targets=[WEB.model_dump(), DB.model_dump()]), web_then_db(["web", "pg-*"]))
    assert run.plan().intent == Intent("run-step", 0)
    assert names(run.step(0)) == ["Deployment/web"]
    assert run.status.playbook is not None
    assert run.status.playbook.targets == [WEB]  # only what the step acts on, not StatefulSet/db
    run.complete(Intent("run-step", 0))
    assert run.plan().intent is None
    assert run.step(1).state is StepState.BLOCKED
    stalled = run.condition(ConditionType.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", Reason.OUT_OF_BOUNDS)
    assert "StatefulSet/db is outside allowedTargets.names" in stalled["message"]
    assert run.status.playbook.targets == [WEB]  # a refused target is never pinned
    return run


def test_out_of_bounds_on_a_target_clears_when_spec_targets_is_fixed() -> None:
    run = stalled_out_of_bounds_on_db()
    run.spec = incident(targets=[WEB.model_dump(), PG.model_dump()])  # a person fixes the target
    run.now += timedelta(seconds=30)
    assert run.plan().intent == Intent("run-step", 1)
    assert names(run.step(1)) == ["StatefulSet/pg-0"]
    assert run.status.playbook is not None
    assert run.status.playbook.targets == [WEB, PG]  # pinned now that a step acts on it
    run.complete(Intent("run-step", 1))
    assert run.condition(ConditionType.STALLED)["status"] == "False"


def test_out_of_bounds_on_a_target_clears_when_the_playbooks_bounds_are_fixed_a_new_run() -> None:
    run = stalled_out_of_bounds_on_db()
    run.playbooks = [web_then_db(["web", "pg-*", "db"], generation=2)]  # a person widens the bounds
    run.plan()
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r2"  # the stalled run ended; the edit's run goes on
    assert run.status.playbook.targets == [WEB]  # what r1 acted on stays pinned
    assert [s.state for s in run.status.playbook.steps] == [StepState.SUCCEEDED, StepState.PENDING]
    assert run.plan().intent == Intent("run-step", 1)
    assert names(run.step(1)) == ["StatefulSet/db"]
    run.complete(Intent("run-step", 1))
    assert run.condition(ConditionType.STALLED)["status"] == "False"


def test_no_target_ends_the_run_on_a_playbook_edit_too() -> None:
    run = Run(incident(targets=[DB.model_dump()]), web_then_db(["*"]))
    assert run.plan().intent is None
    assert run.condition(ConditionType.STALLED)["reason"] == Reason.NO_TARGET
    edited = {"steps": [RESTART_DB], "stabilizationSeconds": 30, "allowedTargets": {"names": ["*"]}}
    run.playbooks = [Candidate("pb", PlaybookSpec.model_validate(edited), generation=2)]
    run.plan()
    assert run.status.playbook is not None
    assert run.status.playbook.runId == "r2"
    assert run.plan().intent == Intent("run-step", 0)
    assert names(run.step(0)) == ["StatefulSet/db"]


def test_a_later_step_of_a_pinned_kind_acts_on_the_pin_one_of_another_kind_on_spec_targets_now() -> None:
    """The guarantee kept: a step that acted keeps its targets, a later step of the same kind
    acts on the same workloads; only kinds the run has not acted on follow spec.targets."""
    run = Run(incident(targets=[WEB.model_dump(), DB.model_dump()]), restart_then_rollback(RESTART_DB))
    run.plan()
    run.complete(Intent("run-step", 0))
    run.spec = incident(targets=[API.model_dump(), PG.model_dump()])
    assert run.plan().intent == Intent("run-step", 1)
    assert names(run.step(1)) == ["Deployment/web"]
    run.complete(Intent("run-step", 1))
    assert run.plan().intent == Intent("run-step", 2)
    assert names(run.step(2)) == ["StatefulSet/pg-0"]  # no StatefulSet acted on before: as named now
    said = [e.message for e in run.status.timeline or [] if e.type == Reason.TARGETS_CHANGED]
    assert said
    assert "now Deployment/api" in said[-1]
    assert "pg-0" not in said[-1]  # not a kind the run had pinned


def test_health_checks_the_pinned_targets_and_the_ones_named_now() -> None:
    spec = incident(targets=[API.model_dump()])
    refs = actions.workload_targets(spec, restart_then_rollback().spec, [WEB])
    assert refs == [WEB, API]


# ----------------------------------------------------------------------------- each target once


def context(api: FakeKube, step_status: StepStatus, playbook: PlaybookSpec, spec: IncidentSpec) -> Any:
    async def persist() -> None:
        api.calls.append(("persist", [t.state for t in step_status.targets or []]))

    return actions.ActionContext(
        kube=api,
        outbound=None,
        limits=Limits(),
        namespace=NAMESPACE,
        incident=INCIDENT,
        incident_uid=UID,
        spec=spec,
        status=None,
        playbook=playbook,
        step=playbook.steps[0],
        step_status=step_status,
        now=lambda: T0,
        persist=persist,
    )


def two_targets(api: FakeKube, first: str = "Pending") -> tuple[Any, StepStatus]:
    playbook = generic(names=["*"]).spec
    spec = incident(targets=[WEB.model_dump(), API.model_dump()])
    status = StepStatus(
        name="restart",
        action="restart",
        state=StepState.RUNNING,
        attempts=1,
        startedAt=T0,
        targets=[
            TargetStatus(kind="Deployment", name="web", state=first),
            TargetStatus(kind="Deployment", name="api"),
        ],
    )
    return context(api, status, playbook, spec), status


def restarted(api: FakeKube) -> list[str]:
    return [e.workload for e in api.effects if e.kind == "restart"]


def test_each_target_is_acted_on_once_and_recorded_done_before_the_next() -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2})
    ctx, status = two_targets(api)
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.ok, outcome
    assert restarted(api) == ["web", "api"]
    assert [t.state for t in status.targets or []] == ["Succeeded", "Succeeded"]
    persisted = [c[1] for c in api.calls if c[0] == "persist"]
    assert persisted[0] == ["Succeeded", "Pending"]  # web written done before api was touched
    for name in ("web", "api"):  # kept for the run: given back when it settles
        assert targets.lock_holder(api.lock(name) or "")[:2] == (INCIDENT, UID)


def test_a_target_done_before_a_crash_is_not_acted_on_again() -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2})
    ctx, _status = two_targets(api, first="Succeeded")
    ctx.step_status.startedAt = T0 + timedelta(minutes=1)  # a new attempt: a new restart stamp
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.ok
    assert restarted(api) == ["api"]
    assert "Deployment/web: done before" in outcome.message


def test_a_failed_target_stops_the_step_and_a_retry_skips_the_ones_done() -> None:
    api = FakeKube({}, {}, {"web": 2})  # api does not exist
    ctx, status = two_targets(api)
    outcome = asyncio.run(running.run_step(ctx))
    assert not outcome.ok
    assert outcome.message.startswith("Deployment/api: ")
    assert [t.state for t in status.targets or []] == ["Succeeded", "Failed"]
    api.workloads["api"] = {"replicas": 1, "annotations": {}, "ready": 1, "meta": {}, "labels": {}, "rv": 1}
    assert asyncio.run(running.run_step(ctx)).ok
    assert restarted(api) == ["web", "api"]


# ----------------------------------------------------------------------------- the lock


def holder_body(uid: str = "uid-other", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "other", "uid": uid}, "spec": {}, "status": status}


RUNNING = {"playbook": {"steps": [{"name": "restart", "state": "Running"}]}}


def test_a_workload_locked_by_another_running_incident_is_not_touched() -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2})
    api.set_lock("web", targets.lock_value("other", "uid-other", T0))
    api.incidents["other"] = holder_body(**RUNNING)
    ctx, status = two_targets(api)
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.blocked is Reason.TARGET_BUSY
    assert "Deployment/web" in outcome.message
    assert "incident other" in outcome.message
    assert restarted(api) == []
    assert [t.state for t in status.targets or []] == ["Pending", "Pending"]


@pytest.mark.parametrize(
    "holder",
    [
        None,  # deleted
        holder_body(uid="uid-new", **RUNNING),  # another object under the same name
        {**holder_body(**RUNNING), "spec": {"closed": True}},
        holder_body(conditions=[{"type": "Resolved", "status": "True"}], **RUNNING),
        holder_body(playbook={"steps": [{"name": "restart", "state": "Succeeded"}]}),  # its run is over
    ],
)
def test_a_stale_lock_is_taken_over(holder: dict[str, Any] | None) -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2})
    stale = targets.lock_value("other", "uid-other", T0 - timedelta(minutes=5))
    api.set_lock("web", stale)
    if holder is not None:
        api.incidents["other"] = holder
    ctx, _ = two_targets(api)
    assert asyncio.run(running.run_step(ctx)).ok
    assert restarted(api) == ["web", "api"]
    assert targets.lock_holder(api.lock("web") or "").incident == INCIDENT  # taken over


def test_a_fresh_claim_holds_before_the_holders_run_shows() -> None:
    fresh = targets.lock_value("other", "uid-other", T0 - timedelta(seconds=5))
    assert targets.holds_lock(holder_body(), fresh, T0)
    assert not targets.holds_lock(holder_body(), fresh, T0 + targets.LOCK_GRACE)


def steps_of(*states: tuple[str, str, str]) -> dict[str, Any]:
    """A holder's run r1: steps as (name, action, state)."""
    return {
        "runId": "r1",
        "steps": [{"name": n, "action": a, "state": st} for n, a, st in states],
    }


BETWEEN_STEPS = steps_of(
    ("restart", "restart", "Succeeded"),
    ("wait", "waitReady", "Running"),
    ("rollback", "rollback", "Pending"),
)


@pytest.mark.parametrize(
    ("body", "held"),
    [
        # between its steps (its waitReady, its approval): the run keeps it
        (holder_body(playbook=BETWEEN_STEPS), True),
        (
            holder_body(
                playbook=steps_of(
                    ("restart", "restart", "Succeeded"), ("again", "restart", "AwaitingApproval")
                )
            ),
            True,
        ),
        ({**holder_body(playbook=BETWEEN_STEPS), "spec": {"paused": True}}, True),  # paused: kept
        (
            holder_body(  # blocked on something a person fixes: kept
                playbook=steps_of(("check", "httpCheck", "Blocked"), ("restart", "restart", "Pending"))
            ),
            True,
        ),
        # settled: every mutating step final, skipped or only read-only steps left
        (
            holder_body(
                playbook=steps_of(("restart", "restart", "Succeeded"), ("again", "restart", "Skipped"))
            ),
            False,
        ),
        (
            holder_body(
                playbook=steps_of(("restart", "restart", "Succeeded"), ("wait", "waitReady", "Running"))
            ),
            False,
        ),
        (  # stopped on a failed step: nothing more runs
            holder_body(
                playbook=steps_of(("restart", "restart", "Failed"), ("again", "restart", "Pending")),
                conditions=[{"type": "Stalled", "status": "True", "reason": "StepFailed"}],
            ),
            False,
        ),
        (  # a Blocked step with continueOnFailure never runs again
            holder_body(
                playbook={
                    **steps_of(("restart", "restart", "Blocked")),
                    "snapshot": {"steps": [{"name": "restart", "continueOnFailure": True}]},
                }
            ),
            False,
        ),
        (holder_body(playbook={**BETWEEN_STEPS, "runId": "r2"}), False),  # a re-fire: another run
        ({**holder_body(playbook=BETWEEN_STEPS), "spec": {"resolution": {"summary": "x"}}}, False),
        (None, False),
    ],
)
def test_a_lock_is_held_for_the_run_until_it_settles(body: dict[str, Any] | None, held: bool) -> None:
    value = targets.lock_value("other", "uid-other", T0, "r1")
    later = T0 + targets.LOCK_GRACE  # past the grace of a fresh claim
    assert targets.holds_lock(body, value, later) is held


def test_a_claim_of_a_run_the_holders_status_does_not_show_yet_holds_for_the_grace() -> None:
    value = targets.lock_value("other", "uid-other", T0, "r2")  # the re-fire's run, status still r1
    body = holder_body(playbook=BETWEEN_STEPS)
    assert targets.holds_lock(body, value, T0 + timedelta(seconds=5))
    assert not targets.holds_lock(body, value, T0 + targets.LOCK_GRACE)


def test_a_holder_written_before_runs_were_named_reads_as_the_current_run() -> None:
    old = f"other/uid-other/{format_time(T0)}"
    assert targets.lock_holder(old) == targets.Holder("other", "uid-other", T0, "")
    assert targets.lock_holder(targets.lock_value("other", "uid-other", T0, "r3")) == targets.Holder(
        "other", "uid-other", T0, "r3"
    )
    assert targets.holds_lock(
        holder_body(playbook={**BETWEEN_STEPS, "runId": "r7"}), old, T0 + timedelta(hours=1)
    )
    assert targets.lock_holder("garbage").incident == "garbage"  # forged: names no live incident


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize(
    "name",
    [
        "web",
        "a" * 253,
        # the cut at 236 characters would leave a "." or a "-" before the hash
        "a" * 200 + "." + "b" * 40,
        "a" * 200 + "-" + "b" * 40,
        "a" * 199 + "-." + "b" * 40,
        "a" * 198 + "-" * 3 + "b" * 40,
    ],
)
def test_a_lock_lease_name_is_always_a_dns_subdomain(name: str) -> None:
    lease = targets.lock_lease(WorkloadRef.model_validate({"kind": "StatefulSet", "name": name}))
    assert len(lease) <= 253
    assert DNS_SUBDOMAIN.match(lease), lease
    other = targets.lock_lease(WorkloadRef.model_validate({"kind": "StatefulSet", "name": name[:-1] + "x"}))
    assert other != lease


def test_each_run_keeps_the_lock_and_a_second_incident_waits_until_it_settles() -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2})
    ctx, _ = two_targets(api)
    ctx = dataclasses.replace(
        ctx, status=IncidentStatus.model_validate({"playbook": {"name": "pb", "runId": "r1"}})
    )
    assert asyncio.run(running.run_step(ctx)).ok
    assert targets.lock_holder(api.lock("web") or "").run == "r1"
    # the holder, between its steps, as the other incident reads it
    api.incidents["second"] = {"metadata": {"name": "second", "uid": "uid-2"}, "spec": {}, "status": {}}
    mine = copy.deepcopy(api.incident)
    mine["status"] = {"playbook": {**BETWEEN_STEPS, "runId": "r1"}}
    api.incident = mine
    second = dataclasses.replace(ctx, incident="second", incident_uid="uid-2")
    second.step_status.targets = [TargetStatus(kind="Deployment", name="web")]
    outcome = asyncio.run(running.run_step(second))
    assert outcome.blocked is Reason.TARGET_BUSY
    assert outcome.message == f"Deployment/web is busy: incident {INCIDENT} holds it until its run settles"
    assert restarted(api) == ["web", "api"]  # the second acted on nothing
    # a re-fire of the holder: its new run takes the lock over at its first action
    refire = dataclasses.replace(
        ctx, status=IncidentStatus.model_validate({"playbook": {"name": "pb", "runId": "r2"}})
    )
    refire.step_status.targets = [TargetStatus(kind="Deployment", name="web")]
    assert asyncio.run(running.run_step(refire)).ok
    assert targets.lock_holder(api.lock("web") or "").run == "r2"


def test_of_two_runs_wanting_each_others_workload_the_later_incident_gives_way() -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2})
    older = {
        "metadata": {
            "name": "older",
            "uid": "uid-o",
            "creationTimestamp": format_time(T0 - timedelta(minutes=5)),
        },
        "spec": {},
        "status": {"playbook": {**BETWEEN_STEPS, "runId": "r1"}},
    }
    api.incidents["older"] = older
    api.set_lock("api", targets.lock_value("older", "uid-o", T0, "r1"))
    ctx, _ = two_targets(api)  # wants web, then api
    ctx = dataclasses.replace(
        ctx,
        status=IncidentStatus.model_validate({"playbook": {"name": "pb", "runId": "r1"}}),
        incident_created=T0,
    )
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.blocked is Reason.TARGET_BUSY
    assert "incident older" in outcome.message
    assert api.lock("web") is None  # it took web, then gave it back: the older one may go on
    assert restarted(api) == []
    # the older one waits for the younger without giving way
    api.set_lock("web", targets.lock_value(INCIDENT, UID, T0, "r1"))
    api.incident["metadata"]["creationTimestamp"] = format_time(T0)
    api.incident["status"] = {"playbook": {**BETWEEN_STEPS, "runId": "r1"}}
    mine = running.Claimant("older", "uid-o", "r1", T0 - timedelta(minutes=5))
    busy = asyncio.run(running.claim(api, NAMESPACE, WEB, mine, T0))
    assert busy is not None
    assert not busy.first


def test_labels_changed_since_the_step_resolved_and_it_acts_on_nothing() -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2})
    for name in ("web", "api"):
        api.workloads[name]["labels"] = {"team": "shop"}
    playbook = generic(selector={"matchLabels": {"team": "shop"}}).spec
    ctx, status = two_targets(api)
    ctx = dataclasses.replace(ctx, playbook=playbook, step=playbook.steps[0])
    api.workloads["api"]["labels"] = {"team": "other"}  # relabelled after the step resolved
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.blocked is Reason.OUT_OF_BOUNDS
    assert (
        outcome.message == "Deployment/api is outside allowedTargets.selector team=shop: nothing is touched"
    )
    assert restarted(api) == []  # web neither: nothing is touched
    assert api.lock("api") is None  # given back
    assert [t.state for t in status.targets or []] == ["Pending", "Pending"]
    api.workloads["api"]["labels"] = {"team": "shop"}  # put back: the step goes on
    assert asyncio.run(running.run_step(ctx)).ok
    assert restarted(api) == ["web", "api"]


def test_the_scale_revert_takes_the_lock_and_leaves_a_workload_another_run_holds() -> None:
    api = FakeKube({}, {}, {"web": 3})
    step = PlaybookSpec.model_validate(
        {"steps": [{"name": "up", "scale": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 3}}]}
    ).steps[0]
    done = StepStatus(name="up", action="scale", state=StepState.SUCCEEDED, replicasBefore=2)
    api.incidents["other"] = holder_body(playbook={**BETWEEN_STEPS, "runId": "r1"})
    api.set_lock("web", targets.lock_value("other", "uid-other", T0, "r1"))
    execution = revert_execution(api)
    outcome = asyncio.run(execution._revert_scale(step, done, IncidentStatus()))
    assert not outcome.ok
    assert (
        outcome.message
        == "not reverted: Deployment/web is busy: incident other holds it until its run settles"
    )
    assert api.workloads["web"]["replicas"] == 3
    del api.incidents["other"]  # gone: its lock holds nothing
    outcome = asyncio.run(execution._revert_scale(step, done, IncidentStatus()))
    assert outcome.ok, outcome
    assert api.workloads["web"]["replicas"] == 2
    assert api.lock("web") is None
    assert [c[0] for c in api.calls if c[0] in ("write_lock", "scale_workload")][-3:] == [
        "write_lock",
        "scale_workload",
        "write_lock",
    ]


def revert_execution(api: FakeKube) -> Any:
    return Execution(
        kube=api,
        outbound=None,
        limits=Limits(),
        namespace=NAMESPACE,
        name=INCIDENT,
        uid=UID,
        body=api.incident,
        clock=lambda: T0,
        commit=None,
        wake=asyncio.Event,
    )


def test_a_settled_run_writes_nothing_to_its_locks_and_the_next_claim_replaces_them() -> None:
    api = generic_api()
    clock = Clock()
    settle(api, clock)
    assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web"), ("scale", "api")]
    writes = [c for c in api.calls if c[0] == "write_lock"]
    assert len(writes) == 2  # each claimed once for the run; nothing given back when it settles
    left = {lease: holder for lease, (holder, _) in api.locks.items()}
    assert len(left) == 2  # one Lease per workload stays, naming the settled run
    for holder in left.values():
        assert targets.lock_holder(holder)[:2] == (INCIDENT, UID)
        # its claim is seconds old, yet free: the status shows the run done with its steps
        assert not targets.holds_lock(api.incident, holder, clock())
    # a second incident takes it at once: the Lease is replaced, resourceVersion-checked
    second = running.Claimant("second", "uid-2", "r1")
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, second, clock())) is None
    assert targets.lock_holder(api.lock("web") or "").incident == "second"
    assert len([c for c in api.calls if c[0] == "write_lock"]) == 3


SETTLED_R1 = steps_of(("restart", "restart", "Succeeded"), ("wait", "waitReady", "Succeeded"))


@pytest.mark.parametrize(
    "body",
    [
        None,  # the holder incident was deleted
        holder_body(uid="uid-new", playbook=BETWEEN_STEPS),  # re-created under the same name
        holder_body(playbook=SETTLED_R1),  # the claim's run settled: every mutating step done
        holder_body(playbook=steps_of(("restart", "restart", "Failed"), ("again", "restart", "Skipped"))),
    ],
)
def test_a_fresh_claim_is_free_once_its_holder_is_gone_replaced_or_its_run_settled(
    body: dict[str, Any] | None,
) -> None:
    value = targets.lock_value("other", "uid-other", T0, "r1")
    assert not targets.holds_lock(body, value, T0 + timedelta(seconds=1))


@pytest.mark.parametrize(
    "body",
    [
        holder_body(playbook={**SETTLED_R1, "runId": "r2"}),  # not the claim's run (a re-fire's)
        holder_body(playbook=steps_of(("restart", "restart", "Succeeded"), ("again", "restart", "Pending"))),
        holder_body(playbook={"runId": "r1", "steps": []}),
        holder_body(  # a scale still to revert: the revert acts on the workload still
            playbook={
                "runId": "r1",
                "snapshot": {"revertOnResolve": True},
                "steps": [{"name": "s", "action": "scale", "state": "Succeeded", "replicasBefore": 2}],
            },
            conditions=[{"type": "Resolved", "status": "True"}],
        ),
    ],
)
def test_a_fresh_claim_holds_while_its_run_may_still_act(body: dict[str, Any]) -> None:
    value = targets.lock_value("other", "uid-other", T0, "r1")
    assert targets.holds_lock(body, value, T0 + timedelta(seconds=1))
    unnamed = f"other/uid-other/{format_time(T0)}"  # a holder of no named run: not judged done
    assert targets.holds_lock(holder_body(playbook=SETTLED_R1), unnamed, T0 + timedelta(seconds=1))


def test_a_claim_lost_to_a_concurrent_writer_is_decided_again() -> None:
    api = FakeKube({}, {}, {"web": 2})
    api.incidents["other"] = holder_body(**RUNNING)
    real = api.write_lock

    async def racing(namespace: str, lease: str, holder: str | None, version: str | None) -> None:
        if api.lock("web") is None:  # the other one creates the Lease first
            api.set_lock("web", targets.lock_value("other", "uid-other", T0))
        await real(namespace, lease, holder, version)

    api.write_lock = racing  # type: ignore[method-assign,assignment]
    busy = asyncio.run(running.claim(api, NAMESPACE, WEB, running.Claimant(INCIDENT, UID, "r1"), T0))
    assert busy is not None
    assert busy.holder == "other"


def test_a_diagnostic_step_takes_no_lock() -> None:
    api = FakeKube({}, {}, {"web": 2})
    api.set_lock("web", targets.lock_value("other", "uid-other", T0))
    api.incidents["other"] = holder_body(**RUNNING)
    playbook = PlaybookSpec.model_validate(
        {"steps": [{"name": "w", "waitReady": {"target": {"fromIncident": {}}}}], "allowedTargets": {}}
    )
    status = StepStatus(
        name="w",
        action="waitReady",
        state=StepState.RUNNING,
        attempts=1,
        startedAt=T0,
        targets=[TargetStatus(kind="Deployment", name="web")],
    )
    ctx = context(api, status, playbook, incident(targets=[WEB.model_dump()]))
    assert asyncio.run(running.run_step(dataclasses.replace(ctx))).ok
    assert api.called("write_lock") == []


def test_the_engine_reads_the_labels_a_selector_bound_needs_and_only_then() -> None:
    api = FakeKube({}, {}, {"web": 2})
    api.workloads["web"]["labels"] = {"team": "shop"}
    spec = incident(targets=[WEB.model_dump(), API.model_dump()])
    by_labels = generic(selector={"matchLabels": {"team": "shop"}}).spec
    labels = asyncio.run(running.workload_labels(api, NAMESPACE, spec, IncidentStatus(), by_labels))
    assert labels == {"Deployment/web": {"team": "shop"}, "Deployment/api": None}  # api: not found
    by_name = generic(names=["web"]).spec
    assert asyncio.run(running.workload_labels(api, NAMESPACE, spec, IncidentStatus(), by_name)) == {}
    resolution = targets.resolve(FROM_ANY, [WEB, API], by_labels.allowedTargets, labels)
    assert resolution.blocked is Reason.OUT_OF_BOUNDS
    assert "Deployment/api is outside allowedTargets.selector team=shop" in resolution.message


# ----------------------------------------------------------------------------- the loop, killed


def generic_api() -> FakeKube:
    spec: dict[str, Any] = {"title": "down", "severity": "P2", "category": "availability"}
    spec["targets"] = [{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "api"}]
    steps = [
        {"name": "scale", "scale": {"target": {"fromIncident": {}}, "delta": 1}},
        {"name": "wait", "waitReady": {"target": {"fromIncident": {}}}},
    ]
    return FakeKube(
        spec,
        {"steps": steps, "stabilizationSeconds": 0, "allowedTargets": {"names": ["*"]}},
        {"web": 2, "api": 3},
    )


def settle(api: FakeKube, clock: Clock) -> None:
    asyncio.run(run_until_settled(api, clock))


def test_killed_at_any_write_each_target_of_a_generic_step_changes_once() -> None:
    clean = generic_api()
    settle(clean, Clock())
    writes = clean.status_writes
    assert writes >= 3
    for n in range(1, writes + 1):
        for when in ("before", "after"):
            api, clock = generic_api(), Clock()
            api.drop_at = (n, when)
            with pytest.raises(Dropped):
                settle(api, clock)
            api.drop_at = None
            clock.now += timedelta(seconds=10)
            settle(api, clock)
            assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web"), ("scale", "api")], (
                n,
                when,
            )
            assert (api.workloads["web"]["replicas"], api.workloads["api"]["replicas"]) == (3, 4)
            for step in api.status()["playbook"]["steps"]:
                assert [(t["name"], t["state"]) for t in step["targets"]] == [
                    ("web", "Succeeded"),
                    ("api", "Succeeded"),
                ], (n, when, step["name"])
            for holder, _ in api.locks.values():  # left in place, free: the run settled
                assert not targets.holds_lock(api.incident, holder, clock()), (n, when)


# ----------------------------------------------------------------------------- deletePods on the targets


class PodsKube(FakeKube):
    """FakeKube with each workload's pods (`<name>-<n>`, Ready); a deleted pod is replaced by a
    new one (`<name>-<n>r`), as its ReplicaSet would."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pod_names = {w: [f"{w}-1", f"{w}-2"] for w in self.workloads}

    async def read_workload(self, kind: str, name: str, namespace: str) -> Any:
        found = await super().read_workload(kind, name, namespace)
        found.spec.selector = SimpleNamespace(match_labels={"app": name})
        return found

    async def pods(self, namespace: str, selector: dict[str, str]) -> list[Any]:
        ready = SimpleNamespace(conditions=[SimpleNamespace(type="Ready", status="True")])
        return [
            SimpleNamespace(metadata=SimpleNamespace(name=p, deletion_timestamp=None), status=ready)
            for p in self.pod_names[selector["app"]]
        ]

    async def delete_pod(self, namespace: str, name: str) -> None:
        workload = name.rsplit("-", 1)[0]
        if name not in self.pod_names[workload]:
            raise ApiException(status=404, reason="Not Found")
        self.pod_names[workload] = [p for p in self.pod_names[workload] if p != name] + [f"{name}r"]
        self.effects.append(Effect("deletePod", workload, name, copy.deepcopy(self.incident["status"])))


def pods_api() -> PodsKube:
    spec: dict[str, Any] = {"title": "down", "severity": "P2", "category": "availability"}
    spec["targets"] = [{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "api"}]
    steps = [{"name": "kill", "deletePods": {"target": {"fromIncident": {}}, "max": 2}}]
    playbook = {
        "steps": steps,
        "stabilizationSeconds": 0,
        "allowedTargets": {"names": ["*"]},
        "guardrails": {"maxPodDeletions": 1},
    }
    return PodsKube(spec, playbook, {"web": 2, "api": 2})


def test_delete_pods_on_two_targets_keeps_the_guardrail_and_records_the_pods() -> None:
    api = pods_api()
    settle(api, Clock())
    assert [(e.kind, e.value) for e in api.effects] == [("deletePod", "web-1")]
    step = api.status()["playbook"]["steps"][0]
    assert [(t["name"], t.get("pods")) for t in step["targets"]] == [("web", ["web-1"]), ("api", [])]
    status = IncidentStatus.model_validate(api.status())
    assert status.playbook is not None
    assert status.playbook.steps[0].pods_deleted() == 1  # what podsDeleted carries over a re-run


def test_delete_pods_shares_the_steps_max_across_its_targets() -> None:
    api = pods_api()
    api.playbook["spec"]["guardrails"] = {}
    settle(api, Clock())
    assert [e.value for e in api.effects] == ["web-1", "web-2"]  # max 2 for the step, not per target


def test_killed_at_any_write_delete_pods_on_the_targets_deletes_once() -> None:
    clean = pods_api()
    settle(clean, Clock())
    for n in range(1, clean.status_writes + 1):
        for when in ("before", "after"):
            api, clock = pods_api(), Clock()
            api.drop_at = (n, when)
            with pytest.raises(Dropped):
                settle(api, clock)
            api.drop_at = None
            clock.now += timedelta(seconds=10)
            settle(api, clock)
            assert [e.value for e in api.effects] == ["web-1"], (n, when)  # never its replacement


# ----------------------------------------------------------------------------- too many targets


def many(n: int) -> list[dict[str, str]]:
    return [{"kind": "Deployment", "name": f"w{i}"} for i in range(n)]


def test_an_incident_names_at_most_as_many_targets_as_a_steps_status_holds() -> None:
    assert len(incident(targets=many(MAX_TARGETS)).targets or []) == MAX_TARGETS
    with pytest.raises(ValidationError):
        incident(targets=many(MAX_TARGETS + 1))
    crd = yaml.safe_load((ROOT / "crds" / "incident-operator.dev_incidents.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert schema["spec"]["properties"]["targets"]["maxItems"] == MAX_TARGETS  # the API server refuses more
    steps = schema["status"]["properties"]["playbook"]["properties"]["steps"]["items"]["properties"]
    assert steps["targets"]["maxItems"] == MAX_TARGETS
    assert "pods" in steps["targets"]["items"]["properties"]  # deletePods' choice per target is kept


def test_more_targets_than_a_step_holds_stalls_the_step_instead_of_a_refused_status_write() -> None:
    spec = incident(targets=many(MAX_TARGETS))
    assert spec.targets is not None
    spec.targets.append(WorkloadRef(kind="Deployment", name="one-more"))  # e.g. made before the cap
    run = Run(spec, generic(names=["*"]))
    assert run.plan().intent is None  # nothing runs
    assert run.step(0).state is StepState.BLOCKED
    assert run.step(0).targets is None  # nothing the API server would refuse is written
    stalled = run.condition(ConditionType.STALLED)
    assert stalled["status"] == "True"
    assert stalled["reason"] == Reason.OUT_OF_BOUNDS
    assert f"names {MAX_TARGETS + 1} Deployment targets, more than the {MAX_TARGETS}" in stalled["message"]
    IncidentStatus.model_validate(run.status.model_dump())  # the status as written is valid


def test_alert_intake_keeps_at_most_the_cap_of_targets() -> None:
    spec = {"title": "down", "targets": many(2)}
    kept, left_out = alerts.with_targets(spec, many(MAX_TARGETS + 10))
    assert kept["targets"] == many(MAX_TARGETS)  # each once, in order, the alert's own first
    assert left_out == 10
    assert alerts.with_targets(spec, many(3)) == ({**spec, "targets": many(3)}, 0)


RESOLVED = [{"type": "Resolved", "status": "True"}]


@pytest.mark.parametrize(
    "body",
    [
        holder_body(conditions=RESOLVED, playbook={**BETWEEN_STEPS, "runId": "r1"}),
        {**holder_body(playbook={**BETWEEN_STEPS, "runId": "r1"}), "spec": {"closed": True}},
        {**holder_body(playbook=BETWEEN_STEPS), "spec": {"resolution": {"summary": "x"}}},
    ],
)
def test_a_fresh_claim_holds_although_a_person_resolved_or_closed_the_holder(body: dict[str, Any]) -> None:
    # the holder's action may still be running (a restart, a scale, the scale revert after Resolved)
    for run in ("r1", targets.revert_run("r1")):
        value = targets.lock_value("other", "uid-other", T0, run)
        assert targets.holds_lock(body, value, T0 + timedelta(seconds=5))
        assert not targets.holds_lock(body, value, T0 + targets.LOCK_GRACE)
    gone = targets.lock_value("other", "uid-other", T0, "r1")
    assert not targets.holds_lock(None, gone, T0 + timedelta(seconds=5))  # deleted: nothing runs


@pytest.mark.parametrize(
    "body",
    [
        {**holder_body(playbook={**BETWEEN_STEPS, "runId": "r1"}), "spec": {"closed": True}},
        holder_body(conditions=RESOLVED, playbook={**BETWEEN_STEPS, "runId": "r1"}),
        holder_body(playbook={**BETWEEN_STEPS, "runId": "r2"}),  # it runs another run now
    ],
)
def test_a_claim_dated_in_the_future_is_not_fresh(body: dict[str, Any]) -> None:
    # a forged (or badly clocked) claim a year ahead holds no longer than its holder's run does
    value = targets.lock_value("other", "uid-other", T0 + timedelta(days=365), "r1")
    assert not targets.holds_lock(body, value, T0)
    within_skew = targets.lock_value("other", "uid-other", T0 + targets.CLOCK_SKEW, "r1")
    assert targets.holds_lock(body, within_skew, T0)  # replicas' clocks differ a little


def test_a_runs_own_claim_dated_in_the_future_is_written_again() -> None:
    api = FakeKube({}, {}, {"web": 2})
    api.set_lock("web", targets.lock_value(INCIDENT, UID, T0 + timedelta(days=365), "r1"))
    me = running.Claimant(INCIDENT, UID, "r1", T0)
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, me, T0)) is None
    assert targets.lock_holder(api.lock("web") or "").claimed == T0  # renewed with the real time


def scaled_then_resolved(reverted: bool | None, revert_on_resolve: bool = True) -> dict[str, Any]:
    """An incident whose run r1 scaled web (10 minutes ago) and that a person has just resolved."""
    scaled = {
        "name": "up",
        "action": "scale",
        "state": "Succeeded",
        "replicasBefore": 2,
        "reverted": reverted,
    }
    playbook = {
        "name": "pb",
        "runId": "r1",
        "snapshot": {"revertOnResolve": revert_on_resolve},
        "steps": [scaled],
    }
    return {
        "metadata": {"name": "first", "uid": "uid-first"},
        "spec": {"resolution": {"summary": "fixed by hand"}},
        "status": {"playbook": playbook},
    }


def test_between_the_resolution_and_the_scale_revert_no_other_incident_takes_the_workload() -> None:
    api = FakeKube({}, {}, {"web": 3})
    api.incidents["first"] = scaled_then_resolved(reverted=None)
    api.set_lock("web", targets.lock_value("first", "uid-first", T0 - timedelta(minutes=10), "r1"))
    second = running.Claimant("second", "uid-2", "r1", T0)
    busy = asyncio.run(running.claim(api, NAMESPACE, WEB, second, T0))
    assert busy is not None  # the revert is still to come: the resolved run holds web
    assert busy.holder == "first"
    assert targets.lock_holder(api.lock("web") or "").incident == "first"
    assert not targets.run_settled(
        incident(resolution={"summary": "fixed by hand"}),
        IncidentStatus.model_validate(api.incidents["first"]["status"]),
    )  # so the loop does not give it back before the revert either
    api.incidents["first"] = scaled_then_resolved(reverted=True)  # reverted (or said failed): free
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, second, T0)) is None
    api.set_lock("web", targets.lock_value("first", "uid-first", T0 - timedelta(minutes=10), "r1"))
    before = scaled_then_resolved(reverted=None)
    before["spec"] = {}  # not resolved yet, its other steps done: the run keeps web for the revert
    assert targets.holds_lock(before, api.lock("web") or "", T0)
    assert not targets.run_settled(incident(), IncidentStatus.model_validate(before["status"]))
    no_revert = scaled_then_resolved(reverted=None, revert_on_resolve=False)
    assert not targets.holds_lock(no_revert, api.lock("web") or "", T0)  # nothing to undo: free


def test_while_a_resolved_incident_reverts_its_scale_another_incident_waits_target_busy() -> None:
    api = FakeKube({}, {}, {"web": 3})
    step = PlaybookSpec.model_validate(
        {"steps": [{"name": "up", "scale": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 3}}]}
    ).steps[0]
    done = StepStatus(name="up", action="scale", state=StepState.SUCCEEDED, replicasBefore=2)
    api.incident["status"] = {"conditions": RESOLVED, "playbook": {**BETWEEN_STEPS, "runId": "r1"}}
    # the run holds web since long before (its scale 10 minutes ago); the loop has not given it back
    api.set_lock("web", targets.lock_value(INCIDENT, UID, T0 - timedelta(minutes=10), "r1"))
    api.incidents["second"] = {"metadata": {"name": "second", "uid": "uid-2"}, "spec": {}, "status": {}}
    second = running.Claimant("second", "uid-2", "r1", T0)
    seen: list[running.Busy | None] = []
    real = api.scale_workload

    async def scaling(
        kind: str, name: str, namespace: str, replicas: int, resource_version: str | None = None
    ) -> None:
        # the second incident tries while the revert's patch is on its way
        seen.append(await running.claim(api, NAMESPACE, WEB, second, T0 + timedelta(seconds=1)))
        await real(kind, name, namespace, replicas, resource_version)

    api.scale_workload = scaling  # type: ignore[method-assign]
    execution = revert_execution(api)
    status = IncidentStatus.model_validate({"playbook": {"name": "pb", "runId": "r1"}})
    outcome = asyncio.run(execution._revert_scale(step, done, status))
    assert outcome.ok, outcome
    assert len(seen) == 1
    assert seen[0] is not None
    assert seen[0].holder == INCIDENT  # it waits TargetBusy: the revert holds web
    assert api.workloads["web"]["replicas"] == 2
    assert api.lock("web") is None  # the revert done: free
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, second, T0 + timedelta(seconds=2))) is None


def test_a_runs_old_claim_is_renewed_when_it_acts_again() -> None:
    api = FakeKube({}, {}, {"web": 2})
    mine = running.Claimant(INCIDENT, UID, "r1")
    api.set_lock("web", targets.lock_value(INCIDENT, UID, T0 - targets.LOCK_RENEW, "r1"))
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, mine, T0)) is None
    assert targets.lock_holder(api.lock("web") or "").claimed == T0
    writes = len([c for c in api.calls if c[0] == "write_lock"])
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, mine, T0 + timedelta(seconds=1))) is None
    assert len([c for c in api.calls if c[0] == "write_lock"]) == writes  # young: not written again


def lock_calls(api: FakeKube) -> list[str]:
    return [c[0] for c in api.calls if c[0] in ("read_lock", "write_lock")]


def test_a_workloads_first_lock_is_one_create_and_a_lease_seen_since_is_read_first() -> None:
    api = FakeKube({}, {}, {"web": 2})
    mine = running.Claimant(INCIDENT, UID, "r1")
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, mine, T0)) is None
    assert lock_calls(api) == ["write_lock"]  # no read of a Lease this client never saw
    assert targets.lock_holder(api.lock("web") or "").run == "r1"
    later = running.Claimant(INCIDENT, UID, "r2")
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, later, T0 + timedelta(hours=1))) is None
    assert lock_calls(api) == ["write_lock", "read_lock", "write_lock"]  # seen: read, then replaced
    assert targets.lock_holder(api.lock("web") or "").run == "r2"


def test_a_lease_never_seen_but_held_by_another_run_is_read_after_its_create_is_refused() -> None:
    api = FakeKube({}, {}, {"web": 2})
    api.incidents["other"] = {
        "metadata": {"name": "other", "uid": "uid-other", "creationTimestamp": format_time(T0)},
        "spec": {},
        "status": {
            "playbook": {"runId": "r1", "steps": [{"name": "up", "action": "scale", "state": "Running"}]}
        },
    }
    api.set_lock("web", targets.lock_value("other", "uid-other", T0, "r1"))
    busy = asyncio.run(running.claim(api, NAMESPACE, WEB, running.Claimant(INCIDENT, UID, "r1"), T0))
    assert busy is not None
    assert busy.holder == "other"
    assert lock_calls(api) == ["write_lock", "read_lock"]
    assert (api.lock("web") or "").startswith("other/uid-other/")  # untouched


def test_a_lease_given_back_is_created_again_without_a_read() -> None:
    api = FakeKube({}, {}, {"web": 2})
    mine = running.Claimant(INCIDENT, UID, "r1")
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, mine, T0)) is None
    asyncio.run(running.release(api, NAMESPACE, WEB, mine))
    assert api.lock("web") is None
    before = len(lock_calls(api))
    assert asyncio.run(running.claim(api, NAMESPACE, WEB, mine, T0)) is None
    assert lock_calls(api)[before:] == ["write_lock"]


def test_a_run_resolved_by_a_person_keeps_its_locks_until_its_scale_revert_is_done() -> None:
    api = generic_api()
    api.playbook["spec"]["revertOnResolve"] = True
    api.playbook["spec"]["steps"] = [
        {"name": "scale", "scale": {"target": {"fromIncident": {}}, "delta": 1}},
        {"name": "again", "requiresApproval": True, "restart": {"target": {"fromIncident": {}}}},
    ]
    written: list[tuple[str, str | None]] = []
    real = api.write_lock

    async def writing(namespace: str, lease: str, holder: str | None, version: str | None) -> None:
        await real(namespace, lease, holder, version)
        written.append((lease.rsplit("-", 1)[-1], holder and targets.lock_holder(holder).run))

    api.write_lock = writing  # type: ignore[method-assign,assignment]
    clock = Clock()
    loop = new_loop(api, clock)

    def awaits_approval() -> bool:
        steps = (api.status().get("playbook") or {}).get("steps") or []
        return len(steps) == 2 and steps[1].get("state") == "AwaitingApproval"

    asyncio.run(iterate_until(loop, api, clock, awaits_approval))
    assert api.lock("web") is not None  # the run holds it between its steps
    edit_incident(api, resolution={"summary": "fixed by hand"})  # a person resolves it
    asyncio.run(iterate_until(loop, api, clock, lambda: bool(api.status().get("settled"))))
    assert (api.workloads["web"]["replicas"], api.workloads["api"]["replicas"]) == (2, 3)  # put back
    web = [run for lease, run in written if lease == "web"]
    # the run's claim passes to the revert's with no moment free between: never given back before
    assert web == ["r1", targets.revert_run("r1"), None]
    assert api.locks == {}


def busy_on(workload: str, holder: str) -> list[dict[str, Any]]:
    """A Stalled/TargetBusy condition as the planner writes it for a step waiting on `workload`."""
    message = f"step restart cannot run: {workload} is busy: incident {holder} holds it until its run settles"
    return [{"type": "Stalled", "status": "True", "reason": "TargetBusy", "message": message}]


def waiting_older(name: str, age_min: int, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "creationTimestamp": format_time(T0 - timedelta(minutes=age_min)),
        },
        "spec": {},
        "status": {"playbook": {**BETWEEN_STEPS, "runId": "r1"}, "conditions": conditions or []},
    }


def holding_web(api: FakeKube) -> Any:
    """This incident's run r1 holds web (an earlier step) and its step wants web and api."""
    api.set_lock("web", targets.lock_value(INCIDENT, UID, T0, "r1"))
    ctx, _ = two_targets(api)
    return dataclasses.replace(
        ctx,
        status=IncidentStatus.model_validate({"playbook": {"name": "pb", "runId": "r1"}}),
        incident_created=T0,
    )


@pytest.mark.parametrize(
    "conditions",
    [
        None,  # between its steps: it goes on by itself
        busy_on("Deployment/db", "third"),  # it waits for a workload a third holds, not for web
    ],
)
def test_a_run_that_finds_an_older_run_not_waiting_for_it_keeps_its_locks(
    conditions: list[dict[str, Any]] | None,
) -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2, "db": 1})
    api.incidents["older"] = waiting_older("older", 5, conditions)
    api.set_lock("api", targets.lock_value("older", "uid-older", T0, "r1"))
    api.incidents["third"] = waiting_older("third", 10)  # holds db, waits for nothing
    api.set_lock("db", targets.lock_value("third", "uid-third", T0, "r1"))
    ctx = holding_web(api)
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.blocked is Reason.TARGET_BUSY
    assert "incident older" in outcome.message
    assert targets.lock_holder(api.lock("web") or "").incident == INCIDENT  # kept: no one acts between
    assert restarted(api) == []


@pytest.mark.parametrize(
    "case",
    [
        "stale condition",  # older has since taken db, which its TargetBusy condition still names
        "circle of others",  # older and third wait for each other; this run is not part of it
    ],
)
def test_a_run_keeps_its_locks_when_the_older_runs_wait_chain_loops_without_it(case: str) -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2, "db": 1})
    api.set_lock("api", targets.lock_value("older", "uid-older", T0, "r1"))
    if case == "stale condition":
        api.incidents["older"] = waiting_older("older", 5, busy_on("Deployment/db", "third"))
        api.set_lock("db", targets.lock_value("older", "uid-older", T0, "r1"))
    else:
        api.incidents["older"] = waiting_older("older", 5, busy_on("Deployment/db", "third"))
        api.incidents["third"] = waiting_older("third", 10, busy_on("Deployment/api", "older"))
        api.set_lock("db", targets.lock_value("third", "uid-third", T0, "r1"))
    ctx = holding_web(api)
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.blocked is Reason.TARGET_BUSY
    assert "incident older" in outcome.message
    assert targets.lock_holder(api.lock("web") or "").incident == INCIDENT  # no deadlock of ours: kept
    hops = [c for c in api.calls if c[0] == "read_lock" and c[1].endswith("-db")]
    assert len(hops) == 1  # the chain stops where it comes back, not after WAIT_CHAIN hops
    assert restarted(api) == []


@pytest.mark.parametrize(
    "chain",
    [
        "direct",  # older waits for web
        "through a third",  # older waits for db, whose holder waits for web
    ],
)
def test_a_run_gives_way_when_an_older_run_waits_for_what_it_holds(chain: str) -> None:
    api = FakeKube({}, {}, {"web": 2, "api": 2, "db": 1})
    if chain == "direct":
        api.incidents["older"] = waiting_older("older", 5, busy_on("Deployment/web", INCIDENT))
    else:
        api.incidents["older"] = waiting_older("older", 5, busy_on("Deployment/db", "third"))
        api.incidents["third"] = waiting_older("third", 1, busy_on("Deployment/web", INCIDENT))
        api.set_lock("db", targets.lock_value("third", "uid-third", T0, "r1"))
    api.set_lock("api", targets.lock_value("older", "uid-older", T0, "r1"))
    ctx = holding_web(api)
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.blocked is Reason.TARGET_BUSY
    assert api.lock("web") is None  # given back: the older run goes on, no circle of waits
    assert restarted(api) == []


def test_what_a_run_waits_for_is_read_from_its_target_busy_condition() -> None:
    assert (
        targets.waits_for(waiting_older("o", 1, busy_on("StatefulSet/db-0.x", "b"))) == "StatefulSet/db-0.x"
    )
    assert targets.waits_for(waiting_older("o", 1)) is None
    other = [
        {"type": "Stalled", "status": "True", "reason": "OutOfBounds", "message": "a/b is busy: incident x"}
    ]
    assert targets.waits_for(waiting_older("o", 1, other)) is None


def test_a_run_ended_on_a_playbook_edit_passes_its_locks_to_the_run_that_continues_it() -> None:
    scale_web: dict[str, Any] = {
        "name": "up",
        "scale": {"target": {"kind": "Deployment", "name": "web"}, "delta": 1},
    }
    theirs: dict[str, Any] = {"name": "theirs", "scale": {"target": {"fromIncident": {}}, "delta": 1}}
    api, clock = fake_api(steps=[scale_web, theirs], allowedTargets={"names": ["api"]}), Clock()
    loop = new_loop(api, clock)

    def stalled(reason: str) -> bool:
        conditions = {c["type"]: c for c in api.status().get("conditions") or []}
        stall = conditions.get("Stalled", {})
        return bool(stall.get("status") == "True" and stall.get("reason") == reason)

    async def scenario() -> None:
        await iterate_until(loop, api, clock, lambda: stalled("NoTarget"))  # web scaled, r1 holds it
        assert targets.lock_holder(api.lock("web") or "").run == "r1"
        edit_playbook(api, [scale_web, {**theirs, "scale": {**theirs["scale"], "delta": 2}}])
        await iterate_until(loop, api, clock, lambda: api.status()["playbook"]["runId"] == "r2")

    asyncio.run(scenario())
    assert api.workloads["web"]["replicas"] == 3  # scaled once, by r1; r2 keeps that step done
    held = api.lock("web") or ""
    assert targets.lock_holder(held).run == "r2"  # carried to the run that goes on
    later = clock.now + targets.LOCK_GRACE + timedelta(minutes=1)
    assert targets.holds_lock(api.incident, held, later)  # so no third incident acts on web
