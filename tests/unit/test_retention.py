"""Retention with an archive: the pure core (`core.archive`: due, compaction, month, split,
idempotence), the report and repeat detection over archived and live incidents alike, and the
controller's pass (`controllers.retention`) against an in-memory API, a crash included."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException as PluginApiException

from incident_operator.adapters.kube import ApiException, Kube, TransportError
from incident_operator.api.keys import LABEL_ARCHIVE_MONTH, LABEL_INCIDENT
from incident_operator.api.models import ARCHIVE_POSTMORTEM_MAX, IncidentArchiveSpec
from incident_operator.api.timestamps import format_time as stamp
from incident_operator.cli.kubectl.client import Api, Failed
from incident_operator.cli.kubectl.main import parser
from incident_operator.controllers.retention import Ref, Retention
from incident_operator.core import archive, repeats, report
from incident_operator.settings.config import ConfigError, RetentionConfig, load_config_file
from tests.unit.test_after_the_incident import T0, incident
from tests.unit.test_kube_adapter import Gone

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
Objects = list[dict[str, Any]]
Months = list[str | None]


def closed(obj: dict[str, Any], uid: str, closed_at: datetime) -> dict[str, Any]:
    """`obj` (see test_after_the_incident.incident) Closed at `closed_at`, with a uid."""
    out = copy.deepcopy(obj)
    out["metadata"]["uid"] = uid
    out["status"]["phase"] = "Closed"
    out["status"]["closedAt"] = stamp(closed_at)
    return out


def history_set() -> list[dict[str, Any]]:
    """Incidents of two months with everything the report counts: timings, a breach, a repeat,
    escalations, action items, targets, a drill."""
    october = datetime(2026, 10, 20, 9, 0, tzinfo=UTC)
    objects = [
        incident(
            "a", "P1", detect_delay=60, ack_after=300, resolve_after=1800, targets=["web"], breached=True
        ),
        incident(
            "b", "P2", "performance", detect_delay=120, ack_after=600, resolve_after=3600, targets=["web"]
        ),
        incident("c", "P2", "performance", ack_after=60, resolve_after=600, repeat_of="b", escalations=2),
        incident("d", "P4", "data", detected=T0 + timedelta(days=10), targets=["db"]),
        incident("drill", "P1", drill=True, ack_after=10, resolve_after=20),
        incident("oct", "P3", detected=october, ack_after=30, resolve_after=90),
        incident(
            "items",
            "P3",
            "security",
            items=[
                {"id": "one", "title": "x", "done": True},
                {"id": "two", "title": "y", "due": "2026-11-10"},
            ],
        ),
    ]
    return [closed(o, f"uid-{o['metadata']['name']}", T0 + timedelta(days=20)) for o in objects]


def bodies(namespace: str, archives: list[archive.Archive]) -> list[dict[str, Any]]:
    return [a.body(namespace) for a in archives]


def archived(objects: list[dict[str, Any]], namespace: str = "shop") -> list[dict[str, Any]]:
    """The IncidentArchive bodies retention writes for `objects`."""
    entries = {
        o["metadata"]["uid"]: archive.compact(o, f"# post-mortem of {o['metadata']['name']}") for o in objects
    }
    found: list[archive.Archive] = []
    for _, additions in archive.grouped(entries, namespace).items():
        found += archive.place([], namespace, additions)
    return bodies(namespace, found)


# --------------------------------------------------------------------------- due


def test_due_keys_on_closed_at_with_the_time_passed_in() -> None:
    base = incident("x")
    old = closed(base, "u1", NOW - timedelta(days=91))
    exactly = closed(base, "u2", NOW - timedelta(days=90))
    young = closed(base, "u3", NOW - timedelta(days=89))
    resolved = copy.deepcopy(old)
    resolved["status"]["phase"] = "Resolved"  # closedAt without Closed: not due
    no_stamp = copy.deepcopy(old)
    del no_stamp["status"]["closedAt"]
    garbage = copy.deepcopy(old)
    garbage["status"]["closedAt"] = "yesterday"
    found = archive.due([young, resolved, exactly, no_stamp, garbage, old], NOW, timedelta(days=90))
    assert [o["metadata"]["uid"] for o in found] == ["u1", "u2"]  # oldest closed first
    assert archive.due([old], NOW - timedelta(days=2), timedelta(days=90)) == []  # the clock decides


# --------------------------------------------------------------------------- compaction, month


def test_an_entry_keeps_what_the_report_repeats_and_history_need_and_is_a_valid_archive_entry() -> None:
    obj = history_set()[0]
    obj["spec"]["commander"] = "alice"
    obj["spec"]["description"] = "long text the archive does not keep " * 50
    obj["spec"]["resolution"] = {"summary": "scaled", "rootCause": "pool"}
    obj["status"]["timeline"] = [{"time": stamp(T0), "type": "Detected", "message": "m"}] * 50
    obj["status"]["severityHistory"] = [
        {
            "previous": "P2",
            "severity": "P1",
            "at": stamp(T0),
            "reason": "rule",
            "by": "rule",
            "direction": "raised",
        }
    ]
    obj["status"]["escalation"] = {
        "level": 1,
        "history": [{"level": 1, "at": stamp(T0), "channels": ["mail"]}],
    }
    entry = archive.compact(obj, "# Post-mortem\ntext")
    assert entry["name"] == "a"
    assert entry["severity"] == "P1"
    assert entry["title"] == "a"
    assert entry["source"] == {
        "type": "alert",
        "alertname": "ServiceDown",
        "startsAt": obj["spec"]["source"]["startsAt"],
    }
    for key in ("detectedAt", "acknowledgedAt", "resolvedAt", "closedAt", "severityHistory", "escalation"):
        assert entry[key] == obj["status"][key]
    assert entry["breachedAt"] == stamp(T0)
    assert entry["postmortem"] == "# Post-mortem\ntext"
    assert entry["commander"] == "alice"
    assert entry["resolution"]["rootCause"] == "pool"
    assert "timeline" not in entry
    assert "description" not in entry
    IncidentArchiveSpec.model_validate({"month": "2026-11", "count": 1, "entries": {"uid-a": entry}})
    long = archive.compact(obj, "é" * ARCHIVE_POSTMORTEM_MAX)
    assert len(long["postmortem"].encode()) <= ARCHIVE_POSTMORTEM_MAX
    assert long["postmortemTruncated"]


def test_the_month_is_the_month_of_detection_else_of_creation() -> None:
    obj = incident("x", detected=datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert archive.month_of(archive.detected_stamp(obj)) == "2026-12"
    del obj["status"]["detectedAt"]
    obj["metadata"]["creationTimestamp"] = "2027-01-01T00:00:00Z"
    assert archive.month_of(archive.detected_stamp(obj)) == "2027-01"
    with pytest.raises(archive.ArchiveError, match="unreadable"):
        archive.month_of("soon")
    assert [archive.archive_name("2026-11", i) for i in (1, 2, 3)] == [
        "incidents-2026-11",
        "incidents-2026-11-2",
        "incidents-2026-11-3",
    ]


# --------------------------------------------------------------------------- split, idempotence


def test_entries_split_into_numbered_archives_each_under_the_bound() -> None:
    template = history_set()[0]
    entries = {}
    for n in range(40):
        obj = copy.deepcopy(template)
        obj["metadata"]["name"] = f"inc-{n}"
        entries[f"uid-{n:02d}"] = archive.compact(obj, "x" * 60_000)  # ~60 KB each: 2.4 MB in all
    placed = archive.place([], "shop", entries)
    assert [a.name for a in placed] == ["incidents-2026-11", "incidents-2026-11-2", "incidents-2026-11-3"]
    for body in bodies("shop", placed):
        size = len(json.dumps(body, separators=(",", ":")).encode())
        assert size <= archive.MAX_ARCHIVE_BYTES
        assert body["spec"]["count"] == len(body["spec"]["entries"])
        assert body["metadata"]["labels"] == {LABEL_ARCHIVE_MONTH: "2026-11"}
    assert sum(len(a.entries) for a in placed) == 40
    # A small bound splits sooner; an entry alone over it is refused, never written.
    assert len(archive.place([], "shop", dict(list(entries.items())[:3]), bound=130_000)) == 2
    with pytest.raises(archive.ArchiveError, match="over the bound"):
        archive.place([], "shop", {"big": entries["uid-00"]}, bound=10_000)


def test_a_new_archive_never_takes_a_name_already_there() -> None:
    """An archive named for November but filed under another month (not one of ours, say) is not
    November's to fill, and its name is not free: a new one is the next name."""
    odd = archive.Slot("incidents-2026-11", "2026-10", 100, set(), "7")
    entry = archive.compact(history_set()[0], None)
    assert archive.assign([odd], "shop", "2026-11", {"uid-a": entry}) == {"incidents-2026-11-2": ["uid-a"]}


