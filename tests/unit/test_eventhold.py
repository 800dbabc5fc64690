"""An incident's Events are held for a moment so that the status writes of a fast run share one:
the Normal records of the writes within the hold are one Event (the most advanced reason, every
message in order), a Warning is never held (and what waits goes before it), and what waits is
posted when the hold ends or is flushed, never lost or posted twice."""

from __future__ import annotations

import asyncio

from incident_operator.api.reasons import Reason
from incident_operator.controllers.incident.eventhold import HeldEvents
from incident_operator.core.planner import Record
from tests.polling import until

DETECTED = Record(Reason.DETECTED, "detected")
STARTED = Record(Reason.PLAYBOOK_STARTED, "started")
SUCCEEDED = Record(Reason.STEP_SUCCEEDED, "scaled")
RESOLVED = Record(Reason.RESOLVED, "resolved")
FAILED = Record(Reason.STEP_FAILED, "scale refused", warning=True)


def test_normal_records_of_writes_within_the_hold_share_one_event_posted_when_it_ends() -> None:
    posted: list[Record] = []

    async def scenario() -> None:
        held = HeldEvents(posted.append, hold_s=0.05)
        held.add([DETECTED, STARTED])  # the first status write
        held.add([SUCCEEDED, RESOLVED])  # the second, soon after
        assert posted == []  # held
        await until(lambda: bool(posted), timeout=5, what="the held Event")
        assert held.timer is None
        assert held.waiting == []

    asyncio.run(scenario())
    assert [(e.reason, e.message) for e in posted] == [
        (Reason.RESOLVED, "detected | started | scaled | resolved")
    ]


def test_a_warning_goes_at_once_after_what_waits_and_a_flush_posts_what_is_left() -> None:
    posted: list[Record] = []

    async def scenario() -> None:
        held = HeldEvents(posted.append, hold_s=3600)
        held.add([DETECTED, STARTED])
        held.add([FAILED])
        assert [(e.reason, e.warning) for e in posted] == [
            (Reason.PLAYBOOK_STARTED, False),
            (Reason.STEP_FAILED, True),
        ]
        assert held.timer is None  # nothing waits: no timer left running
        held.add([RESOLVED])
        held.flush()  # the loop stops: posted now, not an hour later
        held.flush()  # nothing waits: nothing posted twice

    asyncio.run(scenario())
    assert [e.reason for e in posted] == [Reason.PLAYBOOK_STARTED, Reason.STEP_FAILED, Reason.RESOLVED]
    assert posted[0].message == "detected | started"


def test_records_that_are_timeline_only_start_no_hold_and_no_event() -> None:
    posted: list[Record] = []

    async def scenario() -> None:
        held = HeldEvents(posted.append, hold_s=3600)
        held.add([Record(Reason.ACKNOWLEDGED, "acknowledged by the operator")])
        assert held.timer is None
        assert held.waiting == []
        held.flush()

    asyncio.run(scenario())
    assert posted == []


def test_without_a_hold_each_write_posts_its_own() -> None:
    posted: list[Record] = []

    async def scenario() -> None:
        held = HeldEvents(posted.append, hold_s=0)
        held.add([DETECTED, STARTED])
        held.add([SUCCEEDED, RESOLVED])

    asyncio.run(scenario())
    assert [(e.reason, e.message) for e in posted] == [
        (Reason.PLAYBOOK_STARTED, "detected | started"),
        (Reason.RESOLVED, "scaled | resolved"),
    ]


def test_what_waited_goes_before_a_later_writes_warning_and_one_failed_post_keeps_no_other() -> None:
    posted: list[Record] = []

    def post(record: Record) -> None:
        if record.reason == Reason.PLAYBOOK_STARTED:
            raise RuntimeError("the Event queue is gone")
        posted.append(record)

    async def scenario() -> None:
        held = HeldEvents(post, hold_s=3600)
        held.add([DETECTED])
        held.add([FAILED, STARTED])  # a warning, then a Normal record, in one write
        held.add([RESOLVED])
        held.flush()

    asyncio.run(scenario())
    # Detected (the earlier write's) first; this write's Normal one failed to post, alone
    assert [(e.reason, e.message) for e in posted] == [
        (Reason.DETECTED, "detected"),
        (Reason.STEP_FAILED, "scale refused"),
        (Reason.RESOLVED, "resolved"),
    ]
