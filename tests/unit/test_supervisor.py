"""The supervisor starts a loop for an incident with work, wakes it on events, stops it when the
incident settles or goes, reports an unreadable incident once, and stops everything in time."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from incident_operator.adapters import metrics
from incident_operator.controllers import supervisor as supervisor_module
from incident_operator.controllers.supervisor import LiveBody, Supervisor
from incident_operator.core.openlimit import OpenIncident, Rankings
from incident_operator.core.planner import Record, events, posts_event
from incident_operator.core.planner.model import EVENT_MESSAGE_MAX
from incident_operator.core.repeats import History
from incident_operator.runtime import handlers, incidents
from incident_operator.runtime.context import RuntimeContext
from incident_operator.settings.config import FileConfig, Limits, OperatorConfig
from tests.polling import until


def body(
    uid: str = "u1",
    *,
    phase: str | None = None,
    settled: bool = False,
    version: str = "1",
    severity: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if settled:
        status["settled"] = True
    return {
        "metadata": {"uid": uid, "name": f"inc-{uid}", "namespace": "ns", "resourceVersion": version},
        "spec": {"title": "t", **({"severity": severity} if severity else {})},
        "status": status,
    }


@dataclass
class Scope:
    """What `handlers.created_by_intake` reads of an incident watch: its scope, whether its first
    listing is done, and what it remembers (`watch.remember`)."""

    namespace: str | None
    synced: bool
    remembered: list[str] = field(default_factory=list)

    @property
    def watch(self) -> Scope:
        return self

    def remember(self, body: Mapping[str, Any]) -> None:
        self.remembered.append(body["metadata"]["uid"])


class FakeLoop:
    """Records how it was run; waits for wakes like the engine's loop does."""

    namespace = "ns"

    def __init__(
        self, live: LiveBody, *, stubborn: bool = False, first_plan: asyncio.Event | None = None
    ) -> None:
        self.live = live
        self.runs = 0
        self.wakes = 0
        self.closed = False
        self.stubborn = stubborn  # ignores stop requests (a step that never ends)
        self.first_plan = first_plan  # its first plan ends when this is set (None: at once)
        self.planning = False
        self.vanish = False  # its first plan ends the loop without saying so (deleted meanwhile)

    @property
    def finished(self) -> bool:
        return self.closed

    def concerned_by(self, playbook: str) -> bool:
        return playbook == "mine"

    async def run(
        self, stopped: Callable[[], bool], wake: asyncio.Event, planned: Callable[[], None] = lambda: None
    ) -> None:
        self.runs += 1
        if self.first_plan is not None and self.runs == 1:
            self.planning = True
            await self.first_plan.wait()
            self.planning = False
            if self.vanish:
                self.closed = True
                return
        planned()
        while self.stubborn or not stopped():
            wake.clear()
            await wake.wait()
            self.wakes += 1
            if (self.live.get("status") or {}).get("phase") == "Closed":
                self.closed = True
                return


class Harness:
    def __init__(self, *, stubborn: bool = False, fail: bool = False, planning: bool = False) -> None:
        """`planning`: each loop's first plan goes on until `plans[uid]` is set."""
        self.loops: dict[str, FakeLoop] = {}
        self.reported: list[tuple[str, str]] = []
        self.plans: dict[str, asyncio.Event] = {}

        def factory(uid: str, live: LiveBody) -> FakeLoop:
            if fail:
                raise ValueError("status.phase: not a phase")
            first_plan = self.plans.setdefault(uid, asyncio.Event()) if planning else None
            self.loops[uid] = FakeLoop(live, stubborn=stubborn, first_plan=first_plan)
            return self.loops[uid]

        def unreadable(obj: Mapping[str, Any], problem: str) -> None:
            self.reported.append((obj["metadata"]["uid"], problem))

        self.supervisor = Supervisor(factory, unreadable)


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@in_loop
async def test_a_loop_starts_for_an_open_incident_and_not_for_a_settled_one() -> None:
    h = Harness()
    h.supervisor.observe(None, body("open"))
    h.supervisor.observe(None, body("done", phase="Resolved", settled=True))
    h.supervisor.observe(None, body("gone", phase="Closed"))
    await settle()
    assert set(h.loops) == {"open"}
    assert len(h.supervisor) == 1
    await h.supervisor.stop(timeout=1)


