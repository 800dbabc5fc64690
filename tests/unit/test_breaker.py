"""The circuit breaker and the storm guard (issue 21, item 5): the window and slot logic with the
clock passed in (`core.breaker`), the planner's hold (`AutomationPaused`, `CircuitOpen` or
`StormGuard`), the reservation at run time against an in-memory store (conflicts, restarts),
and an incident loop whose mutating steps wait for the window and still run once each."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase, PlaybookSpec, StepState
from incident_operator.api.reasons import Reason
from incident_operator.controllers.automation import Breaker
from incident_operator.controllers.incident.mutating import mutating_start
from incident_operator.core import breaker
from incident_operator.core.breaker import Request, State
from incident_operator.core.conditions import find_condition
from incident_operator.core.matching import Candidate, select
from incident_operator.core.notices import IncidentView, notices
from incident_operator.core.planner import AutomationHold, Intent, PlanInput, Record, plan
from incident_operator.settings.config import (
    AutomationConfig,
    FileConfig,
    MutatingActionLimits,
    OperatorConfig,
)
from tests.polling import until

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def limits(per_namespace: int = 3, cluster: int = 100, window: int = 60, runs: int = 100) -> AutomationConfig:
    return AutomationConfig(
        maxMutatingActions=MutatingActionLimits(
            perNamespace=per_namespace, clusterWide=cluster, windowSeconds=window
        ),
        maxConcurrentRunsPerPlaybook=runs,
    )


def req(
    uid: str, namespace: str = "shop", *, step: str = "scale", attempt: int = 1, playbook: str = "pb"
) -> Request:
    return Request(namespace, uid, "r1", step, attempt, playbook)


def take(
    state: State, request: Request, config: AutomationConfig, now: datetime, **kw: Any
) -> tuple[State, breaker.Verdict]:
    return breaker.reserve(state, request, config, now, **kw)


# ----------------------------------------------------------------------------- the window


def test_the_namespace_window_grants_up_to_its_limit_then_trips_once_and_frees_after_the_window() -> None:
    config, state = limits(per_namespace=3, window=60), State()
    for n in range(3):
        state, verdict = take(state, req(f"u{n}"), config, T0 + timedelta(seconds=n))
        assert verdict.granted
        assert verdict.write
    state, refused = take(state, req("u3"), config, T0 + timedelta(seconds=5))
    assert not refused.granted
    assert refused.reason is Reason.CIRCUIT_OPEN
    assert refused.scope == "namespace/shop"
    assert "automation.maxMutatingActions.perNamespace (3)" in refused.message
    assert "3 mutating actions in namespace shop within 60s" in refused.message
    assert refused.tripped
    assert refused.write
    assert refused.retry_at == T0 + timedelta(seconds=15)  # asks again soon (a resume is seen)
    state, again = take(state, req("u4"), config, T0 + timedelta(seconds=6))
    assert not again.granted
    assert not again.tripped  # the same trip: no second notice
    assert not again.write  # and nothing to write
    assert breaker.tripped_counts(state.trips) == {"cluster": 0, "namespace": 1, "playbook": 0}
    # The oldest action leaves the window at T0+60: one slot frees, not before.
    state, early = take(state, req("u3"), config, T0 + timedelta(seconds=59))
    assert not early.granted
    assert not early.tripped
    assert early.write  # a third of the window since the trip's last refusal was written: refreshed
    state, freed = take(state, req("u3"), config, T0 + timedelta(seconds=60, milliseconds=500))
    assert freed.granted  # a slot freed is taken at once
    state, same = take(state, req("u4"), config, T0 + timedelta(seconds=60, milliseconds=600))
    assert not same.granted
    assert not same.tripped  # the window sliding by one slot while steps wait: still one trip
    # A window with no refusal ends the trip; the next refusal opens a new one (told again).
    quiet = breaker.prune(state, config, T0 + timedelta(seconds=125))
    assert dict(quiet.trips) == {}
    assert quiet.actions == ()
    state, _ = take(quiet, req("v1"), config, T0 + timedelta(seconds=126))
    state, _ = take(state, req("v2"), config, T0 + timedelta(seconds=126))
    state, _ = take(state, req("v3"), config, T0 + timedelta(seconds=126))
    _, new_trip = take(state, req("v4"), config, T0 + timedelta(seconds=127))
    assert new_trip.tripped


def test_the_retry_time_is_when_the_oldest_action_leaves_the_window_when_that_is_soon() -> None:
    config, state = limits(per_namespace=1, window=10), State()
    state, _ = take(state, req("a"), config, T0)
    _, refused = take(state, req("b"), config, T0 + timedelta(seconds=4))
    assert refused.retry_at == T0 + timedelta(seconds=10)


def test_other_namespaces_have_their_own_window_under_the_cluster_wide_one() -> None:
    config, state = limits(per_namespace=2, cluster=3), State()
    state, _ = take(state, req("a1", "a"), config, T0)
    state, _ = take(state, req("a2", "a"), config, T0)
    state, full = take(state, req("a3", "a"), config, T0)
    assert (full.granted, full.scope) == (False, "namespace/a")
    state, b1 = take(state, req("b1", "b"), config, T0)
    assert b1.granted
    state, b2 = take(state, req("b2", "b"), config, T0)
    assert not b2.granted
    assert b2.scope == "cluster"
    assert "automation.maxMutatingActions.clusterWide (3)" in b2.message
    assert b2.tripped
    assert breaker.tripped_counts(state.trips) == {"cluster": 1, "namespace": 1, "playbook": 0}


def test_asking_again_for_the_same_step_attempt_counts_once() -> None:
    """After a crash between the reservation and the step's write, the same attempt asks again."""
    config, state = limits(per_namespace=1), State()
    state, first = take(state, req("a"), config, T0)
    state, again = take(state, req("a"), config, T0 + timedelta(seconds=1))
    assert first.granted
    assert again.granted
    assert not again.write
    assert len(state.actions) == 1
    _, retry = take(state, req("a", attempt=2), config, T0 + timedelta(seconds=2))
    assert not retry.granted  # a retry is another mutating action


# ----------------------------------------------------------------------------- the storm guard


