"""The incident loop's exactly-once ordering, against an in-memory API and a clock the test holds.

A three-step playbook (scale web +1, restart api, scale worker +2) runs to Resolved. The fake
API keeps, with every change a Deployment saw, the Incident status it held at that moment:
each step's decision must be written before its change, and each earlier step's outcome
before the next change. The loop is then killed at every status write (before and after the
write lands), started again from what the API holds, and each change must still happen once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from incident_operator.adapters.kube import ApiException, Kube
from incident_operator.adapters.outbound import Outbound
from incident_operator.api.base import WorkloadRef
from incident_operator.controllers import actions
from incident_operator.controllers.incident import IncidentLoop, parse_playbook
from incident_operator.controllers.incident.inputs import PlaybookListings, index_behind
from incident_operator.controllers.incident.loop import INDEX_CATCHUP_TRIES
from incident_operator.controllers.incident.slots import StartedRuns
from incident_operator.core.openlimit import OpenIncident, Ranking
from incident_operator.settings.config import FileConfig, Limits, OperatorConfig
from tests.unit.fake_kube import INCIDENT, NAMESPACE, Dropped, FakeKube

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
RUN_BOUND_S = 5.0  # a loop that has not settled by then is stuck: the test fails, never hangs
STEPS = [
    {"name": "scale-web", "scale": {"target": {"kind": "Deployment", "name": "web"}, "delta": 1}},
    {"name": "restart-api", "restart": {"target": {"kind": "Deployment", "name": "api"}}},
    {"name": "scale-worker", "scale": {"target": {"kind": "Deployment", "name": "worker"}, "delta": 2}},
]
STEP_OF = {"web": 0, "api": 1, "worker": 2}  # the workload each step changes
CLEAN_RUN_WRITES = 4  # status writes of an undisturbed run (the drop tests cover each of them)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def fake_api(**playbook: Any) -> FakeKube:
    return FakeKube(
        {"title": "web down", "severity": "P2", "category": "availability"},
        {"steps": STEPS, "stabilizationSeconds": 0, **playbook},
        {"web": 2, "api": 3, "worker": 1},
    )


def new_loop(
    api: FakeKube,
    clock: Clock,
    config: OperatorConfig | None = None,
    open_in_namespace: Callable[[], list[OpenIncident]] | None = None,
    *,
    started_runs: StartedRuns | None = None,
    event_hold_s: float = 0.0,
    indexed: Callable[[], bool] = lambda: True,
) -> IncidentLoop:
    """A loop as the operator starts it: from what the API holds now (a restart). Its Playbook
    index holds the API's Playbook while `indexed()` (else nothing: the watch is behind)."""

    def playbooks() -> tuple[list[Any], dict[str, str]]:
        if not indexed():
            return [], {}
        pb = api.playbook
        meta = pb["metadata"]
        entry = parse_playbook(meta["name"], pb["spec"], copy.deepcopy(pb["status"]), meta.get("generation"))
        return ([entry], {}) if not isinstance(entry, str) else ([], {"pb": entry})

    return IncidentLoop(
        kube=cast(Kube, api),
        outbound=cast(Outbound, None),  # no httpCheck in these playbooks
        config=config or OperatorConfig(),
        namespace=NAMESPACE,
        name=api.incident["metadata"]["name"],
        uid=api.incident["metadata"]["uid"],
        body=api.incident,  # the live body: the API's current object
        playbooks=playbooks,
        post_event=api.post_event,
        clock=clock,
        open_in_namespace=None if open_in_namespace is None else lambda: Ranking(open_in_namespace()),
        started_runs=started_runs,
        backoff=(0.0,),
        event_hold_s=event_hold_s,
    )


async def run_until_settled(api: FakeKube, clock: Clock, *, event_hold_s: float = 0.0) -> None:
    """Run a loop until the API holds a settled incident (bounded); Events posted per status
    write unless `event_hold_s` holds them (see `test_a_fast_run_posts_one_event_...`)."""
    loop = new_loop(api, clock, event_hold_s=event_hold_s)
    await asyncio.wait_for(
        loop.run(lambda: bool(api.status().get("settled")), asyncio.Event()), timeout=RUN_BOUND_S
    )


def step_states(status: dict[str, Any]) -> list[str | None]:
    return [s.get("state") for s in (status.get("playbook") or {}).get("steps", [])]


def assert_done_exactly_once(api: FakeKube) -> None:
    """Every step changed its workload once, and the incident is Resolved."""
    assert [(e.kind, e.workload) for e in api.effects] == [
        ("scale", "web"),
        ("restart", "api"),
        ("scale", "worker"),
    ]
    assert api.workloads["web"]["replicas"] == 3
    assert api.workloads["worker"]["replicas"] == 3
    assert api.status()["phase"] == "Resolved"
    assert step_states(api.status()) == ["Succeeded"] * 3


def assert_persisted_before_acting(api: FakeKube) -> None:
    """When a step changed its workload, the API held that step's decision (scale: the replica
    count it goes to; restart, whose start is written before it acts: Running, with the start
    time it stamps) and the outcome of every step before it."""
    for effect in api.effects:
        index = STEP_OF[effect.workload]
        steps = effect.status["playbook"]["steps"]
        if effect.kind == "scale":
            assert steps[index].get("replicasAfter") == effect.value, (effect, steps)
        else:
            assert steps[index]["state"] == "Running", (effect, steps)
            assert steps[index]["startedAt"] in effect.value.values(), (effect, steps)
        assert [s["state"] for s in steps[:index]] == ["Succeeded"] * index, (effect, steps)


# ----------------------------------------------------------------------------- ordering


def test_each_decision_and_outcome_is_written_before_the_next_action() -> None:
    api, clock = fake_api(), Clock()
    asyncio.run(run_until_settled(api, clock))
    assert_done_exactly_once(api)
    assert_persisted_before_acting(api)
    assert api.status_writes == CLEAN_RUN_WRITES
    assert api.status()["settled"] is True
    assert api.configmaps  # the post-mortem draft, written before the status that names it
    writes = [i for i, c in enumerate(api.calls) if c[0] == "patch_incident_status"]
    draft = api.calls.index(("write_owned_configmap", api.status()["postmortemRef"]))
    assert draft < writes[-1]