def test_archiving_the_same_incident_twice_keeps_one_entry() -> None:
    objects = history_set()
    first = archived(objects)
    again = {o["metadata"]["uid"]: archive.compact(o, "again") for o in objects[:2]}
    existing = [archive.Archive.of(b) for b in first]
    changed = archive.place(existing, "shop", again)
    assert [a.name for a in changed] == ["incidents-2026-11"]
    assert changed[0].resource_version is None  # our bodies had none: the test's own objects
    after = {a.name: a for a in existing}
    assert sum(len(a.entries) for a in after.values()) == len(objects)
    assert after["incidents-2026-11"].entries["uid-a"]["postmortem"] == "again"
    # Live and archived at once (the crash between archive and delete), or held by two objects:
    # counted once.
    doubled = [*first, copy.deepcopy(first[0])]
    assert len(archive.history(objects[:1], doubled)) == len(objects)


# --------------------------------------------------------------------------- report and repeats


def test_the_report_gives_the_same_numbers_before_and_after_archiving() -> None:
    objects = history_set()
    archives = archived(objects)
    assert {b["spec"]["month"] for b in archives} == {"2026-10", "2026-11"}
    now = datetime(2026, 12, 27, tzinfo=UTC)
    for year, month in ((2026, 10), (2026, 11)):
        before = report.build(objects, year, month, now, "shop").to_json()
        assert before["total"] > 0
        after = report.build(archive.history([], archives), year, month, now, "shop").to_json()
        half = report.build(archive.history(objects[:3], archived(objects[3:])), year, month, now, "shop")
        assert after == before
        assert half.to_json() == before
        assert after["unreadable"] == 0


def test_repeats_are_found_across_the_archive_boundary() -> None:
    old = closed(incident("old-outage", targets=["web"]), "uid-old", T0 + timedelta(days=1))
    older = closed(
        incident("older-outage", detected=T0 - timedelta(days=5), targets=["web"]), "uid-older", T0
    )
    other = closed(incident("db", "P2", "data", targets=["db"]), "uid-db", T0)
    body = archived([old, older, other])[0]
    index = archive.repeat_index("shop", body)
    new_spec = {
        "title": "again",
        "severity": "P2",
        "category": "availability",
        "targets": [{"kind": "Deployment", "name": "web"}],
    }
    key = repeats.key_of(new_spec)
    assert key is not None
    assert index[("shop", key)] == ("old-outage", stamp(T0))  # the latest of the key
    assert (
        repeats.previous("again", T0 + timedelta(days=3), [index[("shop", key)]], timedelta(days=30))
        == "old-outage"
    )


# --------------------------------------------------------------------------- the controller


