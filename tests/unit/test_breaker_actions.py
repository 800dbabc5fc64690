"""The circuit breaker counts mutating actions on workloads, not steps: a step on the incident's
own targets takes one slot per target not done yet, all at once or none; a step that no window can
hold is Stalled (ActionsAboveLimit) instead of waiting for ever; a scale revert after the run is
counted and never refused. Core (`core.breaker`), the request built between a plan and its write
(`controllers.incident.mutating`), the planner's hold, and the loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from incident_operator.adapters.kube import ApiException
from incident_operator.api.models import IncidentSpec, IncidentStatus, PlaybookSpec, StepState
from incident_operator.api.reasons import Reason
from incident_operator.api.timestamps import format_time
from incident_operator.controllers.incident.mutating import MutatingSlots, mutating_start
from incident_operator.core import breaker
from incident_operator.core import targets as lock_rules
from incident_operator.core.breaker import Action, Request, State
from incident_operator.core.conditions import find_condition
from incident_operator.core.matching import Candidate, select
from incident_operator.core.planner import AutomationHold, Decision, Intent, PlanInput, plan
from incident_operator.core.planner.model import AlertState
from incident_operator.settings.config import FileConfig, OperatorConfig
from tests.unit.fake_kube import INCIDENT, NAMESPACE, FakeKube
from tests.unit.test_breaker import SCALE, T0, MemoryStore, breaker_with, condition, limits, plan_input, take
from tests.unit.test_incident_loop import Clock as LoopClock
from tests.unit.test_incident_loop import drive, new_loop, run_until_settled, step_states

WORKLOADS = ("Deployment/web", "Deployment/api", "Deployment/worker")


def on(uid: str, *targets: str, step: str = "restart", attempt: int = 1, ns: str = "shop") -> Request:
    return Request(ns, uid, "r1", step, attempt, "pb", targets=targets)


# ----------------------------------------------------------------------------- core: one slot per workload


def test_a_step_on_n_targets_takes_n_slots_all_at_once_or_none() -> None:
    config, state = limits(per_namespace=4, window=60), State()
    state, three = take(state, on("a", *WORKLOADS), config, T0)
    assert (three.granted, three.counted, len(state.actions)) == (True, 3, 3)
    # Two more would pass the limit (3 + 2 > 4): the step acts on none, nothing is counted.
    before = state.actions
    state, two = take(state, on("b", "Deployment/web", "Deployment/api"), config, T0 + timedelta(seconds=1))
    assert not two.granted
    assert two.reason is Reason.CIRCUIT_OPEN
    assert "step restart acts on 2 workloads: it takes 2 slots at once or waits" in two.message
    assert "the window frees 2 slots" in two.message
    assert state.actions == before
    # One slot is left: a step on one workload takes it.
    state, one = take(state, on("c", "Deployment/db"), config, T0 + timedelta(seconds=2))
    assert (one.granted, one.counted, len(state.actions)) == (True, 1, 4)


def test_a_step_waiting_for_several_slots_asks_again_when_enough_have_freed() -> None:
    config, state = limits(per_namespace=3, window=60), State()
    for n in range(3):  # three single actions at T0, T0+10 s, T0+20 s
        state, _ = take(state, on(f"u{n}", "Deployment/x"), config, T0 + timedelta(seconds=10 * n))
    state, refused = take(
        state, on("big", "Deployment/web", "Deployment/api"), config, T0 + timedelta(seconds=55)
    )
    assert refused.retry_at == T0 + timedelta(seconds=65)  # RECHECK: sooner than the frees time
    assert "wait until 2026-12-01T09:01:10Z" in refused.message  # the second oldest leaves then
    state, early = take(
        state, on("big", "Deployment/web", "Deployment/api"), config, T0 + timedelta(seconds=65)
    )
    assert not early.granted  # one slot free, two needed: none is taken
    state, going = take(
        state, on("big", "Deployment/web", "Deployment/api"), config, T0 + timedelta(seconds=71)
    )
    assert (going.granted, going.counted) == (True, 2)


def test_each_workload_of_a_step_attempt_is_counted_once_when_asked_again_even_stored_and_read_back() -> None:
    config, state = limits(per_namespace=10), State()
    state, first = take(state, on("a", *WORKLOADS), config, T0)
    stored = breaker.from_json(breaker.to_json(state))  # keys kept as digests
    again, verdict = take(stored, on("a", *WORKLOADS), config, T0 + timedelta(seconds=1))
    assert (first.counted, verdict.granted, verdict.counted, verdict.write) == (3, True, 0, False)
    assert len(again.actions) == 3
    # A workload not asked for before (the target set changed) is the only one counted.
    more, extra = take(again, on("a", *WORKLOADS, "Deployment/db"), config, T0 + timedelta(seconds=2))
    assert (extra.counted, len(more.actions)) == (1, 4)
    # A retry is another attempt: its workloads are counted again.
    _, retry = take(more, on("a", "Deployment/web", attempt=2), config, T0 + timedelta(seconds=3))
    assert retry.counted == 1


def test_a_state_stored_before_per_workload_counting_covers_the_step_attempt_it_counted() -> None:
    """Stored by the previous version: one action per step, its key the step attempt's digest,
    its time RFC 3339 as first stored. The same attempt asking again after the upgrade is granted
    without counting its workloads a second time."""
    old = json.dumps(
        {
            "actions": [["2026-12-01T09:00:00Z", "shop", breaker.digest("a/r1/restart/1")]],
            "runs": [],
            "trips": {},
        }
    )
    state = breaker.from_json(old)
    assert state.actions == (Action(T0, "shop", breaker.digest("a/r1/restart/1")),)
    state, verdict = take(state, on("a", *WORKLOADS), limits(per_namespace=2), T0 + timedelta(seconds=1))
    assert (verdict.granted, verdict.counted, len(state.actions)) == (True, 0, 1)


def test_a_step_on_more_workloads_than_a_limit_allows_is_refused_at_once_and_a_resume_does_not_lift_it() -> (
    None
):
    config = limits(per_namespace=2, cluster=100)
    state, verdict = take(State(), on("a", *WORKLOADS), config, T0)
    assert not verdict.granted
    assert verdict.reason is Reason.ACTIONS_ABOVE_LIMIT
    assert verdict.scope == "namespace/shop"
    assert (verdict.write, verdict.tripped) == (False, False)  # no trip: no window will ever fit it
    assert "acts on 3 workloads, more than automation.maxMutatingActions.perNamespace (2)" in verdict.message
    assert "raise automation.maxMutatingActions.perNamespace to at least 3" in verdict.message
    assert state.actions == ()
    resumed = breaker.resume(state, T0 + timedelta(seconds=1), "alice")
    _, still = take(resumed, on("a", *WORKLOADS), config, T0 + timedelta(seconds=2))
    assert still.reason is Reason.ACTIONS_ABOVE_LIMIT
    _, raised = take(State(), on("a", *WORKLOADS), limits(per_namespace=3), T0)
    assert raised.granted  # exactly the limit fits an empty window


def test_a_scale_revert_is_counted_never_refused_and_takes_no_run_slot() -> None:
    config, state = limits(per_namespace=1, runs=1), State()
    state, _ = take(state, on("other", "Deployment/x"), config, T0)  # the window is full, and pb's runs
    revert = dataclasses.replace(
        on("a", "Deployment/web", "Deployment/api", step="scale/revert"), restores=True
    )
    state, verdict = take(state, revert, config, T0 + timedelta(seconds=1))
    assert (verdict.granted, verdict.counted, verdict.write) == (True, 2, True)
    assert len(state.actions) == 3  # above the limit: counted all the same
    assert [r.uid for r in state.runs] == ["other"]
    state, again = take(state, revert, config, T0 + timedelta(seconds=2))
    assert (again.granted, again.counted, len(state.actions)) == (True, 0, 3)
    _, next_step = take(state, on("other", "Deployment/db", step="next"), config, T0 + timedelta(seconds=3))
    assert next_step.reason is Reason.CIRCUIT_OPEN  # others wait for the reverts too


def test_a_step_above_a_limit_is_not_counted_as_a_pause_and_writes_nothing() -> None:
    store, clock = MemoryStore(), LoopClock()
    b = breaker_with(store, limits(per_namespace=2), clock)
    verdict = asyncio.run(b.reserve(on("a", *WORKLOADS)))
    assert verdict.reason is Reason.ACTIONS_ABOVE_LIMIT
    assert b.paused() == {"cluster": 0, "namespace": 0, "playbook": 0}
    assert store.writes == 0
    held = asyncio.run(b.reserve(on("b", *WORKLOADS[:2])))
    assert held.granted
    refused = asyncio.run(b.reserve(on("c", "Deployment/db")))
    assert refused.reason is Reason.CIRCUIT_OPEN
    assert b.paused() == {"cluster": 0, "namespace": 1, "playbook": 0}


# ----------------------------------------------------------------------------- the request a plan makes

RESTART_THEIRS = {"name": "restart", "restart": {"target": {"fromIncident": {}}}}
SCALE_THEIRS = {"name": "scale", "scale": {"target": {"fromIncident": {}}, "delta": 1}}


def targeted(status: IncidentStatus, steps: list[dict[str, Any]], now: datetime = T0) -> Decision:
    """A plan for an incident naming web, api and worker, by a Playbook bounded to Deployments."""
    named = [{"kind": "Deployment", "name": n} for n in ("web", "api", "worker")]
    spec = IncidentSpec.model_validate(
        {"title": "down", "severity": "P2", "category": "availability", "targets": named}
    )
    body = {"steps": steps, "stabilizationSeconds": 0, "allowedTargets": {"kinds": ["Deployment"]}}
    candidate = Candidate("pb", PlaybookSpec.model_validate(body))
    inp = PlanInput(
        spec=spec,
        status=status,
        generation=1,
        selection=select(spec, [candidate]),
        response_target=timedelta(hours=1),
        now=now,
    )
    return plan(inp)


def test_a_step_on_the_incidents_targets_asks_for_one_slot_per_target_not_done() -> None:
    fresh = targeted(IncidentStatus(), [RESTART_THEIRS])
    wanted = mutating_start(IncidentStatus(), fresh)
    assert wanted is not None
    assert wanted.targets == WORKLOADS
    assert wanted.keys == tuple(f"/r1/restart/1/{w}" for w in WORKLOADS)
    # A retry after the first target was done asks for the others only.
    before = fresh.status.model_copy(deep=True)
    assert before.playbook is not None
    step = before.playbook.steps[0]
    step.state, step.finishedAt = StepState.PENDING, T0  # attempt 1 failed, a retry is left
    assert step.targets is not None
    step.targets[0].state, step.targets[1].state = "Succeeded", "Failed"
    retry = targeted(before, [{**RESTART_THEIRS, "retries": 1}], T0 + timedelta(minutes=5))
    assert retry.intent == Intent("run-step", 0)
    again = mutating_start(before, retry)
    assert again is not None
    assert (again.attempt, again.targets) == (2, ("Deployment/api", "Deployment/worker"))
    # A fixed target is one action, keyed as before.
    fixed = plan(plan_input(IncidentStatus(), [SCALE], None, T0))
    one = mutating_start(IncidentStatus(), fixed)
    assert one is not None
    assert (one.targets, one.keys) == ((), ("/r1/scale/1",))


def test_a_scale_revert_asks_to_be_counted_for_the_workloads_it_puts_back() -> None:
    started = targeted(IncidentStatus(), [SCALE_THEIRS])
    status = started.status.model_copy(deep=True)
    assert status.playbook is not None
    assert status.playbook.steps[0].targets is not None
    done = status.playbook.steps[0]
    done.state = StepState.SUCCEEDED
    for n, target in enumerate(done.targets or []):
        target.state = "Succeeded" if n < 2 else "Failed"
        target.replicasBefore = 2
    revert = Decision(status, Intent("revert-scale", 0))
    wanted = mutating_start(status, revert)
    assert wanted is not None
    assert wanted.restores
    assert wanted.targets == ("Deployment/web", "Deployment/api")
    assert wanted.step == "scale/revert"


class Refusing:
    """A breaker that refuses everything, keeping what it was asked."""

    def __init__(self, reason: Reason) -> None:
        self.reason = reason
        self.asked: list[Request] = []

    async def reserve(self, request: Request) -> breaker.Verdict:
        self.asked.append(request)
        return breaker.Verdict(False, self.reason, "namespace/shop", "no", T0 + timedelta(seconds=10))


def test_the_slots_carry_the_incident_and_a_revert_goes_on_whatever_the_breaker_says() -> None:
    refusing = Refusing(Reason.BREAKER_UNAVAILABLE)
    slots = MutatingSlots(refusing, "shop", "inc", "uid-1")
    fresh = targeted(IncidentStatus(), [RESTART_THEIRS])
    hold, _ = asyncio.run(slots.reserve(IncidentStatus(), fresh))
    assert hold is not None
    assert (refusing.asked[0].namespace, refusing.asked[0].uid, refusing.asked[0].targets) == (
        "shop",
        "uid-1",
        WORKLOADS,
    )
    status = targeted(IncidentStatus(), [SCALE_THEIRS]).status
    assert status.playbook is not None
    for target in status.playbook.steps[0].targets or []:
        target.state, target.replicasBefore = "Succeeded", 2
    status.playbook.steps[0].state = StepState.SUCCEEDED
    hold, records = asyncio.run(slots.reserve(status, Decision(status, Intent("revert-scale", 0))))
    assert (hold, records) == (None, [])
    assert refusing.asked[-1].restores


# ----------------------------------------------------------------------------- the planner's hold


def test_a_step_no_window_can_hold_is_stalled_naming_the_limit_and_clears_once_it_fits() -> None:
    hold = AutomationHold(
        Reason.ACTIONS_ABOVE_LIMIT, "step acts on 3 workloads, more than", T0 + timedelta(seconds=10)
    )
    held = plan(plan_input(IncidentStatus(), [SCALE], hold, T0))
    assert held.intent is None
    stalled = condition(held.status, "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "ActionsAboveLimit")
    assert stalled["message"] == "step scale (scale) waits: step acts on 3 workloads, more than"
    assert condition(held.status, "AutomationPaused") is None
    assert [(r.reason, r.warning) for r in held.records if r.reason == "ActionsAboveLimit"] == [
        ("ActionsAboveLimit", True)
    ]
    assert held.wake_at == T0 + timedelta(seconds=10)
    going = plan(plan_input(held.status, [SCALE], None, T0 + timedelta(seconds=20)))
    assert going.intent == Intent("run-step", 0)
    cleared = condition(going.status, "Stalled")
    assert cleared is not None
    assert (cleared["status"], cleared["reason"]) == ("False", "Unblocked")
    assert cleared["message"] == "step scale (scale) fits the breaker's limits now"


@pytest.mark.parametrize(
    ("reason", "type_", "cleared"),
    [
        (Reason.CIRCUIT_OPEN, "AutomationPaused", "AutomationResumed"),
        (Reason.ACTIONS_ABOVE_LIMIT, "Stalled", "Unblocked"),
    ],
)
def test_a_held_step_skipped_because_the_alert_resolved_leaves_no_stale_hold(
    reason: Reason, type_: str, cleared: str
) -> None:
    hold = AutomationHold(reason, "the limit", T0 + timedelta(seconds=10))
    firing = dataclasses.replace(
        plan_input(IncidentStatus(), [SCALE], hold, T0), alert=AlertState("firing", T0)
    )
    held = plan(firing)
    assert condition(held.status, type_)["status"] == "True"
    later = T0 + timedelta(seconds=5)
    resolved = dataclasses.replace(
        plan_input(held.status, [SCALE], None, later), alert=AlertState("resolved", later)
    )
    after = plan(resolved)
    assert after.status.playbook is not None
    assert after.status.playbook.steps[0].state is StepState.SKIPPED
    released = condition(after.status, type_)
    assert released is not None
    assert (released["status"], released["reason"]) == ("False", cleared)
    assert released["message"] == "step scale (scale) was skipped: the alert resolved"


# ----------------------------------------------------------------------------- the loop


def generic_api(**playbook: Any) -> FakeKube:
    spec: dict[str, Any] = {"title": "down", "severity": "P2", "category": "availability"}
    spec["targets"] = [{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "api"}]
    steps = [SCALE_THEIRS, {"name": "wait", "waitReady": {"target": {"fromIncident": {}}}}]
    body = {"steps": steps, "stabilizationSeconds": 0, "allowedTargets": {"names": ["*"]}, **playbook}
    return FakeKube(spec, body, {"web": 2, "api": 3})


def loop_with(api: FakeKube, clock: LoopClock, store: MemoryStore, per_namespace: int) -> Any:
    config = OperatorConfig(file=FileConfig(automation=limits(per_namespace=per_namespace, window=60)))
    loop = new_loop(api, clock, config)
    loop.slots = dataclasses.replace(loop.slots, breaker=breaker_with(store, config.file.automation, clock))
    return loop


def test_a_loop_step_on_two_targets_waits_for_both_slots_then_acts_on_both_counted_twice() -> None:
    api, clock, store = generic_api(), LoopClock(), MemoryStore()
    store.state = State(actions=(Action(clock.now, NAMESPACE, "other"),))  # one of two slots taken
    loop = loop_with(api, clock, store, per_namespace=2)
    for _ in range(3):
        asyncio.run(loop.iterate())
        clock.now += timedelta(seconds=10)
    assert api.effects == []  # one slot free, two workloads: it acts on neither
    paused = find_condition(api.status().get("conditions") or [], "AutomationPaused")
    assert paused is not None
    assert paused["reason"] == "CircuitOpen"
    assert "acts on 2 workloads" in paused["message"]
    clock.now += timedelta(seconds=40)  # the other action leaves the window
    asyncio.run(drive(loop, api, clock))
    assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web"), ("scale", "api")]
    assert len([a for a in store.state.actions if a.namespace == NAMESPACE]) == 2


def test_a_loop_step_on_more_targets_than_the_limit_is_stalled_and_touches_nothing() -> None:
    api, clock, store = generic_api(), LoopClock(), MemoryStore()
    loop = loop_with(api, clock, store, per_namespace=1)
    for _ in range(3):
        asyncio.run(loop.iterate())
        clock.now += timedelta(seconds=10)
    assert api.effects == []
    stalled = find_condition(api.status().get("conditions") or [], "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "ActionsAboveLimit")
    assert "automation.maxMutatingActions.perNamespace (1)" in stalled["message"]
    assert [e["type"] for e in api.status()["timeline"]].count("ActionsAboveLimit") == 1  # said once
    assert store.state.actions == ()


def test_a_loop_scale_revert_after_the_run_is_counted_even_with_the_window_full() -> None:
    api, clock, store = generic_api(revertOnResolve=True), LoopClock(), MemoryStore()
    loop = loop_with(api, clock, store, per_namespace=2)
    asyncio.run(drive(loop, api, clock))
    kinds = [(e.kind, e.workload) for e in api.effects]
    assert kinds[:2] == [("scale", "web"), ("scale", "api")]
    assert sorted(kinds[2:]) == [("scale", "api"), ("scale", "web")]  # put back above the limit
    assert (api.workloads["web"]["replicas"], api.workloads["api"]["replicas"]) == (2, 3)
    assert len(store.state.actions) == 4  # two scaled, two put back: all counted


def test_kubectl_incident_explain_says_why_a_step_above_a_limit_waits_and_that_a_person_must_act() -> None:
    from tests.unit.test_explain import COLLECT as EXPLAIN_COLLECT
    from tests.unit.test_explain import SCALE as EXPLAIN_SCALE
    from tests.unit.test_explain import Explained, candidate, incident

    message = "step scale acts on 30 workloads, more than automation.maxMutatingActions.perNamespace (20)"
    run = Explained(incident(), candidate("pb", EXPLAIN_COLLECT, EXPLAIN_SCALE))
    run.plan()
    run.complete(Intent("run-step", 0))
    inp = dataclasses.replace(
        run.input(),
        automation_hold=AutomationHold(Reason.ACTIONS_ABOVE_LIMIT, message, T0 + timedelta(seconds=10)),
    )
    decision = run.explained_from(inp)
    why = decision.status.explanation
    assert why is not None
    assert decision.intent is None
    steps = {s.name: s for s in why.steps}
    assert steps["scale"].reason == "ActionsAboveLimit"
    assert message in (steps["scale"].why or "")
    assert why.hold is not None
    assert (why.hold.type, why.hold.reason) == ("Stalled", "ActionsAboveLimit")


def test_a_loop_step_waiting_for_another_incidents_lock_uses_no_slot_however_long_it_waits() -> None:
    from incident_operator.core import targets as lock_rules

    api, clock, store = generic_api(), LoopClock(), MemoryStore()
    api.incidents["other"] = {
        "metadata": {"name": "other", "uid": "uid-other"},
        "spec": {},
        "status": {
            "playbook": {"runId": "r1", "steps": [{"name": "up", "action": "scale", "state": "Running"}]}
        },
    }
    api.set_lock("web", lock_rules.lock_value("other", "uid-other", clock.now, "r1"))
    loop = loop_with(api, clock, store, per_namespace=2)
    for _ in range(8):  # 80 s: longer than the 60 s window, tried again and again
        asyncio.run(loop.iterate())
        clock.now += timedelta(seconds=10)
    assert api.effects == []
    stalled = find_condition(api.status().get("conditions") or [], "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "TargetBusy"
    assert store.state.actions == ()  # no slot taken while it waits: the namespace's limit is untouched
    assert store.state.runs == ()  # nor a storm-guard slot: the run has not acted
    # two other actions of the namespace fit in the window meanwhile
    other = breaker.Request(NAMESPACE, "uid-3", "r1", "s", 1, "pb2", targets=("Deployment/a", "Deployment/b"))
    store.state, verdict = breaker.reserve(store.state, other, limits(per_namespace=2, window=60), clock.now)
    assert verdict.granted
    store.state = State()
    api.set_lock("web", lock_rules.lock_value("other", "uid-other", clock.now - timedelta(hours=1), "r1"))
    api.incidents["other"]["spec"] = {"closed": True}  # the holder is done: the step acts, counted once each
    asyncio.run(drive(loop, api, clock))
    assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web"), ("scale", "api")]
    assert len(store.state.actions) == 2


WEB_LOCK = "incident-operator-lock-deployment-web"


def busy_holder(api: FakeKube, now: datetime, *, older: bool = False, waits_for: str | None = None) -> None:
    """Incident `other`'s run scales (a mutating step Running) and holds web's lock, claimed at
    `now`; created before this incident if `older`; waiting, with `waits_for`, for that workload
    (its Stalled/TargetBusy condition naming this incident)."""
    conditions = []
    if waits_for is not None:
        message = f"step up cannot run: {waits_for} is busy: incident {INCIDENT} holds it until it settles"
        conditions = [{"type": "Stalled", "status": "True", "reason": "TargetBusy", "message": message}]
    created = now - timedelta(minutes=5) if older else now + timedelta(minutes=5)
    api.incidents["other"] = {
        "metadata": {"name": "other", "uid": "uid-other", "creationTimestamp": format_time(created)},
        "spec": {},
        "status": {
            "playbook": {"runId": "r1", "steps": [{"name": "up", "action": "scale", "state": "Running"}]},
            "conditions": conditions,
        },
    }
    api.set_lock("web", lock_rules.lock_value("other", "uid-other", now, "r1"))


async def retries(loop: Any, api: FakeKube, clock: LoopClock, tries: int) -> None:
    """What `run` does (the clock moved to each wake-up) until the step was tried `tries` more
    times: each try reads web's lock once (the claim, or the read before the slots)."""
    reads = len([c for c in api.calls if c == ("read_lock", WEB_LOCK)])
    for _ in range(10 * tries):
        if len([c for c in api.calls if c == ("read_lock", WEB_LOCK)]) >= reads + tries:
            return
        again, wake_at = await loop.iterate()
        if not again and wake_at is not None:
            clock.now = max(clock.now, wake_at)
    raise AssertionError(f"not tried {tries} times: {api.status()}")