def test_the_storm_guard_counts_runs_of_one_playbook_that_acted_until_they_are_no_longer_in_flight() -> None:
    config, state = limits(per_namespace=100, runs=2), State()
    in_flight = {"u1": True, "u2": True}

    def check(namespace: str, uid: str, run: str) -> bool | None:
        return in_flight.get(uid, False)

    state, _ = take(state, req("u1"), config, T0, in_flight=check)
    state, _ = take(state, req("u2"), config, T0, in_flight=check)
    state, held = take(state, req("u3"), config, T0, in_flight=check)
    assert (held.granted, held.reason, held.scope) == (False, Reason.STORM_GUARD, "playbook/shop/pb")
    assert "automation.maxConcurrentRunsPerPlaybook (2)" in held.message
    assert "2 runs of Playbook shop/pb" in held.message
    state, next_step = take(state, req("u1", step="restart"), config, T0, in_flight=check)
    assert next_step.granted  # a run that holds its slot goes on
    state, other = take(state, req("x", playbook="other"), config, T0, in_flight=check)
    assert other.granted  # another Playbook is not held
    in_flight["u1"] = False  # u1's incident resolved
    _, soon = take(state, req("u3"), config, T0 + timedelta(seconds=30), in_flight=check)
    assert not soon.granted  # a run counts for RUN_GRACE whatever the index says (not shown yet)
    state, later = take(
        state, req("u3"), config, T0 + breaker.RUN_GRACE + timedelta(seconds=1), in_flight=check
    )
    assert later.granted


def test_a_person_resuming_forgets_the_window_the_runs_and_the_trips() -> None:
    config, state = limits(per_namespace=1, runs=1), State()
    state, _ = take(state, req("a"), config, T0)
    state, refused = take(state, req("b"), config, T0)
    assert not refused.granted
    assert state.trips
    state = breaker.resume(state, T0 + timedelta(seconds=1), "alice")
    assert (state.actions, state.runs, dict(state.trips)) == ((), (), {})
    assert state.resumed_by == "alice"
    state, granted = take(state, req("b"), config, T0 + timedelta(seconds=2))
    assert granted.granted


def test_a_run_that_acted_is_never_stopped_between_its_mutating_steps_by_the_storm_guard() -> None:
    """Limit 1: run A acts, a person resumes (the runs list is forgotten), run B takes the slot;
    A's next mutating step (say its rollback) still goes on and A holds its slot again. The same
    for a drill's run dropped after RUN_GRACE."""
    config, state = limits(per_namespace=100, runs=1), State()
    state, _ = take(state, req("a"), config, T0)
    state = breaker.resume(state, T0 + timedelta(seconds=1), "alice")
    state, b = take(state, req("b"), config, T0 + timedelta(seconds=2))
    assert b.granted
    rollback = dataclasses.replace(req("a", step="rollback"), acted=True)
    state, verdict = take(state, rollback, config, T0 + timedelta(seconds=3))
    assert verdict.granted
    assert verdict.write
    assert {r.uid for r in state.runs} == {"a", "b"}  # A took its slot back (above the limit, once)
    _, c = take(state, req("c"), config, T0 + timedelta(seconds=4))
    assert (c.granted, c.reason) == (False, Reason.STORM_GUARD)  # a run that has not acted waits
    # A drill's run (not indexed: never seen in flight) is dropped after RUN_GRACE; it goes on.
    state = State()
    state, _ = take(state, req("drill"), config, T0, in_flight=lambda *_: False)
    later = T0 + breaker.RUN_GRACE + timedelta(seconds=1)
    state, other = take(state, req("other"), config, later, in_flight=lambda *_: False)
    assert other.granted
    step2 = dataclasses.replace(req("drill", step="restart"), acted=True)
    _, drill = take(state, step2, config, later + timedelta(seconds=1), in_flight=lambda *_: False)
    assert drill.granted


def test_the_stored_form_round_trips_and_a_broken_one_reads_as_empty() -> None:
    config, state = limits(per_namespace=1), State()
    state, _ = take(state, req("a"), config, T0)
    state, _ = take(state, req("b"), config, T0)
    state = dataclasses.replace(state, resumed_at=T0, resumed_by="bob")
    stored = breaker.from_json(breaker.to_json(state))
    assert stored == dataclasses.replace(
        state, actions=tuple(dataclasses.replace(a, key=breaker.digest(a.key)) for a in state.actions)
    )
    _, again = take(stored, req("a"), config, T0 + timedelta(seconds=1))
    assert (again.granted, again.write) == (True, False)  # asked again after a restart: counted once
    for broken in ("", "not json", "[]", '{"actions": [[1]], "trips": 3}'):
        assert breaker.from_json(broken) == State()
    # The first stored form (RFC 3339 times, keys in full) still reads.
    first = '{"actions":[["2026-12-01T09:00:00Z","shop","a/r1/scale/1"]],"runs":[],"trips":{}}'
    assert breaker.from_json(first).actions == (breaker.Action(T0, "shop", "a/r1/scale/1"),)


def test_a_slot_never_frees_early_times_are_stored_to_the_millisecond_rounded_up() -> None:
    config, state = limits(per_namespace=1, window=60), State()
    at = T0 + timedelta(seconds=10, microseconds=700_400)
    state, _ = take(state, req("a"), config, at)
    stored = breaker.from_json(breaker.to_json(state))
    assert stored.actions[0].at == T0 + timedelta(seconds=10, milliseconds=701)
    _, early = take(stored, req("b"), config, T0 + timedelta(seconds=70, milliseconds=700))
    assert not early.granted  # to the second it would have freed 0.7 s early
    assert "wait until 2026-12-01T09:01:11Z" in early.message  # said rounded up, too
    _, freed = take(stored, req("b"), config, T0 + timedelta(seconds=70, milliseconds=702))
    assert freed.granted


def test_the_state_at_its_caps_fits_one_config_map_and_a_bigger_one_is_refused() -> None:
    from incident_operator.adapters.breakerstate import BreakerStore

    most = FileConfig.model_validate(
        {"automation": {"maxMutatingActions": {"perNamespace": 3000, "clusterWide": 3000}}}
    ).automation
    with pytest.raises(ValidationError):
        MutatingActionLimits(clusterWide=3001)
    longest = "n" * 63
    actions = tuple(
        breaker.Action(T0, longest, f"{'u' * 36}/r9999/{'s' * 63}/99")
        for _ in range(most.maxMutatingActions.clusterWide)
    )
    runs = tuple(breaker.RunSlot(T0, longest, "p" * 253, "u" * 36, "r9999") for _ in range(breaker.MAX_RUNS))
    trips = {f"namespace/{n}{longest[1:]}": breaker.Trip(T0, T0) for n in range(100)}
    full = State(actions, runs, trips, T0, "x" * 253)
    assert len(breaker.encode(full).encode()) < breaker.MAX_STATE_BYTES
    with pytest.raises(breaker.StateTooLarge):
        breaker.encode(dataclasses.replace(full, runs=runs * 3))

    class Core:
        def create_namespaced_config_map(self, namespace: str, body: Any) -> Any:
            raise AssertionError("never sent")

    class Kube:
        core = Core()

        async def call(self, fn: Any, *args: Any) -> Any:
            return fn(*args)

    store = BreakerStore(Kube(), "incident-operator", "incident-operator-automation")
    with pytest.raises(breaker.StateTooLarge):
        asyncio.run(store.write(dataclasses.replace(full, runs=runs * 3), None))