def merged(target: Any, patch: Any) -> Any:
    """`patch` applied to `target` as a JSON merge patch (RFC 7386): objects merged key by key, a
    null removes its key, anything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


class Body(dict[str, Any]):
    """An object as a page hands it out: a dict that can be weakly referenced."""


class FakeApi:
    """Incidents, IncidentArchives (resourceVersion-checked) and ConfigMaps in memory, reached as
    the operator reaches them (`kube.call(kube.objects.list, ...)`, `kube.core.*`)."""

    def __init__(self) -> None:
        self.incidents: dict[tuple[str, str], dict[str, Any]] = {}
        self.archives: dict[tuple[str, str], dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], SimpleNamespace] = {}
        self.version = 0
        self.deletes: list[tuple[str, str, str | None]] = []
        self.conflicts = 0
        self.crash_on_delete = False
        self.objects = SimpleNamespace(
            list=self.list,
            page=self.page,
            get=self.get,
            create=self.create,
            replace=self.replace,
            patch=self.patch,
            delete=self.delete,
        )
        self.page_sizes: list[int] = []
        self.served: list[weakref.ref[Body]] = []
        """Every incident body a page handed out (dead once nothing holds it)."""
        self.expire: set[str] = set()
        """Continue tokens that expire the first time they are used (410 with a fresh one)."""
        self.events: list[str] = []
        """What was asked, in order: "page" (a page of incidents), "write" (an archive written)."""

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("_request_timeout", None)
        return fn(*args, **kwargs)

    def _rv(self) -> str:
        self.version += 1
        return str(self.version)

    def _check_version(self, current: dict[str, Any], wanted: str | None, *, required: bool = False) -> None:
        """409 unless `wanted` is `current`'s resourceVersion (None: no precondition, unless
        `required`, as a replace's); `conflicts` first has someone else write meanwhile."""
        if self.conflicts:
            self.conflicts -= 1
            current["metadata"]["resourceVersion"] = self._rv()  # someone wrote meanwhile
        if (wanted is not None or required) and wanted != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")

    def list(self, plural: str, namespace: str | None, label_selector: str = "") -> Objects:
        store = self.incidents if plural == "incidents" else self.archives
        found = [copy.deepcopy(o) for (ns, _), o in sorted(store.items()) if namespace in (None, ns)]
        if label_selector:
            key, value = label_selector.split("=")
            found = [o for o in found if (o["metadata"].get("labels") or {}).get(key) == value]
        return found

    def page(
        self, plural: str, namespace: str | None, token: str | None, limit: int, label_selector: str = ""
    ) -> tuple[Objects, str | None]:
        # The token is the last key handed out, as the API server's: what was deleted meanwhile
        # before it moves nothing after it.
        if token is not None and token in self.expire:  # etcd compacted its revision meanwhile
            self.expire.discard(token)
            self.events.append("expired")
            body = json.dumps({"kind": "Status", "metadata": {"continue": f"~{token}"}})
            raise ApiException(http_resp=Gone(body))
        token = token.lstrip("~") if token else token  # the latest snapshot, from the same key on
        store = self.incidents if plural == "incidents" else self.archives
        after = tuple((token or "/").split("/"))
        keys = [k for k in sorted(store) if namespace in (None, k[0]) and k > after]
        if label_selector:
            label, value = label_selector.split("=")
            keys = [k for k in keys if (store[k]["metadata"].get("labels") or {}).get(label) == value]
        if plural == "incidents":
            self.page_sizes.append(len(keys[:limit]))
            self.events.append("page")
        else:
            self.events.append("archive page")
        more = len(keys) > limit
        items: Objects = [Body(copy.deepcopy(store[k])) for k in keys[:limit]]
        if plural == "incidents":
            self.served += [weakref.ref(item) for item in items]
        return items, "/".join(keys[limit - 1]) if more else None

    def incident_pages(self, namespace: str | None, limit: int) -> AsyncIterator[Objects]:
        """The operator's own paging (`Kube.pages`, with `expired_continue`) over `page`."""
        return Kube.pages(cast(Kube, self), "incidents", namespace, limit)

    def pages(self, plural: str, namespace: str | None, limit: int, **query: Any) -> AsyncIterator[Objects]:
        return Kube.pages(cast(Kube, self), plural, namespace, limit, **query)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        if plural == archive.PLURAL:
            self.events.append("archive get")
        store = self.incidents if plural == "incidents" else self.archives
        found = store.get((namespace, name))
        if found is None:
            raise ApiException(status=404, reason="NotFound")
        return copy.deepcopy(found)

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        assert plural == archive.PLURAL
        key = (namespace, body["metadata"]["name"])
        if key in self.archives:
            raise ApiException(status=409, reason="AlreadyExists")
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = self._rv()
        self.archives[key] = stored
        self.events.append("write")
        return copy.deepcopy(stored)  # the answer, not the stored object

    def replace(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        current = self.archives[(namespace, name)]
        self._check_version(current, body["metadata"].get("resourceVersion"), required=True)
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = self._rv()
        self.archives[(namespace, name)] = stored
        self.events.append("write")
        return copy.deepcopy(stored)  # the answer, not the stored object

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386), refused (409) unless at the resourceVersion it names."""
        assert plural == archive.PLURAL
        current = self.archives.get((namespace, name))
        if current is None:
            raise ApiException(status=404, reason="NotFound")
        self._check_version(current, (body.get("metadata") or {}).get("resourceVersion"))
        stored = merged(current, body)
        stored["metadata"]["resourceVersion"] = self._rv()
        self.archives[(namespace, name)] = stored
        self.events.append("write")
        self.events.append("patch")
        return copy.deepcopy(stored)

    def delete(self, plural: str, namespace: str, name: str, uid: str | None = None) -> None:
        assert plural == "incidents"
        if self.crash_on_delete:
            raise KeyboardInterrupt  # the process dies here (not an Exception: nothing catches it)
        found = self.incidents.get((namespace, name))
        if found is None:
            raise ApiException(status=404, reason="NotFound")
        if uid is not None and found["metadata"]["uid"] != uid:
            raise ApiException(status=409, reason="Conflict")
        self.deletes.append((namespace, name, uid))
        del self.incidents[(namespace, name)]

    def add_cm(
        self, namespace: str, name: str, incident: str, owner_uid: str | None, data: dict[str, str]
    ) -> None:
        owners = [SimpleNamespace(uid=owner_uid)] if owner_uid else []
        meta = SimpleNamespace(
            name=name, uid=f"cm-{name}", labels={LABEL_INCIDENT: incident}, owner_references=owners
        )
        self.configmaps[(namespace, name)] = SimpleNamespace(metadata=meta, data=data)

    async def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        if (namespace, name) not in self.configmaps:
            raise ApiException(status=404, reason="NotFound")
        return dict(self.configmaps[(namespace, name)].data)


class Clock:
    """Monotonic time that only sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def retention(api: FakeApi, clock: Clock, days: int = 90, rate: float = 4.0) -> Retention:
    config = RetentionConfig(closedForDays=days, deletesPerSecond=rate)
    return Retention(
        api,
        config,
        clock=lambda: NOW,
        sleep=clock.sleep,
        monotonic=lambda: clock.now,
    )