def test_events_are_posted_only_after_the_write_that_records_them() -> None:
    api, clock = fake_api(), Clock()
    asyncio.run(run_until_settled(api, clock))
    first_write = next(i for i, c in enumerate(api.calls) if c[0] == "patch_incident_status")
    first_event = next(i for i, c in enumerate(api.calls) if c[0] == "event")
    assert first_write < first_event
    events = [c[1] for c in api.called("event")]
    assert events.count("PlaybookStarted") == 1
    timeline = [e["type"] for e in api.status()["timeline"]]
    assert set(events) <= set(timeline)


def test_a_status_write_posts_one_normal_event_carrying_its_records_in_order() -> None:
    api, clock = fake_api(), Clock()
    asyncio.run(run_until_settled(api, clock))
    writes = len(api.called("patch_incident_status"))
    events = api.called("event")
    assert len(events) <= writes  # at most one Normal Event per status write (no warning here)
    assert not any(warning for *_, warning in events)
    by_type = {e["type"]: e["message"] for e in api.status()["timeline"]}
    started = next(c for c in events if c[1] == "PlaybookStarted")
    # Detected, written with the run's start, rides on its Event, before its own words
    assert started[2].startswith(by_type["Detected"] + " | ")
    assert started[2].endswith(by_type["PlaybookStarted"])
    resolved = next(c for c in events if c[1] == "Resolved")
    assert by_type["StepSucceeded"] in resolved[2]  # the last step's outcome, written with Resolved
    succeeded = [e for e in api.status()["timeline"] if e["type"] == "StepSucceeded"]
    assert [c[1] for c in events].count("StepSucceeded") == len(succeeded) - 1  # the last one folded


def test_a_fast_run_posts_one_event_for_its_writes_after_the_last_of_them() -> None:
    # As the operator runs: Normal records held for a second, so the writes of a run that ends
    # sooner share one Event, posted when the loop stops (here: settled), not a second later.
    api, clock = fake_api(), Clock()
    asyncio.run(run_until_settled(api, clock, event_hold_s=60.0))
    events = api.called("event")
    assert len(events) == 1, events
    (_, reason, message, warning) = events[0]
    assert (reason, warning) == ("Resolved", False)
    last_write = max(i for i, c in enumerate(api.calls) if c[0] == "patch_incident_status")
    assert api.calls.index(("event", reason, message, warning)) > last_write
    said = [e["message"] for e in api.status()["timeline"] if e["type"] in ("Detected", "PlaybookStarted")]
    assert message.startswith(" | ".join(said))  # in order: nothing the per-write Events said is lost
    assert message.endswith(next(e["message"] for e in api.status()["timeline"] if e["type"] == "Resolved"))


def test_the_run_is_counted_once_on_the_playbook() -> None:
    api, clock = fake_api(), Clock()
    asyncio.run(run_until_settled(api, clock))
    assert api.playbook["status"]["runs"] == 1
    assert api.playbook["status"]["succeeded"] == 1
    assert api.playbook["status"]["lastRunBy"] == {
        f"Deployment/{n}": f"{INCIDENT}/r1" for n in ("web", "api", "worker")
    }


# ----------------------------------------------------------------------------- killed and restarted


async def killed_and_restarted(api: FakeKube, clock: Clock, n: int, when: str) -> None:
    """A loop killed at its `n`-th status write (`when`: before or after it lands), then a new
    loop started 10 s later from what the API holds, run until settled."""
    api.drop_at = (n, when)
    with pytest.raises(Dropped):
        await run_until_settled(api, clock)
    api.drop_at = None
    clock.now += timedelta(seconds=10)
    await run_until_settled(api, clock)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("n", range(1, CLEAN_RUN_WRITES + 1))
def test_killed_at_any_status_write_and_restarted_every_step_happens_once(n: int, when: str) -> None:
    api, clock = fake_api(), Clock()
    asyncio.run(killed_and_restarted(api, clock, n, when))
    assert_done_exactly_once(api)
    assert_persisted_before_acting(api)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_two_absolute_scales_of_one_workload_killed_at_any_write_each_change_once(n: int, when: str) -> None:
    """A bounce (web to 0, then to 3): the first scale's outcome is written before the second
    acts, so a kill never takes web to zero a second time after it came back."""
    api, clock = fake_api(steps=ABSOLUTE_BOUNCE), Clock()
    asyncio.run(killed_and_restarted(api, clock, n, when))
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 0), ("scale", "web", 3)]
    first, second = api.effects
    assert first.status["playbook"]["steps"][0].get("replicasAfter") == 0  # each decided in the API first
    assert second.status["playbook"]["steps"][0]["state"] == "Succeeded"  # the outcome before the next
    assert second.status["playbook"]["steps"][1].get("replicasAfter") == 3
    assert step_states(api.status()) == ["Succeeded", "Succeeded"]


@pytest.mark.parametrize("n", range(1, CLEAN_RUN_WRITES + 1))
def test_killed_twice_in_a_row_every_step_still_happens_once(n: int) -> None:
    api, clock = fake_api(), Clock()

    async def scenario() -> None:
        api.drop_at = (n, "before")  # killed with write n lost ...
        with pytest.raises(Dropped):
            await run_until_settled(api, clock)
        api.drop_at = (api.status_writes + 1, "after")  # ... then with the next one written, unanswered
        with pytest.raises(Dropped):
            await run_until_settled(api, clock)
        api.drop_at = None
        await run_until_settled(api, clock)

    asyncio.run(scenario())
    assert_done_exactly_once(api)
    assert_persisted_before_acting(api)


# ----------------------------------------------------------------------------- failed writes


async def drive(loop: IncidentLoop, api: FakeKube, clock: Clock, *, bound: int = 50) -> None:
    """What `run` does, with the clock moved to each wake-up instead of sleeping until it."""
    for _ in range(bound):
        if api.status().get("settled"):
            return
        try:
            again, wake_at = await loop.iterate()
        except ApiException:
            continue  # `run` backs off and plans again
        if not again and wake_at is not None:
            clock.now = max(clock.now, wake_at)
    raise AssertionError(f"not settled after {bound} iterations: {api.status()}")


ABSOLUTE_BOUNCE = [  # absolute counts: setting one twice changes nothing, yet each is written first
    {"name": "down", "scale": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 0}},
    {"name": "up", "scale": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 3}},
]


