"""What the operator keeps of every watched Incident (runtime.handlers.index_incident): compact
facts only, never a body, and no kopf index over Incidents (kopf holds every listed body until all
are indexed: half a GB at 10,000 incidents with a realistic history, and minutes of CPU)."""

from __future__ import annotations

import asyncio
import copy
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest

from incident_operator.adapters import metrics
from incident_operator.core import archive, repeats
from incident_operator.core.openlimit import Rankings
from incident_operator.runtime import handlers, incidents
from incident_operator.runtime.context import RuntimeContext
from incident_operator.settings.config import OperatorConfig
from tests.polling import until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # as bench.py has it
from synthetic import closed_incident

AT = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def incident(name: str, index: int, *, namespace: str = "ns", open_: bool = False) -> dict[str, Any]:
    body = closed_incident(name, index, AT + timedelta(hours=index))
    if open_:  # running its playbook: counted under the cap
        body["spec"].pop("closed")
        body["spec"].pop("resolution")
        body["status"] = {
            "phase": "Mitigated",
            "detectedAt": body["status"]["detectedAt"],
            "playbook": {"name": "latency-scale-up", "runId": "r1", "steps": []},
        }
    meta = {
        "namespace": namespace,
        "name": name,
        "uid": f"uid-{name}",
        "creationTimestamp": "2026-05-04T10:00:00Z",
    }
    return {"metadata": meta, **body}


def context(*namespaces: str) -> RuntimeContext:
    ctx = RuntimeContext.__new__(RuntimeContext)  # no API client: the tests give a fake one
    ctx.config = OperatorConfig(namespaces=namespaces)
    ctx.history, ctx.open_ranks = repeats.History(), Rankings()
    ctx.incident_streams = []
    ctx.open_incidents, ctx.action_items = metrics.OpenIncidents(), metrics.OpenActionItems()
    ctx.archived = archive.ArchivedRepeats()
    return ctx


def test_no_kopf_index_over_incidents() -> None:
    """The Playbook index stays (few objects); Incidents and IncidentArchives (up to 1 MiB each) are
    indexed by the operator itself."""
    indexed = {h.selector.any_name for h in kopf.get_default_registry()._indexing.get_all_handlers()}
    assert indexed == {"playbooks"}


def test_a_closed_incident_leaves_only_its_repeat_facts() -> None:
    ctx = context()
    body = incident("h1", 1)
    kept = copy.deepcopy(body)
    incidents.index_incident(ctx, "MODIFIED", body)
    key = repeats.key_of(body["spec"])
    assert key is not None
    assert ctx.history.of("ns", key) == [("h1", body["status"]["detectedAt"])]  # two strings, no body
    assert list(ctx.open_ranks.of("ns")) == []  # not open: not under the cap
    assert body == kept  # read, not kept nor changed
    incidents.index_incident(ctx, "DELETED", body)
    assert ctx.history.of("ns", key) == []
    assert len(ctx.history) == 0


def test_repeats_and_the_cap_give_what_they_gave_from_kopfs_index() -> None:
    """The same answers as the kopf indexes gave (Seen per key; OpenIncident per open one)."""
    ctx = context()
    earlier, again, other_ns = incident("h1", 8), incident("h2", 16), incident("h3", 24, namespace="other")
    running = incident("o1", 8, open_=True)
    for body in (earlier, again, other_ns, running):
        incidents.index_incident(ctx, None, body)
    key = repeats.key_of(running["spec"])
    assert key is not None
    assert key == repeats.key_of(earlier["spec"]) == repeats.key_of(again["spec"])
    seen = ctx.history.of("ns", key)
    assert sorted(seen) == sorted(
        repeats.seen_of(b["metadata"]["name"], b["metadata"], b["status"]) for b in (earlier, again, running)
    )
    now = AT + timedelta(hours=20)
    assert repeats.previous("o1", now, seen, timedelta(days=30)) == "h2"  # the latest earlier one
    assert [e.name for e in ctx.open_ranks.of("ns")] == ["o1"]
    incidents.index_incident(ctx, "MODIFIED", {**running, "spec": {**running["spec"], "title": "retitled"}})
    assert len(ctx.history.of("ns", key)) == 3  # indexed again, not twice