def empty_november(api: FakeApi) -> None:
    """An empty November archive of `shop` in the API, at resourceVersion 100."""
    api.archives[("shop", "incidents-2026-11")] = archive.Archive(
        "incidents-2026-11", "2026-11", {}, "100"
    ).body("shop")


def before_archive_reads(api: FakeApi, action: Callable[[str, str], None]) -> None:
    """`action(namespace, name)` runs before each read of an archive (it may change it, or raise)."""
    get = api.get

    def reading(plural: str, namespace: str, name: str) -> dict[str, Any]:
        if plural == archive.PLURAL:
            action(namespace, name)
        return get(plural, namespace, name)

    api.objects.get = reading


def populated() -> FakeApi:
    api = FakeApi()
    for obj in history_set():  # closed 2026-11-23: due at NOW with 90 days
        obj["status"]["postmortemRef"] = f"{obj['metadata']['name']}-postmortem"
        api.incidents[("shop", obj["metadata"]["name"])] = obj
    young = closed(incident("young"), "uid-young", NOW - timedelta(days=10))
    api.incidents[("shop", "young")] = young
    api.incidents[("shop", "open")] = {
        **incident("open"),
        "metadata": {**incident("open")["metadata"], "uid": "uid-open"},
    }
    api.add_cm("shop", "a-postmortem", "a", "uid-a", {"postmortem.md": "# the real post-mortem of a"})
    api.add_cm("shop", "a-evidence", "a", "uid-a", {"logs": "..."})
    api.add_cm("shop", "a-foreign", "a", "uid-of-an-older-a", {})  # same label, another owner: kept
    api.add_cm("shop", "young-postmortem", "young", "uid-young", {})
    return api


def test_a_pass_archives_what_is_due_then_deletes_it_paced() -> None:
    api, clock = populated(), Clock()
    configmaps = dict(api.configmaps)
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 7, 0)
    assert sorted(n for _, n in api.incidents) == ["open", "young"]
    assert all(uid is not None and uid == f"uid-{name}" for _, name, uid in api.deletes)  # uid preconditions
    # ConfigMaps are only read: those an incident owns go with it by the garbage collector.
    assert api.configmaps == configmaps
    names = sorted(n for _, n in api.archives)
    assert names == ["incidents-2026-10", "incidents-2026-11"]
    entries = {uid: e for a in api.archives.values() for uid, e in a["spec"]["entries"].items()}
    assert entries["uid-a"]["postmortem"] == "# the real post-mortem of a"  # read from its ConfigMap
    assert entries["uid-b"]["postmortem"].startswith("#")  # no ConfigMap: rendered from the incident
    # 7 deletes at 4 per second: 6 waits of 0.25 s
    assert clock.slept == [0.25] * 6
    # Nothing due any more: a second pass writes nothing.
    before = copy.deepcopy(api.archives)
    assert asyncio.run(retention(api, clock).sweep()).due == 0
    assert api.archives == before


def test_a_crash_between_archive_and_delete_never_counts_an_incident_twice() -> None:
    api, clock = populated(), Clock()
    api.crash_on_delete = True
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(retention(api, clock).sweep())
    assert len(api.incidents) == 9  # archived, none deleted
    api.crash_on_delete = False
    month = datetime(2026, 11, 27, tzinfo=UTC)
    listing = archive.history(api.list("incidents", "shop"), api.list(archive.PLURAL, "shop"))
    report_during = report.build(listing, 2026, 11, month, "shop").to_json()
    done = asyncio.run(retention(api, clock).sweep())  # the next pass: upsert by uid, then delete
    assert (done.archived, done.deleted) == (7, 7)
    assert sum(a["spec"]["count"] for a in api.archives.values()) == 7
    after = archive.history(api.list("incidents", "shop"), api.list(archive.PLURAL, "shop"))
    assert report.build(after, 2026, 11, month, "shop").to_json() == report_during
    live = list(populated().incidents.values())  # before any pass
    assert report.build(live, 2026, 11, month, "shop").to_json() == report_during


def test_an_archive_written_meanwhile_is_read_again_and_the_write_retried() -> None:
    api, clock = populated(), Clock()
    api.archives[("shop", "incidents-2026-11")] = archive.Archive(
        "incidents-2026-11", "2026-11", {}, None
    ).body("shop")
    api.archives[("shop", "incidents-2026-11")]["metadata"]["resourceVersion"] = "100"
    api.conflicts = 2  # two writers got there first
    done = asyncio.run(retention(api, clock).sweep())
    assert done.deleted == 7
    assert api.archives[("shop", "incidents-2026-11")]["spec"]["count"] == 6


def test_an_incident_replaced_under_the_same_name_is_not_deleted() -> None:
    api, clock = populated(), Clock()

    original = api.delete

    def swap_then_delete(plural: str, namespace: str, name: str, uid: str | None = None) -> None:
        if name == "a":  # someone deleted a and created a new a meanwhile
            api.incidents[("shop", "a")]["metadata"]["uid"] = "uid-new-a"
        original(plural, namespace, name, uid)

    api.objects.delete = swap_then_delete
    done = asyncio.run(retention(api, clock).sweep())
    assert ("shop", "a") in api.incidents
    assert done.deleted == 6


def test_retention_is_off_unless_configured_and_bad_config_is_refused(tmp_path: Path) -> None:
    api, clock = populated(), Clock()
    off = Retention(api, RetentionConfig(), clock=lambda: NOW, sleep=clock.sleep)
    assert not RetentionConfig().enabled
    assert asyncio.run(off.sweep()).due == 0
    assert len(api.incidents) == 9
    for bad, words in (
        ("retention: {closedForDays: 0}", "closedForDays"),
        ("retention: {closedForDays: ninety}", "closedForDays"),
        ("retention: {closedForDays: 90, deletesPerSecond: 0}", "deletesPerSecond"),
        ("retention: {closedForDay: 90}", "closedForDay"),
    ):
        path = tmp_path / "config.yaml"
        path.write_text(bad)
        with pytest.raises(ConfigError, match=words):
            load_config_file(path)
    path.write_text("retention: {closedForDays: 90}")
    loaded = load_config_file(path).retention
    assert loaded.enabled
    assert (loaded.closedForDays, loaded.deletesPerSecond) == (90, 5.0)


# --------------------------------------------------------------------------- kubectl incident