def test_a_loop_step_waiting_for_another_incidents_lock_writes_nothing_to_the_breaker_meanwhile() -> None:
    """Review 2, finding 2: each try of a step waiting for a lock reserved its slots (a write of
    the breaker's ConfigMap) and gave them back (a second), every 2 s per waiting step, and held
    slots meanwhile that could refuse a real action. Once its first attempt found the lock taken,
    a try reads the lock first and, still held, is Blocked again without asking the breaker."""
    api, clock, store = generic_api(), LoopClock(), MemoryStore()
    busy_holder(api, clock.now)
    loop = loop_with(api, clock, store, per_namespace=2)
    asyncio.run(loop.iterate())  # the first attempt: reserved, found web busy, gave its slots back
    first = store.writes
    assert first == 2
    asyncio.run(retries(loop, api, clock, 20))
    assert store.writes == first  # 20 tries: no write of the breaker's state
    assert store.state.actions == ()
    assert api.effects == []
    stalled = find_condition(api.status().get("conditions") or [], "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "TargetBusy"
    assert "Deployment/web is busy: incident other holds it until its run settles" in stalled["message"]
    assert api.status()["playbook"]["steps"][0]["state"] == "Blocked"
    assert [t["state"] for t in api.status()["playbook"]["steps"][0]["targets"]] == ["Pending", "Pending"]
    # never claimed: one create was tried (the first claim of a Lease this client never saw),
    # refused as already there; every later try read the lock first
    assert len([c for c in api.calls if c[0] == "write_lock" and c[1] == WEB_LOCK]) == 1
    assert (api.lock("web") or "").startswith("other/uid-other/")
    # the holder is done: the next try reserves once, both workloads in that one write, and acts
    api.incidents["other"]["spec"] = {"closed": True}
    api.set_lock("web", lock_rules.lock_value("other", "uid-other", clock.now - timedelta(hours=1), "r1"))
    asyncio.run(drive(loop, api, clock))
    assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web"), ("scale", "api")]
    assert store.writes == first + 1
    assert len(store.state.actions) == 2


def test_a_loop_retry_still_gives_way_when_the_older_holder_comes_to_wait_for_what_it_holds() -> None:
    """The read before the slots never keeps a run waiting in a circle: when the older holder of
    web starts waiting for api, which this run claimed at its first attempt, the next try runs
    the claim, which gives api back (`controllers.targets.lock`)."""
    api, clock, store = generic_api(), LoopClock(), MemoryStore()
    api.incident["metadata"]["creationTimestamp"] = format_time(clock.now)
    busy_holder(api, clock.now, older=True)
    loop = loop_with(api, clock, store, per_namespace=2)
    asyncio.run(loop.iterate())  # api claimed (first in name order), web busy: the older one goes on
    assert lock_rules.lock_holder(api.lock("api") or "").incident == INCIDENT
    asyncio.run(retries(loop, api, clock, 3))
    assert lock_rules.lock_holder(api.lock("api") or "").incident == INCIDENT  # kept while it waits
    busy_holder(api, clock.now, older=True, waits_for="Deployment/api")
    asyncio.run(retries(loop, api, clock, 1))
    assert api.lock("api") is None  # given back: the older run takes it and goes on
    assert api.effects == []
    assert store.state.actions == ()  # the try that gave way reserved and gave its slots back


# ----------------------------------------------------------------------------- the early lock claim


def one_step_api(*steps: dict[str, Any]) -> FakeKube:
    """The loop test's playbook with `steps` (default: scale the fixed Deployment web 2 -> 3)."""
    from tests.unit.test_incident_loop import STEPS, fake_api

    return fake_api(steps=list(steps) or [STEPS[0]])


RESTART_WEB = {"name": "restart-web", "restart": {"target": {"kind": "Deployment", "name": "web"}}}


def lock_writes(api: FakeKube) -> list[str | None]:
    """The holders written to web's lock Lease, in order (None: given back)."""
    return [c[2] for c in api.calls if c[0] == "write_lock" and c[1] == WEB_LOCK]


def lock_calls(api: FakeKube) -> int:
    return len([c for c in api.calls if c[0] in ("read_lock", "write_lock")])


def gated(api: FakeKube, store: MemoryStore) -> tuple[asyncio.Event, asyncio.Event]:
    """(set once web's lock was claimed, set by the test to let the slot's write finish): the
    breaker's write waits for the test, so the test acts while the slot is reserved."""
    claimed, go = asyncio.Event(), asyncio.Event()
    write_lock, write_state = api.write_lock, store.write

    async def claiming(namespace: str, lease: str, holder: str | None, resource_version: str | None) -> None:
        await write_lock(namespace, lease, holder, resource_version)
        claimed.set()

    async def held_write(state: State, resource_version: str | None) -> str | None:
        await go.wait()
        return await write_state(state, resource_version)

    api.write_lock = claiming  # type: ignore[method-assign]
    store.write = held_write  # type: ignore[method-assign]
    return claimed, go


def slot_outlasting_the_claim(
    api: FakeKube, meanwhile: Callable[[LoopClock], None]
) -> tuple[LoopClock, MemoryStore]:
    """One iteration of the scale whose slot's write lasts LOCK_RENEW past its early claim;
    `meanwhile(clock)` runs then (the clock moved already). Returns the clock and the state."""
    clock, store = LoopClock(), MemoryStore()
    loop = loop_with(api, clock, store, per_namespace=5)
    claimed, go = gated(api, store)

    async def scenario() -> None:
        first = asyncio.create_task(loop.iterate())
        await asyncio.wait_for(claimed.wait(), timeout=5.0)
        clock.now += lock_rules.LOCK_RENEW
        meanwhile(clock)
        go.set()
        await asyncio.wait_for(first, timeout=5.0)

    asyncio.run(scenario())
    return clock, store


def test_a_scale_claims_its_lock_while_its_breaker_slot_is_being_written() -> None:
    """The slot's write does not finish until web's lock has been claimed: taken one after the
    other (slot, then lock), the iteration would never finish."""
    api, clock, store = one_step_api(), LoopClock(), MemoryStore()
    loop = loop_with(api, clock, store, per_namespace=5)
    claimed, go = gated(api, store)

    async def scenario() -> None:
        running = asyncio.create_task(drive(loop, api, clock))
        await asyncio.wait_for(claimed.wait(), timeout=5.0)
        go.set()
        await asyncio.wait_for(running, timeout=5.0)

    asyncio.run(scenario())
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]
    assert store.writes == 1  # the slot, counted once
    assert len(lock_writes(api)) == 1  # one claim, not claimed again by the step
    assert lock_rules.lock_holder(api.lock("web") or "").incident == INCIDENT