@pytest.mark.parametrize("steps", [STEPS, ABSOLUTE_BOUNCE], ids=["delta-restart-delta", "absolute"])
@pytest.mark.parametrize("status", [500, 409, 403])
def test_a_failing_status_write_acts_on_nothing(status: int, steps: list[dict[str, Any]]) -> None:
    """Nothing acts unrecorded: not even a scale to an absolute count, which could be repeated
    harmlessly, goes before the write of its decision (and of the run it starts) has landed."""
    api, clock = fake_api(steps=steps), Clock()
    api.fail = lambda n: ApiException(status=status, reason="failed")
    loop = new_loop(api, clock)

    async def scenario() -> None:
        for _ in range(5):  # each iteration plans and tries to write; none acts
            with contextlib.suppress(ApiException):
                await loop.iterate()

    asyncio.run(scenario())
    assert api.status_writes >= 5
    assert api.effects == []
    assert api.called("scale_workload") == []
    assert api.called("patch_workload") == []
    assert api.called("event") == []  # nothing is told of what was not written
    assert api.status() == {}


def test_a_failed_write_of_a_scale_decision_fails_that_attempt_without_scaling() -> None:
    api, clock = fake_api(), Clock()
    api.fail = lambda n: ApiException(status=500, reason="down") if n == 1 else None
    again, _ = asyncio.run(new_loop(api, clock).iterate())
    assert again  # the attempt failed (its outcome is held); nothing was scaled
    assert api.called("scale_workload") == []
    assert api.effects == []


@pytest.mark.parametrize("failing", range(1, CLEAN_RUN_WRITES + 1))
def test_a_status_write_failing_once_is_retried_without_acting_twice(failing: int) -> None:
    retried = [{**s, "retries": 1} for s in STEPS]  # a failed decision write costs an attempt
    api, clock = fake_api(steps=retried), Clock()
    api.fail = lambda n: ApiException(status=500, reason="flaky") if n == failing else None
    asyncio.run(drive(new_loop(api, clock), api, clock))
    assert_done_exactly_once(api)
    assert_persisted_before_acting(api)
    assert len(api.called("scale_workload")) == 2  # never retried after it acted
    assert len(api.called("patch_workload")) == 1


def test_run_backs_off_and_retries_a_failed_write_itself() -> None:
    api, clock = fake_api(), Clock()
    api.fail = lambda n: ApiException(status=409, reason="Conflict") if n in (2, 3) else None
    asyncio.run(run_until_settled(api, clock))  # write 2 is the restart's start, in the loop itself
    assert_done_exactly_once(api)
    assert_persisted_before_acting(api)


def test_the_loop_says_when_each_plan_ended_even_one_that_failed() -> None:
    """The supervisor admits new loops a few at a time and waits for `planned()` after the first
    plan: a plan that fails (every status write refused) or cannot read the incident must say so
    too, or the place is held for nothing; a clean run says it after each plan."""
    failing, unreadable, clean = fake_api(), fake_api(), fake_api()
    failing.fail = lambda n: ApiException(status=500, reason="down")
    unreadable.incident["spec"]["severity"] = "P9"
    said = {"failing": 0, "unreadable": 0, "clean": 0}

    def count(which: str) -> Callable[[], None]:
        return lambda: said.__setitem__(which, said[which] + 1)

    async def scenario() -> None:
        # bounded by the writes too: a loop that never says it planned must fail here, not spin
        stopped = lambda: said["failing"] >= 3 or failing.status_writes > 10  # noqa: E731
        await asyncio.wait_for(
            new_loop(failing, Clock()).run(stopped, asyncio.Event(), count("failing")), RUN_BOUND_S
        )
        stopped = lambda: said["unreadable"] >= 1  # noqa: E731 - else it waits minutes for a change
        await asyncio.wait_for(
            new_loop(unreadable, Clock()).run(stopped, asyncio.Event(), count("unreadable")), RUN_BOUND_S
        )
        settled = lambda: bool(clean.status().get("settled"))  # noqa: E731
        await asyncio.wait_for(
            new_loop(clean, Clock()).run(settled, asyncio.Event(), count("clean")), RUN_BOUND_S
        )

    asyncio.run(scenario())
    assert said["failing"] == 3
    assert failing.status() == {}
    assert said["unreadable"] == 1
    assert_done_exactly_once(clean)
    assert said["clean"] >= 6  # each step's decision written before it acts, and each plan's end


# ----------------------------------------------------------------------------- stopping


def test_a_stopped_loop_writes_the_outcome_it_holds_before_it_exits() -> None:
    api, clock = fake_api(), Clock()
    stop: dict[str, bool] = {"now": False}

    def scale_then_stop(original: Callable[..., Any]) -> Callable[..., Any]:
        async def scale(*args: Any) -> None:
            await original(*args)
            stop["now"] = True  # asked to stop while the first step's outcome is held

        return scale

    api.scale_workload = scale_then_stop(api.scale_workload)  # type: ignore[method-assign]
    loop = new_loop(api, clock)
    asyncio.run(asyncio.wait_for(loop.run(lambda: stop["now"], asyncio.Event()), timeout=RUN_BOUND_S))
    assert step_states(api.status()) == ["Succeeded", "Pending", "Pending"]
    assert len(api.effects) == 1


# ----------------------------------------------------------------------------- the cooldown claim


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("n", range(1, CLEAN_RUN_WRITES + 1))
def test_with_a_cooldown_the_run_is_claimed_and_counted_once_across_a_kill(n: int, when: str) -> None:
    api, clock = fake_api(cooldownSeconds=600), Clock()
    api.drop_at = (n, when)

    async def scenario() -> None:
        with pytest.raises(Dropped):
            await run_until_settled(api, clock)
        api.drop_at = None
        await drive(new_loop(api, clock), api, clock)

    asyncio.run(scenario())
    assert_done_exactly_once(api)
    assert api.playbook["status"]["runs"] == 1
    claims = [c for c in api.called("patch_playbook_status") if "lastRunBy" in c[1]]
    assert claims[0][1]["runs"] == 1  # claimed (and counted) before anything acted
    assert api.calls.index(claims[0]) < next(i for i, c in enumerate(api.calls) if c[0] == "scale_workload")


