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


def test_the_stored_form_round_trips_and_a_broken_one_reads_as_empty() -> None:
    config, state = limits(per_namespace=1), State()
    state, _ = take(state, req("a"), config, T0)
    state, _ = take(state, req("b"), config, T0)
    state = dataclasses.replace(state, resumed_at=T0, resumed_by="bob")
    assert breaker.from_json(breaker.to_json(state)) == state
    for broken in ("", "not json", "[]", '{"actions": [[1]], "trips": 3}'):
        assert breaker.from_json(broken) == State()


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


# ----------------------------------------------------------------------------- the reservation in the API


class MemoryStore:
    """The ConfigMap as `BreakerStore` sees it, with resourceVersion checks; `other_writer`
    writes once just before the next write of the breaker (a person resuming, another replica)."""

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
