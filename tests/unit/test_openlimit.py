"""The cap on open incidents per namespace: who runs automation, who waits, who is woken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from incident_operator.core import openlimit
from incident_operator.core.openlimit import OpenIncident, entry_of, to_wake, waits
from incident_operator.settings.config import Limits

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def stamp(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def raw(
    name: str,
    created: int,
    *,
    phase: str | None = None,
    playbook: bool = False,
    waiting: bool = False,
    **spec: Any,
) -> OpenIncident | None:
    """An incident as the watch shows it, through the index's `entry_of`."""
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if playbook:
        status["playbook"] = {"name": "pb", "steps": []}
    if waiting:
        status["conditions"] = [
            {"type": "AutomationPaused", "status": "True", "reason": "OpenIncidentLimit", "message": "m"}
        ]
    metadata = {"name": name, "uid": f"uid-{name}", "creationTimestamp": stamp(created)}
    return entry_of(name, f"uid-{name}", {"title": "t", **spec}, metadata, status)


def entries(*found: OpenIncident | None) -> list[OpenIncident]:
    return [e for e in found if e is not None]


def allowed(namespace: list[OpenIncident], limit: int) -> list[str]:
    return sorted(e.name for e in namespace if waits(e, namespace, limit, "shop") is None)


def test_the_oldest_n_run_and_the_rest_wait_whatever_order_they_are_seen_in() -> None:
    shop = entries(raw("c", 20), raw("a", 0), raw("d", 30), raw("b", 10))
    assert allowed(shop, 2) == ["a", "b"]
    assert allowed(list(reversed(shop)), 2) == ["a", "b"]
    message = waits(shop[0], shop, 2, "shop")
    assert message is not None
    assert "namespace shop has 4 open incidents" in message
    assert "limits.maxOpenIncidentsPerNamespace (2)" in message
    assert "(2 ahead of it)" in message


def test_at_the_boundary_n_open_all_run_and_the_next_one_waits() -> None:
    shop = entries(raw("a", 0), raw("b", 10))
    assert allowed(shop, 2) == ["a", "b"]
    late = raw("c", 20)
    assert late is not None
    assert waits(late, shop, 2, "shop") is not None
    assert waits(late, shop, 3, "shop") is None


def test_incidents_created_in_the_same_second_are_ranked_by_name() -> None:
    shop = entries(raw("b", 0), raw("a", 0), raw("c", 0))
    assert allowed(shop, 2) == ["a", "b"]


def test_an_incident_counted_in_the_index_already_is_not_counted_twice() -> None:
    me = raw("b", 10)
    assert me is not None
    assert waits(me, entries(raw("a", 0), me), 2, "shop") is None


def test_a_resolved_or_closed_incident_frees_its_slot() -> None:
    for gone in (
        raw("a", 0, phase="Resolved"),
        raw("a", 0, phase="Closed"),
        raw("a", 0, resolution={"summary": "fixed"}),  # declared by a person, not planned yet
        raw("a", 0, closed=True),
    ):
        assert gone is None
    third = raw("c", 20)
    assert third is not None
    assert waits(third, entries(raw("a", 0), raw("b", 10), third), 2, "shop") is not None
    assert waits(third, entries(raw("a", 0, phase="Resolved"), raw("b", 10), third), 2, "shop") is None


def test_a_run_in_flight_keeps_its_place_when_an_older_incident_reopens() -> None:
    # a (older) resolved, c took its slot and runs; then a's alert fires again: a waits, c goes on
    shop = entries(
        raw("a", 0, phase="Investigating"), raw("b", 10, playbook=True), raw("c", 20, playbook=True)
    )
    assert allowed(shop, 2) == ["b", "c"]
    # with a free slot, the reopened one is first of those without a run
    assert allowed([*shop, *entries(raw("d", 5))], 3) == ["a", "b", "c"]


def test_drills_are_neither_counted_nor_held() -> None:
    assert raw("drill", 0, drill=True) is None
    assert raw("drill", 0, source={"type": "drill"}) is None
    assert not openlimit.counted({"drill": True}, "Investigating")
    assert openlimit.counted({"title": "t"}, "Investigating")


def test_a_limit_of_zero_holds_every_playbook() -> None:
    shop = entries(raw("a", 0))
    message = waits(shop[0], shop, 0, "shop")
    assert message is not None
    assert "is 0, so no playbook runs in namespace shop" in message


def test_without_a_readable_creation_time_an_incident_goes_last() -> None:
    odd = entry_of("z", "u", {"title": "t"}, {"creationTimestamp": "yesterday"}, {})
    detected = entry_of("y", "v", {"title": "t"}, {}, {"detectedAt": stamp(5)})
    assert odd is not None
    assert detected is not None
    assert odd.created == openlimit.LATEST
    assert detected.created == T0 + timedelta(seconds=5)
    assert allowed(entries(odd, detected, raw("a", 10)), 2) == ["a", "y"]


def test_only_incidents_whose_place_disagrees_with_their_status_are_woken() -> None:
    settled = entries(raw("a", 0, playbook=True), raw("b", 10, playbook=True), raw("c", 20, waiting=True))
    assert to_wake(settled, 2) == []
    # b resolves: c's slot is free, c is woken (and only c)
    assert to_wake(entries(raw("a", 0, playbook=True), raw("c", 20, waiting=True)), 2) == ["uid-c"]
    # a new one beyond the cap that has not said it waits yet
    assert to_wake([*settled, *entries(raw("d", 30))], 2) == ["uid-d"]
    # within the cap and not waiting: nobody to wake; a waiting one under the cap is woken
    assert to_wake(entries(raw("a", 0), raw("b", 10, waiting=True)), 5) == ["uid-b"]


