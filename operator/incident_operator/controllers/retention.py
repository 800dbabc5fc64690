"""Retention: Closed incidents older than `retention.closedForDays` archived, then deleted.

Runs on the leader only (started with kopf, which runs on the leader alone), every
`retention.intervalSeconds`. Each pass lists the incidents one page at a time and keeps a
reference to each one `core.archive` finds due; once GATHER are (or the listing ended), before it
reads the next page, a batch at a time (by namespace and month), it reads them again (one gone,
replaced or reopened meanwhile is left alone) and:

1. compacts them (the post-mortem text read from its ConfigMap, else rendered from the incident),
2. writes them into the month's `IncidentArchive` objects: placed by the month's slots (each
   archive's name, size and uids, read once a pass, not its entries: a month of a busy namespace
   is tens of MB); new entries go in by a JSON merge patch at the slot's resourceVersion, so the
   archive is not read first nor sent whole (the answer is still the archive as written; an entry
   archived before is replaced whole: that archive is read and replaced at the resourceVersion
   read); optimistic concurrency: a 409, or an archive not as its slot said, reads the month again
   and places again; entries are keyed by uid, so an incident archived twice is still one entry,
3. deletes each incident with a precondition on its uid (a new incident of the same name is never
   deleted), every delete paced at `retention.deletesPerSecond`. The ConfigMaps it owns (evidence,
   post-mortem: each carries its ownerReference) go with it: the garbage collector deletes them, so
   the operator needs no right to list or delete ConfigMaps.

An incident is deleted only after its archive write succeeded; a crash in between leaves it live
and archived, and the next pass replaces its entry (same uid) and deletes it. A batch the API
refuses or cannot answer (a read, an archive write or a delete) is kept for the next pass and the
pass goes on;
after FAILED_BATCHES in a row in one namespace the pass leaves that namespace's rest alone (a
namespace whose incidents the operator may no longer delete does not keep the others waiting); a
401 ends the pass. Reports and repeat
detection count an incident both live and archived once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from incident_operator.adapters.kube import (
    ApiException,
    Kube,
    TransportError,
    api_reason,
    conflict,
    not_found,
)
from incident_operator.api.keys import LABEL_ARCHIVE_MONTH
from incident_operator.api.models import ArchivedIncident, IncidentSpec, IncidentStatus
from incident_operator.api.timestamps import parse_time, utc_now
from incident_operator.core import archive, postmortem
from incident_operator.settings.config import RetentionConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")

BATCH = 100
"""Incidents archived in one go (one write per month touched), before their deletes."""
PAGE = 100
"""Incidents per page of the pass's listing: whole bodies (a few kB each, several times that
decoded), read while the archives are written; a larger page only lists faster, and the pass is
paced by its deletes."""
GATHER = 2_000
"""Due incidents gathered from the listing's pages before they are archived (references only:
a few hundred kB); the pages go on once they are done."""
FAILED_BATCHES = 3
"""A namespace's batches in a row that fail (the API refused or could not be reached) before the
pass leaves the rest of that namespace for the next pass; a batch that fails alone is kept for the
next pass, and the pass goes on."""
WRITE_ATTEMPTS = 5
"""Tries of one month's archive write when an archive changed since it was read (a 409, gone,
another resourceVersion: `Contended`)."""
ARCHIVE_PAGE = 4
"""IncidentArchives per page when a month's are read (each up to 1 MiB)."""
MONTHS_KEPT = 13
"""Months of one namespace whose archives' slots a pass keeps between batches (about 120 B per
archived incident): each gathering is ordered by month, but in name order every gathering may
hold every month."""


class Contended(Exception):
    """An archive is not as the slots read before said (someone else wrote or deleted it): the
    month is read again; after WRITE_ATTEMPTS such writes, the batch fails (kept for the next pass)."""