@in_loop
async def test_events_wake_the_loop_with_the_latest_body_and_settling_stops_it() -> None:
    h = Harness()
    h.supervisor.observe("ADDED", body(version="1"))
    await settle()
    loop = h.loops["u1"]
    h.supervisor.observe("MODIFIED", body(phase="Mitigating", version="2"))
    await settle()
    assert loop.wakes == 1
    assert loop.live["metadata"]["resourceVersion"] == "2"
    h.supervisor.observe("MODIFIED", body(phase="Resolved", settled=True, version="3"))
    await settle()
    assert len(h.supervisor) == 0  # the loop exited: nothing to do
    h.supervisor.observe("MODIFIED", body(phase="Resolved", version="4"))  # e.g. a person closes it
    await settle()
    assert len(h.supervisor) == 1
    assert h.loops["u1"] is not loop
    await h.supervisor.stop(timeout=1)


@in_loop
async def test_a_stop_request_overtaken_by_new_work_keeps_the_same_loop() -> None:
    h = Harness()
    h.supervisor.observe("ADDED", body())
    await settle()
    loop = h.loops["u1"]
    h.supervisor.observe("MODIFIED", body(phase="Resolved", settled=True, version="2"))
    h.supervisor.observe("MODIFIED", body(phase="Resolved", version="3"))  # before the loop looked
    await settle()
    assert h.loops["u1"] is loop
    assert len(h.supervisor) == 1
    await h.supervisor.stop(timeout=1)


@in_loop
async def test_deletion_stops_the_loop_and_closing_ends_it_for_good() -> None:
    h = Harness()
    h.supervisor.observe("ADDED", body("a"))
    h.supervisor.observe("ADDED", body("b"))
    await settle()
    h.supervisor.observe("DELETED", body("a"))
    h.supervisor.observe("MODIFIED", body("b", phase="Closed", version="2"))
    await settle()
    assert len(h.supervisor) == 0
    assert h.loops["b"].closed


@in_loop
async def test_playbook_changes_wake_only_concerned_loops() -> None:
    h = Harness()
    h.supervisor.observe("ADDED", body())
    await settle()
    h.supervisor.wake_concerned("ns", "other")
    h.supervisor.wake_concerned("elsewhere", "mine")
    await settle()
    assert h.loops["u1"].wakes == 0
    h.supervisor.wake_concerned("ns", "mine")
    await settle()
    assert h.loops["u1"].wakes == 1
    await h.supervisor.stop(timeout=1)


@in_loop
async def test_an_unreadable_incident_is_reported_once_per_version_and_others_go_on() -> None:
    h = Harness(fail=True)
    h.supervisor.observe("ADDED", body(version="1"))
    h.supervisor.observe("MODIFIED", body(version="1"))
    assert h.reported == [("u1", "ValueError: status.phase: not a phase")]
    h.supervisor.observe("MODIFIED", body(version="2"))  # changed: looked at again
    assert len(h.reported) == 2
    assert len(h.supervisor) == 0


@in_loop
async def test_stop_cancels_loops_that_do_not_finish_within_the_bound() -> None:
    h = Harness(stubborn=True)
    for uid in ("a", "b", "c"):
        h.supervisor.observe("ADDED", body(uid))
    await settle()
    started = asyncio.get_running_loop().time()
    await h.supervisor.stop(timeout=0.2)
    assert asyncio.get_running_loop().time() - started < 2
    assert len(h.supervisor) == 0
    h.supervisor.observe("ADDED", body("late"))  # nothing starts once closing
    assert len(h.supervisor) == 0


