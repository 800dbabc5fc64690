"""Kopf handlers: framework settings, Incident events to the loops' supervisor, Playbook validation,
OnCallSchedule events to the keeper of their status.

Handlers are thin: they parse, call the pure core or the engine, and write status. Everything
kopf-specific is set in `configure` and nowhere else: watch and request timeouts, the finalizer
name and progress-storage prefix (our own, so they never collide with another Kopf operator),
and the level of Events kopf posts. Nothing here connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from incident_operator.api.keys import API_GROUP, API_VERSION, FINALIZER, KOPF_ANNOTATION_PREFIX
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import utc_now
from incident_operator.controllers.drills import DrillLoop
from incident_operator.controllers.incident import (
    IncidentLoop,
    PlaybookEntry,
    PlaybookListings,
    Playbooks,
    parse_playbook,
)
from incident_operator.controllers.incident.slots import StartedRuns
from incident_operator.controllers.oncall import OnCallKeeper
from incident_operator.controllers.reports import ReportDeliveries
from incident_operator.controllers.retention import Retention
from incident_operator.controllers.supervisor import LiveBody, Supervisor
from incident_operator.core import archive, conditions, openlimit, validation
from incident_operator.core.planner import Record
from incident_operator.runtime.context import RuntimeContext, context

# Watches are re-established at least this often, so a silently broken connection heals.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 30
# The initial listing (at start, and after a watch restart that needs one) in pages of this many
# objects: kopf asks for the whole list in one response otherwise, and 10,000 incidents with a
# realistic history are ~90 MB of JSON read, decoded and held at once (a peak the allocator keeps).
WATCH_LIST_CHUNK = 500
LOOPS_STOP_TIMEOUT_S = 5  # loops finishing a step on shutdown; cancelled after (they resume)

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "incident-operator"
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    settings.watching.chunk_size = WATCH_LIST_CHUNK
    ctx = context(memo)
    ctx.intake.on_created = lambda body: created_by_intake(ctx, body)
    logger.info("indexed %d incidents and %d incident archives", *await index_existing(ctx))
    ctx.unconfirmed_task = asyncio.create_task(drop_unconfirmed(ctx))
    ctx.run_records_task = asyncio.create_task(ctx.run_records.run())
    retention = ctx.config.file.retention
    if retention.enabled:  # kopf runs on the leader alone: so does retention
        ctx.retention_task = asyncio.create_task(
            Retention(ctx.kube, retention, ctx.config.namespaces, on_written=ctx.archived.put).run()
        )
    reports = ctx.config.file.reports
    if reports.deliver:  # the leader's too: one delivery per month, whoever leads on the day
        ctx.reports_task = asyncio.create_task(
            ReportDeliveries(
                ctx.kube,
                ctx.notifier,
                reports,
                notifications=ctx.config.file.notifications,
                namespace=ctx.config.own_namespace,
                watched=ctx.config.namespaces,
            ).run()
        )


@kopf.on.cleanup()
async def flush_run_records(memo: kopf.Memo, **_: Any) -> None:
    """On the way out: stop the incident loops (each writes what it holds), then write what the
    run recorder still holds. Bounded, so that SIGTERM ends the process within the grace period."""
    ctx = context(memo)
    for task in (ctx.retention_task, ctx.reports_task):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if ctx.supervisor is not None:
        await ctx.supervisor.stop(timeout=LOOPS_STOP_TIMEOUT_S)
    if ctx.oncall is not None:
        await ctx.oncall.stop()
    if ctx.handoffs is not None:
        await ctx.handoffs.stop()
    if ctx.unconfirmed_task is not None:
        ctx.unconfirmed_task.cancel()
    if ctx.run_records_task is not None:
        ctx.run_records_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ctx.run_records_task


@kopf.index(API_GROUP, API_VERSION, "playbooks")
def playbooks_by_namespace(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> dict[str, tuple[str, PlaybookEntry | str]]:
    """Parsed once per Playbook change; an invalid one is kept as the reason, so it replaces a
    valid past and never runs."""
    jobs = context(memo).config.file.jobs
    return {namespace or "": (name, parse_playbook(name, spec, status, meta.get("generation"), jobs))}


# No kopf index over Incidents: before any handler runs, kopf holds every listed object's whole
# body until all of them are indexed (at 10,000 incidents with a realistic history, half a GB,
# and a wait that grows with the square of their number). The two things kept of every incident
# are compact facts in the context instead (`index_incident`): its repeat key and detection
# time (`repeats.History`), and its place under the cap on open incidents (`openlimit.Rankings`,
# open ones only). `index_existing` fills them from a paged listing at start, so the first
# incident judged still sees every earlier one, as kopf's pre-indexing guaranteed. An incident
# deleted between that listing and kopf's gets no watch event: what the listing indexed, no
# watch event confirmed and a second listing no longer finds is dropped after UNCONFIRMED_AFTER_S.
# Archived incidents' repeat facts are compact too (`archive.ArchivedRepeats`, no kopf index: an
# archive is up to 1 MiB), filled by the same start listing and by retention's own writes.
INDEX_PAGE = 500
ARCHIVE_PAGE = 10  # IncidentArchives are up to 1 MiB each
INDEX_ATTEMPTS = (1.0, 2.0, 5.0, 10.0)  # delays between tries of the start listing
UNCONFIRMED_AFTER_S = 60.0


def index_incident(
    ctx: RuntimeContext, event_type: str | None, body: Mapping[str, Any], *, listed: bool = False
) -> None:
    """Keep the compact facts of one Incident: from its watch event, or from the start listing
    (`listed`: to be confirmed by a watch event)."""
    metadata = body.get("metadata") or {}
    namespace, uid = str(metadata.get("namespace") or ""), str(metadata.get("uid") or "")
    if listed:
        ctx.unconfirmed[uid] = namespace
    else:
        ctx.unconfirmed.pop(uid, None)
    if event_type == "DELETED":
        ctx.history.remove(uid)
        ctx.open_ranks.put(namespace, uid, None)
        return
    spec, status = body.get("spec") or {}, body.get("status") or {}
    ctx.history.put(namespace, uid, spec, metadata, status)
    ctx.open_ranks.put(
        namespace, uid, openlimit.entry_of(str(metadata.get("name") or ""), uid, spec, metadata, status)
    )


async def index_existing(ctx: RuntimeContext) -> tuple[int, int]:
    """Index every Incident the operator watches, and every IncidentArchive's repeat facts, one
    page at a time, before kopf's watch starts. Returns how many of each. Tried a few times; if the
    API server stays unreachable, the watch events fill the incident indexes as they come (logged;
    repeats across the archive boundary are then found only in archives written since)."""
    namespaces: list[str | None] = list(ctx.config.namespaces) or [None]
    for delay in (*INDEX_ATTEMPTS, None):
        incidents = archives = 0
        try:
            for namespace in namespaces:
                async for page in ctx.kube.incident_pages(namespace, INDEX_PAGE):
                    for item in page:
                        index_incident(ctx, None, item, listed=True)
                    incidents += len(page)
                    del page
                async for page in ctx.kube.pages(archive.PLURAL, namespace, ARCHIVE_PAGE):
                    for item in page:
                        ctx.archived.put(str((item.get("metadata") or {}).get("namespace") or ""), item)
                    archives += len(page)
                    del page
        except Exception as exc:  # the API server may not answer yet
            if delay is None:
                logger.warning("could not list incidents at start, indexing from the watch: %s", exc)
                return incidents, archives
            await asyncio.sleep(delay)
            continue
        return incidents, archives
    return 0, 0


async def drop_unconfirmed(ctx: RuntimeContext, after: float = UNCONFIRMED_AFTER_S) -> int:
    """After `after` seconds, forget what the start listing indexed, no watch event confirmed, and
    a second listing no longer finds (deleted in between). Returns how many. Only what is really
    gone is dropped: an open incident kopf has not got to yet keeps its place under the cap (a
    slot freed by mistake would let a waiting incident act). If the listing fails, nothing is
    dropped (a stale entry only keeps the cap stricter until the next start)."""
    await asyncio.sleep(after)
    if not ctx.unconfirmed:
        return 0
    present: set[str] = set()
    namespaces: list[str | None] = list(ctx.config.namespaces) or [None]
    try:
        for namespace in namespaces:
            async for page in ctx.kube.incident_pages(namespace, INDEX_PAGE):
                present.update(str((item.get("metadata") or {}).get("uid") or "") for item in page)
                del page
    except Exception as exc:
        logger.warning(
            "could not list incidents again: %d listed at start stay indexed (%s)", len(ctx.unconfirmed), exc
        )
        ctx.unconfirmed.clear()
        return 0
    gone = {uid: namespace for uid, namespace in ctx.unconfirmed.items() if uid not in present}
    ctx.unconfirmed.clear()
    for uid, namespace in gone.items():
        ctx.history.remove(uid)
        ctx.open_ranks.put(namespace, uid, None)
    return len(gone)


def _playbooks_of(index: kopf.Index[str, tuple[str, PlaybookEntry | str]], namespace: str) -> Playbooks:
    known = list(index.get(namespace, []))
    valid = sorted((e for _, e in known if isinstance(e, PlaybookEntry)), key=lambda e: e.name)
    return valid, {pb: e for pb, e in known if isinstance(e, str)}


def _supervisor(memo: kopf.Memo, index: kopf.Index[str, tuple[str, PlaybookEntry | str]]) -> Supervisor:
    """The supervisor of the incident loops, built on the first Incident or Playbook event (it
    needs kopf's Playbook index, which handlers receive, not startup; and that handler's context,
    kopf's variables, for the loops the intake starts: `created_by_intake`)."""
    ctx = context(memo)
    if ctx.supervisor is not None:
        return ctx.supervisor
    ctx.watch_context = contextvars.copy_context()

    def wake_waiting(namespace: str) -> None:  # a claim went without a run: its slot is free
        if ctx.supervisor is not None:
            limit = ctx.config.file.limits.maxOpenIncidentsPerNamespace
            for waking in ctx.open_ranks.of(namespace).to_wake(limit):
                ctx.supervisor.wake(waking)

    started_runs = StartedRuns(on_release=wake_waiting)

    async def list_objects(plural: str, namespace: str) -> list[dict[str, Any]]:
        return await ctx.kube.list_objects(plural, namespace)  # the client of the moment

    list_playbooks = PlaybookListings(list_objects)

    def factory(uid: str, body: LiveBody) -> IncidentLoop:
        metadata = body.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")

        def post_event(record: Record) -> None:
            kopf.event(
                body.current,  # type: ignore[arg-type]  # a Mapping is what kopf reads
                type="Warning" if record.warning else "Normal",
                reason=record.reason,
                message=record.message,
            )

        return IncidentLoop(
            kube=ctx.kube,
            outbound=ctx.outbound,
            config=ctx.config,
            namespace=namespace,
            name=name,
            uid=uid,
            body=body,
            playbooks=lambda: _playbooks_of(index, namespace),
            post_event=post_event,
            open_incidents=ctx.open_incidents,
            notifier=ctx.notifier,
            access_reviews=ctx.access_reviews,
            run_records=ctx.run_records,
            history=lambda key: [*ctx.history.of(namespace, key), *ctx.archived.of(namespace, key)],
            open_in_namespace=lambda: ctx.open_ranks.of(namespace),
            started_runs=started_runs,
            breaker=ctx.breaker,
            schedules=ctx.schedules,
            list_playbooks=list_playbooks,
        )

    def unreadable(body: Any, problem: str) -> None:
        # A status the models refuse cannot be repaired by retrying; resetting it could run
        # completed steps again. Not reconciled until the object changes; said once.
        message = f"status unreadable, not reconciled until it changes: {problem}"
        metadata = body.get("metadata") or {}
        logger.warning("incident %s/%s: %s", metadata.get("namespace"), metadata.get("name"), message)
        kopf.event(body, type="Warning", reason=Reason.UNREADABLE, message=message[:1024])

    ctx.supervisor = Supervisor(factory, unreadable)
    return ctx.supervisor


# No kopf daemon (it would put a finalizer on every Incident: two writes each, and a round trip
# before a new incident's loop can start): the supervisor starts, wakes and stops the loops of
# the incidents that have something to do (see `attention`) from their watch events.
@kopf.on.event(API_GROUP, API_VERSION, "incidents")
async def incident_changed(*, type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    ctx = context(memo)
    observe_incident(ctx, _supervisor(memo, kwargs["playbooks_by_namespace"]), type, body)


def created_by_intake(ctx: RuntimeContext, body: Mapping[str, Any]) -> None:
    """An Incident the alert intake just created, as the API returned it: indexed and its loop
    started now, as its watch event would (which comes later with the same body and finds it
    done: nothing happens twice). Only where the watch runs: on the leader once its supervisor
    is up (a standby's intake leaves it to the leader's watch), in a namespace it watches (by
    name: a `--namespace` glob leaves it to the watch), and not when the watch showed it first
    (its body is as new or newer, the incident may be settled or deleted since). Run in a copy
    of the watch handler's context: the HTTP request has none of kopf's variables, which the
    loop's Events need."""
    metadata = body.get("metadata") or {}
    namespace, uid = str(metadata.get("namespace") or ""), str(metadata.get("uid") or "")
    watched = ctx.config.namespaces
    supervisor = ctx.supervisor
    if (
        supervisor is None
        or ctx.watch_context is None
        or supervisor.closing
        or supervisor.seen(uid)
        or (watched and namespace not in watched)
    ):
        return
    ctx.watch_context.copy().run(observe_incident, ctx, supervisor, "ADDED", body)


def observe_incident(
    ctx: RuntimeContext, supervisor: Supervisor, type: str | None, body: Mapping[str, Any]
) -> None:
    """One Incident seen (a watch event, or the intake's creation): index it, start, wake or
    stop its loop, and keep the gauges."""
    namespace = body.get("metadata", {}).get("namespace") or ""
    uid = body.get("metadata", {}).get("uid", "")
    ranking = ctx.open_ranks.of(namespace)
    index_incident(ctx, type, body)
    supervisor.observe(type, body)
    # A slot under the cap on open incidents freed, or one more incident came: wake the incidents
    # of the namespace whose place now differs from what their status says (usually none).
    for waking in ranking.to_wake(ctx.config.file.limits.maxOpenIncidentsPerNamespace, also=uid):
        supervisor.wake(waking)
    spec = body.get("spec") or {}
    if type == "DELETED":
        ctx.open_incidents.update(uid, None, None)
        ctx.action_items.update(uid, 0)
    elif not spec.get("drill"):
        ctx.action_items.update(uid, sum(1 for item in spec.get("actionItems") or [] if not item.get("done")))


@kopf.on.event(API_GROUP, API_VERSION, "playbooks")
async def playbook_changed(
    *, type: str, body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Validate what the schema cannot, write Ready/Invalid, and wake the incidents it concerns
    (only when its spec changed, it came or went: our own status writes wake nobody). Builds the
    incident loops' supervisor if no Incident event has yet, so that the intake can start the
    loop of the first incident an alert opens (`created_by_intake`)."""
    ctx = context(memo)
    index = kwargs.get("playbooks_by_namespace")
    if ctx.supervisor is None and index is not None:
        _supervisor(memo, index)
    generation = body.get("metadata", {}).get("generation")
    key = (namespace or "", name)
    changed = type in ("ADDED", "DELETED", None) or ctx.playbook_generations.get(key) != generation
    if changed and ctx.supervisor is not None:
        ctx.supervisor.wake_concerned(namespace, name)
    if type == "DELETED":
        ctx.playbook_generations.pop(key, None)
    else:
        ctx.playbook_generations[key] = generation
    if type == "DELETED" or namespace is None:
        return
    status = dict(body.get("status") or {})
    spec, found = validation.problems(dict(body.get("spec") or {}), ctx.config.file.jobs)
    now = utc_now()
    current = list(status.get("conditions") or [])
    if found:
        message = "; ".join(found)
        updated = conditions.set_condition(
            current,
            ConditionType.INVALID,
            "True",
            Reason.INVALID_SPEC,
            message,
            generation=generation,
            now=now,
        )
        updated = conditions.set_condition(
            updated,
            ConditionType.READY,
            "False",
            Reason.INVALID_SPEC,
            message,
            generation=generation,
            now=now,
        )
    else:
        notes = validation.advice(spec) if spec else []
        message = "; ".join(notes) or "valid"
        updated = conditions.set_condition(
            current, ConditionType.INVALID, "False", Reason.VALID, "valid", generation=generation, now=now
        )
        updated = conditions.set_condition(
            updated, ConditionType.READY, "True", Reason.VALID, message, generation=generation, now=now
        )
    steps = len(spec.steps) if spec else len((body.get("spec") or {}).get("steps") or [])
    if status.get("observedGeneration") == generation and updated == current and status.get("steps") == steps:
        return
    try:
        await ctx.kube.patch_playbook_status(
            namespace, name, {"observedGeneration": generation, "steps": steps, "conditions": updated}
        )
    except Exception as exc:  # a transient failure is retried on the next event
        logger.warning("playbook %s/%s: could not write status: %s", namespace, name, exc)
        return
    if found and not conditions.is_true(current, ConditionType.INVALID):
        kopf.event(body, type="Warning", reason=Reason.INVALID, message=message)


@kopf.on.event(API_GROUP, API_VERSION, "oncallschedules")
async def oncall_schedule_changed(*, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Who is on call now and next, kept true at every boundary (no finalizer, no kopf state)."""
    ctx = context(memo)
    if ctx.oncall is None:
        ctx.oncall = OnCallKeeper(ctx.kube)
    ctx.oncall.observe(type, body)
    if ctx.handoffs is not None:  # the incoming person is told, once (`controllers.people`)
        ctx.handoffs.observe(type, body)


# One loop per Drill (few objects: a kopf daemon, and its finalizer, are fine here).
@kopf.daemon(API_GROUP, API_VERSION, "drills", cancellation_timeout=5)
async def drill_daemon(
    *,
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    ctx = context(memo)
    assert namespace is not None  # noqa: S101 - Drills are namespaced
    loop = DrillLoop(
        kube=ctx.kube,
        intake=ctx.intake,
        access=ctx.access_reviews,
        namespace=namespace,
        name=name,
        body=body,
    )
    await loop.run(lambda: bool(stopped))