def test_the_runs_listed_are_capped_a_further_run_waits_one_that_acted_goes_on() -> None:
    config = limits(per_namespace=3000, cluster=3000, runs=1000)
    runs = tuple(breaker.RunSlot(T0, "shop", f"pb{n}", f"u{n}", "r1") for n in range(breaker.MAX_RUNS))
    state = State(runs=runs)
    _, refused = take(state, req("new"), config, T0)
    assert (refused.granted, refused.reason, refused.scope) == (False, Reason.STORM_GUARD, "cluster/runs")
    assert f"the most the breaker's state lists ({breaker.MAX_RUNS})" in refused.message
    _, listed = take(state, Request("shop", "u5", "r1", "restart", 1, "pb5"), config, T0)
    assert listed.granted
    _, acted = take(state, dataclasses.replace(req("dropped"), acted=True), config, T0)
    assert acted.granted  # never stopped between its mutating steps


# ----------------------------------------------------------------------------- the config


def test_the_config_has_documented_defaults_and_refuses_what_cannot_work() -> None:
    automation = FileConfig().automation
    assert automation.maxMutatingActions == MutatingActionLimits(
        perNamespace=20, clusterWide=100, windowSeconds=300
    )
    assert automation.maxConcurrentRunsPerPlaybook == 10
    with pytest.raises(ValidationError, match=r"perNamespace \(50\) is above clusterWide \(10\)"):
        FileConfig.model_validate(
            {"automation": {"maxMutatingActions": {"perNamespace": 50, "clusterWide": 10}}}
        )
    for bad in (
        {"maxMutatingActions": {"windowSeconds": 0}},
        {"maxMutatingActions": {"perNamespace": 0}},
        {"maxConcurrentRunsPerPlaybook": 0},
        {"maxMutatingActions": {"perMinute": 5}},
        {"stateConfigMap": "Not_A_Name"},
    ):
        with pytest.raises(ValidationError):
            FileConfig.model_validate({"automation": bad})


# ----------------------------------------------------------------------------- the planner's hold

SCALE = {"name": "scale", "scale": {"target": {"kind": "Deployment", "name": "web"}, "delta": 1}}
COLLECT = {"name": "collect", "collectEvidence": {"selector": {"app": "web"}}}


def plan_input(
    status: IncidentStatus, steps: list[dict[str, Any]], hold: AutomationHold | None, now: datetime
) -> PlanInput:
    spec = IncidentSpec.model_validate({"title": "web down", "severity": "P2", "category": "availability"})
    candidate = Candidate("pb", PlaybookSpec.model_validate({"steps": steps, "stabilizationSeconds": 0}))
    return PlanInput(
        spec=spec,
        status=status,
        generation=1,
        selection=select(spec, [candidate]),
        response_target=timedelta(hours=1),
        now=now,
        automation_hold=hold,
    )


def condition(status: IncidentStatus, type_: str) -> dict[str, Any] | None:
    return find_condition([c.model_dump(mode="json") for c in status.conditions or []], type_)


def test_a_held_mutating_step_waits_says_why_once_and_says_so_again_when_it_goes_on() -> None:
    hold = AutomationHold(Reason.CIRCUIT_OPEN, "circuit breaker open: the limit", T0 + timedelta(seconds=10))
    held = plan(plan_input(IncidentStatus(), [SCALE], hold, T0))
    assert held.intent is None
    assert held.wake_at == T0 + timedelta(seconds=10)
    paused = condition(held.status, "AutomationPaused")
    assert paused is not None
    assert (paused["status"], paused["reason"]) == ("True", "CircuitOpen")
    assert paused["message"] == "step scale (scale) waits: circuit breaker open: the limit"
    assert held.status.playbook is not None
    assert held.status.playbook.steps[0].state is StepState.PENDING
    assert held.status.playbook.steps[0].attempts == 0  # no attempt used up
    assert [r.reason for r in held.records if r.reason == "CircuitOpen"] == ["CircuitOpen"]
    assert [r.warning for r in held.records if r.reason == "CircuitOpen"] == [True]
    again = plan(plan_input(held.status, [SCALE], hold, T0 + timedelta(seconds=10)))
    assert again.intent is None
    assert [r.reason for r in again.records] == []  # said once
    going = plan(plan_input(again.status, [SCALE], None, T0 + timedelta(seconds=20)))
    assert going.intent == Intent("run-step", 0)
    resumed = condition(going.status, "AutomationPaused")
    assert resumed is not None
    assert (resumed["status"], resumed["reason"]) == ("False", "AutomationResumed")
    assert "AutomationResumed" in [r.reason for r in going.records]


def test_the_waiting_message_follows_the_breaker_without_saying_it_again() -> None:
    first = AutomationHold(Reason.CIRCUIT_OPEN, "wait until 09:05:00Z", T0 + timedelta(seconds=10))
    held = plan(plan_input(IncidentStatus(), [SCALE], first, T0))
    later = AutomationHold(Reason.CIRCUIT_OPEN, "wait until 09:05:07Z", T0 + timedelta(seconds=20))
    again = plan(plan_input(held.status, [SCALE], later, T0 + timedelta(seconds=10)))
    paused = condition(again.status, "AutomationPaused")
    assert paused is not None
    assert paused["message"] == "step scale (scale) waits: wait until 09:05:07Z"  # not the stale time
    assert paused["lastTransitionTime"] == "2026-12-01T09:00:00Z"
    assert again.records == []  # said once: a new wording is no new entry
    guard = AutomationHold(Reason.STORM_GUARD, "storm guard: 3 runs", T0 + timedelta(seconds=30))
    other = plan(plan_input(again.status, [SCALE], guard, T0 + timedelta(seconds=20)))
    assert [r.reason for r in other.records] == ["StormGuard"]  # another limit: said


