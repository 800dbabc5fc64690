"""Who is on call when, from an OnCallSchedule's spec. Pure: the time is passed in.

The rules (docs/guide/oncall.md says them for users):

- A layer's turns are counted on the schedule's local clock (`timeZone`): handoff k is at the
  local wall time `start + k * rotation`, so a P1D or P7D rotation hands off at the same local
  time across daylight-saving changes. A local time that does not exist (the hour skipped in
  spring) hands off at the moment the clocks jump; an ambiguous one (the hour repeated in autumn)
  at its first occurrence. Within a layer there is no gap and no overlap: from `start` on, every
  moment has exactly one person of the layer (a restriction masks the layer, it does not move the
  turns). Before `start` the layer covers nothing.
- Restrictions (`{days, from, to}`) are windows of local wall time: the layer covers a moment
  only inside one of them.
- Later layers take precedence where they cover a moment; overrides win over every layer (of
  overlapping overrides, the one that starts last; of two starting together, the later in the list).
- A rotation is at least MIN_ROTATION (one minute) and at most MAX_ROTATION (366 days), in weeks,
  days, hours, minutes and seconds (months and years are no fixed length).

`problems` says what makes a spec unusable; the other functions expect a spec without problems
(they raise `ScheduleError` otherwise). An override naming someone not in spec.people, or whose
end is not after its start, is no problem of the spec: it is left out (`ignored` says which).
Shifts are in UTC; a shift that does not end (or start) within HORIZON of the moment asked about
is cut there, and so is a search that would look at more than SEARCH_BUDGET possible handoffs (a
timeline: TIMELINE_BUDGET).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from incident_operator.api.models import (
    OVERRIDE_LAYER,
    WEEKDAYS,
    OnCallPerson,
    OnCallScheduleSpec,
    Override,
    RotationLayer,
    RotationRestriction,
)

MIN_ROTATION = timedelta(minutes=1)
MAX_ROTATION = timedelta(days=366)
HORIZON = timedelta(days=366)
"""How far `on_call` and `next_shift` look, forwards and backwards."""
_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=31), HORIZON)
"""The growing windows a search looks through (cheap for the usual case: a change within an hour or a day)."""
SEARCH_BUDGET = 2_000
"""At most about this many possible handoffs are looked at by one search (`on_call`,
`next_shift`): ten layers of one-minute turns hidden under a year-long override would otherwise be
half a million per layer, on the operator's event loop. A search that would pass it stops there
as if it had reached HORIZON (the shift is open-ended, `next_shift` finds none)."""
TIMELINE_BUDGET = 20_000
"""At most about this many possible handoffs in one `shifts` timeline (the calendar feed): a
longer one is cut where the budget ends."""

_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


class ScheduleError(ValueError):
    """The spec has problems (see `problems`); nothing can be computed from it."""


@dataclass(frozen=True)
class Shift:
    person: str
    layer: str
    """The layer's name, or "override"."""
    start: datetime
    """Aware, UTC."""
    end: datetime


# ----------------------------------------------------------------------------- parsing and checks


def parse_rotation(text: str) -> timedelta:
    """An ISO 8601 duration of weeks, days, hours, minutes and seconds; raises ValueError."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(
            f"rotation {text!r} is not an ISO 8601 duration of weeks, days, hours, minutes or seconds "
            "(e.g. P7D, P1D, PT12H)"
        )
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = weeks * 7 * 86400 + days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total > MAX_ROTATION.total_seconds():
        raise ValueError(f"rotation {text} is longer than {MAX_ROTATION.days} days")
    return timedelta(seconds=total)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; raises ValueError for an unknown one."""
    if not _ZONE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None


def problems(spec: OnCallScheduleSpec) -> list[str]:
    """What makes the schedule unusable (empty: nothing): the reasons of condition Ready=False."""
    found: list[str] = []
    try:
        zone(spec.timeZone)
    except ValueError as exc:
        found.append(str(exc))
    names = [p.name for p in spec.people]
    known = set(names)
    if len(known) != len(names):
        found.append("spec.people names someone twice")
    layer_names = [layer.name for layer in spec.layers]
    if len(set(layer_names)) != len(layer_names):
        found.append("spec.layers has two layers of one name")
    for layer in spec.layers:
        where = f"layer {layer.name}"
        if layer.name == OVERRIDE_LAYER:
            found.append(f"{where}: the name {OVERRIDE_LAYER} is reserved for overrides")
        try:
            rotation = parse_rotation(layer.rotation)
        except ValueError as exc:
            found.append(f"{where}: {exc}")
        else:
            if rotation < MIN_ROTATION:
                found.append(f"{where}: rotation {layer.rotation} is shorter than one minute (PT1M)")
        unknown = sorted({p for p in layer.people if p not in known})
        if unknown:
            found.append(f"{where}: unknown people {', '.join(unknown)} (not in spec.people)")
        for restriction in layer.restrictions or []:
            if _minutes(restriction.from_) >= _minutes(restriction.to):
                found.append(
                    f"{where}: restriction from {restriction.from_} is not before to {restriction.to}"
                )
    return found