def test_a_run_killed_between_its_claim_and_its_first_write_does_not_wait_for_its_own_cooldown() -> None:
    api, clock = fake_api(cooldownSeconds=600), Clock()
    api.drop_at = (1, "before")

    async def scenario() -> None:
        with pytest.raises(Dropped):
            await run_until_settled(api, clock)
        api.drop_at = None
        await new_loop(api, clock).iterate()  # the clock has not moved: the cooldown still runs

    asyncio.run(scenario())
    assert api.effects  # it acted at once: the claim on the Playbook is its own
    timeline = api.incident["status"].get("timeline") or []
    assert not [e for e in timeline if e["type"] == "CooldownActive"]
    assert api.playbook["status"]["runs"] == 1  # claimed and counted once


# ----------------------------------------------------------------------------- pinned runs


GATED: list[dict[str, Any]] = [
    {
        "name": "scale-web",
        "requiresApproval": True,
        "scale": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 3},
    }
]
"""One step, scale web to 3, that waits for an approval."""


def edit_playbook(api: FakeKube, steps: list[dict[str, Any]]) -> None:
    """A person edits the Playbook: its spec changes and so does its generation."""
    api.playbook["spec"]["steps"] = steps
    meta = api.playbook["metadata"]
    meta["generation"] = meta.get("generation", 1) + 1


def edit_incident(api: FakeKube, **spec: Any) -> None:
    api.incident["spec"].update(spec)
    api.incident["metadata"]["generation"] += 1


async def iterate_until(loop: IncidentLoop, api: FakeKube, clock: Clock, done: Callable[[], bool]) -> None:
    for _ in range(20):
        if done():
            return
        again, wake_at = await loop.iterate()
        if not again and wake_at is not None:
            clock.now = max(clock.now, wake_at)
    raise AssertionError(f"not reached after 20 iterations: {api.status()}")


def timeline_of(api: FakeKube, kind: str) -> list[str]:
    return [e["message"] for e in api.status().get("timeline") or [] if e["type"] == kind]


def test_an_edit_of_the_playbook_while_a_step_awaits_approval_changes_nothing_in_the_run() -> None:
    """The auditor's bypass: a scale-to-3 step awaits approval, the Playbook's author changes it
    to 9, a responder approves (what they saw: 3). The run executes what it pinned: 3."""
    gated = GATED
    api, clock = fake_api(steps=gated), Clock()
    api.playbook["metadata"]["generation"] = 1
    loop = new_loop(api, clock)

    async def scenario() -> None:
        await iterate_until(loop, api, clock, lambda: step_states(api.status()) == ["AwaitingApproval"])
        pinned = api.status()["playbook"]
        assert pinned["generation"] == 1
        assert pinned["digest"].startswith("sha256:")
        assert pinned["snapshot"]["steps"][0]["scale"]["replicas"] == 3
        edit_playbook(api, [{**gated[0], "scale": {**gated[0]["scale"], "replicas": 9}}])
        edit_incident(api, approvals=[{"step": "scale-web", "by": "alice"}])
        await drive(loop, api, clock)

    asyncio.run(scenario())
    assert api.workloads["web"]["replicas"] == 3
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]
    assert timeline_of(api, "PlaybookChanged") == [
        "playbook pb changed (generation 2): run r1 goes on with generation 1; "
        "the next run uses the newer version"
    ]
    assert api.status()["playbook"]["newerGeneration"] == 2
    assert api.status()["approvalRuns"] == [{"step": "scale-web", "by": "alice", "run": "r1"}]


def test_an_approval_for_another_run_does_not_approve_this_one() -> None:
    gated = GATED
    api, clock = fake_api(steps=gated), Clock()
    loop = new_loop(api, clock)

    async def scenario() -> None:
        await iterate_until(loop, api, clock, lambda: step_states(api.status()) == ["AwaitingApproval"])
        edit_incident(api, approvals=[{"step": "scale-web", "by": "alice", "run": "r7"}])
        for _ in range(3):
            await loop.iterate()

    asyncio.run(scenario())
    assert step_states(api.status()) == ["AwaitingApproval"]
    assert api.effects == []


def test_a_run_stalled_on_a_failed_step_ends_when_the_playbook_changes_and_the_next_run_uses_the_edit() -> (
    None
):
    broken = [{"name": "scale-it", "scale": {"target": {"kind": "Deployment", "name": "ghost"}, "delta": 1}}]
    api, clock = fake_api(steps=broken), Clock()
    api.playbook["metadata"]["generation"] = 1
    loop = new_loop(api, clock)

    def stalled() -> bool:
        conditions = {c["type"]: c for c in api.status().get("conditions") or []}
        return bool(conditions.get("Stalled", {}).get("reason") == "StepFailed")

    async def scenario() -> None:
        await iterate_until(loop, api, clock, stalled)
        for _ in range(2):  # stalled: nothing more happens while the Playbook stays as it is
            await loop.iterate()
        assert api.status()["playbook"]["runId"] == "r1"
        edit_playbook(
            api,
            [{"name": "scale-it", "scale": {"target": {"kind": "Deployment", "name": "web"}, "delta": 1}}],
        )
        await drive(loop, api, clock)

    asyncio.run(scenario())
    assert api.status()["playbook"]["runId"] == "r2"
    assert api.status()["playbook"]["generation"] == 2
    assert [(e.kind, e.workload) for e in api.effects] == [("scale", "web")]
    ended = timeline_of(api, "PlaybookChanged")
    assert ended == [
        "run r1 of playbook pb ended: it was stalled (StepFailed) and the playbook changed (generation 2); "
        "run r2 uses the edit"
    ]


def test_a_changed_playbook_ref_does_not_switch_the_run_in_flight() -> None:
    gated = GATED
    api, clock = fake_api(steps=gated), Clock()
    loop = new_loop(api, clock)

    async def scenario() -> None:
        await iterate_until(loop, api, clock, lambda: step_states(api.status()) == ["AwaitingApproval"])
        edit_incident(api, playbookRef={"name": "elsewhere"})
        await loop.iterate()
        edit_incident(api, approvals=[{"step": "scale-web", "by": "alice"}])
        await drive(loop, api, clock)

    asyncio.run(scenario())
    assert api.workloads["web"]["replicas"] == 3
    assert api.status()["playbook"]["name"] == "pb"
    assert timeline_of(api, "PlaybookRefIgnored") == [
        "playbookRef names elsewhere: run r1 of playbook pb goes on; the change applies from the next run"
    ]


# ----------------------------------------------------------------------------- the cap on open incidents