def test_a_diagnostic_step_is_never_held() -> None:
    hold = AutomationHold(Reason.STORM_GUARD, "storm guard", T0 + timedelta(seconds=10))
    decision = plan(plan_input(IncidentStatus(), [COLLECT, SCALE], hold, T0))
    assert decision.intent == Intent("run-step", 0)
    assert condition(decision.status, "AutomationPaused") is None


def test_only_a_fresh_start_of_a_mutating_step_asks_for_a_slot() -> None:
    fresh = plan(plan_input(IncidentStatus(), [SCALE], None, T0))
    wanted = mutating_start(IncidentStatus(), fresh)
    assert wanted is not None
    assert (wanted.run, wanted.step, wanted.attempt, wanted.playbook) == ("r1", "scale", 1, "pb")
    resumed = plan(plan_input(fresh.status, [SCALE], None, T0))  # found Running after a restart
    assert resumed.intent == Intent("run-step", 0)
    assert mutating_start(fresh.status, resumed) is None
    diagnostic = plan(plan_input(IncidentStatus(), [COLLECT], None, T0))
    assert mutating_start(IncidentStatus(), diagnostic) is None


def test_a_mutating_step_after_one_that_acted_says_its_run_acted() -> None:
    restart = {"name": "restart", "restart": {"target": {"kind": "Deployment", "name": "web"}}}
    first = plan(plan_input(IncidentStatus(), [COLLECT, SCALE, restart], None, T0))
    assert first.intent == Intent("run-step", 0)  # diagnostic: no slot
    assert first.status.playbook is not None
    first.status.playbook.steps[0].state = StepState.SUCCEEDED
    first.status.playbook.steps[0].finishedAt = T0
    scale = plan(plan_input(first.status, [COLLECT, SCALE, restart], None, T0))
    wanted = mutating_start(first.status, scale)
    assert wanted is not None
    assert (wanted.step, wanted.acted) == ("scale", False)  # the run's first mutating action
    assert scale.status.playbook is not None
    scale.status.playbook.steps[1].state = StepState.SUCCEEDED
    scale.status.playbook.steps[1].finishedAt = T0
    after = plan(plan_input(scale.status, [COLLECT, SCALE, restart], None, T0))
    wanted = mutating_start(scale.status, after)
    assert wanted is not None
    assert (wanted.step, wanted.acted) == ("restart", True)


def test_people_are_told_once_per_trip() -> None:
    spec = IncidentSpec.model_validate({"title": "web down", "severity": "P2", "category": "availability"})
    view = IncidentView("shop", "web-down", spec, Phase.DETECTED)
    tripped = Record(Reason.AUTOMATION_TRIPPED, "the circuit breaker tripped (namespace/shop)", warning=True)
    found = notices(IncidentStatus(), IncidentStatus(), [tripped], view)
    assert [(n.event, n.message) for n in found] == [
        ("automationPaused", "automation paused: the circuit breaker tripped (namespace/shop)")
    ]
    held = Record(Reason.CIRCUIT_OPEN, "step scale waits", warning=True)
    assert notices(IncidentStatus(), IncidentStatus(), [held], view) == []  # each incident's hold: no notice


def test_a_cluster_wide_trip_reaches_the_channels_without_a_namespace_filter_only() -> None:
    from incident_operator.controllers.incident.mutating import MutatingSlots
    from incident_operator.core.notices import channels_for
    from incident_operator.settings.config import Notifications, StatusPageConfig

    config = Notifications.model_validate(
        {
            "channels": [
                {
                    "name": "platform",
                    "type": "webhook",
                    "urlSecretRef": {"namespace": "incident-operator", "name": "hooks", "key": "platform"},
                    "events": ["automationPaused"],
                    "severities": ["P1"],
                },
                {
                    "name": "shop-team",
                    "type": "webhook",
                    "urlSecretRef": {"namespace": "incident-operator", "name": "hooks", "key": "shop-team"},
                    "events": ["automationPaused"],
                    "namespaces": ["shop"],
                },
                {
                    "name": "pay-team",
                    "type": "webhook",
                    "urlSecretRef": {"namespace": "incident-operator", "name": "hooks", "key": "pay-team"},
                    "events": ["automationPaused"],
                    "namespaces": ["pay"],
                },
            ]
        }
    )
    spec = IncidentSpec.model_validate({"title": "web down", "severity": "P3", "category": "availability"})
    view, page = IncidentView("shop", "web-down", spec, Phase.DETECTED), StatusPageConfig()
    store, clock = MemoryStore(), Clock()
    b = breaker_with(store, limits(per_namespace=2, cluster=2), clock)
    status = IncidentStatus()

    def tripped(namespace: str, uid: str) -> list[Record]:
        slots = MutatingSlots(b, namespace, "web-down", uid)
        decision = plan(plan_input(status, [SCALE], None, clock.now))
        _, records = asyncio.run(slots.reserve(status, decision))
        return records

    assert tripped("shop", "a") == []
    assert tripped("shop", "b") == []
    [namespace_trip] = tripped("shop", "c")  # the namespace's limit: its own channels only
    assert not namespace_trip.cluster_wide
    [notice] = notices(IncidentStatus(), IncidentStatus(), [namespace_trip], view)
    assert [c.name for c in channels_for(config, notice, view, page)] == ["shop-team"]
    store.state = State()
    b._read_at = float("-inf")
    assert tripped("pay", "d") == []
    assert tripped("other", "e") == []
    [cluster_trip] = tripped("shop", "f")  # cluster-wide: the platform hears of it too
    assert cluster_trip.cluster_wide
    [notice] = notices(IncidentStatus(), IncidentStatus(), [cluster_trip], view)
    assert [c.name for c in channels_for(config, notice, view, page)] == ["platform", "shop-team"]


# ----------------------------------------------------------------------------- the reservation in the API