def ignored(spec: OnCallScheduleSpec) -> list[str]:
    """The overrides the computation leaves out, and why (empty: none). An override naming someone
    not in spec.people (an edit removed them while the override stayed: admission refuses only new
    or changed ones) or covering no time (its end, on the schedule's clock, not after its start)
    is ignored, not a problem: a stale override does not take the whole schedule down."""
    return [why for _, why in _override_checks(spec) if why]


def _override_checks(spec: OnCallScheduleSpec) -> Iterator[tuple[Override, str]]:
    """Each override with why it is ignored ("" if it is not)."""
    known = {p.name for p in spec.people}
    try:
        tz: ZoneInfo | None = zone(spec.timeZone)
    except ValueError:
        tz = None  # a problem of the spec; nothing is computed from it
    for override in spec.overrides or []:
        where = f"override of {override.person} from {_iso(override.start)}"
        if override.person not in known:
            yield override, f"{where}: unknown person {override.person} (not in spec.people)"
        elif tz is not None and _utc(override.end, tz) <= _utc(override.start, tz):
            yield override, f"{where}: end {_iso(override.end)} is not after start"
        else:
            yield override, ""


def check(raw: Mapping[str, Any]) -> tuple[OnCallScheduleSpec | None, list[str]]:
    """The spec parsed from an object's `spec`, and its problems (the spec is None if the models
    refuse it; the problems then say why)."""
    try:
        spec = OnCallScheduleSpec.model_validate(dict(raw))
    except ValidationError as exc:
        return None, [_validation_problem(e) for e in exc.errors()[:5]]
    return spec, problems(spec)


def _validation_problem(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"spec.{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def person(spec: OnCallScheduleSpec, name: str) -> OnCallPerson | None:
    """The person of that name in spec.people, or None."""
    return next((p for p in spec.people if p.name == name), None)


# ----------------------------------------------------------------------------- local time


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _offset(moment: datetime, tz: ZoneInfo) -> timedelta:
    return moment.astimezone(tz).utcoffset() or timedelta(0)


def local_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant a naive local wall time names: an ambiguous one (fold) its first occurrence, one
    that does not exist (skipped in spring) the moment the clocks jumped. Monotone: a later wall time
    is never an earlier instant."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        return min(first, second)
    # In a gap: fold=0 reads it with the offset before the jump (an instant after it), fold=1 with
    # the one after (an instant before it). The jump lies between: find it to the second.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    after = _offset(high, tz)
    while (high - low) > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if _offset(middle, tz) == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0) if _offset(high.replace(microsecond=0), tz) == after else high


def _utc(moment: datetime, tz: ZoneInfo) -> datetime:
    """An aware moment in UTC; a naive one is local wall time of `tz`."""
    if moment.tzinfo is None:
        return local_to_utc(moment, tz)
    return moment.astimezone(UTC)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def _transitions(tz: ZoneInfo, low: datetime, high: datetime) -> Iterator[datetime]:
    """The instants in (low, high] when the offset of `tz` changes (at most one a day)."""
    day = timedelta(days=1)
    cursor = low
    while cursor < high:
        step_end = min(cursor + day, high)
        before = _offset(cursor, tz)
        if _offset(step_end, tz) != before:
            a, b = cursor, step_end
            while (b - a) > timedelta(seconds=1):
                middle = a + (b - a) / 2
                if _offset(middle, tz) == before:
                    a = middle
                else:
                    b = middle
            yield b.replace(microsecond=0) if _offset(b.replace(microsecond=0), tz) != before else b
        cursor = step_end


# ----------------------------------------------------------------------------- one layer