def test_the_limit_is_configurable_with_bounds_and_defaults_to_50() -> None:
    assert Limits().maxOpenIncidentsPerNamespace == 50
    assert Limits(maxOpenIncidentsPerNamespace=0).maxOpenIncidentsPerNamespace == 0
    with pytest.raises(ValueError, match="maxOpenIncidentsPerNamespace"):
        Limits(maxOpenIncidentsPerNamespace=-1)
    with pytest.raises(ValueError, match="maxOpenIncidentsPerNamespace"):
        Limits(maxOpenIncidentsPerNamespace=10_001)


def test_a_run_started_but_not_yet_shown_by_the_watch_counts_as_running() -> None:
    a, b = raw("a", 0), raw("b", 0)  # the same second: a ranks first by name
    assert a is not None
    assert b is not None
    assert waits(a, [a, b], 1, "shop") is None  # b seems not to run ...
    assert waits(a, [a, b], 1, "shop", started={"uid-b"}) is not None  # ... but its loop started it


def test_a_run_already_in_flight_is_never_held_even_with_more_running_than_the_limit() -> None:
    """A restart with a lower limit (or 0): the runs in flight finish; only new runs wait."""
    shop = entries(raw("a", 0, playbook=True), raw("b", 10, playbook=True), raw("c", 20, playbook=True))
    for limit in (0, 1, 2):
        assert allowed(shop, limit) == ["a", "b", "c"]
        assert to_wake(shop, limit) == []  # nobody is woken to pause
    queued = raw("d", 30)
    assert queued is not None
    assert waits(queued, [*shop, queued], 2, "shop") is not None
    # a running one that said it waited (before it ran) is woken to say it goes on
    assert to_wake(entries(raw("a", 0, playbook=True, waiting=True)), 0) == ["uid-a"]


class Counted(OpenIncident):
    """An entry that counts how often the ranking looks at its place."""

    looks = 0

    @property
    def key(self) -> tuple[bool, datetime, str]:
        Counted.looks += 1
        return super().key


def test_a_flood_of_incidents_in_one_namespace_is_sorted_once_not_on_every_question() -> None:
    """5,000 open incidents: each event asks who to wake, each plan whether it waits. The order
    is sorted once per change of a place; a question looks at a handful of entries, not all."""
    flood = [Counted(f"i{n:05}", f"uid-{n}", T0 + timedelta(seconds=n)) for n in range(5000)]
    ranking = openlimit.Ranking(flood)
    assert ranking.waits(flood[10], 50, "shop") is None
    assert ranking.sorts == 1
    Counted.looks = 0
    for n in range(0, 5000, 5):  # 1,000 plans and 1,000 events
        assert (ranking.waits(flood[n], 50, "shop", started={"uid-60"}) is None) is (n < 50)
        ranking.to_wake(50, also=flood[n].uid)
    assert ranking.sorts == 1
    assert Counted.looks < 20 * 1000  # a pass over the namespace per question would be 10,000,000
    # its own status saying it waits changes no place: no sort; a resolution does, once
    for n in range(50, 5000):
        ranking.put(flood[n].uid, Counted(flood[n].name, flood[n].uid, flood[n].created, waiting=True))
    assert ranking.to_wake(50) == []
    assert ranking.sorts == 1
    ranking.put(flood[0].uid, None)
    assert ranking.to_wake(50) == ["uid-50"]  # the next one starts
    assert ranking.waits(flood[50], 50, "shop") is None
    assert ranking.sorts == 2


def test_waking_looks_near_the_cut_off_and_at_the_incident_of_the_event() -> None:
    shop = [OpenIncident(f"i{n:03}", f"uid-{n}", T0 + timedelta(seconds=n), waiting=True) for n in range(200)]
    ranking = openlimit.Ranking(shop)
    # its status saying it waits came back after many slots freed: it is far below the cut-off now
    assert ranking.to_wake(150) == [f"uid-{n}" for n in range(150 - openlimit.WAKE_WINDOW, 150)]
    assert "uid-3" in ranking.to_wake(150, also="uid-3")


def stalled(name: str, created: int, reason: str, *, playbook: bool = False) -> OpenIncident | None:
    status: dict[str, Any] = {
        "conditions": [{"type": "Stalled", "status": "True", "reason": reason, "message": "m"}]
    }
    if playbook:
        status["playbook"] = {"name": "pb", "runId": "r1", "steps": []}
    metadata = {"name": name, "uid": f"uid-{name}", "creationTimestamp": stamp(created)}
    return entry_of(name, f"uid-{name}", {"title": "t"}, metadata, status)


def test_only_incidents_that_use_a_slot_count_and_are_held() -> None:
    # no playbook to run, or paused before a run: no slot, never held
    for reason in ("NoMatchingPlaybook", "PlaybookNotFound", "InvalidPlaybook"):
        assert stalled("a", 0, reason) is None
    assert raw("a", 0, paused=True) is None
    # a run in flight holds its slot whatever its state: stalled, or paused partway
    assert stalled("a", 0, "StepFailed", playbook=True) is not None
    assert stalled("a", 0, "Misconfigured", playbook=True) is not None
    assert raw("a", 0, playbook=True, paused=True) is not None
    assert stalled("a", 0, "Forbidden") is not None  # a playbook selected, not allowed yet: it waits to run
    # 50 alert incidents with no playbook hold nothing: the 51st, with one, runs at once
    shop = entries(*(stalled(f"x{n:02}", n, "NoMatchingPlaybook") for n in range(50)), raw("late", 100))
    assert allowed(shop, 50) == ["late"]