class PluginApi:
    """The `Api` methods `report` and `history` call: live incidents and archives in memory."""

    namespace = "shop"

    def __init__(self, live: Objects, archives: Objects, refuse: int | None = None) -> None:
        self.live, self.archived, self.refuse = live, archives, refuse
        self.months: Months = []

    def list(self, all_namespaces: bool) -> Objects:
        return self.live

    def archives(self, all_namespaces: bool, month: str | None = None) -> Objects:
        if self.refuse:
            raise PluginApiException(status=self.refuse, reason="Forbidden")
        self.months.append(month)
        return [a for a in self.archived if month in (None, a["spec"]["month"])]


def plugin(fake: PluginApi, *argv: str) -> None:
    parsed = parser().parse_args(list(argv))
    parsed.fn(cast(Api, fake), parsed)


def test_kubectl_incident_report_counts_archived_incidents_and_history_lists_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    objects = history_set()
    plugin(PluginApi(objects, []), "report", "--month", "2026-11", "--format", "json")
    before = json.loads(capsys.readouterr().out)
    fake = PluginApi([], archived(objects))
    plugin(fake, "report", "--month", "2026-11", "--format", "json")
    assert json.loads(capsys.readouterr().out) == before
    assert fake.months == ["2026-11"]  # only the month's archives are read

    plugin(fake, "history", "--month", "2026-10")
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["NAME", "SEVERITY", "CATEGORY", "DETECTED"]
    assert [line.split()[0] for line in out[1:]] == ["oct"]
    plugin(fake, "history", "-o", "json")
    listed = json.loads(capsys.readouterr().out)
    assert sorted(i["metadata"]["name"] for i in listed) == sorted(o["metadata"]["name"] for o in objects)
    with pytest.raises(Failed, match="month must be YYYY-MM"):
        plugin(fake, "history", "--month", "2026-13")


def test_a_report_reader_who_may_not_read_archives_is_told_so(capsys: pytest.CaptureFixture[str]) -> None:
    plugin(PluginApi(history_set(), [], refuse=403), "report", "--month", "2026-11", "--format", "json")
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"] == 5
    assert "note: archived incidents not counted" in captured.err


def test_the_operators_reports_read_only_the_months_archives_and_count_the_same() -> None:
    """`/reports/YYYY-MM` adds to the live incidents the archives of that month of detection only
    (`runner._watched_archives`, by label), of the namespace asked for or of every watched one, and
    gives the numbers it gave when every incident was live."""
    from incident_operator.runtime import httpserver, runner

    live = history_set()[:3]
    archives = archived(history_set()[3:])
    assert {a["metadata"]["labels"][LABEL_ARCHIVE_MONTH] for a in archives} == {"2026-10", "2026-11"}

    class Kube:
        def __init__(self) -> None:
            self.objects = SimpleNamespace(list=self.list)
            self.scopes: list[tuple[str, str | None, str]] = []

        async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        def list(self, plural: str, namespace: str | None, label_selector: str = "") -> Objects:
            self.scopes.append((plural, namespace, label_selector))
            key, value = label_selector.split("=")
            return [
                a for a in archives if a["metadata"]["labels"][key] == value and namespace in (None, "shop")
            ]

    kube = Kube()
    asyncio.run(runner._watched_archives(kube, ("shop", "web"), None, "2026-11"))
    selector = f"{LABEL_ARCHIVE_MONTH}=2026-11"
    assert kube.scopes == [(archive.PLURAL, "shop", selector), (archive.PLURAL, "web", selector)]

    async def reports(lister: Any, archives_of: Any) -> dict[str, Any]:
        async def pages(namespace: str | None) -> AsyncIterator[Objects]:
            found = await lister(namespace)
            for at in range(0, len(found), 2):  # two a page: the month is gathered across pages
                yield found[at : at + 2]

        served = httpserver.Reports(pages, archives=archives_of)
        _, body = await served.render(2026, 11, "shop", "json")
        return cast(dict[str, Any], json.loads(body))

    async def everything_live(namespace: str | None) -> Objects:
        return history_set()

    async def partly_archived(namespace: str | None) -> Objects:
        return live

    before = asyncio.run(reports(everything_live, None))
    kube.scopes.clear()
    after = asyncio.run(reports(partly_archived, functools.partial(runner._watched_archives, kube, ())))
    assert kube.scopes == [(archive.PLURAL, "shop", selector)]  # October's archive is never read
    assert after["total"] == before["total"] > 0
    assert after == before