@pytest.mark.parametrize(
    ("record", "posted"),
    [
        (Record("Detected", "P2 opened"), True),
        (Record("PlaybookStarted", "pb"), True),
        (Record("StepStarted", "step a started"), False),
        (Record("StepSucceeded", "step a: ok"), True),
        (Record("Monitoring", "all steps done"), False),
        (Record("Acknowledged", "by the playbook"), False),
        (Record("Acknowledged", "by alice", actor="alice"), True),
        (Record("StepRetrying", "failed", warning=True), True),
        (Record("Resolved", "resolved"), True),
    ],
)
def test_which_records_become_events(record: Record, posted: bool) -> None:
    assert posts_event(record) is posted


def test_the_normal_records_of_one_write_are_one_event_and_each_warning_its_own() -> None:
    records = [
        Record("Detected", "P2 opened"),
        Record("StepStarted", "step a started"),  # timeline only: not in the Event
        Record("StepRetrying", "attempt 1 failed", warning=True),
        Record("StepSucceeded", "step a: ok"),
        Record("Monitoring", "all steps done"),
        Record("Resolved", "resolved: health held"),
    ]
    assert [(e.reason, e.message, e.warning) for e in events(records)] == [
        ("StepRetrying", "attempt 1 failed", True),
        ("Resolved", "P2 opened | step a: ok | resolved: health held", False),
    ]
    alone = [Record("Resolved", "resolved")]
    assert events(alone) == alone  # one record: as it is
    assert events([Record("StepStarted", "x")]) == []


def test_a_folded_events_message_is_bounded_keeping_its_start_and_its_end() -> None:
    records = [Record("Detected", "d" * 800), Record("Resolved", "r" * 800)]
    (event,) = events(records)
    assert event.reason == "Resolved"
    assert len(event.message) == EVENT_MESSAGE_MAX
    assert event.message.startswith("ddd")
    assert event.message.endswith("rrr")
    assert "..." in event.message


@in_loop
async def test_an_incident_that_frees_a_slot_under_the_cap_wakes_the_one_waiting_first() -> None:
    """An Incident event (`incidents.observe_incident`): after the supervisor saw the event, it wakes the
    incidents of that namespace whose place under `limits.maxOpenIncidentsPerNamespace` changed
    (from the open-incidents index, updated first), and no other."""
    h = Harness()
    for uid in ("u1", "u2", "u3"):
        h.supervisor.observe("ADDED", body(uid))
    await settle()
    ctx = RuntimeContext.__new__(RuntimeContext)
    ctx.config = OperatorConfig(file=FileConfig(limits=Limits(maxOpenIncidentsPerNamespace=1)))
    ctx.supervisor = h.supervisor
    ctx.open_incidents = metrics.OpenIncidents()
    ctx.action_items = metrics.OpenActionItems()
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    ctx.history = History()
    ctx.open_ranks = Rankings()  # as the watch events fed it: u1 running, u2 and u3 wait
    ctx.open_ranks.put("ns", "u1", OpenIncident("inc-u1", "u1", t0, running=True, run="r1"))
    ctx.open_ranks.put("ns", "u2", OpenIncident("inc-u2", "u2", t0 + timedelta(seconds=1), waiting=True))
    ctx.open_ranks.put("ns", "u3", OpenIncident("inc-u3", "u3", t0 + timedelta(seconds=2), waiting=True))
    ctx.open_ranks.put("ns", "u1", None)  # u1 resolved: the indexer took it out
    incidents.observe_incident(
        ctx, h.supervisor, "MODIFIED", body("u1", phase="Resolved", settled=True, version="2")
    )
    await settle()
    assert h.loops["u2"].wakes == 1  # its slot is free: it plans, and starts
    assert h.loops["u3"].wakes == 0  # still waits: nothing to say again
    await h.supervisor.stop(timeout=1)


