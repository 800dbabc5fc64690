"""The incidents' Event poster (`adapters.events.EventQueue`): `post` never waits, Events go in
order, a transient refusal is tried again and a final one dropped (the timeline keeps the
record), a full queue drops new Events instead of growing, and shutdown posts what is queued
within a bound."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from incident_operator.adapters.events import EventQueue
from incident_operator.adapters.kube import ApiException
from tests.polling import until

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BODY: dict[str, Any] = {
    "apiVersion": "incident-operator.dev/v1alpha1",
    "kind": "Incident",
    "metadata": {"name": "inc", "namespace": "ns", "uid": "u1", "resourceVersion": "7"},
    "spec": {"title": "big", "description": "x" * 1000},
}


class Posting:
    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.failures = failures or []
        self.posted: list[tuple[dict[str, Any], str, str, str]] = []
        self.tries = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str, when: datetime
    ) -> None:
        self.tries += 1
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        assert when == NOW
        self.posted.append((involved, type_, reason, message))


def queue(kube: Posting, **options: Any) -> EventQueue:
    return EventQueue(kube, clock=lambda: NOW, retry_delays=(0.0, 0.0), **options)


async def posted(kube: Posting, reasons: list[tuple[str, str, str]], count: int) -> Posting:
    """Post `reasons` (type, reason, message) about BODY; return once `count` of them went."""
    events = queue(kube)
    task = asyncio.create_task(events.run())
    for type_, reason, message in reasons:
        events.post(BODY, type_, reason, message)
    await until(lambda: len(kube.posted) == count, timeout=5, what=f"{count} Events posted")
    task.cancel()
    return kube


async def _in_order_with_retries() -> Posting:
    kube = Posting([ApiException(status=503), OSError("reset")])
    return await posted(kube, [("Normal", "Detected", "first"), ("Warning", "Stalled", "second")], 2)


def test_events_go_in_order_and_a_transient_refusal_is_tried_again() -> None:
    kube = asyncio.run(_in_order_with_retries())
    assert [(t, r, m) for _, t, r, m in kube.posted] == [
        ("Normal", "Detected", "first"),
        ("Warning", "Stalled", "second"),
    ]
    assert kube.tries == 4  # the first Event took three tries
    involved = kube.posted[0][0]
    assert involved == {  # a reference, not the body it was posted with
        "apiVersion": "incident-operator.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "inc", "namespace": "ns", "uid": "u1"},
    }


async def _refused() -> Posting:
    failures = [ApiException(status=403)] + [ApiException(status=500) for _ in range(3)]
    reasons = [
        ("Normal", "Detected", "forbidden"),
        ("Normal", "Resolved", "fails every try"),
        ("Normal", "Closed", "goes"),
    ]
    return await posted(Posting(failures), reasons, 1)


def test_a_refused_event_is_dropped_and_the_next_ones_still_go() -> None:
    kube = asyncio.run(_refused())
    assert [r for _, _, r, _ in kube.posted] == ["Closed"]
    assert kube.tries == 1 + 3 + 1  # 403: no retry; 500: three tries; then the third (in order)


async def _full_then_closed(caplog: pytest.LogCaptureFixture) -> tuple[Posting, EventQueue, int]:
    kube = Posting()
    kube.gate.clear()  # the API server does not answer
    events = queue(kube, max_queued=2, posters=1)
    task = asyncio.create_task(events.run())
    for n in range(5):
        events.post(BODY, "Normal", "Detected", f"event {n}")
    await until(lambda: kube.tries == 1, timeout=5, what="the first Event in flight")
    assert events.dropped == [3]  # two queued (one of them in flight now), three dropped
    left = await events.close(0.05)  # shutdown: the API server still frozen
    kube.gate.set()
    await until(lambda: len(kube.posted) == 2, timeout=5, what="what was queued posted")
    assert await events.close(1) == 0
    events.post(BODY, "Normal", "Resolved", "after the outage")
    await until(lambda: len(kube.posted) == 3, timeout=5, what="posted again")
    task.cancel()
    return kube, events, left


def test_a_full_queue_drops_new_events_and_shutdown_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    kube, events, left = asyncio.run(_full_then_closed(caplog))
    assert left == 2  # close returned within its bound, with both still unposted
    assert [m for _, _, _, m in kube.posted] == ["event 0", "event 1", "after the outage"]
    assert events.dropped == [0]
    assert "3 Events were dropped while the queue was full" in caplog.text


async def _several_objects_at_once() -> Posting:
    kube = Posting()
    kube.gate.clear()  # every request hangs until the test lets them go
    events = queue(kube)
    task = asyncio.create_task(events.run())
    for n in range(8):
        body = {**BODY, "metadata": {**BODY["metadata"], "uid": f"u{n}", "name": f"inc-{n}"}}
        events.post(body, "Normal", "Detected", f"incident {n}")
    await until(lambda: kube.tries >= 2, timeout=5, what="two Events in flight at once")
    kube.gate.set()
    await until(lambda: len(kube.posted) == 8, timeout=5, what="all eight posted")
    task.cancel()
    return kube


def test_the_events_of_different_incidents_are_posted_side_by_side() -> None:
    """A burst of a thousand incidents needs more than one request at a time (one object's
    Events still go through one poster, in order: the tests above)."""
    kube = asyncio.run(_several_objects_at_once())
    assert sorted(m for _, _, _, m in kube.posted) == [f"incident {n}" for n in range(8)]