def test_no_page_of_whole_incidents_is_held_while_a_gathering_is_archived(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page's bodies are let go once its references are taken, even though the paging
    generators are suspended at that page while the gathering is archived (a page of realistic
    incidents is megabytes decoded, held through a whole gathering's writes before)."""
    monkeypatch.setattr("incident_operator.controllers.retention.PAGE", 3)
    monkeypatch.setattr("incident_operator.controllers.retention.GATHER", 3)
    api, clock = populated(), Clock()
    held: list[int] = []
    original = api.create

    def create(plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        held.append(sum(item() is not None for item in api.served))
        return original(plural, namespace, body)

    api.objects.create = create
    done = asyncio.run(retention(api, clock).sweep())
    assert done.archived == 7
    assert len(api.served) == 9  # three pages, the first archive written after the first
    assert held == [0, 0]  # at each archive's write (November's, then October's): no body held


def test_a_pass_reads_pages_and_leaves_an_incident_reopened_since_the_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing keeps references only; each due incident is read again before it is archived,
    and one reopened (or gone) in between is left alone."""
    monkeypatch.setattr("incident_operator.controllers.retention.PAGE", 3)
    api, clock = populated(), Clock()
    original = api.get

    def reopened_b(plural: str, namespace: str, name: str) -> dict[str, Any]:
        found = original(plural, namespace, name)
        if name == "b":
            found["status"] = {**found["status"], "phase": "Investigating"}
            found["status"].pop("closedAt", None)
        return found

    api.objects.get = reopened_b
    done = asyncio.run(retention(api, clock).sweep())
    assert api.page_sizes == [3, 3, 3]  # 9 incidents, 3 per page
    assert (done.due, done.archived, done.deleted) == (7, 6, 6)
    assert ("shop", "b") in api.incidents
    assert "uid-b" not in {uid for a in api.archives.values() for uid in a["spec"]["entries"]}


def test_a_month_s_archives_are_read_once_a_pass_and_a_batch_sends_only_its_new_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of two: October's archives and November's are each listed once this pass (their
    slots kept between batches); each batch into November's archive adds its entries by a merge
    patch, never reading the archive or sending it whole (October's is created); a second pass
    lists afresh."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    api.archives[("shop", "incidents-2026-11")] = archive.Archive(
        "incidents-2026-11", "2026-11", {"uid-older": {"name": "older"}}, "100"
    ).body("shop")
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 7, 0)
    assert api.events.count("archive page") == 2  # October, November: once each
    # four batches (October + November, then November three times): a patch each into the
    # existing archive, which is never read; October's was created
    assert api.events.count("write") == 5
    assert api.events.count("patch") == 4
    assert api.events.count("archive get") == 0
    november = api.archives[("shop", "incidents-2026-11")]["spec"]["entries"]
    assert "uid-older" in november  # what was there stays
    assert len(november) == 7
    api.incidents[("shop", "e")] = closed(incident("e"), "uid-e", NOW - timedelta(days=100))
    api.events.clear()
    assert asyncio.run(retention(api, clock).sweep()).archived == 1
    assert api.events.count("archive page") == 1  # a new pass: read again


def test_an_entry_archived_before_is_replaced_whole_not_merged() -> None:
    """`a` is in November's archive already (archived, then the process died before its delete),
    with a field the entry no longer has (its post-mortem was cut then, not now): its batch reads
    the archive and replaces it at that version (a merge patch would keep the stale field); one
    entry for `a`."""
    api, clock = populated(), Clock()
    api.archives[("shop", "incidents-2026-11")] = archive.Archive(
        "incidents-2026-11", "2026-11", {"uid-a": {"name": "a", "postmortemTruncated": True}}, "100"
    ).body("shop")
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 7, 0)
    assert api.events.count("archive get") == 1
    assert api.events.count("patch") == 0  # the batch holds `a`: the whole archive replaced
    entries = api.archives[("shop", "incidents-2026-11")]["spec"]["entries"]
    assert "postmortemTruncated" not in entries["uid-a"]
    assert entries["uid-a"]["name"] == "a"
    assert api.archives[("shop", "incidents-2026-11")]["spec"]["count"] == len(entries) == 6


def test_an_archive_changed_by_someone_else_between_batches_is_read_again_not_overwritten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of two, in the order [oct, a], [b, c], [d, drill], [items]. After our write of
    [b, c] into November's archive, someone adds an entry: the slots are stale, so [d, drill]'s
    patch is refused (409), it reads the month again and adds its entries to what is there now
    (their entry kept, the count theirs included). Then someone deletes the archive: [items] finds
    it gone (404), reads the month again and creates it anew."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    patch = api.patch
    patched: list[tuple[set[str], set[str], int]] = []

    def meddled(plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        written = patch(plural, namespace, name, body)
        current = api.archives[(namespace, name)]
        patched.append(
            (set(body["spec"]["entries"]), set(current["spec"]["entries"]), current["spec"]["count"])
        )
        if len(patched) == 1:  # another writer adds an entry
            current["spec"]["entries"]["uid-theirs"] = {"name": "theirs"}
            current["spec"]["count"] += 1
            current["metadata"]["resourceVersion"] = api._rv()
        else:  # and then deletes the archive
            del api.archives[(namespace, name)]
        return written

    api.objects.patch = meddled
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 7, 0)
    assert patched == [
        ({"uid-b", "uid-c"}, {"uid-a", "uid-b", "uid-c"}, 3),
        ({"uid-d", "uid-drill"}, {"uid-a", "uid-b", "uid-c", "uid-theirs", "uid-d", "uid-drill"}, 6),
    ]  # theirs kept
    assert api.archives[("shop", "incidents-2026-11")]["spec"]["entries"].keys() == {"uid-items"}
    assert api.events.count("archive page") == 4  # October; November first, after each surprise


def test_archives_split_under_the_bound_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bound that holds two of these entries: November's six, written two at a time, fill
    incidents-2026-11, -2 and -3, none over the bound (each batch places by the sizes its own
    writes left in the slots)."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    entries = [archive.compact(o, "# post-mortem " + "x" * 300) for o in history_set()]
    widest = max(len(json.dumps({"uid-drill": e}, separators=(",", ":"))) for e in entries)
    empty = archive.size_of(archive.Archive("incidents-2026-11-9", "2026-11", {}, "99999").body("shop"))
    bound = empty + 2 * widest + 350  # two of the widest (with their post-mortems) fit, three do not
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", bound)
    for name in ("a", "b", "c", "d", "drill", "items", "oct"):
        api.add_cm("shop", f"{name}-postmortem", name, f"uid-{name}", {"postmortem.md": "# " + "x" * 300})
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.archived, done.deleted) == (7, 7)
    november = sorted(n for (_, n) in api.archives if n.startswith("incidents-2026-11"))
    assert november == ["incidents-2026-11", "incidents-2026-11-2", "incidents-2026-11-3"]
    for body in api.archives.values():
        assert archive.size_of(body) <= bound
    assert sum(len(b["spec"]["entries"]) for b in api.archives.values()) == 7


def interleaved() -> FakeApi:
    """`populated`, and an October incident named between November's (`b2`): in name order the
    gatherings hold November, then October and November, then November, then November and October."""
    api = populated()
    october = copy.deepcopy(api.incidents[("shop", "oct")])
    october["metadata"].update(name="b2", uid="uid-b2")
    api.incidents[("shop", "b2")] = october
    return api


def test_a_month_s_archives_are_read_once_a_pass_however_the_gatherings_mix_months(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gatherings of two whose months alternate: each month's archives listed once this pass, and
    none of their slots kept once the pass is over. With room for one month's slots only, the
    months are read again as they alternate (the bound on what a pass keeps)."""
    monkeypatch.setattr("incident_operator.controllers.retention.PAGE", 2)
    monkeypatch.setattr("incident_operator.controllers.retention.GATHER", 2)
    api, clock = interleaved(), Clock()
    job = retention(api, clock)
    done = asyncio.run(job.sweep())
    assert (done.due, done.archived, done.deleted) == (8, 8, 8)
    assert api.events.count("archive page") == 2
    assert job._months == {}
    monkeypatch.setattr("incident_operator.controllers.retention.MONTHS_KEPT", 1)
    api = interleaved()
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted) == (8, 8, 8)
    # [a, b]: Nov; [b2, c]: Oct, Nov; [d, drill]: (Nov kept); [oct, items]: Oct, Nov
    assert api.events.count("archive page") == 5


def test_an_archive_that_keeps_changing_fails_its_batch_and_deletes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Someone writes November's archive before each of ours (every patch is refused, 409):
    after five tries the batch fails, its incidents kept (none deleted, counted once), and after
    three such batches the namespace waits for the next pass."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    empty_november(api)
    api.conflicts = 100  # another writer got there first, each time
    done = asyncio.run(retention(api, clock).sweep())
    # [oct, a]: October's archive written, `oct` deleted, `a` kept; [b, c], [d, drill]: kept;
    # [items]: not tried (the namespace given up after three failed batches)
    assert sorted(n for (_, n, _) in api.deletes) == ["oct"]
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 1, 1, 6)
    assert api.conflicts == 100 - 3 * 5  # five tries of each of three batches
    assert api.events.count("archive page") == 1 + 3 * 5  # October; November before each try


def test_a_write_whose_answer_was_lost_is_read_again_by_the_next_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API server applies our patch of November's archive but the answer never arrives: that
    batch is kept (not deleted), the month's slots are dropped, so the next batch reads November
    again instead of writing at a version that no longer is; the next pass deletes what was kept
    (already archived: its entries replaced, one each)."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    patch = api.patch
    lost: list[str] = []

    def answer_lost(plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        written = patch(plural, namespace, name, body)
        if not lost:
            lost.append(name)
            raise TransportError("connection reset")
        return written

    api.objects.patch = answer_lost
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 5, 5, 2)  # [b, c] kept
    assert api.events.count("archive page") == 3  # October, November, November again
    assert sorted(n for (_, n) in api.incidents) == ["b", "c", "open", "young"]
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.archived, done.deleted) == (2, 2)
    assert sum(b["spec"]["count"] for b in api.archives.values()) == 7
    assert sum(len(b["spec"]["entries"]) for b in api.archives.values()) == 7