@in_loop
async def test_deleting_an_incident_frees_its_slot_and_wakes_the_one_waiting_first() -> None:
    """A deleted Incident's event takes it out of the namespace's ranking, and the next waiting
    incident is woken."""
    h = Harness()
    for uid in ("u1", "u2", "u3"):
        h.supervisor.observe("ADDED", body(uid))
    await settle()
    ctx = RuntimeContext.__new__(RuntimeContext)
    ctx.config = OperatorConfig(file=FileConfig(limits=Limits(maxOpenIncidentsPerNamespace=1)))
    ctx.supervisor = h.supervisor
    ctx.open_incidents = metrics.OpenIncidents()
    ctx.action_items = metrics.OpenActionItems()
    ctx.open_ranks = Rankings()
    ctx.history = History()
    waits = {"type": "AutomationPaused", "status": "True", "reason": "OpenIncidentLimit", "message": "m"}
    for n, (uid, status) in enumerate(
        [
            ("u1", {"playbook": {"name": "pb", "runId": "r1", "steps": []}}),
            ("u2", {"conditions": [waits]}),
            ("u3", {"conditions": [waits]}),
        ]
    ):
        found = body(uid)
        meta = {**found["metadata"], "creationTimestamp": f"2026-11-30T09:00:0{n}Z"}
        incidents.index_incident(  # as every watch event (or the start listing) does
            ctx, None, {"metadata": {**meta, "name": f"inc-{uid}"}, "spec": {"title": "t"}, "status": status}
        )
    incidents.observe_incident(ctx, h.supervisor, "DELETED", body("u1", version="2"))
    await settle()
    assert h.loops["u2"].wakes == 1  # u1's slot is free: u2 plans, and starts
    assert h.loops["u3"].wakes == 0
    assert [e.uid for e in ctx.open_ranks.of("ns")] == ["u2", "u3"]
    await h.supervisor.stop(timeout=1)


@in_loop
async def test_an_incident_the_intake_created_starts_at_once_and_its_watch_event_adds_no_loop() -> None:
    """The intake hands the Incident it created to the runtime (`handlers.created_by_intake`):
    indexed and its loop started without waiting for the watch event; the watch event comes
    later with the same body and finds the loop running. Not before the leader's watch has a
    supervisor (a standby's intake) and listed the namespace's incidents (its repeats and the
    cap count them all), not in a namespace this operator does not watch, not for an incident
    the watch showed first (settled or deleted since)."""
    h = Harness()
    ctx = RuntimeContext.__new__(RuntimeContext)
    ctx.config = OperatorConfig(namespaces=("ns",))
    ctx.supervisor = None
    ctx.open_incidents = metrics.OpenIncidents()
    ctx.action_items = metrics.OpenActionItems()
    ctx.open_ranks = Rankings()
    ctx.history = History()
    ctx.incident_streams = [Scope("ns", synced=False)]  # type: ignore[list-item]
    handlers.created_by_intake(ctx, body("u1"))  # no supervisor (a standby): the leader's watch
    assert list(ctx.open_ranks.of("ns")) == []
    ctx.supervisor = h.supervisor
    handlers.created_by_intake(ctx, body("u1"))  # the watch's first listing is not done: left to it
    assert list(ctx.open_ranks.of("ns")) == []
    scope = Scope("ns", synced=True)
    ctx.incident_streams = [scope]  # type: ignore[list-item]
    elsewhere = body("u2")
    elsewhere["metadata"]["namespace"] = "other"
    handlers.created_by_intake(ctx, elsewhere)
    handlers.created_by_intake(ctx, body("u1"))
    await settle()
    assert set(h.loops) == {"u1"}
    assert scope.remembered == ["u1"]  # a listing after a 410 that lacks it says it is gone
    started = h.loops["u1"]
    assert started.runs == 1
    assert [e.uid for e in ctx.open_ranks.of("ns")] == ["u1"]
    incidents.observe_incident(ctx, h.supervisor, "ADDED", body("u1"))
    await settle()
    assert h.loops["u1"] is started  # the same loop, woken: no second one
    assert (started.runs, len(h.supervisor)) == (1, 1)
    assert [e.uid for e in ctx.open_ranks.of("ns")] == ["u1"]
    await h.supervisor.stop(timeout=1)