class PagedKube:
    def __init__(
        self, archives: dict[str | None, list[list[dict[str, Any]]]] | None = None, failures: int = 0
    ) -> None:
        self.archives, self.failures = archives or {}, failures
        self.asked: list[tuple[str | None, int]] = []

    async def pages(
        self, plural: str, namespace: str | None, limit: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        assert plural == archive.PLURAL
        self.asked.append((namespace, limit))
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        for page in self.archives.get(namespace, []):
            yield page


class Observed:
    """A supervisor that records what it was shown (the loops are not what is tested here)."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self.shown: list[tuple[str | None, str, int]] = []  # (type, name, incidents indexed then)

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        self.shown.append((event_type, body["metadata"]["name"], len(self.ctx.history)))

    def wake(self, uid: str) -> None:
        pass


def test_a_scopes_first_listing_indexes_every_page_before_any_loop_starts() -> None:
    """kopf's pre-indexing guaranteed that the first incident judged sees every earlier one: an
    open incident listed first starts its loop only once the last page is indexed."""
    ctx = context("ns")
    ctx.config = OperatorConfig(namespaces=("ns",))
    supervisor = Observed(ctx)
    stream = incidents.IncidentStream.__new__(incidents.IncidentStream)
    stream.ctx, stream.supervisor, stream.namespace, stream.deferred = ctx, supervisor, "ns", {}  # type: ignore[assignment]
    ctx.incident_streams = [stream]
    listing = [incident("o1", 1, open_=True), incident("h1", 2), incident("h2", 3)]
    for body in listing:
        stream.on_event(None, body)
    assert not stream.synced
    assert incidents.synced_stream(ctx, "ns") is None
    assert [name for _, name, _ in supervisor.shown] == ["h1", "h2"]  # settled: nothing deferred
    assert [e.name for e in ctx.open_ranks.of("ns")] == ["o1"]  # counted under the cap already
    stream.on_synced()
    assert supervisor.shown[-1] == (None, "o1", 3)  # started once all three were indexed
    assert stream.synced
    assert incidents.synced_stream(ctx, "ns") is stream
    assert incidents.synced_stream(ctx, "other") is None
    stream.on_event("MODIFIED", incident("o2", 4, open_=True))  # after the listing: at once
    assert supervisor.shown[-1] == ("MODIFIED", "o2", 4)


def test_the_archives_are_indexed_at_start_page_by_page_after_a_failed_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "INDEX_ATTEMPTS", (0.0,))
    ctx = context("a", "b")
    stored = archive.Archive(
        "incidents-2026-05", "2026-05", {"uid-h1": archive.compact(incident("h1", 8), None)}, None
    )
    kube = PagedKube({"a": [[stored.body("a")]], "b": [[stored.body("b")], [stored.body("b")]]}, failures=1)
    ctx.kube = kube  # type: ignore[assignment]
    assert asyncio.run(handlers.index_archives(ctx)) == 3
    assert kube.asked == [("a", 10), ("a", 10), ("b", 10)]


def test_archived_repeats_come_from_the_start_listing_and_retentions_writes() -> None:
    """Repeats across the archive boundary without a kopf index over archives."""
    ctx = context("ns")
    earlier = incident("h1", 8)
    key = repeats.key_of(earlier["spec"])
    assert key is not None
    entry = archive.compact(earlier, None)
    stored = archive.Archive("incidents-2026-05", "2026-05", {"uid-h1": entry}, None).body("ns")
    ctx.kube = PagedKube({"ns": [[stored]]})  # type: ignore[assignment]
    assert asyncio.run(handlers.index_archives(ctx)) == 1
    assert [name for name, _ in ctx.archived.of("ns", key)] == ["h1"]
    assert ctx.archived.of("other", key) == []
    later = incident("h2", 16)
    rewritten = archive.Archive(
        "incidents-2026-05", "2026-05", {"uid-h1": entry, "uid-h2": archive.compact(later, None)}, None
    ).body("ns")
    ctx.archived.put("ns", rewritten)  # retention wrote the archive again: its latest of the key
    assert [name for name, _ in ctx.archived.of("ns", key)] == ["h2"]


class PlaybookListing:
    """The API's Playbooks (what `list_objects` returns), and how often they were listed."""

    def __init__(self, items: dict[str | None, list[dict[str, Any]]], failures: int = 0) -> None:
        self.items, self.failures, self.listed = items, failures, 0

    async def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        assert plural == "playbooks"
        self.listed += 1
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        return self.items.get(namespace, [])


def playbook(namespace: str, name: str, generation: int) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "generation": generation}}


