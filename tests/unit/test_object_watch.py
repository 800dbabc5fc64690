"""The operator's own watch (`adapters.watch.ObjectWatch`), through the real asyncio Kubernetes
client, against a scripted API server on 127.0.0.1 (an aiohttp application that answers the list
and watch requests as kube-apiserver does): the first state streamed (`sendInitialEvents`) to its
end bookmark, or refused and listed in pages, the watch's resourceVersion and bookmarks, events
split across reads and longer than a buffered line, 410 Gone and what the first state taken again
finds missing, early ends, errors and broken connections retried, a handler that fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from incident_operator.adapters import metrics
from incident_operator.adapters import watch as watch_module
from incident_operator.adapters.kube import Kube, api_client
from incident_operator.adapters.watch import ObjectWatch
from incident_operator.api.keys import API_GROUP, API_VERSION
from incident_operator.controllers.supervisor import wants_loop
from incident_operator.core.openlimit import Rankings
from incident_operator.core.repeats import History
from incident_operator.runtime.context import RuntimeContext
from incident_operator.runtime.incidents import IncidentStream
from incident_operator.settings.config import OperatorConfig
from tests.polling import until

PATH = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/ns/incidents"
CUT = b"<cut>"
"""In a watch script: the connection is aborted there."""


def incident(name: str, version: int, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Incident",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(version)},
        "spec": {"title": name, **extra},
    }


def event(kind: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": body}).encode() + b"\n"


@dataclass
class FakeApiServer:
    """Lists `objects` at `version` in pages of the asked limit; each watch request takes the next
    script of `watches` (chunks of bytes to send, then the connection ends; an int is an HTTP
    status answered instead). Records every request's query."""

    objects: list[dict[str, Any]]
    version: str
    watches: list[list[bytes] | int]
    relists: list[tuple[list[dict[str, Any]], str]] = field(default_factory=list)
    """What the second listing, the third, ... find (objects, version)."""
    list_failures: dict[int, int] = field(default_factory=dict)
    """List request number (0: the first) -> the HTTP status it is answered with instead."""
    requests: list[dict[str, str]] = field(default_factory=list)
    lists: int = 0
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to let the last watch end (until then it stays open, as a quiet watch does)."""
    streams: list[list[bytes] | int] | None = None
    """Scripts for the watches that ask for a streamed first state, as `watches` (None: the server
    refuses them with 422, as one whose WatchList gate is off does; not counted in `requests`)."""
    refused: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        if query.get("sendInitialEvents") == "true" and self.streams is None:
            self.refused += 1
            message = "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"
            return web.json_response({"kind": "Status", "code": 422, "message": message}, status=422)
        self.requests.append(query)
        if query.get("sendInitialEvents") == "true":
            assert self.streams is not None
            return await self.answer(request, self.streams.pop(0) if self.streams else None)
        if query.get("watch", "").lower() != "true":
            failing = self.list_failures.pop(len(self.requests) - 1 - len(self.watch_requests()), None)
            if failing is not None:
                status = {"kind": "Status", "code": failing, "message": "scripted"}
                return web.json_response(status, status=failing)
            return self.list_page(query)
        return await self.answer(request, self.watches.pop(0) if self.watches else None)

    async def answer(self, request: web.Request, script: list[bytes] | int | None) -> web.StreamResponse:
        """A watch's answer: a scripted status, or its chunks (None: quiet until `hold`)."""
        if script is None:
            await self.hold.wait()
            return web.Response(status=200, text="")
        if isinstance(script, int):
            status = {"kind": "Status", "code": script, "message": f"scripted {script}"}
            return web.json_response(status, status=script)
        response = web.StreamResponse()
        await response.prepare(request)
        for chunk in script:
            if chunk == CUT:
                assert request.transport is not None
                request.transport.abort()  # the connection breaks mid-stream
                return response
            await response.write(chunk)  # each piece sent on its own (the client may read some together)
        return response

    def watch_requests(self) -> list[dict[str, str]]:
        return [q for q in self.requests if q.get("watch", "").lower() == "true"]

    def list_page(self, query: dict[str, str]) -> web.Response:
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or len(self.objects))
        if start == 0:
            if self.lists and self.relists:
                self.objects, self.version = self.relists.pop(0)
            self.lists += 1
        items = self.objects[start : start + limit]
        rest = start + limit < len(self.objects)
        metadata = {"resourceVersion": self.version, **({"continue": str(start + limit)} if rest else {})}
        return web.json_response({"kind": "IncidentList", "metadata": metadata, "items": items})