def refused_creates(api: FakeApi, status: int, reason: str) -> list[str]:
    """Every archive create refused with `status`; returns the names tried, as they are tried."""
    tried: list[str] = []

    def refused(plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        tried.append(body["metadata"]["name"])
        raise ApiException(status=status, reason=reason)

    api.objects.create = refused
    return tried


def test_a_name_taken_by_an_archive_of_another_month_is_passed_over() -> None:
    """`incidents-2026-11` exists but is filed (labelled) under October, so November's listing
    does not show it: the create answers 409, the name is remembered as taken for the pass, and
    November's entries go into `incidents-2026-11-2`. (It is October's archive by its label and
    month: October's entry goes there.)"""
    api, clock = populated(), Clock()
    stray = archive.Archive("incidents-2026-11", "2026-10", {"uid-x": {"name": "x"}}, "5").body("shop")
    api.archives[("shop", "incidents-2026-11")] = stray
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 7, 0)
    assert api.archives[("shop", "incidents-2026-11")]["spec"]["entries"].keys() == {"uid-x", "uid-oct"}
    assert len(api.archives[("shop", "incidents-2026-11-2")]["spec"]["entries"]) == 6


@pytest.mark.parametrize("archived_before", [False, True], ids=["patched", "read-and-replaced"])
def test_a_401_writing_an_archive_ends_the_pass_and_deletes_nothing_unwritten(archived_before: bool) -> None:
    """The operator's own credentials refused (401) when it patches November's archive (or reads
    it, to replace an entry archived before): the pass ends there (no further try, no delete of
    what was not archived)."""
    api, clock = populated(), Clock()
    empty_november(api)
    if archived_before:
        november = api.archives[("shop", "incidents-2026-11")]["spec"]
        november["entries"]["uid-a"] = {"name": "a"}

    def unauthorized(*_: Any) -> dict[str, Any]:
        raise ApiException(status=401, reason="Unauthorized")

    api.objects.patch = unauthorized
    before_archive_reads(api, unauthorized)
    with pytest.raises(ApiException) as raised:
        asyncio.run(retention(api, clock).sweep())
    assert raised.value.status == 401
    assert api.deletes == []
    assert set(api.archives[("shop", "incidents-2026-11")]["spec"]["entries"]) <= {"uid-a"}


def test_a_create_refused_with_not_found_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 404 to an archive's create (the kind not installed, the namespace going): that batch is
    kept, with one try, not five."""
    api, clock = populated(), Clock()
    tried = refused_creates(api, 404, "NotFound")
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 0, 0, 7)
    assert tried == ["incidents-2026-10", "incidents-2026-11"]


def test_a_pass_archives_each_page_before_it_reads_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first archive is written once GATHER are due, not after listing every incident (a year
    of history takes minutes to list); the pages go on past what was deleted, every due incident
    once."""
    monkeypatch.setattr("incident_operator.controllers.retention.PAGE", 3)
    monkeypatch.setattr("incident_operator.controllers.retention.GATHER", 2)
    api, clock = populated(), Clock()
    done = asyncio.run(retention(api, clock).sweep())
    assert [e for e in api.events if e in ("page", "write")][:2] == ["page", "write"]
    assert api.events.count("page") == 3
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 7, 0)
    assert sorted(n for _, n in api.incidents) == ["open", "young"]


