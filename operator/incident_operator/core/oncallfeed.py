"""An OnCallSchedule as an iCalendar feed (RFC 5545), for `GET /oncall/NAMESPACE/NAME.ics`. Pure.

One VEVENT per turn of the flat timeline (`oncall.shifts`), from a week back to `weeks` ahead
(DEFAULT_WEEKS, at most MAX_WEEKS; at most MAX_EVENTS events), in UTC (`DTSTART`/`DTEND` with Z),
summary `On call: NAME (layer)`. A turn's UID is derived from the schedule, the person, the layer
and the turn's real start, so it is the same on every request and a calendar app updates an event
rather than adding another; the window starts at a UTC midnight, and a turn that began before it
keeps its real start.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time, timedelta

from incident_operator.api.models import OnCallScheduleSpec
from incident_operator.core import oncall

DEFAULT_WEEKS = 8
MAX_WEEKS = 26
MAX_EVENTS = 1000
BEHIND = timedelta(days=7)
PRODID = "-//incident-operator.dev//OnCallSchedule//EN"
UID_DOMAIN = "oncall.incident-operator.dev"
_FOLD = 75


class FeedError(ValueError):
    """A request the feed cannot answer (its words go back with a 400)."""


def parse_weeks(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_WEEKS
    if not value.isdigit() or not 1 <= int(value) <= MAX_WEEKS:
        raise FeedError(f"weeks must be a whole number from 1 to {MAX_WEEKS}")
    return int(value)


def window(now: datetime, weeks: int) -> tuple[datetime, datetime]:
    """[start, end) of the feed: from the UTC midnight a week back to `weeks` ahead of it."""
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    return midnight - BEHIND, midnight + timedelta(weeks=weeks)


def uid(namespace: str, name: str, shift: oncall.Shift) -> str:
    key = f"{namespace}/{name}/{shift.person}/{shift.layer}/{_stamp(shift.start)}"
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}@{UID_DOMAIN}"


def calendar(
    namespace: str, name: str, spec: OnCallScheduleSpec, now: datetime, weeks: int = DEFAULT_WEEKS
) -> str:
    """The schedule's turns as an iCalendar document (CRLF line ends, long lines folded)."""
    start, end = window(now, weeks)
    turns = oncall.shifts(spec, start, end)[:MAX_EVENTS]
    if turns and turns[0].start == start:  # began before the window: its real start, its stable UID
        begun = oncall.on_call(spec, start)
        if begun is not None and (begun.person, begun.layer) == (turns[0].person, turns[0].layer):
            turns[0] = oncall.Shift(turns[0].person, turns[0].layer, begun.start, turns[0].end)
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{_text(f'On call: {namespace}/{name}')}",
        "X-PUBLISHED-TTL:PT15M",
    ]
    stamp = _stamp(now)
    for turn in turns:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{uid(namespace, name, turn)}",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{_stamp(turn.start)}",
            f"DTEND:{_stamp(turn.end)}",
            f"SUMMARY:{_text(f'On call: {turn.person} ({turn.layer})')}",
            "TRANSP:TRANSPARENT",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "".join(_fold(line) + "\r\n" for line in lines)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _text(value: str) -> str:
    """An RFC 5545 TEXT value: backslash, semicolon, comma and line breaks escaped."""
    escaped = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def _fold(line: str) -> str:
    """Lines longer than 75 octets folded (CRLF and a space), never inside a UTF-8 character."""
    encoded = line.encode()
    if len(encoded) <= _FOLD:
        return line
    parts: list[str] = []
    current = ""
    limit = _FOLD
    for char in line:
        if len((current + char).encode()) > limit:
            parts.append(current)
            current = ""
            limit = _FOLD - 1  # continuation lines begin with a space
        current += char
    parts.append(current)
    return "\r\n ".join(parts)