class MemoryStore:
    """The ConfigMap as `BreakerStore` sees it, with resourceVersion checks; `other_writer`
    writes once just before the next write of the breaker (a person resuming, another replica)."""

    namespace = "incident-operator"
    name = "incident-operator-automation"

    def __init__(self) -> None:
        self.state = State()
        self.version: str | None = None
        self.writes = 0
        self.reads = 0
        self.other_writer: State | None = None

    async def read(self) -> Any:
        self.reads += 1
        from incident_operator.adapters.breakerstate import ReadState

        return ReadState(copy.deepcopy(self.state), self.version)

    async def write(self, state: State, resource_version: str | None) -> str | None:
        if self.other_writer is not None:
            self.state, self.other_writer = self.other_writer, None
            self.version = str(int(self.version or 0) + 1)
        if resource_version != self.version:
            return None
        self.writes += 1
        self.state = state
        self.version = str(int(self.version or 0) + 1)
        return self.version


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def breaker_with(store: MemoryStore, config: AutomationConfig, clock: Any) -> Breaker:
    def monotonic() -> float:  # the test's clock, in seconds: the cached copy ages with it
        return float((clock.now - T0).total_seconds())

    b = Breaker(None, config, "incident-operator", clock=clock, monotonic=monotonic)
    b.store = store  # type: ignore[assignment]
    return b


def test_a_reservation_decides_again_on_the_fresh_state_when_someone_else_wrote_first() -> None:
    """Another replica (during a handover) took the last slot after this one read the state: the
    grant's write conflicts, the state is read again, and the action is refused, not counted twice."""
    store, clock = MemoryStore(), Clock()
    b = breaker_with(store, limits(per_namespace=2), clock)

    async def scenario() -> None:
        assert (await b.reserve(req("a"))).granted
        other = breaker.Action(clock.now, "shop", "x/r1/scale/1")
        store.other_writer = dataclasses.replace(store.state, actions=(*store.state.actions, other))
        refused = await b.reserve(req("b"))
        assert not refused.granted
        assert refused.tripped

    asyncio.run(scenario())
    assert [a.key for a in store.state.actions] == ["a/r1/scale/1", "x/r1/scale/1"]
    assert set(store.state.trips) == {"namespace/shop"}


def test_a_resume_written_by_a_person_is_seen_once_the_copy_is_older_than_a_few_seconds() -> None:
    store, clock = MemoryStore(), Clock()
    b = breaker_with(store, limits(per_namespace=1), clock)

    async def scenario() -> None:
        assert (await b.reserve(req("a"))).granted
        assert not (await b.reserve(req("b"))).granted
        store.state = breaker.resume(store.state, clock.now, "alice")  # `kubectl incident automation resume`
        store.version = str(int(store.version or 0) + 1)
        clock.now += timedelta(seconds=10)
        assert (await b.reserve(req("b"))).granted

    asyncio.run(scenario())
    assert [a.key for a in store.state.actions] == ["b/r1/scale/1"]
    assert store.state.resumed_by == "alice"


def test_limits_hold_across_a_restart_because_the_window_lives_in_the_store() -> None:
    store, clock = MemoryStore(), Clock()
    config = limits(per_namespace=2)

    async def scenario() -> None:
        first = breaker_with(store, config, clock)
        assert (await first.reserve(req("a"))).granted
        assert (await first.reserve(req("b"))).granted
        restarted = breaker_with(store, config, clock)  # a new process, or the next leader
        refused = await restarted.reserve(req("c"))
        assert not refused.granted
        assert refused.scope == "namespace/shop"
        assert (await restarted.reserve(req("a"))).granted  # a's own attempt, asked again: counted once

    asyncio.run(scenario())
    assert len(store.state.actions) == 2


# ----------------------------------------------------------------------------- an incident loop


def test_a_loop_over_the_window_acts_on_nothing_more_says_so_and_runs_each_step_once_after_it() -> None:
    from tests.unit.test_incident_loop import Clock as LoopClock
    from tests.unit.test_incident_loop import assert_done_exactly_once, drive, fake_api, new_loop

    api, clock = fake_api(), LoopClock()
    store = MemoryStore()
    config = OperatorConfig(file=FileConfig(automation=limits(per_namespace=1, window=60)))
    loop = new_loop(api, clock, config)
    loop.slots = dataclasses.replace(loop.slots, breaker=breaker_with(store, config.file.automation, clock))

    async def until_paused() -> None:
        for _ in range(10):
            await loop.iterate()
            paused = find_condition(api.status().get("conditions") or [], "AutomationPaused")
            if paused and paused["status"] == "True":
                return
        raise AssertionError(api.status())

    asyncio.run(until_paused())
    assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web")]  # one slot: one action
    paused = find_condition(api.status()["conditions"], "AutomationPaused")
    assert paused is not None
    assert paused["reason"] == "CircuitOpen"
    assert "step restart-api (restart) waits" in paused["message"]
    assert "automation.maxMutatingActions.perNamespace (1)" in paused["message"]
    timeline = [e["type"] for e in api.status()["timeline"]]
    assert timeline.count("CircuitOpen") == 1
    assert timeline.count("AutomationTripped") == 1
    steps = api.status()["playbook"]["steps"]
    assert (steps[1]["state"], steps[1].get("attempts", 0)) == ("Pending", 0)

    for _ in range(3):  # asked again while the window is full: nothing acts, nothing more is said
        clock.now += timedelta(seconds=10)
        asyncio.run(loop.iterate())
    assert len(api.effects) == 1
    assert [e["type"] for e in api.status()["timeline"]].count("CircuitOpen") == 1

    # The window moves on one slot at a time: each step waits for its own, and runs once.
    for _ in range(3):
        clock.now += timedelta(seconds=61)
        asyncio.run(drive(loop, api, clock))
    assert_done_exactly_once(api)
    assert len(store.state.actions) <= 1
    resumed = find_condition(api.status()["conditions"], "AutomationPaused")
    assert resumed is not None
    assert (resumed["status"], resumed["reason"]) == ("False", "AutomationResumed")


def test_the_paused_gauge_counts_scopes_where_a_step_waits_now_and_is_read_at_scrape_time() -> None:
    from prometheus_client import REGISTRY

    from incident_operator.controllers.automation import WAITING_SECONDS

    store, clock = MemoryStore(), Clock()
    b = breaker_with(store, limits(per_namespace=1), clock)

    def scraped(scope: str) -> float | None:
        return REGISTRY.get_sample_value("incident_operator_automation_paused", {"scope": scope})

    async def scenario() -> None:
        assert (await b.reserve(req("a"))).granted
        assert scraped("namespace") == 0
        assert not (await b.reserve(req("b"))).granted
        assert scraped("namespace") == 1
        assert scraped("cluster") == 0
        clock.now += timedelta(seconds=WAITING_SECONDS + 1)  # nobody asked again: nothing waits
        assert scraped("namespace") == 0

    asyncio.run(scenario())