@dataclass(frozen=True)
class _Layer:
    """A layer ready to compute with: its local start and rotation, and its windows."""

    name: str
    people: tuple[str, ...]
    start_wall: datetime
    start: datetime
    rotation: timedelta
    windows: tuple[tuple[frozenset[int], int, int], ...]
    """(weekdays, from minute, to minute); empty: always."""
    changes: tuple[int, ...]
    """The turn indexes (mod len(people)) at whose start the person differs from the turn before."""

    def handoff(self, k: int, tz: ZoneInfo) -> datetime:
        return local_to_utc(self.start_wall + k * self.rotation, tz)

    def turn(self, moment: datetime, tz: ZoneInfo) -> int:
        """The turn k at `moment` (>= start): the last k whose handoff is not after it."""
        k = max(0, (_wall(moment, tz) - self.start_wall) // self.rotation)
        while self.handoff(k + 1, tz) <= moment:
            k += 1
        while k > 0 and self.handoff(k, tz) > moment:
            k -= 1
        return k

    def covers(self, moment: datetime, tz: ZoneInfo) -> bool:
        if moment < self.start:
            return False
        if not self.windows:
            return True
        wall = _wall(moment, tz)
        minute = wall.hour * 60 + wall.minute
        return any(wall.weekday() in days and lo <= minute < hi for days, lo, hi in self.windows)

    def who(self, moment: datetime, tz: ZoneInfo) -> str | None:
        if not self.covers(moment, tz):
            return None
        return self.people[self.turn(moment, tz) % len(self.people)]

    def boundaries(self, low: datetime, high: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Instants in (low, high] where who the layer says may change."""
        if high < self.start:
            return
        if low < self.start:
            yield self.start
        begin = max(low, self.start)
        if self.changes:
            n = len(self.people)
            k = self.turn(begin, tz) + 1
            while True:
                moment = self.handoff(k, tz)
                if moment > high:
                    break
                if k % n in self.changes and moment > low:
                    yield moment
                k += 1
        if self.windows:
            yield from self._window_edges(begin, high, tz)

    def _window_edges(self, low: datetime, high: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        first: date = _wall(low, tz).date() - timedelta(days=1)
        last: date = _wall(high, tz).date() + timedelta(days=1)
        day = first
        while day <= last:
            for days, lo, hi in self.windows:
                if day.weekday() not in days:
                    continue
                for minute in (lo, hi):
                    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
                    for fold in (0, 1):
                        moment = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
                        if low < moment <= high:
                            yield moment
                    moment = local_to_utc(wall, tz)
                    if low < moment <= high:
                        yield moment
            day += timedelta(days=1)
        yield from _transitions(tz, low, high)


def _window(restriction: RotationRestriction) -> tuple[frozenset[int], int, int]:
    days = restriction.days or list(WEEKDAYS)
    return frozenset(WEEKDAYS.index(d) for d in days), _minutes(restriction.from_), _minutes(restriction.to)


def _layer(layer: RotationLayer, tz: ZoneInfo) -> _Layer:
    start = _utc(layer.start, tz)
    people = tuple(layer.people)
    n = len(people)
    changes = tuple(k for k in range(n) if people[k] != people[k - 1])
    return _Layer(
        name=layer.name,
        people=people,
        start_wall=_wall(start, tz),
        start=start,
        rotation=parse_rotation(layer.rotation),
        windows=tuple(_window(r) for r in layer.restrictions or []),
        changes=changes,
    )


# ----------------------------------------------------------------------------- the whole schedule


@dataclass(frozen=True)
class _Override:
    person: str
    start: datetime
    end: datetime
    order: int


class _Schedule:
    """A spec ready to compute with."""

    def __init__(self, spec: OnCallScheduleSpec) -> None:
        found = problems(spec)
        if found:
            raise ScheduleError("; ".join(found))
        self.tz = zone(spec.timeZone)
        self.layers = [_layer(layer, self.tz) for layer in spec.layers]
        self.overrides = [
            _Override(o.person, _utc(o.start, self.tz), _utc(o.end, self.tz), i)
            for i, (o, why) in enumerate(_override_checks(spec))
            if not why
        ]

    def who(self, moment: datetime) -> tuple[str, str] | None:
        """(person, layer) on call at `moment`, or None."""
        best: _Override | None = None
        for override in self.overrides:
            if override.start <= moment < override.end and (best is None or override.start >= best.start):
                best = override
        if best is not None:
            return best.person, OVERRIDE_LAYER
        for layer in reversed(self.layers):
            found = layer.who(moment, self.tz)
            if found is not None:
                return found, layer.name
        return None

    def cost(self, low: datetime, high: datetime) -> int:
        """About how many possible handoffs lie in [low, high): what `boundaries` will produce (a
        layer counts from its start on; one person always on call, only its start)."""
        low, high = min(low, high), max(low, high)
        total = len(self.overrides) * 2
        for layer in self.layers:
            if high < layer.start:
                continue
            if not layer.changes and not layer.windows:
                total += 1
            else:
                total += (high - max(low, layer.start)) // layer.rotation + 1
        return total

    def reach(self, start: datetime, budget: int) -> datetime:
        """How far from `start` a timeline stays within `budget` possible handoffs (counted as
        `cost` counts them: one person always on call costs one, whatever its rotation)."""
        turning = [layer for layer in self.layers if layer.changes or layer.windows]
        per_second = sum(1 / layer.rotation.total_seconds() for layer in turning)
        if per_second <= 0:
            return start + HORIZON
        fixed = len(self.overrides) * 2 + len(self.layers) - len(turning)
        return start + timedelta(seconds=max(budget - fixed, 0) / per_second)

    def boundaries(self, low: datetime, high: datetime) -> list[datetime]:
        """Sorted instants in (low, high] where who is on call may change."""
        found: set[datetime] = set()
        for layer in self.layers:
            found.update(layer.boundaries(low, high, self.tz))
        for override in self.overrides:
            found.update(t for t in (override.start, override.end) if low < t <= high)
        return sorted(found)

    def segments(
        self, low: datetime, high: datetime
    ) -> Iterator[tuple[datetime, datetime, tuple[str, str] | None]]:
        """[low, high) cut where who is on call changes: (start, end, who), neighbours differ."""
        start, current = low, self.who(low)
        for moment in self.boundaries(low, high):
            if moment >= high:
                break
            found = self.who(moment)
            if found != current:
                yield start, moment, current
                start, current = moment, found
        if start < high:
            yield start, high, current

    def end_of(self, moment: datetime, who: tuple[str, str] | None) -> datetime:
        """When `who` (on call at `moment`) stops being on call; HORIZON ahead at most."""
        low, spent = moment, 0
        for window in _WINDOWS:
            high = moment + window
            spent += self.cost(low, high)
            if spent > SEARCH_BUDGET:
                break
            for boundary in self.boundaries(low, high):
                if self.who(boundary) != who:
                    return boundary
            low = high
        return moment + HORIZON

    def start_of(self, moment: datetime, who: tuple[str, str] | None) -> datetime:
        """When `who` (on call at `moment`) became on call; HORIZON back at most."""
        high, spent = moment, 0
        for window in _WINDOWS:
            low = moment - window
            spent += self.cost(low, high)
            if spent > SEARCH_BUDGET:
                break
            found = self.boundaries(low, high)
            # Between two boundaries who is on call is constant: the value on [b_i, b_i+1) is who(b_i).
            for i in range(len(found) - 1, -1, -1):
                before = found[i - 1] if i > 0 else low
                if self.who(before) != who:
                    return found[i]
            high = low
        return moment - HORIZON


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("the moment must be timezone-aware")
    return moment.astimezone(UTC)


def on_call(spec: OnCallScheduleSpec, at: datetime) -> Shift | None:
    """Who is on call at `at` (overrides win, later layers win), with their whole turn."""
    schedule = _Schedule(spec)
    at = _aware(at)
    who = schedule.who(at)
    if who is None:
        return None
    return Shift(who[0], who[1], schedule.start_of(at, who), schedule.end_of(at, who))


def next_shift(spec: OnCallScheduleSpec, at: datetime) -> Shift | None:
    """The first shift starting after `at` with another person than the one on call at `at` (any
    person if nobody is); None if there is none within HORIZON."""
    schedule = _Schedule(spec)
    at = _aware(at)
    now = schedule.who(at)
    low, spent = at, 0
    for window in _WINDOWS:
        high = at + window
        spent += schedule.cost(low, high)
        if spent > SEARCH_BUDGET:
            return None
        for start, _, who in schedule.segments(low, high):
            if who is not None and (now is None or who[0] != now[0]) and start > at:
                return Shift(who[0], who[1], start, schedule.end_of(start, who))
        low = high
    return None


def shifts(spec: OnCallScheduleSpec, start: datetime, end: datetime) -> list[Shift]:
    """The final flat timeline in [start, end): who is on call, each turn once (cut at the edges),
    in order, none overlapping; times nobody is on call are left out."""
    schedule = _Schedule(spec)
    start, end = _aware(start), _aware(end)
    end = min(end, schedule.reach(start, TIMELINE_BUDGET))
    if end <= start:
        return []
    return [
        Shift(who[0], who[1], low, high)
        for low, high, who in schedule.segments(start, end)
        if who is not None
    ]


def open_ended(shift: Shift, at: datetime) -> bool:
    """The shift does not end within HORIZON of `at` (its end is only where the search stopped)."""
    return shift.end >= _aware(at) + HORIZON


def on_call_throughout(spec: OnCallScheduleSpec, person: str, start: datetime, end: datetime) -> bool:
    """Whether `person` is on call at every moment of [start, end) (any layer or override, no gap).
    False too when that span has more possible handoffs than one search looks at (SEARCH_BUDGET)."""
    schedule = _Schedule(spec)
    start, end = _aware(start), _aware(end)
    if end <= start:
        return True
    if schedule.cost(start, end) > SEARCH_BUDGET:
        return False
    return all(who is not None and who[0] == person for _, _, who in schedule.segments(start, end))