def entry(name: str, generation: int) -> Any:
    return type("Entry", (), {"name": name, "generation": generation})()


async def _caught_up_when_kopf_indexed(index: dict[str, list[Any]]) -> tuple[list[str], PlaybookListing]:
    ctx = context("a", "b")
    kube = PlaybookListing({"a": [playbook("a", "p1", 2)], "b": [playbook("b", "p2", 1)]}, failures=1)
    ctx.kube = kube  # type: ignore[assignment]

    async def kopf_indexes() -> None:  # kopf's watch of Playbooks, a moment later
        await until(lambda: kube.listed >= 3, timeout=5, what="the Playbooks listed")
        index["a"] = [entry("p1", 2)]
        index["b"] = [entry("p2", 1)]

    indexing = asyncio.create_task(kopf_indexes())
    behind = await incidents.playbooks_caught_up(ctx, lambda ns: (index.get(ns, []), {}), deadline_s=5)
    await indexing
    return behind, kube


def test_the_incident_watch_waits_for_kopfs_playbook_index_to_hold_every_listed_playbook() -> None:
    """An incident planned before kopf indexed a Playbook would pin a worse match or none: the
    watch starts once the index holds every Playbook the API lists (a failed listing is tried again)."""
    index: dict[str, list[Any]] = {"a": [entry("p1", 1)]}  # p1 at an older generation, p2 missing
    behind, kube = asyncio.run(_caught_up_when_kopf_indexed(index))
    assert behind == []
    assert kube.listed == 3  # one failure, then a and b once: the index is polled, not the API


def test_the_wait_for_the_playbook_index_is_bounded() -> None:
    ctx = context("a")
    ctx.kube = PlaybookListing({"a": [playbook("a", "gone-before-kopf-listed", 1)]})  # type: ignore[assignment]
    behind = asyncio.run(incidents.playbooks_caught_up(ctx, lambda ns: ([], {}), deadline_s=0.3))
    assert behind == ["a/gone-before-kopf-listed"]


class Hanging(PlaybookListing):
    async def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        self.listed += 1
        await asyncio.Event().wait()  # the API server does not answer
        raise AssertionError("unreachable")


def test_the_wait_for_the_playbook_index_is_bounded_when_the_api_does_not_answer() -> None:
    ctx = context("a")
    ctx.kube = Hanging({})  # type: ignore[assignment]
    behind = asyncio.run(incidents.playbooks_caught_up(ctx, lambda ns: ([], {}), deadline_s=0.3))
    assert behind == ["(playbooks not listed)"]


class Failing(Observed):
    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        if body["metadata"]["name"] == "o1":
            raise RuntimeError("a bug for this one incident")
        super().observe(event_type, body)


def test_one_incident_that_fails_after_the_listing_keeps_no_other_from_its_loop() -> None:
    ctx = context("ns")
    supervisor = Failing(ctx)
    stream = incidents.IncidentStream.__new__(incidents.IncidentStream)
    stream.ctx, stream.supervisor, stream.namespace, stream.deferred = ctx, supervisor, "ns", {}  # type: ignore[assignment]
    for name in ("o1", "o2"):
        stream.on_event(None, incident(name, 1, open_=True))
    stream.on_synced()
    assert [name for _, name, _ in supervisor.shown] == ["o2"]
