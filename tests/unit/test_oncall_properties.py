"""Properties of the on-call schedule (`core.oncall`), checked with hypothesis over time zones with
daylight-saving changes (Europe/Berlin, America/New_York, Australia/Lord_Howe's half hour), random
rotations, restrictions, layers and overrides:

- within one layer, no gap and no overlap from its start on;
- handoffs at the stated local wall time (a P1D or P7D rotation: the same local time every time);
- the flat timeline is ordered and never overlaps;
- overrides win, later layers take precedence where they cover a moment, restrictions are respected
  (against a reference written plainly here: who is on call at a moment, by definition);
- `next_shift` is the first turn of another person.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from incident_operator.api.models import WEEKDAYS, OnCallScheduleSpec
from incident_operator.core import oncall

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"]
DAY_ROTATIONS = ["P1D", "P2D", "P7D", "P14D"]
ROTATIONS = [*DAY_ROTATIONS, "PT12H", "PT8H", "PT1H", "PT30M", "P1DT12H"]
NAMES = ["alice", "bob", "carol", "dave"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CHANGES = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # America/New_York to summer time
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # Europe/Berlin
    datetime(2026, 4, 4, 15, tzinfo=UTC),  # Australia/Lord_Howe back by half an hour
    datetime(2026, 10, 3, 15, tzinfo=UTC),  # Australia/Lord_Howe forward by half an hour
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Europe/Berlin to winter time
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # America/New_York
]
"""The daylight-saving changes of 2026 in the zones tested: most moments are drawn near one."""
anywhere = st.datetimes(
    min_value=datetime(2026, 3, 1),
    max_value=datetime(2026, 11, 30),
).map(lambda m: m.replace(tzinfo=UTC, second=0, microsecond=0))
near_a_change = st.builds(
    lambda change, minutes: change + timedelta(minutes=minutes),
    st.sampled_from(CHANGES),
    st.integers(-3 * 1440, 3 * 1440),
)
moments = st.one_of(near_a_change, near_a_change, anywhere)


def _distinct_people(draw: st.DrawFn) -> list[str]:
    count = draw(st.integers(min_value=1, max_value=4))
    return NAMES[:count] if draw(st.booleans()) else list(reversed(NAMES[:count]))


@st.composite
def restrictions(draw: st.DrawFn) -> list[dict[str, Any]]:
    found = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        lo = draw(st.integers(min_value=0, max_value=23 * 60))
        hi = draw(st.integers(min_value=lo + 1, max_value=24 * 60))
        days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
        found.append({"days": days, "from": _hhmm(lo), "to": _hhmm(hi)})
    return found


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _near(draw: st.DrawFn, base: datetime | None, before: int, after: int) -> datetime:
    if base is None:
        return draw(moments)
    return base + timedelta(minutes=draw(st.integers(-before, after)))


@st.composite
def layers(
    draw: st.DrawFn, name: str, restricted: bool | None = None, base: datetime | None = None
) -> dict[str, Any]:
    start = _near(draw, base, 30 * 1440, 1440)
    layer: dict[str, Any] = {
        "name": name,
        "start": start.isoformat(),
        "rotation": draw(st.sampled_from(ROTATIONS)),
        "people": draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4)),
    }
    if restricted or (restricted is None and draw(st.booleans())):
        layer["restrictions"] = draw(restrictions())
    return layer


@st.composite
def schedules(draw: st.DrawFn, base: datetime | None = None) -> OnCallScheduleSpec:
    """A schedule whose layers start and overrides lie around `base` (anywhere without)."""
    count = draw(st.integers(min_value=1, max_value=3))
    overrides = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        start = _near(draw, base, 1440, 4 * 1440)
        length = draw(st.integers(min_value=1, max_value=48 * 60))
        overrides.append(
            {
                "person": draw(st.sampled_from(NAMES)),
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=length)).isoformat(),
            }
        )
    return OnCallScheduleSpec.model_validate(
        {
            "timeZone": draw(st.sampled_from(ZONES)),
            "people": [{"name": n} for n in NAMES],
            "layers": [draw(layers(f"l{i}", base=base)) for i in range(count)],
            "overrides": overrides,
        }
    )


# ----------------------------------------------------------------------------- the reference


def _handoff(start: datetime, rotation: timedelta, k: int, tz: ZoneInfo) -> datetime:
    wall = start.astimezone(tz).replace(tzinfo=None) + k * rotation
    return oncall.local_to_utc(wall, tz)


def reference(spec: OnCallScheduleSpec, at: datetime) -> tuple[str, str] | None:
    """Who is on call at `at`, by the rules' words, computed the slow way."""
    tz = ZoneInfo(spec.timeZone)
    covering = [(o.start, i, o.person) for i, o in enumerate(spec.overrides or []) if o.start <= at < o.end]
    if covering:
        return max(covering)[2], "override"
    for layer in reversed(spec.layers):
        if at < layer.start:
            continue
        wall = at.astimezone(tz)
        minute = wall.hour * 60 + wall.minute
        if layer.restrictions and not any(
            WEEKDAYS[wall.weekday()] in (r.days or WEEKDAYS)
            and int(r.from_[:2]) * 60 + int(r.from_[3:]) <= minute < int(r.to[:2]) * 60 + int(r.to[3:])
            for r in layer.restrictions
        ):
            continue
        rotation = oncall.parse_rotation(layer.rotation)
        k = max(0, int((at - layer.start) / rotation) - 2)
        while _handoff(layer.start, rotation, k + 1, tz) <= at:
            k += 1
        return layer.people[k % len(layer.people)], layer.name
    return None