def test_a_step_the_breaker_holds_gives_back_the_lock_it_claimed_early_and_claims_none_while_it_waits() -> (
    None
):
    """A fresh process (no copy of the breaker's state yet) claims web's lock with the slot; the
    slot is refused (the namespace's one slot taken): the lock goes back at once, so no other
    incident waits for a run that has not acted. Its next tries claim nothing: told by the copy
    now held, and, in a process started afresh, by the incident's AutomationPaused. Once the
    window frees the slot, it claims and acts."""
    api, clock, store = one_step_api(), LoopClock(), MemoryStore()
    store.state = State(actions=(Action(clock.now, NAMESPACE, "other"),))
    loop = loop_with(api, clock, store, per_namespace=1)
    asyncio.run(loop.iterate())
    me = lock_writes(api)
    assert len(me) == 2
    assert me[1] is None  # claimed, then given back
    assert api.lock("web") is None
    assert api.effects == []
    paused = find_condition(api.status().get("conditions") or [], "AutomationPaused")
    assert paused is not None
    assert paused["reason"] == "CircuitOpen"
    for fresh in (False, False, True, True):  # tries while the slot is still taken, then restarted
        clock.now += timedelta(seconds=5)
        loop = loop_with(api, clock, store, per_namespace=1) if fresh else loop
        asyncio.run(loop.iterate())
    assert len(lock_writes(api)) == 2
    clock.now += timedelta(seconds=60)  # the other action leaves the window
    asyncio.run(drive(loop, api, clock))
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]
    assert lock_rules.lock_holder(api.lock("web") or "").incident == INCIDENT