def test_over_the_namespace_cap_the_loop_acts_on_nothing_says_so_once_and_runs_when_a_slot_frees() -> None:
    api, clock = fake_api(), Clock()
    api.incident["metadata"]["creationTimestamp"] = "2026-12-01T09:00:00Z"
    older = [
        OpenIncident(name, f"uid-{name}", T0 - timedelta(minutes=10 - i), running=True)
        for i, name in enumerate(("first", "second"))
    ]
    namespace = list(older)
    config = OperatorConfig(file=FileConfig(limits=Limits(maxOpenIncidentsPerNamespace=2)))
    loop = new_loop(api, clock, config, lambda: namespace)

    async def scenario() -> None:
        for _ in range(3):  # planned again and again (its own writes, deadlines): nothing acts
            again, _ = await loop.iterate()
            assert not again
            clock.now += timedelta(seconds=30)

    asyncio.run(scenario())
    assert api.effects == []
    assert api.called("scale_workload") == []
    assert "playbook" not in api.status()
    paused = next(c for c in api.status()["conditions"] if c["type"] == "AutomationPaused")
    assert (paused["status"], paused["reason"]) == ("True", "OpenIncidentLimit")
    assert f"namespace {NAMESPACE} has 3 open incidents" in paused["message"]
    assert "limits.maxOpenIncidentsPerNamespace (2)" in paused["message"]
    events = [c[1] for c in api.called("event")]
    assert events.count("OpenIncidentLimit") == 1  # once, not on every reconcile
    assert [e["type"] for e in api.status()["timeline"]].count("OpenIncidentLimit") == 1
    assert api.playbook["status"].get("runs") is None  # no run counted, no cooldown claimed

    namespace.remove(older[0])  # the oldest resolved: its slot is free
    asyncio.run(drive(loop, api, clock))
    assert_done_exactly_once(api)
    resumed = next(c for c in api.status()["conditions"] if c["type"] == "AutomationPaused")
    assert (resumed["status"], resumed["reason"]) == ("False", "AutomationResumed")
    # said once, in the Event of the write that resumed it (folded: the run's start is the last record)
    resumed_events = [c for c in api.called("event") if "automation goes on" in c[2]]
    assert [c[1] for c in resumed_events] == ["PlaybookStarted"]


def test_two_incidents_wanting_the_last_slot_at_once_get_it_once_before_the_watch_shows_either_run() -> None:
    """b is indexed first and starts; a (older by name, same second) is indexed before b's status
    write comes back, so the index shows no run. The loops share the runs they started: a waits."""
    config = OperatorConfig(file=FileConfig(limits=Limits(maxOpenIncidentsPerNamespace=1)))
    shared, clock = StartedRuns(), Clock()
    apis = {name: fake_api() for name in ("a", "b")}
    for name, api in apis.items():
        api.incident["metadata"].update(
            name=name, uid=f"uid-{name}", creationTimestamp="2026-12-01T09:00:00Z"
        )
    index = [OpenIncident("b", "uid-b", T0)]
    loops = {
        name: new_loop(api, clock, config, lambda: index, started_runs=shared) for name, api in apis.items()
    }
    asyncio.run(loops["b"].iterate())
    index.append(OpenIncident("a", "uid-a", T0))  # as the watch shows both now: neither running
    asyncio.run(loops["a"].iterate())
    assert [e.workload for e in apis["b"].effects] == ["web"]
    assert apis["a"].effects == []
    paused = next(c for c in apis["a"].status()["conditions"] if c["type"] == "AutomationPaused")
    assert paused["reason"] == "OpenIncidentLimit"

    # the watch caught up: the claim is not needed
    index[0] = OpenIncident("b", "uid-b", T0, running=True, run="r1")
    assert shared.of(NAMESPACE, Ranking(index)) == frozenset()
    index.remove(index[0])  # b resolved: a starts
    asyncio.run(loops["a"].iterate())
    assert [e.workload for e in apis["a"].effects] == ["web"]


def test_a_claim_is_dropped_only_when_the_index_shows_that_very_run() -> None:
    """A re-fire: the loop started run r2 while the index still shows run r1 (its status write
    that cleared r1 and the one that started r2 have not come back). The claim on r2 stays: without
    it, once the index shows no run, another incident could take r2's slot."""
    runs = StartedRuns()
    runs.claim(NAMESPACE, "uid-b", "r2")
    earlier = [OpenIncident("b", "uid-b", T0, running=True, run="r1")]
    assert runs.of(NAMESPACE, Ranking(earlier)) == frozenset({"uid-b"})
    assert runs.of(NAMESPACE, Ranking([OpenIncident("b", "uid-b", T0)])) == frozenset({"uid-b"})
    shown = Ranking([OpenIncident("b", "uid-b", T0, running=True, run="r2")])
    assert runs.of(NAMESPACE, shown) == frozenset()
    assert runs.of(NAMESPACE, Ranking([OpenIncident("b", "uid-b", T0)])) == frozenset()  # dropped for good
    runs.claim(NAMESPACE, "uid-c", "r1")
    assert runs.of(NAMESPACE, Ranking()) == frozenset()  # no longer open: dropped


def test_a_plan_asks_the_namespace_ranking_once() -> None:
    api, clock = fake_api(), Clock()
    api.incident["metadata"]["creationTimestamp"] = "2026-12-01T09:00:00Z"
    asked: list[int] = []

    def namespace() -> list[OpenIncident]:
        asked.append(1)
        return []

    loop = new_loop(api, clock, None, namespace)
    asyncio.run(loop.iterate())  # starts the run: one question, then the claim
    assert len(asked) == 1


def test_a_claim_that_loses_the_cooldown_frees_its_slot_and_wakes_the_namespace() -> None:
    """The loop claimed the slot for a run, then another incident's claim on the Playbook's
    cooldown won: no run starts. An incident told to wait because of that claim must not wait
    for the idle recheck: the namespace's waiting incidents are woken."""
    api, clock = fake_api(cooldownSeconds=600), Clock()
    released: list[str] = []
    runs = StartedRuns(on_release=released.append)
    loop = new_loop(api, clock, None, lambda: [], started_runs=runs)
    seen = loop.playbooks()  # as the watch shows the Playbook: no cooldown yet
    loop.playbooks = lambda: seen
    targets = loop.ledger.targets(loop.inputs.spec(), seen[0][0])
    api.playbook["status"].update(
        lastRuns=dict.fromkeys(targets, "2026-12-01T09:00:00Z"), lastRunBy=dict.fromkeys(targets, "other/r1")
    )
    asyncio.run(loop.iterate())
    assert api.effects == []  # the cooldown holds
    assert released == [NAMESPACE]
    assert runs.of(NAMESPACE, Ranking()) == frozenset()
    runs.release(NAMESPACE, "uid-nobody")  # no claim, nothing freed: nobody woken
    assert released == [NAMESPACE]


