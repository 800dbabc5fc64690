"""The iCalendar feed of an OnCallSchedule: the document, read back with a real iCalendar parser
(PyPI `icalendar`), and `GET /oncall/NAMESPACE/NAME.ics` with a bearer token (TokenReview +
SubjectAccessReview `get` on the schedule, a fake API server's answers) or the schedule's calendar
token: unknown schedule 404 with a bearer login; with a calendar token a wrong token and an unknown
schedule the same 403 (no existence probe)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar

from incident_operator.api.models import OnCallScheduleSpec
from incident_operator.core import httpauth, oncall, oncallfeed
from incident_operator.core.httpauth import User
from incident_operator.runtime import httpserver
from incident_operator.runtime.guard import Guard
from incident_operator.runtime.oncallfeed import FeedSource, Unavailable, matches
from tests.unit.test_httpauth import FakeReviewer
from tests.unit.test_httpserver import Answer, get

NOW = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
LONG = "carol.the-incident-commander-of-the-payments-team_on-call-on.weekends"[:63]
SPEC: dict[str, Any] = {
    "timeZone": "Europe/Berlin",
    "people": [{"name": "alice"}, {"name": "bob"}, {"name": LONG}],
    "layers": [
        {
            "name": "weekly",
            "start": "2026-11-23T09:00:00+01:00",
            "rotation": "P7D",
            "people": ["alice", "bob"],
        }
    ],
    "overrides": [{"person": "bob", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T12:00:00Z"}],
    "calendarTokenSecret": "primary-calendar",
}


def test_the_feed_parses_with_a_real_icalendar_parser() -> None:
    spec = OnCallScheduleSpec.model_validate(SPEC)
    text = oncallfeed.calendar("shop", "primary", spec, NOW, weeks=4)
    assert all(line.endswith("\r") or not line for line in text.split("\n"))  # CRLF everywhere
    cal = icalendar.Calendar.from_ical(text)
    assert cal["VERSION"] == "2.0"
    events = list(cal.walk("VEVENT"))
    summaries = [str(e["SUMMARY"]) for e in events]
    assert summaries[:5] == [
        "On call: alice (weekly)",
        "On call: bob (weekly)",
        "On call: bob (override)",  # an override of bob's own turn cuts it in three
        "On call: bob (weekly)",
        "On call: alice (weekly)",
    ]
    starts = [e.decoded("DTSTART") for e in events]
    ends = [e.decoded("DTEND") for e in events]
    assert all(s.tzinfo is not None and s.utcoffset() == timedelta(0) for s in starts + ends)  # UTC
    assert starts[0] == datetime(2026, 11, 23, 8, tzinfo=UTC)  # began before the window: its real start
    assert all(a < b for a, b in zip(starts, ends, strict=True))
    assert all(b <= c for b, c in zip(ends, starts[1:], strict=False))  # in order, none overlapping
    assert ends[-1] == datetime(2026, 12, 2, tzinfo=UTC) + timedelta(weeks=4)
    uids = [str(e["UID"]) for e in events]
    assert len(set(uids)) == len(uids)


def test_uids_are_the_same_on_every_request() -> None:
    spec = OnCallScheduleSpec.model_validate(SPEC)
    first = icalendar.Calendar.from_ical(oncallfeed.calendar("shop", "primary", spec, NOW))
    later = icalendar.Calendar.from_ical(
        oncallfeed.calendar("shop", "primary", spec, NOW + timedelta(days=3))
    )
    by_uid = {str(e["UID"]): e.decoded("DTSTART") for e in first.walk("VEVENT")}
    for event in later.walk("VEVENT"):
        uid = str(event["UID"])
        if uid in by_uid:
            assert by_uid[uid] == event.decoded("DTSTART")
    shared = set(by_uid) & {str(e["UID"]) for e in later.walk("VEVENT")}
    assert len(shared) >= 5


def test_text_is_escaped_and_long_lines_folded() -> None:
    layer = "a-layer-with-a-name-as-long-as-a-layer-name-may-be-sixty-three"
    spec = OnCallScheduleSpec.model_validate(
        {
            **SPEC,
            "layers": [{**SPEC["layers"][0], "name": layer, "people": [LONG]}],
            "overrides": [],
        }
    )
    text = oncallfeed.calendar("a-namespace-with-a-rather-long-name", "primary", spec, NOW)
    assert all(len(line.encode()) <= 76 for line in text.split("\n"))  # 75 octets and the CR
    assert any(line.startswith(" ") for line in text.split("\r\n"))  # some were folded
    events = icalendar.Calendar.from_ical(text).walk("VEVENT")
    assert {str(e["SUMMARY"]) for e in events} == {f"On call: {LONG} ({layer})"}
    assert oncallfeed._text('carol, the "lead"; on\ncall\\') == 'carol\\, the "lead"\\; on\\ncall\\\\'


def test_weeks_are_bounded() -> None:
    assert oncallfeed.parse_weeks(None) == oncallfeed.DEFAULT_WEEKS
    assert oncallfeed.parse_weeks("26") == 26
    for bad in ("0", "27", "-1", "x", "1e3"):
        try:
            oncallfeed.parse_weeks(bad)
        except oncallfeed.FeedError:
            continue
        raise AssertionError(bad)
    fast = OnCallScheduleSpec.model_validate(
        {
            "people": [{"name": "a"}, {"name": "b"}],
            "layers": [
                {"name": "l", "start": "2026-11-01T00:00:00Z", "rotation": "PT1M", "people": ["a", "b"]}
            ],
        }
    )
    assert len(icalendar.Calendar.from_ical(oncallfeed.calendar("n", "s", fast, NOW, 1)).walk("VEVENT")) == (
        oncallfeed.MAX_EVENTS
    )


def test_tokens_compare_whole() -> None:
    assert matches("s3cret", "s3cret")
    assert not matches("s3cre", "s3cret")
    assert not matches("", "s3cret")


# --------------------------------------------------------------------------- the endpoint

READER = User("reader")
TOKENS = {"reader-token": READER, "nobody-token": User("nobody")}
GRANTS = {
    ("reader", httpauth.schedule_reader("shop", "primary")),
    ("reader", httpauth.schedule_reader("shop", "gone")),
}


class Store:
    def __init__(self) -> None:
        self.schedules: dict[tuple[str, str], Mapping[str, Any]] = {
            ("shop", "primary"): {"metadata": {"namespace": "shop", "name": "primary"}, "spec": SPEC},
            ("shop", "untokened"): {
                "metadata": {"namespace": "shop", "name": "untokened"},
                "spec": {k: v for k, v in SPEC.items() if k != "calendarTokenSecret"},
            },
            ("shop", "broken"): {
                "metadata": {"namespace": "shop", "name": "broken"},
                "spec": {**SPEC, "timeZone": "Mars/Olympus"},
            },
        }
        self.secrets = {("shop", "primary-calendar"): "cal-s3cret"}
        self.reads = 0
        self.down = False

    async def schedule(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads += 1
        if self.down:
            raise Unavailable
        return self.schedules.get((namespace, name))

    async def token(self, namespace: str, secret: str) -> str | None:
        return self.secrets.get((namespace, secret))


def serve_feed(
    paths: list[tuple[str, str | None]], store: Store, namespaces: tuple[str, ...] = ()
) -> list[Answer]:
    async def scenario() -> list[Answer]:
        feed = FeedSource(store.schedule, store.token, namespaces)
        app = httpserver.build_app(asyncio.Event(), guard=Guard(FakeReviewer(TOKENS, GRANTS)), feed=feed)
        runner = await httpserver.start_server(app, "127.0.0.1", 0)
        try:
            port = runner.addresses[0][1]
            return [await get(port, path, token) for path, token in paths]
        finally:
            await runner.cleanup()

    return asyncio.run(scenario())


def test_the_feed_needs_get_on_the_schedule_or_its_calendar_token() -> None:
    store = Store()
    answers = serve_feed(
        [
            ("/oncall/shop/primary.ics", None),
            ("/oncall/shop/primary.ics", "forged"),
            ("/oncall/shop/primary.ics", "nobody-token"),
            ("/oncall/shop/primary.ics", "reader-token"),
            ("/oncall/shop/primary.ics?token=cal-s3cret", None),
            ("/oncall/shop/primary.ics?token=wrong", None),
            ("/oncall/shop/untokened.ics?token=cal-s3cret", None),
            ("/oncall/shop/gone.ics", "reader-token"),
            ("/oncall/shop/gone.ics?token=x", None),
            ("/oncall/shop/other.ics", "reader-token"),
            ("/oncall/shop/broken.ics?token=x", None),
            ("/oncall/shop/primary.ics?weeks=99", "reader-token"),
            ("/oncall/shop/primary.ics?token=a&token=b", None),
            ("/oncall/shop/primary.ics?weeks=99", "forged"),  # who asks is checked first
        ],
        store,
    )
    statuses = [a[0] for a in answers]
    assert statuses == [401, 401, 403, 200, 200, 403, 403, 404, 403, 403, 403, 400, 400, 401]
    assert "bearer token" in answers[0][2]
    assert (
        answers[2][2]
        == "forbidden: this needs get oncallschedules.incident-operator.dev primary in namespace shop\n"
    )
    assert answers[3][1]["Content-Type"] == "text/calendar; charset=utf-8"
    assert answers[3][1]["Cache-Control"] == "no-store"
    assert icalendar.Calendar.from_ical(answers[4][2]).walk("VEVENT")
    mismatch = "forbidden: the calendar token does not match (or no such schedule takes one)\n"
    assert answers[5][2] == answers[6][2] == answers[8][2] == mismatch  # the token probes nothing
    assert answers[7][2] == "no oncallschedule shop/gone\n"
    assert "cal-s3cret" not in "".join(a[2] for a in answers if a[0] != 200)


def test_an_invalid_schedule_is_a_422_and_an_unreachable_api_a_503() -> None:
    store = Store()
    store.schedules[("shop", "broken")] = {
        **store.schedules[("shop", "broken")],
        "spec": {**SPEC, "timeZone": "Mars/Olympus"},
    }
    [broken] = serve_feed([("/oncall/shop/broken.ics?token=cal-s3cret", None)], store)
    assert broken[0] == 422
    assert "unknown time zone 'Mars/Olympus'" in broken[2]
    store.down = True
    [down] = serve_feed([("/oncall/shop/primary.ics?token=cal-s3cret", None)], store)
    assert down[0] == 503
    assert down[1]["Retry-After"] == "5"


def test_a_namespace_the_operator_does_not_watch_is_a_404_or_with_a_calendar_token_the_same_403() -> None:
    [answer] = serve_feed([("/oncall/shop/primary.ics", "reader-token")], Store(), namespaces=("bank",))
    assert answer[0] == 404
    [answer] = serve_feed(
        [("/oncall/shop/primary.ics?token=cal-s3cret", None)], Store(), namespaces=("bank",)
    )
    assert answer[0] == 403


def test_schedules_are_read_once_for_a_burst() -> None:
    store = Store()
    serve_feed([("/oncall/shop/primary.ics?token=cal-s3cret", None)] * 5, store)
    assert store.reads == 1
    assert oncall.HORIZON  # the feed's window lies well inside what the schedule computes
