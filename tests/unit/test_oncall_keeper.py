"""The keeper of OnCallSchedule status (`controllers.oncall`, `core.oncallstatus`) against an
in-memory API: written at start and at each boundary, not rewritten when nothing changed, an
invalid spec gets Ready=False with one Event and no retry loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from incident_operator.api.timestamps import format_time, utc_now
from incident_operator.controllers.oncall import OnCallKeeper
from incident_operator.core import conditions, oncallstatus
from tests.polling import until

T0 = datetime(2026, 12, 2, 11, 30, tzinfo=UTC)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies it (a null removes the key, at any depth)."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merge_patch(result.get(key) if isinstance(result.get(key), dict) else {}, value)
        else:
            result[key] = value
    return result


class Api:
    """The two calls the keeper makes: a status merge patch, an Event."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    async def patch_object_status(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> Any:
        assert plural == "oncallschedules"
        self.patches.append(body)
        self.body = merge_patch(self.body, body)
        return self.body

    async def post_event(self, involved: Any, type_: str, reason: str, message: str, when: datetime) -> None:
        self.events.append((type_, reason, message))


def schedule(spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "incident-operator.dev/v1alpha1",
        "kind": "OnCallSchedule",
        "metadata": {"namespace": "shop", "name": "primary", "generation": generation},
        "spec": spec,
    }


TWO = {
    "timeZone": "UTC",
    "people": [{"name": "alice"}, {"name": "bob"}, {"name": "carol"}],
    "layers": [
        {"name": "daily", "start": "2026-12-01T09:00:00Z", "rotation": "P1D", "people": ["alice", "bob"]}
    ],
    "overrides": [{"person": "carol", "start": "2026-12-02T12:00:00Z", "end": "2026-12-02T14:00:00Z"}],
}


def test_the_status_says_who_now_until_when_and_who_next() -> None:
    observed = oncallstatus.observe(TWO, {}, 1, T0)
    assert observed.status["current"] == {"person": "bob", "layer": "daily", "until": "2026-12-02T12:00:00Z"}
    assert observed.status["next"] == {"person": "carol", "layer": "override", "from": "2026-12-02T12:00:00Z"}
    assert observed.wake == datetime(2026, 12, 2, 12, tzinfo=UTC)
    assert conditions.is_true(observed.status["conditions"], "Ready")
    assert not conditions.is_true(observed.status["conditions"], "Invalid")
    again = oncallstatus.observe(TWO, observed.status, 1, T0 + timedelta(minutes=5))
    assert not oncallstatus.differs(observed.status, again)  # nothing changed: nothing to write


def test_an_override_of_someone_removed_from_people_is_ignored_and_ready_says_so() -> None:
    """An edit removed carol while her override stayed (admission checks only new overrides): the
    schedule stays Ready from its layers, and Ready's message names the override left out."""
    stale = {**TWO, "people": [{"name": "alice"}, {"name": "bob"}]}
    observed = oncallstatus.observe(stale, {}, 2, T0)
    assert not observed.invalid
    assert observed.status["current"] == {"person": "bob", "layer": "daily", "until": "2026-12-03T09:00:00Z"}
    assert observed.status["next"] == {"person": "alice", "layer": "daily", "from": "2026-12-03T09:00:00Z"}
    ready = conditions.find_condition(observed.status["conditions"], "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Valid")
    assert ready["message"].endswith(
        "; ignored: override of carol from 2026-12-02T12:00:00+00:00: "
        "unknown person carol (not in spec.people)"
    )
    assert not conditions.is_true(observed.status["conditions"], "Invalid")


def test_written_at_start_not_again_until_a_boundary_then_again() -> None:
    async def run() -> None:
        api = Api(schedule(TWO))
        now = [T0]
        keeper = OnCallKeeper(api, clock=lambda: now[0])
        keeper.bodies[("shop", "primary")] = api.body
        delay = await keeper.reconcile(("shop", "primary"))
        assert len(api.patches) == 1
        assert delay is not None
        assert 1800 <= delay <= 1801  # woken at the boundary, just after it
        keeper.bodies[("shop", "primary")] = api.body  # the watch shows our own write
        now[0] = T0 + timedelta(minutes=20)
        await keeper.reconcile(("shop", "primary"))
        assert len(api.patches) == 1
        now[0] = datetime(2026, 12, 2, 12, 0, 1, tzinfo=UTC)
        await keeper.reconcile(("shop", "primary"))
        assert len(api.patches) == 2
        assert api.body["status"]["current"]["person"] == "carol"
        assert api.body["status"]["next"] == {
            "person": "bob",
            "layer": "daily",
            "from": "2026-12-02T14:00:00Z",
        }
        assert api.events == []

    asyncio.run(run())


def test_an_invalid_schedule_gets_ready_false_one_event_and_no_retry() -> None:
    bad = {
        **TWO,
        "timeZone": "Mars/Olympus",
        "overrides": [{"person": "zed", "start": "2026-12-02T12:00:00Z", "end": "2026-12-02T14:00:00Z"}],
    }

    async def run() -> None:
        api = Api(schedule(bad))
        keeper = OnCallKeeper(api, clock=lambda: T0)
        keeper.bodies[("shop", "primary")] = api.body
        assert await keeper.reconcile(("shop", "primary")) is None  # wait for the spec to change
        keeper.bodies[("shop", "primary")] = api.body
        assert await keeper.reconcile(("shop", "primary")) is None
        assert len(api.patches) == 1
        status = api.body["status"]
        assert "current" not in status
        ready = conditions.find_condition(status["conditions"], "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert "unknown time zone 'Mars/Olympus'" in ready["message"]
        assert "unknown person zed" in ready["message"]
        assert [(t, r) for t, r, _ in api.events] == [("Warning", "Invalid")]

    asyncio.run(run())


def test_the_loop_writes_at_the_boundary_by_itself() -> None:
    async def run() -> None:
        start = utc_now() - timedelta(seconds=59)
        spec = {
            "people": [{"name": "alice"}, {"name": "bob"}],
            "layers": [
                {"name": "fast", "start": format_time(start), "rotation": "PT1M", "people": ["alice", "bob"]}
            ],
        }
        api = Api(schedule(spec))
        keeper = OnCallKeeper(api)
        keeper.observe("ADDED", api.body)
        await until(lambda: len(api.patches) >= 2, timeout=10, what="the write at the boundary")
        assert api.patches[0]["status"]["current"]["person"] == "alice"
        assert api.patches[1]["status"]["current"]["person"] == "bob"
        keeper.observe("DELETED", api.body)
        await keeper.stop()
        assert keeper.loops == {}

    asyncio.run(run())
