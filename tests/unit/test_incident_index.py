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

from incident_operator.core import archive, repeats
from incident_operator.core.openlimit import Rankings
from incident_operator.runtime import handlers
from incident_operator.runtime.context import RuntimeContext
from incident_operator.settings.config import OperatorConfig

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
    ctx.history, ctx.open_ranks, ctx.unconfirmed = repeats.History(), Rankings(), {}
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
    handlers.index_incident(ctx, "MODIFIED", body)
    key = repeats.key_of(body["spec"])
    assert key is not None
    assert ctx.history.of("ns", key) == [("h1", body["status"]["detectedAt"])]  # two strings, no body
    assert list(ctx.open_ranks.of("ns")) == []  # not open: not under the cap
    assert body == kept  # read, not kept nor changed
    handlers.index_incident(ctx, "DELETED", body)
    assert ctx.history.of("ns", key) == []
    assert len(ctx.history) == 0


def test_repeats_and_the_cap_give_what_they_gave_from_kopfs_index() -> None:
    """The same answers as the kopf indexes gave (Seen per key; OpenIncident per open one)."""
    ctx = context()
    earlier, again, other_ns = incident("h1", 8), incident("h2", 16), incident("h3", 24, namespace="other")
    running = incident("o1", 8, open_=True)
    for body in (earlier, again, other_ns, running):
        handlers.index_incident(ctx, None, body)
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
    handlers.index_incident(ctx, "MODIFIED", {**running, "spec": {**running["spec"], "title": "retitled"}})
    assert len(ctx.history.of("ns", key)) == 3  # indexed again, not twice


class PagedKube:
    def __init__(
        self,
        pages: dict[str | None, list[list[dict[str, Any]]]],
        failures: int = 0,
        archives: dict[str | None, list[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self.by_namespace, self.failures, self.archives = pages, failures, archives or {}
        self.asked: list[tuple[str | None, int]] = []

    async def incident_pages(self, namespace: str | None, limit: int) -> AsyncIterator[list[dict[str, Any]]]:
        self.asked.append((namespace, limit))
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        for page in self.by_namespace.get(namespace, []):
            yield page

    async def pages(
        self, plural: str, namespace: str | None, limit: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        assert plural == archive.PLURAL
        for page in self.archives.get(namespace, []):
            yield page


def test_the_start_listing_indexes_every_watched_namespace_page_by_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "INDEX_ATTEMPTS", (0.0,))
    ctx = context("a", "b")
    kube = PagedKube(
        {
            "a": [[incident("h1", 8, namespace="a")], [incident("h2", 16, namespace="a")]],
            "b": [[incident("o1", 8, namespace="b", open_=True)]],
        },
        failures=1,
    )
    ctx.kube = kube  # type: ignore[assignment]
    assert asyncio.run(handlers.index_existing(ctx)) == (3, 0)  # after one failed try
    assert kube.asked == [("a", 500), ("a", 500), ("b", 500)]
    key = repeats.key_of(incident("h1", 8)["spec"])
    assert key is not None
    assert len(ctx.history.of("a", key)) == 2
    assert [e.name for e in ctx.open_ranks.of("b")] == ["o1"]
    assert set(ctx.unconfirmed) == {"uid-h1", "uid-h2", "uid-o1"}


def test_what_was_deleted_before_the_watch_saw_it_is_dropped() -> None:
    """Listed at start, deleted before kopf's own listing: no watch event ever comes for it. One
    kopf has not got to yet (still listed) keeps its place under the cap."""
    ctx = context("ns")
    kept, gone, gone_open = incident("h1", 8), incident("h2", 16), incident("o1", 8, open_=True)
    slow_open = incident("o2", 9, open_=True)
    for body in (kept, gone, gone_open, slow_open):
        handlers.index_incident(ctx, None, body, listed=True)
    handlers.index_incident(ctx, None, kept)  # kopf's listing event: confirmed
    ctx.kube = PagedKube({"ns": [[kept, slow_open]]})  # type: ignore[assignment]
    assert asyncio.run(handlers.drop_unconfirmed(ctx, after=0)) == 2
    key = repeats.key_of(kept["spec"])
    assert key is not None
    assert ctx.history.of("ns", key) == [("h1", kept["status"]["detectedAt"])]
    assert [e.name for e in ctx.open_ranks.of("ns")] == ["o2"]  # o1's slot under the cap is free
    assert ctx.unconfirmed == {}


def test_nothing_is_dropped_when_the_second_listing_fails() -> None:
    ctx = context("ns")
    open_one = incident("o1", 8, open_=True)
    handlers.index_incident(ctx, None, open_one, listed=True)
    ctx.kube = PagedKube({"ns": [[open_one]]}, failures=1)  # type: ignore[assignment]
    assert asyncio.run(handlers.drop_unconfirmed(ctx, after=0)) == 0
    assert [e.name for e in ctx.open_ranks.of("ns")] == ["o1"]


def test_archived_repeats_come_from_the_start_listing_and_retentions_writes() -> None:
    """Repeats across the archive boundary without a kopf index over archives."""
    ctx = context("ns")
    earlier = incident("h1", 8)
    key = repeats.key_of(earlier["spec"])
    assert key is not None
    entry = archive.compact(earlier, None)
    stored = archive.Archive("incidents-2026-05", "2026-05", {"uid-h1": entry}, None).body("ns")
    ctx.kube = PagedKube({}, archives={"ns": [[stored]]})  # type: ignore[assignment]
    assert asyncio.run(handlers.index_existing(ctx)) == (0, 1)
    assert [name for name, _ in ctx.archived.of("ns", key)] == ["h1"]
    assert ctx.archived.of("other", key) == []
    later = incident("h2", 16)
    rewritten = archive.Archive(
        "incidents-2026-05", "2026-05", {"uid-h1": entry, "uid-h2": archive.compact(later, None)}, None
    ).body("ns")
    ctx.archived.put("ns", rewritten)  # retention wrote the archive again: its latest of the key
    assert [name for name, _ in ctx.archived.of("ns", key)] == ["h2"]