def _samples(draw: st.DrawFn, low: datetime, high: datetime, count: int = 12) -> list[datetime]:
    span = int((high - low).total_seconds())
    return [low + timedelta(seconds=draw(st.integers(0, span - 1))) for _ in range(count)]


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(st.data())
def test_one_layer_has_no_gap_and_no_overlap(data: st.DataObject) -> None:
    tz_name = data.draw(st.sampled_from(ZONES))
    start = data.draw(moments)
    rotation = data.draw(st.sampled_from(ROTATIONS))
    people = _distinct_people(data.draw)
    spec = OnCallScheduleSpec.model_validate(
        {
            "timeZone": tz_name,
            "people": [{"name": n} for n in NAMES],
            "layers": [{"name": "only", "start": start.isoformat(), "rotation": rotation, "people": people}],
        }
    )
    low = start + timedelta(minutes=data.draw(st.integers(-3000, 30000)))
    high = low + timedelta(hours=data.draw(st.integers(1, 24 * 40)))
    found = oncall.shifts(spec, low, high)
    begin = max(low, start)
    if high <= begin:
        assert found == []
        return
    assert found[0].start == begin
    assert found[-1].end == high
    for before, after in itertools.pairwise(found):
        assert before.end == after.start  # no gap, no overlap
        assert before.person != after.person
    assert all(s.start < s.end and s.layer == "only" for s in found)


@SETTINGS
@given(
    tz_name=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    day=moments,
    hour=st.integers(5, 22),
    minute=st.sampled_from([0, 15, 30]),
    rotation=st.sampled_from(DAY_ROTATIONS),
)
def test_day_long_rotations_hand_off_at_the_same_local_time_across_daylight_saving_changes(
    tz_name: str, day: datetime, hour: int, minute: int, rotation: str
) -> None:
    tz = ZoneInfo(tz_name)
    start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    spec = OnCallScheduleSpec.model_validate(
        {
            "timeZone": tz_name,
            "people": [{"name": n} for n in NAMES],
            "layers": [
                {"name": "l", "start": start.isoformat(), "rotation": rotation, "people": ["alice", "bob"]}
            ],
        }
    )
    found = oncall.shifts(spec, start.astimezone(UTC), start.astimezone(UTC) + timedelta(days=120))
    assert len(found) >= 2
    for shift in found[1:]:
        wall = shift.start.astimezone(tz)
        assert (wall.hour, wall.minute) == (hour, minute), shift
    lengths = {(s.end - s.start) for s in found[:-1]}
    days = oncall.parse_rotation(rotation).days
    assert lengths <= {timedelta(days=days) + timedelta(minutes=d) for d in (-60, -30, 0, 30, 60)}