@pytest.mark.parametrize("why", ["no playbook", "paused"])
def test_an_incident_that_uses_no_slot_is_never_told_it_waits(why: str) -> None:
    """Over the cap, an incident with no playbook to run (or paused) holds no slot and gets no
    OpenIncidentLimit condition, timeline entry or Event ("starts when an older one resolves"
    would be false: it never starts)."""
    api, clock = fake_api(), Clock()
    api.incident["metadata"]["creationTimestamp"] = "2026-12-01T09:00:00Z"
    older = [OpenIncident("first", "uid-first", T0 - timedelta(minutes=10), running=True, run="r1")]
    config = OperatorConfig(file=FileConfig(limits=Limits(maxOpenIncidentsPerNamespace=1)))
    loop = new_loop(api, clock, config, lambda: older)
    if why == "no playbook":
        loop.playbooks = lambda: ([], {})
    else:
        api.incident["spec"]["paused"] = True
    asyncio.run(loop.iterate())
    assert api.effects == []
    assert not [c for c in api.status().get("conditions") or [] if c["type"] == "AutomationPaused"]
    assert "OpenIncidentLimit" not in [c[1] for c in api.called("event")]
    assert "OpenIncidentLimit" not in [e["type"] for e in api.status().get("timeline") or []]


# ----------------------------------------------------------------------------- the index behind the API


def stalls(api: FakeKube) -> list[tuple[str, str]]:
    conditions = api.status().get("conditions") or []
    told = [(c["reason"], c["status"]) for c in conditions if c["type"] == "Stalled"]
    timeline = api.status().get("timeline") or []
    return told + [("timeline", e["type"]) for e in timeline if e["type"] == "Stalled"]


@pytest.mark.parametrize("ref", [None, {"name": "pb"}])
def test_a_playbook_the_api_lists_before_the_index_has_it_is_waited_for_not_told_as_a_stall(
    ref: dict[str, str] | None,
) -> None:
    # Applied together, the Playbook's watch event may come after its incident's.
    api, clock = fake_api(), Clock()
    if ref is not None:
        edit_incident(api, playbookRef=ref)
    indexed = False
    loop = new_loop(api, clock, indexed=lambda: indexed)

    async def scenario() -> None:
        nonlocal indexed
        again, wake_at = await loop.iterate()
        assert (again, wake_at) == (False, T0 + timedelta(seconds=1))  # its event wakes the loop sooner
        assert api.status_writes == 0
        assert not api.called("event")
        indexed = True
        await drive(loop, api, clock)

    asyncio.run(scenario())
    assert stalls(api) == []
    assert api.status()["phase"] == "Resolved"
    assert len(api.called("list_objects")) == 1


def test_an_index_that_stays_behind_delays_the_stall_a_bounded_number_of_plans() -> None:
    api, clock = fake_api(), Clock()
    edit_incident(api, playbookRef={"name": "pb"})
    loop = new_loop(api, clock, indexed=lambda: False)

    async def scenario() -> None:
        for _ in range(INDEX_CATCHUP_TRIES):
            again, wake_at = await loop.iterate()
            assert not again
            assert wake_at is not None
            clock.now = wake_at
        assert api.status_writes == 0
        await loop.iterate()  # told now, whatever the listing would say
        await loop.iterate()  # and not asked again

    asyncio.run(scenario())
    assert len(api.called("list_objects")) == INDEX_CATCHUP_TRIES
    assert stalls(api) == [("PlaybookNotFound", "True"), ("timeline", "Stalled")]
    assert [c[1] for c in api.called("event") if c[3]] == ["Stalled"]  # the one warning


@pytest.mark.parametrize("listing", ["empty", "fails"])
def test_with_no_playbook_in_the_api_the_stall_is_told_at_once_after_one_listing(listing: str) -> None:
    api, clock = fake_api(), Clock()
    api.playbook_listed = False
    if listing == "fails":

        async def refused(plural: str, namespace: str | None, **_: Any) -> list[dict[str, Any]]:
            api.calls.append(("list_objects", plural))
            raise ApiException(status=403, reason="Forbidden")

        api.list_objects = refused  # type: ignore[method-assign]
    loop = new_loop(api, clock, indexed=lambda: False)

    async def scenario() -> None:
        again, _ = await loop.iterate()
        assert not again
        clock.now += timedelta(minutes=1)
        await loop.iterate()

    asyncio.run(scenario())
    assert len(api.called("list_objects")) == 1
    assert stalls(api) == [("NoMatchingPlaybook", "True"), ("timeline", "Stalled")]


def test_a_playbook_ref_waits_only_for_the_playbook_it_names() -> None:
    api, clock = fake_api(), Clock()
    edit_incident(api, playbookRef={"name": "elsewhere"})  # the API lists pb, which it does not name
    loop = new_loop(api, clock, indexed=lambda: False)
    asyncio.run(loop.iterate())
    assert len(api.called("list_objects")) == 1
    assert stalls(api) == [("PlaybookNotFound", "True"), ("timeline", "Stalled")]  # at once


def test_a_listing_that_does_not_answer_in_time_leaves_the_plan_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from incident_operator.controllers.incident import loop as loop_module

    monkeypatch.setattr(loop_module, "INDEX_LISTING_TIMEOUT_S", 0.01)
    api, clock = fake_api(), Clock()
    never = asyncio.Event()

    async def hanging(plural: str, namespace: str | None, **_: Any) -> list[dict[str, Any]]:
        await never.wait()
        return []

    api.list_objects = hanging  # type: ignore[method-assign]
    loop = new_loop(api, clock, indexed=lambda: False)
    again, _ = asyncio.run(asyncio.wait_for(loop.iterate(), timeout=RUN_BOUND_S))
    assert not again
    assert stalls(api) == [("NoMatchingPlaybook", "True"), ("timeline", "Stalled")]  # recorded as before