def test_a_first_try_the_breakers_copy_says_would_be_refused_claims_no_lock() -> None:
    """The process's copy of the breaker's state (read for another incident's reservation) shows
    the namespace's window full: the step's first try is refused with no lock claimed."""
    api, clock, store = one_step_api(), LoopClock(), MemoryStore()
    store.state = State(actions=(Action(clock.now, NAMESPACE, "other"),))
    loop = loop_with(api, clock, store, per_namespace=1)
    breaker_of = loop.slots.breaker
    asyncio.run(breaker_of.reserve(Request(NAMESPACE, "uid-2", "r1", "up", 1, "pb")))  # refused: copy kept
    asyncio.run(loop.iterate())
    paused = find_condition(api.status().get("conditions") or [], "AutomationPaused")
    assert paused is not None
    assert lock_calls(api) == 0
    assert api.effects == []


def own_lock(api: FakeKube, at: datetime, run: str) -> str:
    """web's Lease naming this incident's run `run`, claimed `at`."""
    value = lock_rules.lock_value(INCIDENT, api.incident["metadata"]["uid"], at, run)
    api.set_lock("web", value)
    return value


def test_a_lock_of_this_incidents_earlier_run_rewritten_by_the_early_claim_is_given_back_when_held() -> None:
    """The Lease names a settled earlier run of this incident (free to anyone; a re-fire): the
    early claim rewrites it for the new run, and gives it back when the breaker holds the step."""
    api, clock, store = one_step_api(), LoopClock(), MemoryStore()
    store.state = State(actions=(Action(clock.now, NAMESPACE, "other"),))
    own_lock(api, clock.now - timedelta(hours=1), "r0")
    loop = loop_with(api, clock, store, per_namespace=1)
    asyncio.run(loop.iterate())
    assert api.effects == []
    assert lock_writes(api)[-1] is None
    assert api.lock("web") is None