@SETTINGS
@given(data=st.data())
def test_the_timeline_agrees_with_the_rules_at_every_moment(data: st.DataObject) -> None:
    low = data.draw(moments)
    spec = data.draw(schedules(base=low))
    high = low + timedelta(hours=data.draw(st.integers(1, 24 * 6)))
    found = oncall.shifts(spec, low, high)
    for before, after in itertools.pairwise(found):
        assert before.end <= after.start  # ordered, never overlapping
        if before.end == after.start:
            assert (before.person, before.layer) != (after.person, after.layer)  # neighbours merged
    assert all(low <= s.start < s.end <= high for s in found)
    for at in _samples(data.draw, low, high):
        expected = reference(spec, at)
        inside = [s for s in found if s.start <= at < s.end]
        assert [(s.person, s.layer) for s in inside] == ([expected] if expected else []), at
        now = oncall.on_call(spec, at)
        assert (now.person, now.layer) == expected if now else expected is None
        if now is not None:
            assert now.start <= at < now.end
            assert reference(spec, now.start) == expected
            if not oncall.open_ended(now, at):
                assert reference(spec, now.end) != expected
            if now.start > at - oncall.HORIZON:
                assert reference(spec, now.start - timedelta(microseconds=1)) != expected


@SETTINGS
@given(data=st.data())
def test_next_is_the_first_turn_of_another_person(data: st.DataObject) -> None:
    at = data.draw(moments)
    spec = data.draw(schedules(base=at))
    now = oncall.on_call(spec, at)
    following = oncall.next_shift(spec, at)
    if following is None:
        return
    assert following.start > at
    assert now is None or following.person != now.person
    assert reference(spec, following.start) == (following.person, following.layer)
    between = oncall.shifts(spec, at, following.start)
    assert all(now is not None and s.person == now.person for s in between)


@SETTINGS
@given(data=st.data())
def test_restrictions_are_respected(data: st.DataObject) -> None:
    tz_name = data.draw(st.sampled_from(ZONES))
    low = data.draw(moments)
    layer = data.draw(layers("office", restricted=True, base=low))
    spec = OnCallScheduleSpec.model_validate(
        {"timeZone": tz_name, "people": [{"name": n} for n in NAMES], "layers": [layer]}
    )
    tz = ZoneInfo(tz_name)
    high = low + timedelta(days=data.draw(st.integers(1, 14)))
    found = oncall.shifts(spec, low, high)
    windows = spec.layers[0].restrictions or []

    def inside(at: datetime) -> bool:
        wall = at.astimezone(tz)
        minute = wall.hour * 60 + wall.minute
        return at >= spec.layers[0].start and any(
            WEEKDAYS[wall.weekday()] in (r.days or WEEKDAYS)
            and r.from_ <= f"{minute // 60:02d}:{minute % 60:02d}" < r.to
            for r in windows
        )

    for shift in found:
        assert inside(shift.start)
        assert inside(shift.end - timedelta(seconds=1))
    for at in _samples(data.draw, low, high, 20):
        assert inside(at) == any(s.start <= at < s.end for s in found), at


@SETTINGS
@given(
    tz_name=st.sampled_from(ZONES),
    first=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)),
    later=st.integers(0, 6 * 3600),
)
def test_local_times_map_to_instants_in_order(tz_name: str, first: datetime, later: int) -> None:
    tz = ZoneInfo(tz_name)
    second = first + timedelta(seconds=later)
    a, b = oncall.local_to_utc(first, tz), oncall.local_to_utc(second, tz)
    assert a <= b
    if a.astimezone(tz).replace(tzinfo=None) != first:  # a time the clocks skipped: the jump itself
        offset_before = (a - timedelta(seconds=1)).astimezone(tz).utcoffset()
        assert offset_before != a.astimezone(tz).utcoffset()