def test_a_cancelled_shared_listing_fails_its_callers_instead_of_leaving_them_waiting() -> None:
    from incident_operator.controllers.incident.inputs import ListingCancelled

    started = asyncio.Event()

    async def list_objects(plural: str, namespace: str) -> list[dict[str, Any]]:
        started.set()
        await asyncio.Event().wait()  # never answers
        return []

    async def scenario() -> None:
        listings = PlaybookListings(list_objects)
        callers = [asyncio.create_task(listings(NAMESPACE)) for _ in range(2)]
        await started.wait()
        for task in list(listings._tasks):
            task.cancel()  # the operator stops
        for caller in callers:
            with pytest.raises(ListingCancelled):
                await caller

    asyncio.run(asyncio.wait_for(scenario(), timeout=RUN_BOUND_S))


def test_the_index_is_behind_for_a_playbook_it_lacks_or_holds_at_an_older_generation() -> None:
    def listed(name: str, generation: int | None) -> dict[str, Any]:
        return {"metadata": {"name": name, "generation": generation}}

    entry = parse_playbook("pb", {"steps": STEPS}, {}, 2)
    assert not isinstance(entry, str)
    index = ([entry], {"broken": "steps[0]: no action"})
    assert index_behind([listed("pb", 2), listed("broken", 7)], index) == []
    assert index_behind([listed("pb", 1)], index) == []  # the index is ahead of a stale listing
    assert index_behind([listed("pb", 3), listed("new", 1)], index) == ["new", "pb"]
    assert index_behind([listed("pb", None)], index) == []
    assert index_behind([listed("pb", 3), listed("new", 1)], index, only="new") == ["new"]
    assert index_behind([listed("pb", 2), listed("new", 1)], index, only="pb") == []


def test_playbook_listings_are_shared_by_who_asked_before_one_started_and_never_older_than_the_ask() -> None:
    started: list[asyncio.Event] = []
    release: list[asyncio.Event] = []
    calls = 0

    async def list_objects(plural: str, namespace: str) -> list[dict[str, Any]]:
        nonlocal calls
        assert (plural, namespace) == ("playbooks", NAMESPACE)
        n, calls = calls, calls + 1
        started[n].set()
        await release[n].wait()
        if n == 2:
            raise ApiException(status=500, reason="Internal Server Error")
        return [{"metadata": {"name": f"listing-{n}"}}]

    async def scenario() -> None:
        started.extend(asyncio.Event() for _ in range(5))
        release.extend(asyncio.Event() for _ in range(5))
        listings = PlaybookListings(list_objects)
        names = lambda got: [i["metadata"]["name"] for i in got]  # noqa: E731
        first = [asyncio.create_task(listings(NAMESPACE)) for _ in range(3)]
        await started[0].wait()
        late = [asyncio.create_task(listings(NAMESPACE)) for _ in range(2)]  # the first one is running
        release[0].set()
        assert [names(await t) for t in first] == [["listing-0"]] * 3
        await started[1].wait()
        release[1].set()
        assert [names(await t) for t in late] == [["listing-1"]] * 2
        failing = [asyncio.create_task(listings(NAMESPACE)) for _ in range(2)]
        await started[2].wait()
        release[2].set()
        for task in failing:
            with pytest.raises(ApiException):
                await task
        again = asyncio.create_task(listings(NAMESPACE))
        await started[3].wait()
        release[3].set()
        assert names(await again) == ["listing-3"]
        assert calls == 4

    asyncio.run(asyncio.wait_for(scenario(), timeout=RUN_BOUND_S))


# ----------------------------------------------------------------------------- explanation


def test_the_explanation_rides_on_the_status_writes_and_costs_none_when_unchanged() -> None:
    """`status.explanation` is in the writes the loop makes anyway (a clean run still makes
    CLEAN_RUN_WRITES, above); a plan that changes nothing else, later, writes nothing."""
    gated = [{**STEPS[0], "requiresApproval": True}, *STEPS[1:]]
    api, clock = fake_api(steps=gated), Clock()

    async def plan_twice() -> None:
        loop = new_loop(api, clock)
        await loop.iterate()
        written = api.status_writes
        explanation = api.status()["explanation"]
        assert explanation["playbook"] == "pb"
        steps = explanation["steps"]
        assert (steps[0]["verdict"], steps[0]["reason"]) == ("Waits", "AwaitingApproval")
        assert explanation["next"].startswith("step scale-web runs once approved")
        clock.now += timedelta(minutes=1)
        await loop.iterate()
        assert api.status_writes == written  # nothing new to say: no write
        assert api.status()["explanation"]["at"] == explanation["at"]

    asyncio.run(plan_twice())


def test_a_settled_run_explains_every_step_as_ran() -> None:
    api, clock = fake_api(), Clock()
    asyncio.run(run_until_settled(api, clock))
    explanation = api.status()["explanation"]
    assert [s["verdict"] for s in explanation["steps"]] == ["Ran", "Ran", "Ran"]
    assert explanation["next"].startswith("nothing more: the incident is resolved")
    assert "hold" not in explanation


def before_each_claim(api: FakeKube, change: Callable[[dict[str, Any]], None]) -> None:
    """`change` the web Deployment right before each workload lock claim: what another actor did
    between the loop's early read and the claim."""
    claim = api.write_lock

    async def claiming(namespace: str, lease: str, holder: str | None, resource_version: str | None) -> None:
        change(api.workloads["web"])
        await claim(namespace, lease, holder, resource_version)

    api.write_lock = claiming  # type: ignore[method-assign]


def scaled_by_another_run(api: FakeKube) -> Callable[[dict[str, Any]], None]:
    """Another run scaled web 2 -> 5 and gave its lock back (once, before this run scaled)."""

    def change(web: dict[str, Any]) -> None:
        if web["replicas"] == 2 and not api.effects:
            web["replicas"] = web["ready"] = 5
            web["version"] = web.setdefault("version", 1) + 1

    return change


def test_a_scale_reads_its_deployment_once_before_its_lock_is_taken_and_scales_that_version() -> None:
    api, clock = fake_api(steps=[STEPS[0]]), Clock()
    asyncio.run(run_until_settled(api, clock))
    names = [c[0] for c in api.calls]
    assert names.count("read_workload") == 1  # the early read is the decision's read
    assert names.index("read_workload") < names.index("write_lock")  # begun before the lock's claim
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]
    assert api.status()["phase"] == "Resolved"