def test_a_lock_naming_the_run_before_its_early_claim_stays_when_the_breaker_holds_the_step() -> None:
    """The Lease names this very run already (passed on from the run it continues after a
    Playbook edit, or claimed before a restart), though no step of the run shows an attempt on
    web: found young (not written) or older (renewed), it is not given back."""
    for age in (timedelta(seconds=0), lock_rules.LOCK_RENEW + timedelta(seconds=1)):
        api, clock, store = one_step_api(), LoopClock(), MemoryStore()
        store.state = State(actions=(Action(clock.now, NAMESPACE, "other"),))
        held = own_lock(api, clock.now - age, "r1")
        api.locks_seen.add(WEB_LOCK)
        loop = loop_with(api, clock, store, per_namespace=1)
        asyncio.run(loop.iterate())
        assert api.effects == []
        assert None not in lock_writes(api)
        holder = lock_rules.lock_holder(api.lock("web") or "")
        assert holder.incident == INCIDENT
        assert holder.claimed == (clock.now if age else lock_rules.lock_holder(held).claimed)


def test_a_lock_the_run_holds_from_an_earlier_step_stays_when_the_breaker_holds_its_next_step() -> None:
    """The run scaled web, then its restart of web is refused (another replica took the last
    slot meanwhile, unknown to this process's copy): the early claim (renewing the claim, older
    than LOCK_RENEW by then) is not given back: the run holds web until it settles. Had the run
    given web back meanwhile (a deadlock's give-way), the claim took a free lock: given back."""
    from tests.unit.test_incident_loop import STEPS

    for gave_way in (False, True):
        api, clock, store = one_step_api(STEPS[0], RESTART_WEB), LoopClock(), MemoryStore()
        loop = loop_with(api, clock, store, per_namespace=2)
        asyncio.run(loop.iterate())  # the scale
        assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web")]
        if gave_way:
            api.locks.pop(WEB_LOCK)
        clock.now += lock_rules.LOCK_RENEW + timedelta(seconds=1)
        store.other_writer = dataclasses.replace(
            store.state, actions=(*store.state.actions, Action(clock.now, NAMESPACE, "other"))
        )
        for _ in range(3):
            asyncio.run(loop.iterate())
            if find_condition(api.status().get("conditions") or [], "AutomationPaused"):
                break
        assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web")]  # the restart waits
        if gave_way:
            assert api.lock("web") is None
            continue
        assert lock_writes(api)[-1] is not None  # written again by the claim, never given back
        holder = lock_rules.lock_holder(api.lock("web") or "")
        assert (holder.incident, holder.claimed) == (INCIDENT, clock.now)