def test_a_pass_whose_continue_token_expires_goes_on_from_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Archiving between pages takes minutes over a year of history, longer than etcd keeps the
    listing's revision: the expired token's successor goes on from the same key (the deleted
    incidents behind it), nothing listed twice, nothing left."""
    monkeypatch.setattr("incident_operator.controllers.retention.PAGE", 3)
    monkeypatch.setattr("incident_operator.controllers.retention.GATHER", 2)
    api, clock = populated(), Clock()
    api.expire = {"shop/c"}  # the token after the first page (a, b, c)
    done = asyncio.run(retention(api, clock).sweep())
    assert api.events.count("expired") == 1
    assert api.page_sizes == [3, 3, 3]  # not started over
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 7, 0)
    assert sorted(n for _, n in api.incidents) == ["open", "young"]


def test_a_gathering_is_archived_by_month_of_detection_not_by_name() -> None:
    """Names come in the listing's order (a slug and a random suffix): the references gathered
    are ordered by namespace, month of detection, then closing, so a batch touches one month's
    archive or two, not every month of the year."""
    refs = [
        Ref("shop", f"web-{suffix}", f"uid-{suffix}", closed, month)
        for suffix, closed, month in [
            ("a1", "2026-03-02T00:00:00Z", "2026-03"),
            ("b2", "2026-01-05T00:00:00Z", "2026-01"),
            ("c3", "2026-03-01T00:00:00Z", "2026-03"),
            ("d4", "2026-02-07T00:00:00Z", "2026-01"),
        ]
    ]
    assert [r.name for r in sorted(refs, key=Ref.order)] == ["web-b2", "web-d4", "web-c3", "web-a1"]


def failing_reads(api: FakeApi, names: set[str], status: int = 500) -> list[str]:
    """Reads of the incidents `names` (of any namespace; "*": all) fail with `status`; returns
    the names read, in order."""
    original, asked = api.get, []

    def get(plural: str, namespace: str, name: str) -> dict[str, Any]:
        asked.append(name)
        if name in names or "*" in names:
            raise ApiException(status=status, reason="refused")
        return original(plural, namespace, name)

    api.objects.get = get
    return asked


def test_a_batch_the_api_refuses_is_kept_and_the_pass_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """One incident whose read keeps failing (500) costs its batch, not the pass: the others are
    archived and deleted, each incident counted once."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    failing_reads(api, {"b"})
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 5, 5, 2)  # b and its batch's other
    assert ("shop", "b") in api.incidents


def test_a_delete_refused_after_the_archive_counts_each_incident_once() -> None:
    """A delete refused (403) after the batch was archived: all 7 archived, 6 deleted, none
    counted twice (kept + archived never exceed the due)."""
    api, clock = populated(), Clock()
    delete = api.delete

    def refused_for_c(plural: str, namespace: str, name: str, uid: str | None = None) -> None:
        if name == "c":
            raise ApiException(status=403, reason="Forbidden")
        delete(plural, namespace, name, uid)

    api.objects.delete = refused_for_c
    done = asyncio.run(retention(api, clock).sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 7, 6, 0)
    assert ("shop", "c") in api.incidents  # live and archived: the next pass deletes it


def test_archive_writes_the_api_refuses_count_as_failed_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """An admission policy that refuses the operator's archive writes (403): nothing is deleted,
    every incident counted once as kept, and after three such batches the namespace waits for
    the next pass (no write tried for the fourth)."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    tried = refused_creates(api, 403, "Forbidden")
    done = asyncio.run(retention(api, clock).sweep())
    assert api.deletes == []
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 0, 0, 7)
    # the first three batches of two tried their months' archives (October and November, then
    # November twice); the fourth batch, none
    assert tried == ["incidents-2026-10", "incidents-2026-11", "incidents-2026-11", "incidents-2026-11"]


def test_a_namespace_that_keeps_failing_is_left_for_the_next_pass_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every read in `shop` refused (say, RBAC changed): after three failed batches in a row the
    pass leaves the rest of `shop` (no more reads there) and archives `shop2` as usual; a 401
    (the operator's own credentials) ends the pass at once."""
    monkeypatch.setattr("incident_operator.controllers.retention.BATCH", 2)
    api, clock = populated(), Clock()
    for (_, name), obj in list(api.incidents.items()):
        api.incidents[("shop2", name)] = {
            **copy.deepcopy(obj),
            "metadata": {**obj["metadata"], "namespace": "shop2", "uid": f"{obj['metadata'].get('uid')}-2"},
        }
    original = api.get

    def shop_refused(plural: str, namespace: str, name: str) -> dict[str, Any]:
        asked.append(namespace)
        if namespace == "shop":
            raise ApiException(status=403, reason="Forbidden")
        return original(plural, namespace, name)

    asked: list[str] = []
    api.objects.get = shop_refused
    done = asyncio.run(retention(api, clock).sweep())
    assert asked.count("shop") == 3 * 2  # three batches of two, no fourth
    assert (done.due, done.archived, done.deleted, done.skipped) == (14, 7, 7, 7)
    assert {name for ns, name in api.incidents if ns == "shop2"} == {"open", "young"}
    api, clock = populated(), Clock()
    failing_reads(api, {"*"}, status=401)
    with pytest.raises(ApiException):
        asyncio.run(retention(api, clock).sweep())
    assert api.deletes == []


def test_an_entry_the_api_would_refuse_is_kept_live_and_blocks_nothing() -> None:
    """An old incident whose facts no longer fit the archive's schema stays live (logged); the rest
    of its batch is archived and deleted, and every archive written is told to the repeat index."""
    api, clock = populated(), Clock()
    api.incidents[("shop", "b")]["spec"]["severity"] = "P9"  # stored under a looser schema once
    written: list[tuple[str, str]] = []
    sweeper = retention(api, clock)
    sweeper.on_written = lambda namespace, body: written.append((namespace, body["metadata"]["name"]))
    done = asyncio.run(sweeper.sweep())
    assert (done.due, done.archived, done.deleted, done.skipped) == (7, 6, 6, 1)
    assert ("shop", "b") in api.incidents
    assert sorted(written) == sorted(("shop", n) for _, n in api.archives)


def test_a_report_keeps_only_its_month_of_the_live_incidents() -> None:
    """`/reports` reads the live incidents a page at a time and keeps only the month's (a year of
    history is never held at once): the figures are those of the whole listing, and an object
    whose detection time cannot be read is still counted as unreadable."""
    objects: list[dict[str, Any]] = [*history_set(), {"metadata": {"name": "x"}, "status": "garbage"}]
    november = report.month_bounds(2026, 11)
    kept = report.detected_within(objects, *november)
    names = {o["metadata"]["name"] for o in kept}
    assert "oct" not in names
    assert {"a", "b", "c", "d", "drill", "x"} <= names
    assert not report.detected_within(objects[:-1], *report.month_bounds(2026, 9))
    now = datetime(2026, 12, 2, tzinfo=UTC)
    whole = report.build(objects, 2026, 11, now, "shop").figures
    assert report.build(kept, 2026, 11, now, "shop").figures == whole
    assert whole["unreadable"] == 1
    assert whole["total"] > 0
