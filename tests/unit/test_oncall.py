"""The on-call schedule's pure core (`core.oncall`): turns, precedence, overrides, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from incident_operator.api.models import OnCallScheduleSpec
from incident_operator.core import oncall
from incident_operator.core.oncall import Shift

BERLIN = oncall.zone("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


def spec_of(**overrides: Any) -> OnCallScheduleSpec:
    raw: dict[str, Any] = {
        "timeZone": "Europe/Berlin",
        "people": [{"name": "alice", "email": "alice@example.com"}, {"name": "bob"}, {"name": "carol"}],
        "layers": [
            {
                "name": "weekly",
                "start": "2026-11-30T09:00:00+01:00",
                "rotation": "P7D",
                "people": ["alice", "bob"],
            }
        ],
    }
    raw.update(overrides)
    return OnCallScheduleSpec.model_validate(raw)


def test_turns_go_round_in_order_from_the_start() -> None:
    spec = spec_of()
    assert oncall.on_call(spec, local(2026, 11, 29, 12)) is None  # before the layer starts
    first = oncall.on_call(spec, local(2026, 11, 30, 9))
    assert first == Shift("alice", "weekly", local(2026, 11, 30, 9), local(2026, 12, 7, 9))
    assert oncall.on_call(spec, local(2026, 12, 7, 8, 59)) == first
    second = oncall.on_call(spec, local(2026, 12, 10))
    assert second == Shift("bob", "weekly", local(2026, 12, 7, 9), local(2026, 12, 14, 9))
    third = oncall.on_call(spec, local(2026, 12, 14, 9))
    assert third is not None
    assert third.person == "alice"


def test_next_is_the_first_turn_of_someone_else() -> None:
    spec = spec_of()
    assert oncall.next_shift(spec, local(2026, 12, 1)) == Shift(
        "bob", "weekly", local(2026, 12, 7, 9), local(2026, 12, 14, 9)
    )
    before = oncall.next_shift(spec, local(2026, 11, 1))  # nobody yet: the first turn of anyone
    assert before is not None
    assert (before.person, before.start) == ("alice", local(2026, 11, 30, 9))


def test_an_override_wins_and_the_turn_around_it_is_cut() -> None:
    spec = spec_of(
        overrides=[{"person": "carol", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T12:00:00Z"}]
    )
    assert oncall.on_call(spec, utc(2026, 12, 2, 11)) == Shift(
        "carol", "override", utc(2026, 12, 2, 10), utc(2026, 12, 2, 12)
    )
    before = oncall.on_call(spec, utc(2026, 12, 2, 9))
    assert before is not None
    assert (before.person, before.end) == ("alice", utc(2026, 12, 2, 10))
    following = oncall.next_shift(spec, utc(2026, 12, 2, 11))
    assert following is not None
    assert (following.person, following.layer, following.start) == ("alice", "weekly", utc(2026, 12, 2, 12))
    assert [(s.person, s.layer) for s in oncall.shifts(spec, utc(2026, 12, 2), utc(2026, 12, 3))] == [
        ("alice", "weekly"),
        ("carol", "override"),
        ("alice", "weekly"),
    ]


def test_of_overlapping_overrides_the_later_start_wins() -> None:
    spec = spec_of(
        overrides=[
            {"person": "carol", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T14:00:00Z"},
            {"person": "bob", "start": "2026-12-02T11:00:00Z", "end": "2026-12-02T12:00:00Z"},
        ]
    )
    found = oncall.shifts(spec, utc(2026, 12, 2, 10), utc(2026, 12, 2, 14))
    assert found == [
        Shift("carol", "override", utc(2026, 12, 2, 10), utc(2026, 12, 2, 11)),
        Shift("bob", "override", utc(2026, 12, 2, 11), utc(2026, 12, 2, 12)),
        Shift("carol", "override", utc(2026, 12, 2, 12), utc(2026, 12, 2, 14)),
    ]


def test_a_later_layer_takes_precedence_inside_its_restrictions() -> None:
    spec = spec_of(
        layers=[
            {"name": "weekly", "start": "2026-11-30T09:00:00+01:00", "rotation": "P7D", "people": ["alice"]},
            {
                "name": "office",
                "start": "2026-11-30T00:00:00+01:00",
                "rotation": "P1D",
                "people": ["bob", "carol"],
                "restrictions": [
                    {"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "from": "09:00", "to": "17:00"}
                ],
            },
        ]
    )
    monday = oncall.shifts(spec, local(2026, 11, 30, 9), local(2026, 12, 1, 9))
    assert [(s.person, s.layer, s.start, s.end) for s in monday] == [
        ("bob", "office", local(2026, 11, 30, 9), local(2026, 11, 30, 17)),
        ("alice", "weekly", local(2026, 11, 30, 17), local(2026, 12, 1, 9)),
    ]
    saturday = oncall.on_call(spec, local(2026, 12, 5, 12))
    assert saturday is not None
    assert saturday.person == "alice"
    tuesday = oncall.on_call(spec, local(2026, 12, 1, 12))
    assert tuesday == Shift("carol", "office", local(2026, 12, 1, 9), local(2026, 12, 1, 17))


def test_a_daily_rotation_hands_off_at_the_same_local_time_across_the_change_to_winter_time() -> None:
    spec = spec_of(
        layers=[
            {"name": "daily", "start": "2026-10-20T09:00:00+02:00", "rotation": "P1D", "people": ["a", "b"]}
        ],
        people=[{"name": "a"}, {"name": "b"}],
    )
    found = oncall.shifts(spec, local(2026, 10, 24, 9), local(2026, 10, 26, 9))
    assert [s.start.astimezone(BERLIN).hour for s in found] == [9, 9]
    assert found[0].end - found[0].start == timedelta(hours=25)  # the night of 25 October is an hour longer


def test_a_single_person_layer_has_no_end_within_the_horizon() -> None:
    spec = spec_of(
        layers=[{"name": "solo", "start": "2026-01-01T00:00:00Z", "rotation": "P1D", "people": ["alice"]}]
    )
    now = utc(2026, 6, 1)
    shift = oncall.on_call(spec, now)
    assert shift is not None
    assert shift.start == utc(2026, 1, 1)
    assert oncall.open_ended(shift, now)
    assert oncall.next_shift(spec, now) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"timeZone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"timeZone": "../../etc/passwd"}, "unknown time zone"),
        (
            {
                "layers": [
                    {"name": "l", "start": "2026-01-01T00:00:00Z", "rotation": "P1D", "people": ["zed"]}
                ]
            },
            "layer l: unknown people zed",
        ),
        (
            {
                "layers": [
                    {"name": "l", "start": "2026-01-01T00:00:00Z", "rotation": "PT30S", "people": ["bob"]}
                ]
            },
            "shorter than one minute",
        ),
        (
            {
                "layers": [
                    {"name": "l", "start": "2026-01-01T00:00:00Z", "rotation": "PT0S", "people": ["bob"]}
                ]
            },
            "shorter than one minute",
        ),
        (
            {"layers": [{"name": "l", "start": "2026-01-01T00:00:00Z", "rotation": "P", "people": ["bob"]}]},
            "not an ISO 8601 duration",
        ),
        (
            {
                "layers": [
                    {"name": "l", "start": "2026-01-01T00:00:00Z", "rotation": "P400D", "people": ["bob"]}
                ]
            },
            "longer than 366 days",
        ),
        (
            {
                "layers": [
                    {
                        "name": "override",
                        "start": "2026-01-01T00:00:00Z",
                        "rotation": "P1D",
                        "people": ["bob"],
                    }
                ]
            },
            "reserved",
        ),
        (
            {
                "layers": [
                    {
                        "name": "l",
                        "start": "2026-01-01T00:00:00Z",
                        "rotation": "P1D",
                        "people": ["bob"],
                        "restrictions": [{"from": "17:00", "to": "09:00"}],
                    }
                ]
            },
            "restriction from 17:00 is not before to 09:00",
        ),
        ({"people": [{"name": "bob"}, {"name": "bob"}]}, "names someone twice"),
    ],
)
def test_problems_name_what_is_wrong(change: dict[str, Any], expected: str) -> None:
    spec = spec_of(**change)
    found = oncall.problems(spec)
    assert any(expected in p for p in found), found
    with pytest.raises(oncall.ScheduleError):
        oncall.on_call(spec, utc(2026, 1, 1))


@pytest.mark.parametrize(
    ("override", "why"),
    [
        (  # an edit removed zed while the override stayed (admission refuses only new ones)
            {"person": "zed", "start": "2026-12-02T12:00:00Z", "end": "2026-12-02T14:00:00Z"},
            "override of zed from 2026-12-02T12:00:00+00:00: unknown person zed (not in spec.people)",
        ),
        (  # the schema compares the naive end as UTC; on the schedule's clock it is not after start
            {"person": "carol", "start": "2026-12-02T12:00:00+00:00", "end": "2026-12-02T13:00:00"},
            "override of carol from 2026-12-02T12:00:00+00:00: end 2026-12-02T13:00:00 is not after start",
        ),
        (  # 02:30 and 02:45 of the spring-forward night are both the moment the clocks jump
            {"person": "carol", "start": "2026-03-29T02:30:00", "end": "2026-03-29T02:45:00"},
            "override of carol from 2026-03-29T02:30:00: end 2026-03-29T02:45:00 is not after start",
        ),
    ],
)
def test_an_override_of_a_stranger_or_of_no_time_is_ignored_not_a_problem(
    override: dict[str, Any], why: str
) -> None:
    kept = {"person": "carol", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T11:00:00Z"}
    spec = spec_of(overrides=[kept, override])
    assert oncall.problems(spec) == []
    assert oncall.ignored(spec) == [why]
    shift = oncall.on_call(spec, utc(2026, 12, 2, 12, 30))  # what the layer says: the override left out
    assert shift is not None
    assert (shift.person, shift.layer) == ("alice", "weekly")
    assert [(s.person, s.layer) for s in oncall.shifts(spec, utc(2026, 12, 2, 9), utc(2026, 12, 2, 15))] == [
        ("alice", "weekly"),
        ("carol", "override"),
        ("alice", "weekly"),
    ]
    following = oncall.next_shift(spec, utc(2026, 12, 2, 11, 30))
    assert following is not None
    assert following.person == "bob"  # the next turn of the layer, not the ignored override
    assert oncall.ignored(spec_of(overrides=[kept])) == []


def test_check_reports_what_the_models_refuse() -> None:
    spec, found = oncall.check({"people": [], "layers": []})
    assert spec is None
    assert found
    assert found[0].startswith("spec.people")
    spec, found = oncall.check({"people": [{"name": "a"}]})
    assert spec is not None
    assert found == []


def test_person_finds_contact_methods() -> None:
    spec = spec_of()
    found = oncall.person(spec, "alice")
    assert found is not None
    assert found.email == "alice@example.com"
    assert oncall.person(spec, "nobody") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("P7D", 7 * 86400), ("P1W", 7 * 86400), ("PT12H", 43200), ("P1DT12H", 129600), ("PT1M", 60)],
)
def test_rotations_parse(text: str, seconds: int) -> None:
    assert oncall.parse_rotation(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["P1M", "P1Y", "-P1D", "1D", "PT", "P1DT", ""])
def test_rotations_that_are_no_fixed_length_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rotation"):
        oncall.parse_rotation(text)


def test_a_moment_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        oncall.on_call(spec_of(), datetime(2026, 12, 1))


def test_a_handoff_at_a_local_time_that_happens_twice_is_at_its_first_occurrence() -> None:
    spec = spec_of(
        layers=[
            {"name": "d", "start": "2026-10-20T02:30:00+02:00", "rotation": "P1D", "people": ["alice", "bob"]}
        ]
    )
    # 25 October 2026, 02:30 in Berlin happens at 00:30 UTC (summer time) and 01:30 UTC (winter time)
    assert [s.start for s in oncall.shifts(spec, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))][1:] == [
        utc(2026, 10, 25, 0, 30)
    ]


def test_a_handoff_at_a_local_time_the_clocks_skip_is_when_they_jump() -> None:
    spec = spec_of(
        layers=[
            {"name": "d", "start": "2026-03-20T02:30:00+01:00", "rotation": "P1D", "people": ["alice", "bob"]}
        ]
    )
    # 29 March 2026, 02:00 to 03:00 in Berlin does not exist: the clocks jump at 01:00 UTC
    found = oncall.shifts(spec, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert [s.start for s in found][1:] == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


def test_a_restriction_inside_the_repeated_hour_ends_when_the_clocks_go_back() -> None:
    spec = spec_of(
        layers=[
            {
                "name": "late",
                "start": "2026-10-01T00:00:00Z",
                "rotation": "P7D",
                "people": ["alice"],
                "restrictions": [{"days": ["Sun"], "from": "02:30", "to": "24:00"}],
            }
        ]
    )
    # 02:30 CEST (00:30 UTC) on; the clocks go back at 03:00 CEST to 02:00 CET (01:00 UTC): off until
    # 02:30 CET (01:30 UTC), then on till midnight
    found = oncall.shifts(spec, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert [(s.start, s.end) for s in found] == [
        (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1)),
        (utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 23)),
    ]


def test_a_search_looks_at_a_bounded_number_of_handoffs_whatever_the_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten layers of one-minute turns hidden under a year-long override were half a million
    handoffs per layer for one `on_call` (72 s on the event loop): a search stops at its budget
    and says the shift is open-ended instead; a timeline (the feed) is cut at its own budget."""
    minutes = [
        {
            "name": f"l{i}",
            "start": "2026-11-30T09:00:00+01:00",
            "rotation": "PT1M",
            "people": ["alice", "bob"],
        }
        for i in range(10)
    ]
    year = [{"person": "carol", "start": "2026-11-30T00:00:00Z", "end": "2027-11-30T00:00:00Z"}]
    spec = spec_of(layers=minutes, overrides=year)
    calls = 0
    who = oncall._Schedule.who

    def counted(self: Any, moment: datetime) -> Any:
        nonlocal calls
        calls += 1
        return who(self, moment)

    monkeypatch.setattr(oncall._Schedule, "who", counted)
    at = utc(2026, 12, 1, 12)
    now = oncall.on_call(spec, at)
    assert now is not None
    assert now.person == "carol"
    assert oncall.open_ended(now, at)  # the search stopped at its budget, not at the override's end
    assert oncall.next_shift(spec, at) is None
    assert calls <= 3 * oncall.SEARCH_BUDGET
    calls = 0
    feed = oncall.shifts(spec, at, at + timedelta(weeks=26))
    assert feed == [Shift("carol", "override", at, feed[-1].end)]
    assert feed[-1].end < at + timedelta(days=2)  # cut where the timeline's budget ends
    assert calls <= 2 * oncall.TIMELINE_BUDGET


def test_short_rotations_in_a_few_layers_still_hand_off_exactly() -> None:
    two = [
        {"name": n, "start": "2026-11-30T09:00:00+01:00", "rotation": "PT1M", "people": ["alice", "bob"]}
        for n in ("a", "b")
    ]
    at = local(2026, 12, 1, 10, 0, 30)
    now = oncall.on_call(spec_of(layers=two), at)
    assert now == Shift("alice", "b", local(2026, 12, 1, 10, 0), local(2026, 12, 1, 10, 1))
    assert oncall.next_shift(spec_of(layers=two), at) == Shift(
        "bob", "b", local(2026, 12, 1, 10, 1), local(2026, 12, 1, 10, 2)
    )