@dataclass
class Seen:
    events: list[tuple[str | None, str]] = field(default_factory=list)
    synced: int = 0
    fail_on: str | None = None

    def on_event(self, kind: str | None, body: dict[str, Any]) -> None:
        name = body["metadata"].get("name") or body["metadata"]["uid"]  # a missed deletion: no name
        self.events.append((kind, name))
        if name == self.fail_on:
            raise RuntimeError("a handler bug")

    def on_synced(self) -> None:
        self.synced += 1


async def watching(
    server: FakeApiServer,
    seen: Seen,
    until_done: Callable[[], bool],
    *,
    page: int = 2,
    on_event: Callable[[str | None, dict[str, Any]], None] | None = None,
    on_synced: Callable[[], None] | None = None,
    retry_delays: tuple[float, ...] = (0.01,),
    prepare: Callable[[ObjectWatch], None] = lambda _: None,
) -> ObjectWatch:
    app = web.Application()
    app.router.add_get(PATH, server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    kube = Kube(api_client(configuration))
    watch = ObjectWatch(
        kube,
        "incidents",
        "ns",
        on_event or seen.on_event,
        on_synced=on_synced or seen.on_synced,
        page=page,
        retry_delays=retry_delays,
    )
    prepare(watch)
    task = asyncio.create_task(watch.run())
    try:
        await until(until_done, timeout=10, what="the scripted events handed on")
    finally:
        server.hold.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await kube.close()
        await runner.cleanup()
    return watch


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def watches(server: FakeApiServer) -> list[dict[str, str]]:
    return [q for q in server.requests if q.get("watch", "").lower() == "true"]


async def _listing_then_watch() -> tuple[FakeApiServer, Seen, ObjectWatch]:
    server = FakeApiServer(
        [incident("a", 1), incident("b", 2), incident("c", 3)],
        "10",
        [
            [
                event("ADDED", incident("d", 11)),
                event("BOOKMARK", {"kind": "Incident", "metadata": {"resourceVersion": "12"}}),
                event("MODIFIED", incident("a", 13, severity="P1")),
                event("DELETED", incident("b", 14)),
            ]
        ],
    )
    seen = Seen()
    watch = await watching(server, seen, lambda: len(seen.events) == 6 and len(watches(server)) == 2)
    return server, seen, watch


def test_a_paged_listing_then_the_watch_from_its_version_every_event_in_order() -> None:
    server, seen, watch = run(_listing_then_watch())
    assert seen.events == [
        (None, "a"),
        (None, "b"),
        (None, "c"),
        ("ADDED", "d"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]  # the bookmark is not an object's event
    assert seen.synced == 1
    lists = [q for q in server.requests if q.get("watch", "").lower() != "true"]
    assert [(q["limit"], q.get("continue")) for q in lists] == [("2", None), ("2", "2")]  # two pages
    first, again = watches(server)
    assert (first["resourceVersion"], first["allowWatchBookmarks"].lower(), first["timeoutSeconds"]) == (
        "10",
        "true",
        "300",
    )
    assert again["resourceVersion"] == "14"  # the watch ended: again from the last version seen
    assert set(watch.known) == {"uid-a", "uid-c", "uid-d"}
    assert server.refused == 1  # a server that does not stream the first state: asked once, then listed


async def _split_and_long() -> tuple[Seen, dict[str, Any]]:
    big = incident("big", 11, description="x" * 300_000)  # longer than aiohttp's buffered line
    line = event("ADDED", big)
    chunks = [line[:7], line[7:150_000], line[150_000:] + event("ADDED", incident("next", 12))[:20]]
    chunks.append(event("ADDED", incident("next", 12))[20:])
    server = FakeApiServer([], "10", [chunks])
    seen = Seen()
    await watching(server, seen, lambda: len(seen.events) == 2)
    return seen, big


def test_an_event_split_across_reads_and_longer_than_a_buffered_line_is_handed_on_whole() -> None:
    seen, _ = run(_split_and_long())
    assert seen.events == [("ADDED", "big"), ("ADDED", "next")]


async def _gone() -> tuple[FakeApiServer, Seen, ObjectWatch]:
    a, b = incident("a", 1), incident("b", 2)
    gone = event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    server = FakeApiServer(
        [a, b],
        "10",
        [[event("MODIFIED", incident("a", 11)), gone]],
        relists=[([incident("a", 20), incident("c", 21)], "21")],
    )
    seen = Seen()
    watch = await watching(server, seen, lambda: seen.synced == 2 and len(watches(server)) == 2)
    return server, seen, watch


def test_410_gone_lists_again_and_what_the_new_listing_lacks_is_handed_on_as_deleted() -> None:
    server, seen, watch = run(_gone())
    assert seen.events == [
        (None, "a"),
        (None, "b"),
        ("MODIFIED", "a"),
        (None, "a"),  # the second listing
        (None, "c"),
        ("DELETED", "uid-b"),  # deleted while the watch could not say so
    ]
    assert seen.synced == 2
    assert watches(server)[-1]["resourceVersion"] == "21"  # from the new listing's version
    assert server.refused == 1  # listed again in pages: not asked to stream again
    assert set(watch.known) == {"uid-a", "uid-c"}


async def _errors() -> tuple[FakeApiServer, Seen]:
    server = FakeApiServer(
        [incident("a", 1)],
        "10",
        [500, [event("ADDED", incident("boom", 11))], 429, [event("ADDED", incident("after", 12))]],
    )
    seen = Seen(fail_on="boom")
    await watching(server, seen, lambda: ("ADDED", "after") in seen.events)
    return server, seen


def test_errors_are_retried_from_the_same_version_and_a_failing_handler_ends_nothing() -> None:
    server, seen = run(_errors())
    assert seen.events == [(None, "a"), ("ADDED", "boom"), ("ADDED", "after")]
    versions = [q["resourceVersion"] for q in watches(server)]
    assert versions[:4] == ["10", "10", "11", "11"]  # 500, then the event; 429, then the next
    assert set(versions[4:]) <= {"12"}
    assert seen.synced == 1  # never listed again: the version was still good


async def _cut() -> FakeApiServer:
    server = FakeApiServer(
        [incident("a", 1)],
        "10",
        [
            [event("ADDED", incident("b", 11)), event("MODIFIED", incident("b", 12)), CUT],
            [event("MODIFIED", incident("b", 13))],
        ],
    )
    seen = Seen()
    await watching(server, seen, lambda: ("MODIFIED", "b") in seen.events[3:])
    assert seen.events == [(None, "a"), ("ADDED", "b"), ("MODIFIED", "b"), ("MODIFIED", "b")]
    return server


def test_a_connection_cut_mid_stream_goes_on_from_the_last_version_seen_not_the_first() -> None:
    server = run(_cut())
    assert [q["resourceVersion"] for q in watches(server)][:2] == ["10", "12"]
    assert server.lists == 1  # no listing again: nothing replayed, nothing missed


async def _gone_at_the_start_and_an_expired_continue() -> tuple[FakeApiServer, Seen]:
    server = FakeApiServer(
        [incident("a", 1), incident("b", 2), incident("c", 3)],
        "10",
        [410, [event("ADDED", incident("d", 22))]],
        relists=[([incident("a", 1), incident("c", 3)], "21"), ([incident("c", 3)], "21")],
        list_failures={1: 410},  # the first listing's second page: its continue token expired
    )
    seen = Seen()
    await watching(server, seen, lambda: ("ADDED", "d") in seen.events)
    return server, seen


def test_a_410_answer_and_an_expired_continue_token_both_list_again_from_the_start() -> None:
    server, seen = run(_gone_at_the_start_and_an_expired_continue())
    assert seen.synced == 2  # the interrupted listing was not a listing: no sync for it
    assert seen.events[:2] == [(None, "a"), (None, "b")]  # the first page, before its token expired
    # listed again from the start (a and c): b is gone; then the watch answered 410: listed again
    assert seen.events[2:] == [
        (None, "a"),
        (None, "c"),
        ("DELETED", "uid-b"),
        (None, "c"),
        ("DELETED", "uid-a"),
        ("ADDED", "d"),
    ]
    assert [q["resourceVersion"] for q in watches(server)][:2] == ["21", "21"]  # 410, then from the relist


async def _too_long(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> FakeApiServer:
    monkeypatch.setattr(watch_module, "MAX_EVENT_BYTES", 1000)
    server = FakeApiServer(
        [],
        "10",
        [
            [event("ADDED", incident("huge", 11, description="x" * 5000))],
            [],  # a watch that ends at once, with nothing: waits like an error
            [event("ADDED", incident("fine", 12))],
        ],
    )
    seen = Seen()
    await watching(server, seen, lambda: ("ADDED", "fine") in seen.events)
    assert seen.events == [("ADDED", "fine")]
    assert "longer than 1000 bytes" in caplog.text
    assert "the watch ended at once" in caplog.text
    return server


def test_an_event_longer_than_the_bound_breaks_the_watch_and_an_empty_watch_waits(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = run(_too_long(monkeypatch, caplog))
    assert [q["resourceVersion"] for q in watches(server)][:3] == ["10", "10", "10"]


class Loops:
    """A supervisor that records the incidents it would start a loop for."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        if event_type != "DELETED" and wants_loop(body):
            self.started.append(body["metadata"]["name"])

    def wake(self, uid: str) -> None:
        pass


def open_incident(name: str, version: int) -> dict[str, Any]:
    body = incident(name, version)
    body["metadata"]["creationTimestamp"] = "2026-12-01T09:00:00Z"
    body["status"] = {"phase": "Mitigated", "detectedAt": "2026-12-01T09:00:00Z"}
    return body


def indexing_context() -> RuntimeContext:
    """What `IncidentStream` indexes into, for namespace ns (the rest of the context unused)."""
    ctx = RuntimeContext.__new__(RuntimeContext)
    ctx.config = OperatorConfig(namespaces=("ns",))
    ctx.history, ctx.open_ranks = History(), Rankings()
    ctx.open_incidents, ctx.action_items = metrics.OpenIncidents(), metrics.OpenActionItems()
    return ctx


async def _first_listing_fails_part_way() -> tuple[RuntimeContext, Loops]:
    ctx = indexing_context()
    loops = Loops()
    server = FakeApiServer(
        [open_incident("o1", 1), open_incident("o2", 2), open_incident("o3", 3)],
        "10",
        [],
        relists=[([open_incident("o2", 2), open_incident("o3", 3)], "11")],  # o1 deleted meanwhile
        list_failures={1: 500},  # the first listing breaks after its first page
    )
    seen = Seen()
    ctx.kube = None  # type: ignore[assignment]  # the stream's own watch is not run: `watching` runs one
    stream = IncidentStream(ctx, loops, "ns")
    ctx.incident_streams = [stream]
    await watching(
        server, seen, lambda: stream.synced, page=2, on_event=stream.on_event, on_synced=stream.on_synced
    )
    return ctx, loops


def test_a_first_listing_tried_again_starts_each_open_incident_once_and_none_deleted_meanwhile() -> None:
    ctx, loops = run(_first_listing_fails_part_way())
    assert loops.started == ["o2", "o3"]  # once each, after the whole listing; o1 never
    assert [e.name for e in ctx.open_ranks.of("ns")] == ["o2", "o3"]  # o1's place is free


async def _delays() -> ObjectWatch:
    gone = event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    server = FakeApiServer(
        [incident("a", 1)],
        "10",
        [
            [event("ADDED", incident("b", 11)), CUT],  # worked, then broke: the first delay
            [event("ADDED", incident("c", 12)), CUT],  # again: still the first delay
            [event("ADDED", incident("d", 13)), gone],  # worked, then 410: listed again at once
            [],  # ended at once with nothing, right after a 410's listing: the second delay
            [],  # and again: the third
            [event("ADDED", incident("e", 22))],
        ],
        relists=[([incident("a", 1)], "21")],
    )
    seen = Seen()
    return await watching(
        server, seen, lambda: ("ADDED", "e") in seen.events, retry_delays=(0.01, 0.02, 0.03)
    )


def test_the_delays_start_over_after_a_watch_that_worked_and_grow_while_nothing_does() -> None:
    watch = run(_delays())
    assert list(watch.delays) == [0.01, 0.01, 0.02, 0.03]  # the 410 itself waited for nothing


async def _remembered() -> Seen:
    gone = event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    server = FakeApiServer(
        [incident("a", 1)],
        "10",
        [[gone], [event("ADDED", incident("b", 22))]],
        relists=[([incident("a", 1)], "21")],
    )
    seen = Seen()

    def intake_created_x(watch: ObjectWatch) -> None:  # seen first from the intake's create
        watch.remember(incident("x", 5))

    await watching(server, seen, lambda: ("ADDED", "b") in seen.events, prepare=intake_created_x)
    return seen


def test_an_incident_remembered_from_the_intake_and_missing_from_a_relist_is_handed_on_as_deleted() -> None:
    seen = run(_remembered())
    assert ("DELETED", "uid-x") in seen.events


def end_of_state(version: int) -> bytes:
    """The bookmark that ends a streamed first state, as kube-apiserver sends it."""
    metadata = {"resourceVersion": str(version), "annotations": {watch_module.INITIAL_EVENTS_END: "true"}}
    return event(
        "BOOKMARK", {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "Incident", "metadata": metadata}
    )


def streamed(server: FakeApiServer) -> list[dict[str, str]]:
    return [q for q in server.requests if q.get("sendInitialEvents") == "true"]


async def _streamed_first_state() -> tuple[FakeApiServer, Seen, ObjectWatch, list[bool]]:
    server = FakeApiServer(
        [incident("never-listed", 1)],
        "1",
        [],
        streams=[
            [
                event("ADDED", incident("a", 5)),
                event("ADDED", incident("b", 7)),
                end_of_state(20),
                event("MODIFIED", incident("a", 21, severity="P1")),
                event("DELETED", incident("b", 22)),
            ]
        ],
    )
    seen, holder, locked = Seen(), list[ObjectWatch](), list[bool]()

    def on_event(kind: str | None, body: dict[str, Any]) -> None:
        locked.append(holder[0].listing.locked())
        seen.on_event(kind, body)

    watch = await watching(
        server,
        seen,
        lambda: len(seen.events) == 4 and len(watches(server)) == 2,
        on_event=on_event,
        prepare=holder.append,
    )
    return server, seen, watch, locked


def test_the_first_state_streams_then_the_changes_follow_and_no_listing_is_made() -> None:
    server, seen, watch, locked = run(_streamed_first_state())
    assert seen.events == [(None, "a"), (None, "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert seen.synced == 1
    assert locked == [True, True, False, False]  # the first state holds the shared lock, to its end
    assert server.lists == 0
    assert server.refused == 0
    first, again = watches(server)
    assert first["sendInitialEvents"] == "true"
    assert first["resourceVersionMatch"] == "NotOlderThan"
    assert first["allowWatchBookmarks"] == "true"
    assert "resourceVersion" not in first
    assert int(first["timeoutSeconds"]) >= watch_module.INITIAL_STREAM_TIMEOUT_S
    assert again["resourceVersion"] == "22"  # the changes from there on
    assert "sendInitialEvents" not in again
    assert set(watch.known) == {"uid-a"}
    assert not watch.delays  # the stream that ended after its first state and changes: no failure


async def _streamed_again_after_410() -> tuple[FakeApiServer, Seen]:
    gone = event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    server = FakeApiServer(
        [],
        "1",
        [],
        streams=[
            [event("ADDED", incident("a", 5)), event("ADDED", incident("b", 6)), end_of_state(10), gone],
            [event("ADDED", incident("a", 20)), event("ADDED", incident("c", 21)), end_of_state(21)],
        ],
    )
    seen = Seen()

    def intake_created_x(watch: ObjectWatch) -> None:
        watch.remember(incident("x", 5))

    await watching(server, seen, lambda: seen.synced == 2, prepare=intake_created_x)
    return server, seen


def test_a_410_streams_the_first_state_again_and_what_it_lacks_is_handed_on_as_deleted() -> None:
    server, seen = run(_streamed_again_after_410())
    assert seen.events == [
        (None, "a"),
        (None, "b"),
        ("DELETED", "uid-x"),  # remembered from the intake, not in the first state
        (None, "a"),
        (None, "c"),
        ("DELETED", "uid-b"),  # deleted while the watch could not say so
    ]
    assert len(streamed(server)) == 2
    assert server.lists == 0


async def _stream_cut_part_way() -> tuple[RuntimeContext, Loops, FakeApiServer]:
    ctx = indexing_context()
    loops = Loops()
    server = FakeApiServer(
        [],
        "1",
        [],
        streams=[
            [event("ADDED", open_incident("o1", 1)), event("ADDED", open_incident("o2", 2)), CUT],
            [
                event("ADDED", open_incident("o2", 2)),
                event("ADDED", open_incident("o3", 3)),
                end_of_state(11),
            ],
        ],  # o1 deleted between the two
    )
    ctx.kube = None  # type: ignore[assignment]  # the stream's own watch is not run: `watching` runs one
    stream = IncidentStream(ctx, loops, "ns")
    ctx.incident_streams = [stream]
    await watching(
        server, Seen(), lambda: stream.synced, on_event=stream.on_event, on_synced=stream.on_synced
    )
    return ctx, loops, server


def test_a_stream_cut_before_its_end_streams_again_and_starts_each_open_incident_once() -> None:
    ctx, loops, server = run(_stream_cut_part_way())
    assert loops.started == ["o2", "o3"]  # once each, after the whole first state; o1 never
    assert [e.name for e in ctx.open_ranks.of("ns")] == ["o2", "o3"]
    assert len(streamed(server)) == 2  # a broken stream is not a refusal
    assert server.lists == 0


async def _not_streamed(script: list[bytes] | int) -> tuple[FakeApiServer, Seen, ObjectWatch]:
    gone = event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    server = FakeApiServer(
        [incident("a", 1), incident("b", 2)],
        "10",
        [[event("ADDED", incident("c", 11)), gone], [event("ADDED", incident("d", 22))]],
        relists=[([incident("a", 1)], "21")],
        streams=[script],
    )
    seen = Seen()
    watch = await watching(server, seen, lambda: ("ADDED", "d") in seen.events)
    return server, seen, watch


@pytest.mark.parametrize(
    ("script", "streamed_before"),
    [
        (  # a plain bookmark before the end: the parameters were ignored
            [
                event("ADDED", incident("a", 1)),
                event("BOOKMARK", {"kind": "Incident", "metadata": {"resourceVersion": "8"}}),
            ],
            1,
        ),
        ([event("ERROR", {"kind": "Status", "code": 400, "reason": "BadRequest", "message": "no"})], 0),
        (422, 0),
    ],
    ids=["bookmark-before-the-end", "error-400-in-the-stream", "answered-422"],
)
def test_a_server_that_does_not_stream_the_first_state_gets_paged_listings_from_then_on(
    script: list[bytes] | int, streamed_before: int
) -> None:
    server, seen, watch = run(_not_streamed(script))
    assert seen.events[:streamed_before] == [(None, "a")][:streamed_before]  # handed on, then listed
    listed = seen.events[streamed_before:]
    assert listed[:4] == [(None, "a"), (None, "b"), ("ADDED", "c"), (None, "a")]
    assert sorted(listed[4:6]) == [("DELETED", "uid-b"), ("DELETED", "uid-c")]  # gone meanwhile
    assert listed[6:] == [("ADDED", "d")]
    assert seen.synced == 2
    assert server.lists == 2  # the first listing, and after the 410
    assert len(streamed(server)) == 1  # asked once: the 410 listed again, in pages
    assert watch.stream is False


async def _stream_failed_then_worked() -> tuple[FakeApiServer, Seen, ObjectWatch]:
    server = FakeApiServer([], "1", [], streams=[500, [event("ADDED", incident("a", 5)), end_of_state(10)]])
    seen = Seen()
    watch = await watching(server, seen, lambda: seen.synced == 1)
    return server, seen, watch


def test_an_error_answering_the_stream_is_retried_as_a_stream_after_a_delay() -> None:
    server, seen, watch = run(_stream_failed_then_worked())
    assert seen.events == [(None, "a")]
    assert len(streamed(server)) == 2
    assert server.lists == 0
    assert list(watch.delays) == [0.01, 0.01]  # the 500; the stream ending right after its end, with nothing


GONE = event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})


async def _ended_early() -> tuple[FakeApiServer, Seen, ObjectWatch]:
    early = [event("ADDED", incident("a", 1))]  # then the connection ends: an API server restarting
    server = FakeApiServer(
        [incident("a", 1), incident("b", 2)],
        "10",
        [[event("ADDED", incident("c", 11)), GONE]],
        streams=[
            early,
            early,
            early,
            [event("ADDED", incident("a", 20)), event("ADDED", incident("c", 21)), end_of_state(21)],
        ],
    )
    seen = Seen()
    watch = await watching(server, seen, lambda: seen.synced == 2, retry_delays=(0.01, 0.02, 0.03))
    return server, seen, watch


def test_a_stream_ended_early_is_tried_again_then_listed_in_pages_once_and_streamed_after() -> None:
    server, seen, watch = run(_ended_early())
    assert seen.events[:3] == [(None, "a")] * 3  # three streams that ended before their end
    assert seen.events[3:6] == [(None, "a"), (None, "b"), ("ADDED", "c")]  # listed in pages, then watched
    assert seen.events[6:] == [(None, "a"), (None, "c"), ("DELETED", "uid-b")]  # after the 410: streamed
    assert list(watch.delays)[:3] == [0.01, 0.02, 0.03]  # each early end waited, growing
    assert server.lists == 1
    assert len(streamed(server)) == 4
    assert watch.stream is True  # not a refusal: the next first state is streamed again


async def _restream_meanwhile() -> Seen:
    server = FakeApiServer(
        [],
        "1",
        [[event("ADDED", incident("x", 22))]],
        streams=[
            [event("ADDED", incident("a", 5)), event("ADDED", incident("c", 6)), end_of_state(10), GONE],
            [event("ADDED", incident("a", 20)), event("MODIFIED", incident("c", 21)), end_of_state(21)],
        ],
    )
    seen, holder = Seen(), list[ObjectWatch]()

    def on_event(kind: str | None, body: dict[str, Any]) -> None:
        seen.on_event(kind, body)
        if seen.events.count((None, "a")) == 2 and len(seen.events) == 3:  # the second stream began
            holder[0].remember(incident("x", 22))  # the intake creates x meanwhile

    await watching(
        server, seen, lambda: ("ADDED", "x") in seen.events, on_event=on_event, prepare=holder.append
    )
    return seen


def test_what_the_intake_creates_or_a_change_shows_while_a_first_state_streams_is_not_deleted() -> None:
    seen = run(_restream_meanwhile())
    assert seen.events == [
        (None, "a"),
        (None, "c"),
        (None, "a"),
        (None, "c"),  # a change within the first state: as listed
        ("ADDED", "x"),
    ]  # no DELETED


async def _gone_right_after_the_end() -> ObjectWatch:
    again = [event("ADDED", incident("a", 5)), end_of_state(10), GONE]
    server = FakeApiServer(
        [], "1", [], streams=[again, again, again, [event("ADDED", incident("a", 30)), end_of_state(30)]]
    )
    seen = Seen()
    return await watching(server, seen, lambda: seen.synced == 4, retry_delays=(0.01, 0.02, 0.03))


def test_a_410_right_after_each_streamed_first_state_waits_growing_delays() -> None:
    watch = run(_gone_right_after_the_end())
    assert list(watch.delays)[:2] == [0.02, 0.03]  # the first 410 streams again at once; then they wait


async def _synced_handler_fails() -> tuple[FakeApiServer, Seen]:
    server = FakeApiServer(
        [],
        "1",
        [422, [event("ADDED", incident("c", 12))]],  # an ordinary watch answered 422: an error, not a refusal
        streams=[[event("ADDED", incident("a", 5)), end_of_state(10), event("ADDED", incident("b", 11))]],
    )
    seen = Seen()

    def failing() -> None:
        seen.on_synced()
        raise RuntimeError("a handler bug")

    await watching(server, seen, lambda: ("ADDED", "c") in seen.events, on_synced=failing)
    return server, seen


def test_a_failing_first_state_handler_and_a_422_to_a_later_watch_end_nothing() -> None:
    server, seen = run(_synced_handler_fails())
    assert seen.events == [(None, "a"), ("ADDED", "b"), ("ADDED", "c")]
    assert seen.synced == 1
    assert len(streamed(server)) == 1  # the watch went on from 11: no first state again
    assert [q.get("resourceVersion") for q in watches(server)][1:] == ["11", "11", "12"]
    assert server.lists == 0


async def _deleted_while_streaming() -> Seen:
    server = FakeApiServer(
        [],
        "1",
        [],
        streams=[
            [event("ADDED", incident("a", 5)), event("ADDED", incident("b", 6)), end_of_state(10), GONE],
            [event("ADDED", incident("a", 20)), event("DELETED", incident("b", 21)), end_of_state(21)],
        ],
    )
    seen = Seen()
    await watching(server, seen, lambda: seen.synced == 2)
    return seen


def test_an_incident_deleted_while_a_first_state_streams_is_handed_on_as_deleted_once() -> None:
    seen = run(_deleted_while_streaming())
    assert seen.events == [(None, "a"), (None, "b"), (None, "a"), ("DELETED", "b")]


BROKEN = [event("ADDED", incident("a", 1)), CUT]  # a proxy resets the connection before the end
EARLY = [event("ADDED", incident("a", 1))]  # the connection ends before the end
DONE = [event("ADDED", incident("a", 1)), end_of_state(10)]


async def _streams(streams: list[list[bytes] | int], synced: int) -> FakeApiServer:
    server = FakeApiServer([incident("a", 1)], "20", [], streams=streams)
    seen = Seen()
    await watching(server, seen, lambda: seen.synced == synced, retry_delays=(0.01,))
    return server


def test_streams_that_break_before_their_end_count_towards_a_paged_listing() -> None:
    server = run(_streams([BROKEN, EARLY, BROKEN, DONE], synced=1))
    assert server.lists == 1  # after three, listed in pages
    assert len(streamed(server)) == 3


def test_a_first_state_streamed_to_its_end_starts_the_count_of_early_ends_over() -> None:
    server = run(_streams([EARLY, BROKEN, [*DONE, GONE], EARLY, BROKEN, DONE], synced=2))
    assert server.lists == 0
    assert len(streamed(server)) == 6