def test_an_early_claim_that_waited_past_the_renewal_age_for_its_slot_is_renewed_before_acting() -> None:
    """The action starts with most of its lock's hold left: a claim made while the slot's write
    took longer than LOCK_RENEW is written again, dated when the step goes on."""
    api = one_step_api()
    clock, _ = slot_outlasting_the_claim(api, lambda _: None)
    holders = [lock_rules.lock_holder(h or "") for h in lock_writes(api)]
    assert [h.claimed for h in holders] == [T0, clock.now]  # the early claim, then renewed
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]


def test_a_renewal_that_finds_the_lock_taken_meanwhile_acts_on_nothing() -> None:
    """While the slot was reserved for longer than LOCK_RENEW, another incident took web (its
    claim replaced this one): the renewal finds it held, and the step waits, TargetBusy, its
    slot given back."""
    api = one_step_api()
    _, store = slot_outlasting_the_claim(api, lambda clock: busy_holder(api, clock.now))  # `other` took web
    assert api.effects == []
    assert api.status()["playbook"]["steps"][0]["state"] == "Blocked"
    stalled = find_condition(api.status().get("conditions") or [], "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "TargetBusy"
    assert [a for a in store.state.actions if a.namespace == NAMESPACE] == []  # the slot given back


def test_a_claim_left_by_an_iteration_that_failed_before_the_step_ran_is_given_back() -> None:
    """A restart's start is written before it acts: that write fails (500) after the early claim
    took web's lock; the lock goes back, and the next iteration claims it and acts."""
    api, clock = one_step_api(RESTART_WEB), LoopClock()
    api.fail = lambda n: ApiException(status=500, reason="Internal Server Error") if n == 1 else None
    loop = new_loop(api, clock)
    with pytest.raises(ApiException):
        asyncio.run(loop.iterate())
    assert lock_writes(api)[-1] is None
    assert api.lock("web") is None
    assert api.effects == []
    asyncio.run(drive(loop, api, clock))
    assert [(e.kind, e.workload) for e in api.effects] == [("restart", "web")]


def test_a_loop_cancelled_while_its_slot_is_reserved_cancels_its_early_claim() -> None:
    """The operator stops while the slot's write and the lock's claim are both out: the claim is
    cancelled with the loop, not left running."""
    api, clock, store = one_step_api(), LoopClock(), MemoryStore()
    loop = loop_with(api, clock, store, per_namespace=5)
    gated(api, store)  # the slot's write never finishes
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hanging(namespace: str, lease: str, holder: str | None, resource_version: str | None) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # the API server never answers
        finally:
            cancelled.set()

    api.write_lock = hanging  # type: ignore[method-assign]

    async def scenario() -> bool:
        running = asyncio.create_task(loop.iterate())
        await asyncio.wait_for(started.wait(), timeout=5.0)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        return cancelled.is_set()  # the claim was cancelled with the loop, not left running

    assert asyncio.run(scenario())
    assert api.effects == []


def test_the_runs_own_claim_found_young_is_renewed_by_its_own_date_not_the_early_claims() -> None:
    """The Lease holds this run's claim of 15 s ago (not written again by the early claim); the
    slot takes 6 s more: the claim is 21 s old when the step goes on, so it is renewed then."""
    api, clock, store = one_step_api(), LoopClock(), MemoryStore()
    uid = api.incident["metadata"]["uid"]
    api.set_lock("web", lock_rules.lock_value(INCIDENT, uid, clock.now - timedelta(seconds=15), "r1"))
    api.locks_seen.add(WEB_LOCK)
    loop = loop_with(api, clock, store, per_namespace=5)
    _, go = gated(api, store)
    read, read_lock = asyncio.Event(), api.read_lock

    async def reading(namespace: str, lease: str) -> tuple[str | None, str | None]:
        found = await read_lock(namespace, lease)
        read.set()
        return found

    api.read_lock = reading  # type: ignore[method-assign]

    async def scenario() -> None:
        first = asyncio.create_task(loop.iterate())
        await asyncio.wait_for(read.wait(), timeout=5.0)  # the early claim has read the Lease
        clock.now += timedelta(seconds=6)
        go.set()
        await asyncio.wait_for(first, timeout=5.0)

    asyncio.run(scenario())
    holder = lock_rules.lock_holder(api.lock("web") or "")
    assert holder.claimed == clock.now  # renewed when the step went on
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]