@dataclass
class Pass:
    """What one pass did."""

    due: int = 0
    archived: int = 0
    deleted: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Ref:
    """A due incident, by reference: read again just before it is archived."""

    namespace: str
    name: str
    uid: str
    closed_at: str
    month: str
    """The month of detection (the archive it goes to), "" when unreadable (kept, said so later)."""

    @classmethod
    def of(cls, incident: Mapping[str, Any]) -> Ref:
        metadata = incident.get("metadata") or {}
        try:
            month = archive.month_of(archive.detected_stamp(incident))
        except archive.ArchiveError:
            month = ""
        return cls(
            str(metadata.get("namespace") or ""),
            str(metadata.get("name") or ""),
            str(metadata.get("uid") or ""),
            str((incident.get("status") or {}).get("closedAt") or ""),
            month,
        )

    def order(self) -> tuple[str, str, datetime]:
        """Batches touch as few archives as they can: by namespace, month of detection, then
        oldest closed first."""
        return self.namespace, self.month, parse_time(self.closed_at)


READS_AT_ONCE = 8
"""Reads of one batch (the incidents again, their post-mortems) in flight at once."""


async def _bounded(fn: Callable[[Any], Awaitable[T]], items: list[Any]) -> list[T]:
    """`fn` over `items`, at most READS_AT_ONCE at once, the results in the items' order."""
    slots = asyncio.Semaphore(READS_AT_ONCE)

    async def one(item: Any) -> T:
        async with slots:
            return await fn(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


class Retention:
    """The retention pass and its loop (see the module docstring)."""

    def __init__(
        self,
        kube: Kube,
        config: RetentionConfig,
        namespaces: tuple[str, ...] = (),
        *,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        on_written: Callable[[str, Mapping[str, Any]], None] = lambda namespace, written: None,
    ) -> None:
        self.kube, self.config, self.namespaces = kube, config, namespaces
        self.on_written = on_written
        """Told every IncidentArchive as written (the repeat facts of the archived incidents)."""
        self.clock, self.sleep, self.monotonic = clock, sleep, monotonic
        self.next_delete = 0.0
        self._months: dict[tuple[str, str], dict[str, archive.Slot]] = {}
        """(namespace, month) → its archives' slots, read this pass (`_slots`)."""
        self._taken: dict[tuple[str, str], set[str]] = {}
        """(namespace, month) → names a create found taken this pass though the month's listing
        had no such archive (one filed under another month): never chosen again."""

    async def run(self) -> None:
        """A pass now and then every `intervalSeconds`, until cancelled; a failed pass is logged
        and tried again at the next interval."""
        while True:
            try:
                done = await self.sweep()
                if done.due:
                    logger.info(
                        "retention: %d due, %d archived, %d deleted, %d kept",
                        done.due,
                        done.archived,
                        done.deleted,
                        done.skipped,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "retention pass failed (%s): tried again in %ds", exc, self.config.intervalSeconds
                )
            await self.sleep(self.config.intervalSeconds)

    async def sweep(self) -> Pass:
        """One pass over every watched namespace."""
        if self.config.closedForDays is None:
            return Pass()
        closed_for = timedelta(days=self.config.closedForDays)
        logger.info("retention: a pass began (closed for more than %d days)", self.config.closedForDays)
        done = Pass()
        try:
            await self._sweep(closed_for, done)
        finally:
            self._months.clear()  # each pass reads the archives afresh; between passes none kept
            self._taken.clear()
        return done

    async def _sweep(self, closed_for: timedelta, done: Pass) -> None:
        failures: Counter[str] = Counter()  # a namespace's batches that failed in a row
        async with contextlib.aclosing(self._due(closed_for)) as found:
            async for refs in found:
                done.due += len(refs)
                for namespace, grouped in itertools.groupby(refs, key=lambda ref: ref.namespace):
                    due = list(grouped)
                    for start in range(0, len(due), BATCH):
                        batch = due[start : start + BATCH]
                        if failures[namespace] >= FAILED_BATCHES:
                            done.skipped += len(batch)  # given up in this namespace for this pass
                            continue
                        if await self._archive_or_keep(namespace, batch, closed_for, done):
                            failures[namespace] = 0
                        else:
                            failures[namespace] += 1
                            if failures[namespace] == FAILED_BATCHES:
                                logger.warning(
                                    "retention: %s given up for this pass after %d failed batches in a row",
                                    namespace,
                                    FAILED_BATCHES,
                                )

    async def _archive_or_keep(
        self, namespace: str, batch: list[Ref], closed_for: timedelta, done: Pass
    ) -> bool:
        """Archive, then delete, the incidents of `batch` (one namespace's) that are still due.
        False when the API refused or could not be reached: what the batch had not done yet is
        kept (counted once) for the next pass. A 401 (the operator's credentials) ends the pass."""
        before = done.archived + done.skipped
        try:
            incidents = await self._read(batch, closed_for)
            done.skipped += len(batch) - len(incidents)
            if incidents and not await self._batch(namespace, incidents, done):
                return False  # an archive write refused: counted, logged, the rest deleted
        except (ApiException, TransportError, OSError) as exc:
            if isinstance(exc, ApiException) and exc.status == 401:
                raise
            kept = len(batch) - (done.archived + done.skipped - before)
            done.skipped += kept
            why = api_reason(exc) if isinstance(exc, ApiException) else f"{type(exc).__name__}: {exc}"
            logger.warning(
                "retention: a batch of %s failed (%s): %d of its incidents kept for the next pass",
                namespace,
                why,
                kept,
            )
            return False
        return True

    async def _due(self, closed_for: timedelta) -> AsyncGenerator[list[Ref], None]:
        """What is due, as references only, GATHER at a time: pages of the listing are read until
        that many are due (or the listing ends), which are archived before the next page is read,
        so the first archive comes after a few pages, not after listing a year of history, and a
        year's worth of due incidents never sits in memory at once. Each gathering is ordered
        (`Ref.order`) so that a batch touches one month's archive or two. A continue token that
        expires meanwhile goes on from the latest snapshot (`Kube.pages`); what this pass deleted
        is behind it."""
        gathered: list[Ref] = []
        for namespace in self.namespaces or (None,):
            async for page in self.kube.incident_pages(namespace, PAGE):
                gathered += [Ref.of(incident) for incident in archive.due(page, self.clock(), closed_for)]
                page.clear()  # emptied, not just let go: the pages' generators hold it while we work
                if len(gathered) >= GATHER:
                    yield sorted(gathered, key=Ref.order)
                    gathered = []
        if gathered:
            yield sorted(gathered, key=Ref.order)

    async def _read(self, refs: list[Ref], closed_for: timedelta) -> list[Mapping[str, Any]]:
        """The incidents of `refs` as they are now: one gone, replaced under its name or no longer
        due (reopened) is left out."""
        now = self.clock()

        async def read(ref: Ref) -> Mapping[str, Any] | None:
            try:
                incident = await self.kube.call(self.kube.objects.get, "incidents", ref.namespace, ref.name)
            except ApiException as exc:
                if not_found(exc):
                    return None
                raise
            same = (incident.get("metadata") or {}).get("uid") == ref.uid
            return incident if same and archive.due([incident], now, closed_for) else None

        return [incident for incident in await _bounded(read, refs) if incident is not None]

    async def _batch(self, namespace: str, incidents: list[Mapping[str, Any]], done: Pass) -> bool:
        """Archive `incidents` (one write per month), then delete those archived. False when the API
        refused a month's archive write (its incidents kept, counted, logged; a 401 is raised)."""
        entries: dict[str, dict[str, Any]] = {}
        postmortems = await _bounded(lambda incident: self._postmortem(namespace, incident), incidents)
        for incident, text in zip(incidents, postmortems, strict=True):
            uid = str(incident["metadata"].get("uid") or "")
            entry = archive.compact(incident, text)
            try:
                archive.month_of(archive.detected_stamp(incident))
                ArchivedIncident.model_validate(entry)  # one the API would refuse never blocks the rest
            except (archive.ArchiveError, ValidationError) as exc:
                logger.warning("retention: incident %s/%s kept: %s", namespace, entry["name"], exc)
                done.skipped += 1
                continue
            entries[uid] = entry
        archived: set[str] = set()
        written = True
        for month, additions in archive.grouped(entries, namespace).items():
            try:
                await self._write(namespace, month, additions)
            except (ApiException, archive.ArchiveError, Contended) as exc:
                if isinstance(exc, ApiException) and exc.status == 401:
                    raise
                if not isinstance(exc, archive.ArchiveError):  # refused or contended: a failed batch
                    written = False
                logger.warning(
                    "retention: archive %s of %s not written (%s): its %d incidents kept",
                    month,
                    namespace,
                    api_reason(exc) if isinstance(exc, ApiException) else exc,
                    len(additions),
                )
                done.skipped += len(additions)
                continue
            archived.update(additions)
            done.archived += len(additions)
        deletes: list[asyncio.Task[None]] = []
        try:
            for incident in incidents:  # started at the pace; one slow answer does not slow the rest
                metadata = incident["metadata"]
                if metadata.get("uid") in archived:
                    await self._pace()
                    deletes.append(
                        asyncio.create_task(
                            self._delete(namespace, str(metadata["name"]), str(metadata["uid"]), done)
                        )
                    )
        finally:
            failed = [r for r in await asyncio.gather(*deletes, return_exceptions=True) if r is not None]
        if failed:
            raise failed[0]
        return written

    async def _write(self, namespace: str, month: str, additions: dict[str, Any]) -> None:
        """Upsert `additions` into the month's archives: placed by the month's slots (`_slots`),
        each archive that takes some written at the resourceVersion its slot holds (`_write_one`:
        a merge patch of new entries, or read whole and replaced). A 409, or an archive that is
        not as its slot says (written or deleted by someone else), reads the month again and
        places again, at most WRITE_ATTEMPTS times (then `Contended`); any other failure drops the
        month's slots too (a write whose answer was lost may have happened) and is raised."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            slots = await self._slots(namespace, month)
            try:
                taken = self._taken.get((namespace, month), set())
                for name, uids in archive.assign(
                    slots.values(), namespace, month, additions, archive.MAX_ARCHIVE_BYTES, taken=taken
                ).items():
                    mine = {uid: additions[uid] for uid in uids}
                    slots[name] = await self._write_one(namespace, month, name, slots.get(name), mine)
                return
            except BaseException as exc:
                self._months.pop((namespace, month), None)  # a failed write may have happened
                if not (isinstance(exc, Contended) or conflict(exc)):
                    raise
                if attempt == WRITE_ATTEMPTS:
                    raise Contended(
                        f"archive {month} of {namespace} changed under each of {attempt} writes"
                    ) from None
                logger.info("retention: archive %s/%s changed meanwhile: reading it again", namespace, month)

    async def _write_one(
        self,
        namespace: str,
        month: str,
        name: str,
        slot: archive.Slot | None,
        entries: dict[str, Any],
    ) -> archive.Slot:
        """Write `entries` (uid → entry) into archive `name` (None `slot`: a new one); its slot as
        written. Entries all new to the archive go in by a JSON merge patch at the slot's
        resourceVersion (the archive is not read first nor sent whole); an entry archived before
        (a crash between archiving and deleting) replaces its old one whole: the archive is read
        and replaced (a merge patch would keep the old entry's fields the new one lacks).
        Contended when it is gone or not at the slot's resourceVersion (a 409 from the patch); a
        409 to a create marks the name taken for the pass (this month's, listed again, or
        another's: never again)."""
        try:
            if slot is None:
                body = archive.Archive(name, month, dict(entries)).body(namespace)
                written = await self.kube.call(self.kube.objects.create, archive.PLURAL, namespace, body)
            elif slot.resource_version and not slot.uids.intersection(entries):
                body = {
                    "metadata": {"resourceVersion": slot.resource_version},
                    "spec": {"count": len(slot.uids) + len(entries), "entries": entries},
                }
                written = await self.kube.call(self.kube.objects.patch, archive.PLURAL, namespace, name, body)
            else:
                found = await self.kube.call(self.kube.objects.get, archive.PLURAL, namespace, name)
                target = archive.Archive.of(found)
                del found
                if target.resource_version != slot.resource_version:
                    raise Contended(f"archive {name} of {namespace} changed")
                target.entries.update((uid, dict(entry)) for uid, entry in entries.items())
                body = target.body(namespace)
                del target
                written = await self.kube.call(
                    self.kube.objects.replace, archive.PLURAL, namespace, name, body
                )
            del body
        except ApiException as exc:
            if slot is not None and not_found(exc):
                raise Contended(f"archive {name} of {namespace} is gone") from None
            if slot is None and conflict(exc):
                self._taken.setdefault((namespace, month), set()).add(name)
            raise
        self.on_written(namespace, written)
        return archive.Slot.of(archive.Archive.of(written), namespace)

    async def _slots(self, namespace: str, month: str) -> dict[str, archive.Slot]:
        """The month's archives of `namespace` as slots (name, size, uids), read a few archives a
        page the first time the pass needs them and kept until the pass moves to another namespace
        (at most MONTHS_KEPT months, the least recently used dropped first), so a batch reads and
        writes only the archive its entries go to."""
        key = (namespace, month)
        if key in self._months:
            self._months[key] = self._months.pop(key)  # the most recently used last
            return self._months[key]
        for other in [k for k in self._months if k[0] != namespace]:
            del self._months[other]  # a pass is done with a namespace before the next
        slots: dict[str, archive.Slot] = {}
        selector = f"{LABEL_ARCHIVE_MONTH}={month}"
        async for page in self.kube.pages(archive.PLURAL, namespace, ARCHIVE_PAGE, label_selector=selector):
            while page:
                slot = archive.Slot.of(archive.Archive.of(page.pop()), namespace)
                slots[slot.name] = slot
            del page
        while len(self._months) >= MONTHS_KEPT:
            del self._months[next(iter(self._months))]
        self._months[key] = slots
        return slots

    async def _postmortem(self, namespace: str, incident: Mapping[str, Any]) -> str | None:
        """The post-mortem as the operator last wrote it (its ConfigMap), else rendered from the
        incident (the ConfigMap unreadable or gone), else None."""
        ref = (incident.get("status") or {}).get("postmortemRef")
        if ref:
            try:
                text = (await self.kube.configmap_data(namespace, str(ref))).get("postmortem.md")
                if text:
                    return str(text)
            except ApiException as exc:
                if exc.status not in (403, 404):
                    raise
        try:
            spec = IncidentSpec.model_validate(incident.get("spec") or {})
            status = IncidentStatus.model_validate(incident.get("status") or {})
        except ValidationError:
            return None
        name = str(incident["metadata"].get("name") or "")
        return postmortem.render(namespace, name, spec, status, self.clock())

    async def _pace(self) -> None:
        now = self.monotonic()
        if self.next_delete > now:
            await self.sleep(self.next_delete - now)
            now = self.next_delete
        self.next_delete = now + 1.0 / self.config.deletesPerSecond

    async def _delete(self, namespace: str, name: str, uid: str, done: Pass) -> None:
        try:
            await self.kube.call(self.kube.objects.delete, "incidents", namespace, name, uid)
        except ApiException as exc:
            if conflict(exc):  # the name now holds another incident: not ours to delete
                return
            if not not_found(exc):
                raise
        else:
            done.deleted += 1  # its ConfigMaps (ownerReference) go with it: the garbage collector's