@in_loop
async def test_the_intake_starts_nothing_for_an_incident_the_watch_showed_first() -> None:
    """The create's response can reach the intake after the watch event: the incident may have
    run and settled, or been deleted, since. Its older body must not start a loop again."""
    h = Harness()
    ctx = RuntimeContext.__new__(RuntimeContext)
    ctx.config = OperatorConfig()
    ctx.supervisor = h.supervisor
    ctx.incident_streams = [Scope(None, synced=True)]  # type: ignore[list-item]
    ctx.open_incidents = metrics.OpenIncidents()
    ctx.action_items = metrics.OpenActionItems()
    ctx.open_ranks = Rankings()
    ctx.history = History()
    incidents.observe_incident(ctx, h.supervisor, "ADDED", body("u1"))
    incidents.observe_incident(
        ctx, h.supervisor, "MODIFIED", body("u1", phase="Resolved", settled=True, version="3")
    )
    incidents.observe_incident(ctx, h.supervisor, "ADDED", body("u2"))
    incidents.observe_incident(ctx, h.supervisor, "DELETED", body("u2", version="2"))
    await settle()
    assert len(h.supervisor) == 0  # u1 settled, u2 gone: their loops stopped
    first = dict(h.loops)
    handlers.created_by_intake(ctx, body("u1"))  # the create's response, older than what was seen
    handlers.created_by_intake(ctx, body("u2"))
    await settle()
    assert len(h.supervisor) == 0
    assert h.loops == first  # no loop made again
    await h.supervisor.stop(timeout=1)


# ----------------------------------------------------------------------------- admission


def planning(h: Harness) -> list[str]:
    return sorted(uid for uid, loop in h.loops.items() if loop.planning)


@pytest.fixture
def three_places(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "ADMITTED_AT_ONCE", 3)
    monkeypatch.setattr(supervisor_module, "ADMISSION_HOLD_S", 60.0)


@pytest.mark.usefixtures("three_places")
@in_loop
async def test_a_burst_of_new_loops_plans_a_bounded_number_at_a_time_in_arrival_order() -> None:
    """Thousands of new incidents at once (a restart's listing, a flood of alerts) plan
    ADMITTED_AT_ONCE at a time, each wave as bounded as the first: the next waiting one is
    admitted as a first plan ends."""
    h = Harness(planning=True)
    for i in range(7):
        h.supervisor.observe(None, body(f"u{i}"))
    await settle()
    waves = [planning(h)]
    for done in ("u1", "u0", "u3", "u2", "u4"):
        h.plans[done].set()
        expected = min(3, 7 - len(waves))  # first plans not ended yet, at most three of them
        await until(
            lambda: done not in planning(h) and len(planning(h)) == expected,  # noqa: B023
            timeout=5,
            what="the next admitted",
        )
        waves.append(planning(h))
    assert waves == [
        ["u0", "u1", "u2"],
        ["u0", "u2", "u3"],
        ["u2", "u3", "u4"],
        ["u2", "u4", "u5"],
        ["u4", "u5", "u6"],
        ["u5", "u6"],
    ]
    for event in h.plans.values():
        event.set()
    await until(lambda: not planning(h), timeout=5, what="every first plan done")
    assert h.supervisor.admission.free == 3  # every place back, none more
    await h.supervisor.stop(timeout=1)