def test_a_scale_waiting_for_another_incidents_lock_reads_its_deployment_only_when_it_may_act() -> None:
    """A retry of a step Blocked on another incident's lock reads the lock first (`still_busy`)
    and makes no early read of the Deployment while the lock is held: 20 tries, no GET of it."""
    from incident_operator.core import targets as lock_rules
    from tests.unit.test_breaker_actions import busy_holder, retries

    api, clock = fake_api(steps=[STEPS[0]]), Clock()
    busy_holder(api, clock.now)
    loop = new_loop(api, clock)
    asyncio.run(loop.iterate())  # the first attempt: its early read, then web found busy
    reads = [c[0] for c in api.calls].count("read_workload")
    assert reads == 1
    assert api.status()["playbook"]["steps"][0]["state"] == "Blocked"
    asyncio.run(retries(loop, api, clock, 20))
    assert [c[0] for c in api.calls].count("read_workload") == reads
    assert api.effects == []
    api.incidents["other"]["spec"] = {"closed": True}  # the holder is done: read once more, and act
    api.set_lock("web", lock_rules.lock_value("other", "uid-other", clock.now - timedelta(hours=1), "r1"))
    asyncio.run(drive(loop, api, clock))
    assert [c[0] for c in api.calls].count("read_workload") == reads + 1
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]


def test_a_deployment_changed_after_the_early_read_is_read_again_and_decided_anew() -> None:
    api, clock = fake_api(steps=[STEPS[0]]), Clock()
    before_each_claim(api, scaled_by_another_run(api))
    asyncio.run(run_until_settled(api, clock))
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 6)]  # 5 + 1, not 2 + 1
    step = api.status()["playbook"]["steps"][0]
    assert (step["replicasBefore"], step["replicasAfter"]) == (5, 6)  # the decision written again
    assert [c for c in api.calls if c[0] == "scale_workload"] == [
        ("scale_workload", "web", 3),
        ("scale_workload", "web", 6),
    ]
    assert effect_status_said(api, 6)


def effect_status_said(api: FakeKube, replicas: int) -> bool:
    """Whether the status the API held when the scale to `replicas` landed had that decision."""
    effect = next(e for e in api.effects if e.kind == "scale" and e.value == replicas)
    step = effect.status["playbook"]["steps"][0]
    return bool(step.get("replicasAfter") == replicas)


def test_an_early_read_not_taken_is_cancelled_or_its_error_dropped_never_left_unretrieved() -> None:
    async def main() -> tuple[list[dict[str, Any]], bool, asyncio.Task[Any] | None]:
        unretrieved: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
        api = fake_api()
        del api.workloads["web"]  # its read fails (404)
        failing = actions.Prefetched(cast(Kube, api), NAMESPACE, WorkloadRef(kind="Deployment", name="web"))
        assert failing.task is not None
        await asyncio.wait([failing.task])
        failing.discard()
        del failing
        gc.collect()  # an exception never retrieved is reported when its task is collected
        gate = asyncio.Event()
        real = api.read_workload

        async def slow(kind: str, name: str, namespace: str) -> Any:
            await gate.wait()
            return await real(kind, name, namespace)

        api.read_workload = slow  # type: ignore[method-assign]
        pending = actions.Prefetched(cast(Kube, api), NAMESPACE, WorkloadRef(kind="Deployment", name="api"))
        task = pending.task
        other = pending.take(WorkloadRef(kind="Deployment", name="worker"))  # not its workload
        pending.discard()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=RUN_BOUND_S) if task else None
        return unretrieved, other is None, task

    unretrieved, not_taken, task = asyncio.run(main())
    assert unretrieved == []
    assert not_taken
    assert task is not None
    assert task.cancelled()


def test_a_scale_refused_because_only_the_deployments_status_moved_scales_again_without_deciding_again() -> (
    None
):
    api, clock = fake_api(steps=[STEPS[0]]), Clock()

    def status_moved(web: dict[str, Any]) -> None:
        if not api.effects:
            web["version"] = web.setdefault("version", 1) + 1  # readyReplicas changed: a new version

    before_each_claim(api, status_moved)
    asyncio.run(run_until_settled(api, clock))
    assert [c for c in api.calls if c[0] == "scale_workload"] == [("scale_workload", "web", 3)] * 2
    assert [(e.kind, e.workload, e.value) for e in api.effects] == [("scale", "web", 3)]
    names = [c[0] for c in api.calls]
    first, second = (i for i, name in enumerate(names) if name == "scale_workload")
    assert "patch_incident_status" not in names[first:second]  # no new decision: its count still held
    assert names.count("read_workload") == 2  # the early read, and one after the 409: not decided again


def test_killed_after_a_stale_early_read_was_refused_the_restart_does_not_act_on_the_stale_decision() -> None:
    api, clock = fake_api(steps=[STEPS[0]]), Clock()
    scale = api.scale_workload
    before_each_claim(api, scaled_by_another_run(api))

    async def killed_at_the_conflict(
        kind: str, name: str, namespace: str, replicas: int, resource_version: str | None = None
    ) -> None:
        try:
            await scale(kind, name, namespace, replicas, resource_version)
        except ApiException as exc:
            if exc.status == 409:
                raise Dropped from None  # the process dies with the stale decision written
            raise

    api.scale_workload = killed_at_the_conflict  # type: ignore[method-assign]

    async def scenario() -> None:
        with pytest.raises(Dropped):
            await run_until_settled(api, clock)
        step = api.status()["playbook"]["steps"][0]
        assert (step["replicasBefore"], step["replicasAfter"]) == (2, 3)  # stale, and written
        api.scale_workload = scale  # type: ignore[method-assign]
        clock.now += timedelta(seconds=10)
        loop = new_loop(api, clock)
        failed = lambda: step_states(api.status()) == ["Failed"]  # noqa: E731
        await asyncio.wait_for(loop.run(failed, asyncio.Event()), timeout=RUN_BOUND_S)

    asyncio.run(scenario())
    assert api.effects == []  # never scaled to the stale 3 (another run's 5 stays)
    assert api.workloads["web"]["replicas"] == 5
    assert (
        "not the 2 the decision 2 -> 3 was made from (changed since by someone else, or by this step "
        "before a restart): not scaled again" in api.status()["playbook"]["steps"][0]["message"]
    )