def test_a_retry_waiting_for_another_incidents_lock_and_a_read_only_step_claim_nothing_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retry of a step Blocked on another incident's lock reads the lock first (`still_busy`)
    and starts no early claim beside it; a read-only step (waitReady) on a fixed workload takes
    no lock at all."""
    from incident_operator.controllers import targets

    started: list[str] = []

    class Counted(targets.EarlyClaim):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started.append(args[2].name)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(targets, "EarlyClaim", Counted)
    api, clock = one_step_api(), LoopClock()
    busy_holder(api, clock.now)
    loop = new_loop(api, clock)
    asyncio.run(loop.iterate())  # the first attempt claims early and finds web busy
    assert api.status()["playbook"]["steps"][0]["state"] == "Blocked"
    assert started == ["web"]
    asyncio.run(retries(loop, api, clock, 5))
    assert started == ["web"]
    assert api.effects == []
    waiting = one_step_api(
        {"name": "wait-web", "waitReady": {"target": {"kind": "Deployment", "name": "web"}}}
    )
    asyncio.run(run_until_settled(waiting, LoopClock()))
    assert step_states(waiting.status()) == ["Succeeded"]
    assert lock_calls(waiting) == 0
    assert started == ["web"]


def test_a_step_held_because_the_breakers_state_cannot_be_read_claims_no_lock_on_its_tries() -> None:
    """BreakerUnavailable (the state's read refused, 403) holds the step: its first try's early
    claim is given back, and its next tries (Stalled BreakerUnavailable) claim nothing."""
    api, clock, store = one_step_api(), LoopClock(), MemoryStore()

    async def forbidden() -> Any:
        raise ApiException(status=403, reason="Forbidden")

    store.read = forbidden  # type: ignore[method-assign]
    loop = loop_with(api, clock, store, per_namespace=5)
    asyncio.run(loop.iterate())
    stalled = find_condition(api.status().get("conditions") or [], "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "BreakerUnavailable"
    assert lock_writes(api)[-1] is None
    writes = len(lock_writes(api))
    for _ in range(5):
        clock.now += timedelta(seconds=10)
        asyncio.run(loop.iterate())
    assert len(lock_writes(api)) == writes
    assert api.effects == []


def test_an_early_claim_that_fails_or_is_dropped_raises_nothing_and_leaves_nothing_unretrieved() -> None:
    """A claim no step took that failed (500) is only logged when given back, or dropped once
    it failed; one still running when dropped is cancelled; none leaves an exception never
    retrieved."""
    from incident_operator.adapters.kube import Kube
    from incident_operator.api.base import WorkloadRef
    from incident_operator.controllers import targets

    async def main() -> tuple[list[dict[str, Any]], asyncio.Task[Any] | None]:
        unretrieved: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
        api, web = one_step_api(), WorkloadRef(kind="Deployment", name="web")
        me = targets.Claimant(INCIDENT, "uid", "r1")

        async def refused(
            namespace: str, lease: str, holder: str | None, resource_version: str | None
        ) -> None:
            raise ApiException(status=500, reason="Internal Server Error")

        api.write_lock = refused  # type: ignore[method-assign]
        failing = targets.EarlyClaim(cast(Kube, api), NAMESPACE, web, me, T0)
        await failing.give_back()
        dropped = targets.EarlyClaim(cast(Kube, api), NAMESPACE, web, me, T0)
        assert dropped.task is not None
        await asyncio.wait([dropped.task])
        dropped.drop()
        gate = asyncio.Event()

        async def slow(namespace: str, lease: str, holder: str | None, resource_version: str | None) -> None:
            await gate.wait()

        api.write_lock = slow  # type: ignore[method-assign]
        pending = targets.EarlyClaim(cast(Kube, api), NAMESPACE, web, me, T0)
        task = pending.task
        assert pending.take(WorkloadRef(kind="Deployment", name="api"), me) is None  # not its workload
        assert pending.take(web, dataclasses.replace(me, run="r2")) is None  # not its run
        pending.drop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0) if task else None
        del failing, dropped, pending
        gc.collect()  # an exception never retrieved is reported when its task is collected
        return unretrieved, task

    unretrieved, task = asyncio.run(main())
    assert unretrieved == []
    assert task is not None
    assert task.cancelled()