@pytest.mark.usefixtures("three_places")
@in_loop
async def test_the_most_severe_incident_waiting_gets_the_next_place() -> None:
    """A P1 alert arriving behind a burst of P4s (a restart's listing in name order, a flood of
    warnings) plans next, not after them; equal severities go in arrival order."""
    h = Harness(planning=True)
    for i in range(3):
        h.supervisor.observe(None, body(f"low{i}", severity="P4"))
    for name, severity in (("later-low", "P4"), ("p3", "P3"), ("p1", "P1"), ("p1-second", "P1")):
        h.supervisor.observe(None, body(name, severity=severity))
    await settle()
    order: list[list[str]] = []
    for done in ("low0", "low1", "low2"):
        h.plans[done].set()
        await until(lambda: done not in planning(h) and len(planning(h)) == 3, timeout=5, what="admitted")  # noqa: B023
        order.append([u for u in planning(h) if not u.startswith("low")])
    assert order == [["p1"], ["p1", "p1-second"], ["p1", "p1-second", "p3"]]
    for event in h.plans.values():
        event.set()
    await h.supervisor.stop(timeout=1)


@pytest.mark.usefixtures("three_places")
@in_loop
async def test_a_loop_that_ends_during_its_first_plan_gives_its_place_back_at_once() -> None:
    """Deleted or settled before its first plan said anything: the place is not held until the
    hold runs out."""
    h = Harness(planning=True)
    for i in range(4):
        h.supervisor.observe(None, body(f"u{i}"))
    await settle()
    h.loops["u0"].vanish = True
    h.plans["u0"].set()
    await until(lambda: planning(h) == ["u1", "u2", "u3"], timeout=5, what="u3 admitted")
    for event in h.plans.values():
        event.set()
    await h.supervisor.stop(timeout=1)


@pytest.fixture
def one_place_briefly_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "ADMITTED_AT_ONCE", 1)
    monkeypatch.setattr(supervisor_module, "ADMISSION_HOLD_S", 0.05)


@pytest.mark.usefixtures("one_place_briefly_held")
@in_loop
async def test_a_first_plan_that_never_says_it_ended_gives_its_place_back_after_the_hold() -> None:
    """An API server so slow that a first plan never gets to its decision must not stop new
    incidents altogether: the place goes back after ADMISSION_HOLD_S."""
    h = Harness(planning=True)
    h.supervisor.observe(None, body("slow"))
    h.supervisor.observe(None, body("next"))
    await until(lambda: planning(h) == ["next", "slow"], timeout=5, what="the next one planning too")
    for event in h.plans.values():
        event.set()
    await h.supervisor.stop(timeout=1)


@pytest.mark.usefixtures("three_places")
@in_loop
async def test_loops_waiting_for_a_place_stop_with_the_rest_and_leave_the_places_whole() -> None:
    h = Harness(planning=True)
    for i in range(6):
        h.supervisor.observe(None, body(f"u{i}"))
    await settle()
    waiting = [uid for uid, loop in h.loops.items() if loop.runs == 0]
    await asyncio.wait_for(h.supervisor.stop(timeout=0.2), 5)  # the admitted three never end
    assert waiting == ["u3", "u4", "u5"]
    assert len(h.supervisor) == 0
    assert all(h.loops[u].runs == 0 for u in waiting) or all(not h.loops[u].planning for u in waiting)
    assert h.supervisor.admission.free <= 3


def test_admission_hands_places_by_rank_then_arrival_and_skips_a_waiter_that_left() -> None:
    async def scenario() -> list[str]:
        admission = supervisor_module.Admission(1)
        got: list[str] = []
        await admission.take(3)  # the one place

        async def waiter(name: str, rank: int) -> None:
            await admission.take(rank)
            got.append(name)

        tasks = {
            n: asyncio.create_task(waiter(n, r)) for n, r in (("a4", 4), ("b2", 2), ("c2", 2), ("d1", 1))
        }
        await settle()
        tasks["d1"].cancel()  # gave up waiting: skipped, its place not lost
        await settle()
        for _ in range(3):
            admission.give()
            await settle()
        admission.give()
        await asyncio.gather(*(t for n, t in tasks.items() if n != "d1"))
        return [*got, f"free={admission.free}"]

    assert asyncio.run(scenario()) == ["b2", "c2", "a4", "free=1"]