def test_a_turn_that_began_at_a_layers_start_weeks_back_is_found_there_not_a_horizon_back() -> None:
    """Found by hypothesis: a later layer starting at the moment asked about made the search back
    count its half-hour handoffs before it existed, run out of budget and say the turn of the
    earlier layer began a year back (before that layer's own start)."""
    at = datetime(2026, 3, 8, 7, tzinfo=UTC)
    spec = OnCallScheduleSpec.model_validate(
        {
            "timeZone": "Europe/Berlin",
            "people": [{"name": n} for n in NAMES],
            "layers": [
                {"name": "l0", "start": at.isoformat(), "rotation": "PT30M", "people": ["alice", "bob"]},
                {"name": "l1", "start": "2026-03-01T07:00:00Z", "rotation": "PT1H", "people": ["alice"]},
            ],
        }
    )
    now = oncall.on_call(spec, at)
    assert now is not None
    assert (now.person, now.layer, now.start) == ("alice", "l1", datetime(2026, 3, 1, 7, tzinfo=UTC))


def test_a_lone_persons_minute_by_minute_layer_turn_starts_at_the_layers_start() -> None:
    """A layer of one person hands over to that person every minute: no handoff is a change, so
    its turn is found from the layer's start however short its rotation (not a year back)."""
    start = datetime(2026, 2, 1, 8, tzinfo=UTC)
    spec = OnCallScheduleSpec.model_validate(
        {
            "timeZone": "UTC",
            "people": [{"name": n} for n in NAMES],
            "layers": [{"name": "solo", "start": start.isoformat(), "rotation": "PT1M", "people": ["alice"]}],
        }
    )
    now = oncall.on_call(spec, start + timedelta(days=40))
    assert now is not None
    assert (now.person, now.start) == ("alice", start)


def test_a_lone_persons_minute_by_minute_layer_does_not_shorten_the_calendar_feed() -> None:
    """The feed's timeline is cut where its budget of handoffs ends; a lone person's layer hands
    over to itself, whatever its rotation: 90 days of it are one turn, not 129,600 handoffs."""
    start = datetime(2026, 2, 1, 8, tzinfo=UTC)
    spec = OnCallScheduleSpec.model_validate(
        {
            "timeZone": "UTC",
            "people": [{"name": n} for n in NAMES],
            "layers": [{"name": "solo", "start": start.isoformat(), "rotation": "PT1M", "people": ["alice"]}],
        }
    )
    found = oncall.shifts(spec, start, start + timedelta(days=90))
    assert [(s.person, s.start, s.end) for s in found] == [("alice", start, start + timedelta(days=90))]


def test_a_busy_layer_counts_towards_the_search_only_from_its_own_start() -> None:
    """A minute-by-minute layer that began a day ago (under a lone person's layer that wins) is
    counted from its start: the search back reaches the lone layer's start three weeks back."""
    at = datetime(2026, 6, 1, 12, tzinfo=UTC)
    spec = OnCallScheduleSpec.model_validate(
        {
            "timeZone": "UTC",
            "people": [{"name": n} for n in NAMES],
            "layers": [
                {
                    "name": "minutes",
                    "start": (at - timedelta(days=1)).isoformat(),
                    "rotation": "PT1M",
                    "people": ["bob", "carol"],
                },
                {
                    "name": "solo",
                    "start": (at - timedelta(days=20)).isoformat(),
                    "rotation": "P1D",
                    "people": ["alice"],
                },
            ],
        }
    )
    now = oncall.on_call(spec, at)
    assert now is not None
    assert (now.person, now.layer, now.start) == ("alice", "solo", at - timedelta(days=20))