def test_a_run_is_in_flight_while_the_open_incidents_index_shows_that_very_run() -> None:
    from incident_operator.controllers.automation import in_flight_from
    from incident_operator.core.openlimit import OpenIncident, Rankings

    rankings = Rankings()
    rankings.put("shop", "u1", OpenIncident("web-down", "u1", T0, running=True, run="r2"))
    in_flight = in_flight_from(rankings.of)
    assert in_flight("shop", "u1", "r2") is True
    assert in_flight("shop", "u1", "r1") is False  # an earlier run (a re-fire started r2)
    assert in_flight("other", "u1", "r2") is False
    rankings.put("shop", "u1", None)  # resolved, closed or deleted
    assert in_flight("shop", "u1", "r2") is False
    # The storm guard frees the slot of a run no longer in flight once RUN_GRACE has passed.
    config, state = limits(runs=1), State()
    state, _ = take(state, req("u1"), config, T0, in_flight=in_flight)
    _, later = take(
        state, req("u9"), config, T0 + breaker.RUN_GRACE + timedelta(seconds=1), in_flight=in_flight
    )
    assert later.granted


# ----------------------------------------------------------------------------- state that cannot be kept


class FailingStore(MemoryStore):
    """A store whose writes fail with `error` (None: they work again)."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__()
        self.error = error

    async def write(self, state: State, resource_version: str | None) -> str | None:
        if self.error is not None:
            raise self.error
        return await super().write(state, resource_version)


def breaker_errors(reason: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("incident_operator_breaker_errors_total", {"reason": reason}) or 0.0


def test_state_that_cannot_be_written_refuses_the_action_saying_why_and_counts_it() -> None:
    from incident_operator.adapters.kube import ApiException

    clock = Clock()
    cases = [
        (ApiException(status=403, reason="Forbidden"), "Forbidden", "the operator's Role must grant"),
        (ApiException(status=404, reason="Not Found"), "NotFound", "does namespace incident-operator exist"),
        (ApiException(status=413, reason="Request Entity Too Large"), "TooLarge", "HTTP 413"),
        (breaker.StateTooLarge("1000001 bytes"), "TooLarge", "1000001 bytes"),
    ]
    for error, kind, words in cases:
        store = FailingStore(error)
        b = breaker_with(store, limits(), clock)
        before = breaker_errors(kind)
        verdict = asyncio.run(b.reserve(req("a")))
        assert (verdict.granted, verdict.reason) == (False, Reason.BREAKER_UNAVAILABLE)
        assert "ConfigMap incident-operator/incident-operator-automation" in verdict.message
        assert words in verdict.message
        assert verdict.retry_at == clock.now + breaker.RECHECK
        assert breaker_errors(kind) == before + 1
        store.error = None  # fixed: the next ask reads afresh and is granted
        assert asyncio.run(b.reserve(req("a"))).granted
        assert [a.key for a in store.state.actions] == ["a/r1/scale/1"]


def test_writers_contending_every_time_refuse_the_action_instead_of_raising() -> None:
    class Contending(MemoryStore):
        async def write(self, state: State, resource_version: str | None) -> str | None:
            self.version = str(int(self.version or 0) + 1)  # someone else wrote first, always
            return None

    store, clock = Contending(), Clock()
    before = breaker_errors("Contended")
    verdict = asyncio.run(breaker_with(store, limits(), clock).reserve(req("a")))
    assert (verdict.granted, verdict.reason) == (False, Reason.BREAKER_UNAVAILABLE)
    assert "another writer came first 8 times" in verdict.message
    assert breaker_errors("Contended") == before + 1


def test_a_config_map_deleted_since_it_was_read_is_read_again_and_created() -> None:
    from types import SimpleNamespace

    from incident_operator.adapters.breakerstate import BreakerStore
    from incident_operator.adapters.kube import ApiException

    class Core:
        def __init__(self) -> None:
            self.created: list[dict[str, Any]] = []

        def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
            raise ApiException(status=404, reason="Not Found")

        def replace_namespaced_config_map(self, name: str, namespace: str, body: Any) -> Any:
            raise ApiException(status=404, reason="Not Found")  # deleted while the copy was cached

        def create_namespaced_config_map(self, namespace: str, body: Any) -> Any:
            self.created.append(body)
            return SimpleNamespace(metadata=SimpleNamespace(resource_version="7"))

    class FakeKube:
        def __init__(self) -> None:
            self.core = Core()

        async def call(self, fn: Any, *args: Any) -> Any:
            return fn(*args)

    kube, clock = FakeKube(), Clock()
    b = Breaker(None, limits(), "incident-operator", clock=clock, monotonic=lambda: 0.0)
    b.store = BreakerStore(kube, "incident-operator", "incident-operator-automation")
    b._state, b._version, b._read_at = State(), "3", 0.0  # a cached copy, fresh
    assert asyncio.run(b.reserve(req("a"))).granted
    assert len(kube.core.created) == 1
    assert breaker.digest("a/r1/scale/1") in kube.core.created[0]["data"]["state"]


def test_a_loop_whose_breaker_cannot_keep_its_state_stalls_visibly_acts_on_nothing_then_goes_on() -> None:
    from incident_operator.adapters.kube import ApiException
    from tests.unit.test_incident_loop import Clock as LoopClock
    from tests.unit.test_incident_loop import assert_done_exactly_once, drive, fake_api, new_loop

    api, clock = fake_api(), LoopClock()
    store = FailingStore(ApiException(status=403, reason="Forbidden"))
    config = OperatorConfig(file=FileConfig(automation=limits()))
    loop = new_loop(api, clock, config)
    loop.slots = dataclasses.replace(loop.slots, breaker=breaker_with(store, config.file.automation, clock))
    deferred = sample_value("incident_operator_actions_deferred_total", {"reason": "BreakerUnavailable"})

    async def until_stalled() -> None:
        for _ in range(10):
            await loop.iterate()
            stalled = find_condition(api.status().get("conditions") or [], "Stalled")
            if stalled and stalled["status"] == "True":
                return
        raise AssertionError(api.status())

    asyncio.run(until_stalled())
    assert api.effects == []  # nothing acted unrecorded
    stalled = find_condition(api.status()["conditions"], "Stalled")
    assert stalled is not None
    assert stalled["reason"] == "BreakerUnavailable"
    assert "step scale-web (scale) waits" in stalled["message"]
    assert "the operator's Role must grant get, create and update" in stalled["message"]
    for _ in range(3):  # asked again while it fails: said once
        clock.now += timedelta(seconds=10)
        asyncio.run(loop.iterate())
    assert api.effects == []
    assert [c[1] for c in api.called("event")].count("BreakerUnavailable") == 1
    assert [e["type"] for e in api.status()["timeline"]].count("BreakerUnavailable") == 1
    assert sample_value("incident_operator_actions_deferred_total", {"reason": "BreakerUnavailable"}) == (
        deferred + 1
    )
    store.error = None  # the Role fixed
    clock.now += timedelta(seconds=10)
    asyncio.run(drive(loop, api, clock))
    assert_done_exactly_once(api)
    cleared = find_condition(api.status()["conditions"], "Stalled")
    assert cleared is not None
    assert (cleared["status"], cleared["reason"]) != ("True", "BreakerUnavailable")


def sample_value(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


# ----------------------------------------------------------------------------- crashes and races


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("n", range(1, 5))
def test_killed_between_the_reservation_and_any_status_write_each_action_is_counted_once(
    n: int, when: str
) -> None:
    """Three mutating steps (scale, restart, scale) against exactly three slots: killed at any
    status write (a slot reserved, the step's Running status lost or unanswered) and restarted,
    each step asks again with the same attempt, is granted without counting twice, and runs once.
    Counted twice, the last step would wait for the window."""
    from tests.unit.fake_kube import Dropped
    from tests.unit.test_incident_loop import RUN_BOUND_S, assert_done_exactly_once, fake_api, new_loop
    from tests.unit.test_incident_loop import Clock as LoopClock

    api, clock, store = fake_api(), LoopClock(), MemoryStore()
    config = OperatorConfig(file=FileConfig(automation=limits(per_namespace=3, window=3600)))

    async def run_until_settled() -> None:
        loop = new_loop(api, clock, config)  # a restart: a new loop and a new breaker, one store
        loop.slots = dataclasses.replace(
            loop.slots, breaker=breaker_with(store, config.file.automation, clock)
        )
        await asyncio.wait_for(
            loop.run(lambda: bool(api.status().get("settled")), asyncio.Event()), timeout=RUN_BOUND_S
        )

    async def scenario() -> None:
        api.drop_at = (n, when)
        with pytest.raises(Dropped):
            await run_until_settled()
        api.drop_at = None
        clock.now += timedelta(seconds=10)
        await run_until_settled()

    asyncio.run(scenario())
    assert_done_exactly_once(api)
    assert len(store.state.actions) == 3
    assert not store.state.trips


def test_two_replicas_competing_for_the_last_slot_one_gets_it() -> None:
    """Two processes (a leader handover) reserve at once, each from its own copy: the store's
    resourceVersion lets one write; the other reads again and is refused."""

    class Yielding(MemoryStore):
        async def read(self) -> Any:
            await asyncio.sleep(0)
            return await super().read()

        async def write(self, state: State, resource_version: str | None) -> str | None:
            await asyncio.sleep(0)
            return await super().write(state, resource_version)

    store, clock = Yielding(), Clock()
    config = limits(per_namespace=2)

    async def scenario() -> list[breaker.Verdict]:
        assert (await breaker_with(store, config, clock).reserve(req("a"))).granted
        first, second = breaker_with(store, config, clock), breaker_with(store, config, clock)
        return list(await asyncio.gather(first.reserve(req("b")), second.reserve(req("c"))))

    verdicts = asyncio.run(scenario())
    assert store.reads >= 3  # both read the state with one slot free, then both tried to take it
    assert sorted(v.granted for v in verdicts) == [False, True]
    assert len(store.state.actions) == 2


class GatedStore(MemoryStore):
    """A store whose writes wait for the test: `entered` is set when a write starts, `go` lets
    it land. `sizes`: the actions each landed write held."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.go = asyncio.Event(), asyncio.Event()
        self.sizes: list[int] = []

    async def write(self, state: State, resource_version: str | None) -> str | None:
        self.entered.set()
        await self.go.wait()
        self.go.clear()
        written = await super().write(state, resource_version)
        self.sizes.append(len(state.actions))
        return written


async def until_queued(b: Breaker, n: int) -> None:
    """Let the tasks just created run until `n` reservations wait in the breaker's queue."""
    await until(lambda: len(b._queue) >= n, timeout=5, what=f"{n} reservations queued")


async def batch_behind_a_write(b: Breaker, store: GatedStore) -> list[asyncio.Task[breaker.Verdict]]:
    """x's write lands, then a, b and c (queued meanwhile) go in one write, in flight on return."""
    first = asyncio.create_task(b.reserve(req("x")))
    await store.entered.wait()
    store.entered.clear()
    batch = [asyncio.create_task(b.reserve(req(uid))) for uid in ("a", "b", "c")]
    store.go.set()
    assert (await first).granted
    await store.entered.wait()  # a writes for a, b and c
    store.entered.clear()
    return batch


def test_reservations_asked_while_one_is_written_go_together_in_the_next_write_in_order() -> None:
    """A storm of mutating steps: what arrives while a write is in flight is decided in order of
    arrival and written once, and the limit holds within that write."""
    store, clock = GatedStore(), Clock()
    b = breaker_with(store, limits(per_namespace=3), clock)

    async def scenario() -> list[breaker.Verdict]:
        first = asyncio.create_task(b.reserve(req("a")))
        await store.entered.wait()  # a's write is in flight
        store.entered.clear()
        queued = [asyncio.create_task(b.reserve(req(uid))) for uid in ("b", "c", "d")]
        store.go.set()
        assert (await first).granted
        await store.entered.wait()  # b, c and d: one write
        store.go.set()
        return list(await asyncio.gather(*queued))

    verdicts = asyncio.run(scenario())
    assert [v.granted for v in verdicts] == [True, True, False]
    assert verdicts[2].reason == Reason.CIRCUIT_OPEN
    assert verdicts[2].tripped
    assert store.writes == 2
    assert store.sizes == [1, 3]
    assert [a.key.split("/")[0] for a in store.state.actions] == ["a", "b", "c"]
    assert set(store.state.trips) == {"namespace/shop"}


def test_a_reservation_cancelled_before_it_was_decided_is_never_counted() -> None:
    store, clock = GatedStore(), Clock()
    b = breaker_with(store, limits(), clock)

    async def scenario() -> None:
        first = asyncio.create_task(b.reserve(req("a")))
        await store.entered.wait()
        store.entered.clear()
        gone = asyncio.create_task(b.reserve(req("b")))
        kept = asyncio.create_task(b.reserve(req("c")))
        await until_queued(b, 2)  # both queued behind a's write
        gone.cancel()
        store.go.set()
        assert (await first).granted
        await store.entered.wait()
        store.go.set()
        assert (await kept).granted
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(scenario())
    assert [a.key.split("/")[0] for a in store.state.actions] == ["a", "c"]


def test_a_writer_cancelled_mid_write_leaves_the_others_to_the_next_waiter() -> None:
    store, clock = GatedStore(), Clock()
    b = breaker_with(store, limits(), clock)

    async def scenario() -> list[breaker.Verdict]:
        batch = await batch_behind_a_write(b, store)
        batch[0].cancel()  # killed while that write is in flight: nothing landed
        with pytest.raises(asyncio.CancelledError):
            await batch[0]
        await store.entered.wait()  # b writes for b and c
        store.go.set()
        return list(await asyncio.gather(*batch[1:]))

    verdicts = asyncio.run(scenario())
    assert [v.granted for v in verdicts] == [True, True]
    assert [a.key.split("/")[0] for a in store.state.actions] == ["x", "b", "c"]
    assert store.sizes == [1, 3]


def test_a_caller_cancelled_while_its_write_is_in_flight_may_be_counted_and_the_others_are_told() -> None:
    store, clock = GatedStore(), Clock()
    b = breaker_with(store, limits(per_namespace=10), clock)

    async def scenario() -> list[breaker.Verdict]:
        batch = await batch_behind_a_write(b, store)
        batch[1].cancel()  # b's caller goes while the write carrying it is in flight
        store.go.set()
        with pytest.raises(asyncio.CancelledError):
            await batch[1]
        return [await batch[0], await batch[2]]

    verdicts = asyncio.run(scenario())
    assert [v.granted for v in verdicts] == [True, True]
    assert [a.key.split("/")[0] for a in store.state.actions] == ["x", "a", "b", "c"]  # b: counted


def test_a_long_queue_is_written_a_batch_at_a_time_and_everyone_is_answered() -> None:
    from incident_operator.controllers.automation import BATCH

    store, clock = MemoryStore(), Clock()
    b = breaker_with(store, limits(per_namespace=1000, cluster=1000), clock)
    n = BATCH + 6

    async def scenario() -> list[breaker.Verdict]:
        async with b._lock:  # a write in flight: everyone queues
            asked = [asyncio.create_task(b.reserve(req(f"u{i}"))) for i in range(n)]
            await until_queued(b, n)
        return list(await asyncio.gather(*asked))

    verdicts = asyncio.run(scenario())
    assert all(v.granted for v in verdicts)
    assert store.writes == 2  # BATCH, then the rest
    assert [a.key.split("/")[0] for a in store.state.actions] == [f"u{i}" for i in range(n)]


def test_a_failed_write_refuses_every_reservation_it_carried_and_counts_once() -> None:
    from incident_operator.adapters.kube import ApiException

    store, clock = GatedStore(), Clock()
    b = breaker_with(store, limits(), clock)

    async def failing(state: State, resource_version: str | None) -> str | None:
        raise ApiException(status=403, reason="Forbidden")

    async def scenario() -> list[breaker.Verdict]:
        first = asyncio.create_task(b.reserve(req("a")))
        await store.entered.wait()
        store.write = failing  # type: ignore[method-assign]
        queued = [asyncio.create_task(b.reserve(req(uid))) for uid in ("b", "c")]
        store.go.set()
        assert (await first).granted
        return list(await asyncio.gather(*queued))

    before = breaker_errors("Forbidden")
    verdicts = asyncio.run(scenario())
    assert [(v.granted, v.reason) for v in verdicts] == [(False, Reason.BREAKER_UNAVAILABLE)] * 2
    assert breaker_errors("Forbidden") == before + 1
    assert [a.key.split("/")[0] for a in store.state.actions] == ["a"]


# ----------------------------------------------------------------------------- giving slots back


def test_an_attempt_that_acted_on_nothing_gives_back_its_slots_and_its_runs_storm_guard_slot() -> None:
    config = limits(per_namespace=3, runs=1)
    step = Request("shop", "a", "r1", "restart", 1, "pb", targets=("Deployment/web", "Deployment/api"))
    state, verdict = take(State(), step, config, T0)
    assert verdict.granted
    assert len(state.actions) == 2
    assert len(state.runs) == 1
    state, _ = take(state, req("other", playbook="pb2"), config, T0)  # another action stays
    released = breaker.release(state, step)
    assert released is not None
    assert [a.key for a in released.actions] == ["other/r1/scale/1"]
    assert [r.uid for r in released.runs] == ["other"]  # run a never acted: no storm-guard slot
    assert breaker.release(released, step) is None  # asked twice: nothing more to write
    # another run of the Playbook may act now (the storm guard's one slot is free)
    _, verdict = take(released, Request("shop", "b", "r1", "restart", 1, "pb"), config, T0)
    assert verdict.granted


def test_a_run_that_acted_before_keeps_its_storm_guard_slot_when_a_later_attempt_gives_back() -> None:
    config = limits(per_namespace=3, runs=1)
    first = Request("shop", "a", "r1", "scale", 1, "pb")
    state, _ = take(State(), first, config, T0)
    later = Request("shop", "a", "r1", "restart", 1, "pb", acted=True)
    state, verdict = take(state, later, config, T0)
    assert verdict.granted
    released = breaker.release(state, later)
    assert released is not None
    assert [a.key for a in released.actions] == [first.key]  # the scale that acted stays counted
    assert len(released.runs) == 1
    restore = dataclasses.replace(first, restores=True)
    assert breaker.release(state, restore) is None  # a scale revert is never given back


def test_giving_back_slots_is_written_with_the_resource_version() -> None:
    store, clock = MemoryStore(), Clock()
    config = limits(per_namespace=2)
    b = breaker_with(store, config, clock)
    step = Request("shop", "a", "r1", "restart", 1, "pb")
    assert asyncio.run(b.reserve(step)).granted
    store.other_writer = breaker.reserve(store.state, req("other"), config, clock.now)[0]  # another replica
    assert asyncio.run(b.release(step))
    assert [a.key for a in store.state.actions] == ["other/r1/scale/1"]  # the other's slot is kept
    assert asyncio.run(b.release(step))  # again: nothing to write
    assert store.writes == 2
