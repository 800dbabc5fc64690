"""Kopf handlers: framework settings, the start and stop of what runs beside kopf (the operator's own
Incident watch, `runtime.incidents`; the Event poster; retention; reports), Playbook validation,
OnCallSchedule events to the keeper of their status. kopf watches the few Playbooks, schedules and
Drills; Incidents, which grow with the years, are the operator's own watch.

Handlers are thin: they parse, call the pure core or the engine, and write status. Everything
kopf-specific is set in `configure` and nowhere else: watch and request timeouts, the finalizer
name and progress-storage prefix (our own, so they never collide with another Kopf operator),
and the level of Events kopf posts. Nothing here connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
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
from incident_operator.core import archive, conditions, validation
from incident_operator.core.planner import Record
from incident_operator.runtime import incidents
from incident_operator.runtime.context import RuntimeContext, context

# Watches are re-established at least this often, so a silently broken connection heals.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 30
# kopf's initial listings (Playbooks, schedules, Drills: at start, and after a watch restart that
# needs one) in pages of this many objects, not the whole list in one response (Incidents are the
# operator's own watch, paged the same way: `adapters.watch`).
WATCH_LIST_CHUNK = 500
LOOPS_STOP_TIMEOUT_S = 5  # loops finishing a step on shutdown; cancelled after (they resume)
EVENTS_FLUSH_S = 1  # the Events still queued on shutdown are tried this long, then dropped
LOOKUP_CONNECTIONS = 2
"""Connections of the loops' short checks (`RuntimeContext.lookups`): a burst's Playbook listings
went through the pool of 16 behind hundreds of writes and gave up after 2 s, thousands of times."""

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
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
    queueing = settings.queueing if hasattr(settings, "queueing") else settings.batching  # older kopf
    queueing.error_delays = [1, 2, 5, 10, 30, 60]
    settings.watching.chunk_size = WATCH_LIST_CHUNK
    ctx = context(memo)
    ctx.intake.on_created = lambda body: created_by_intake(ctx, body)
    logger.info("indexed %d incident archives", await index_archives(ctx))

    # Each task runs until cancelled (any other end fails /healthz). Started once: kopf runs a
    # startup handler that raised again, and what the first try started must not run twice.
    def started(
        task: asyncio.Task[None] | None, run: Callable[[], Coroutine[Any, Any, None]], what: str
    ) -> asyncio.Task[None]:
        return task if task is not None else ctx.liveness.guard(asyncio.create_task(run()), what)

    if ctx.lookups is None:
        ctx.lookups = ctx.kube.separate(LOOKUP_CONNECTIONS)
    ctx.run_records_task = started(ctx.run_records_task, ctx.run_records.run, "the run recorder")
    ctx.events_task = started(ctx.events_task, ctx.events.run, "the Event posters")
    index: kopf.Index[str, tuple[str, PlaybookEntry | str]] = kwargs["playbooks_by_namespace"]
    supervisor = _supervisor(memo, index)
    ctx.incidents_task = started(
        ctx.incidents_task,
        lambda: incidents.watch_incidents(ctx, supervisor, lambda namespace: _playbooks_of(index, namespace)),
        "the watch of incidents",
    )
    retention = ctx.config.file.retention
    if retention.enabled:  # kopf runs on the leader alone: so does retention
        pruning = Retention(ctx.kube, retention, ctx.config.namespaces, on_written=ctx.archived.put)
        ctx.retention_task = started(ctx.retention_task, pruning.run, "retention")
    reports = ctx.config.file.reports
    if reports.deliver:  # the leader's too: one delivery per month, whoever leads on the day
        deliveries = ReportDeliveries(
            ctx.kube,
            ctx.notifier,
            reports,
            notifications=ctx.config.file.notifications,
            namespace=ctx.config.own_namespace,
            watched=ctx.config.namespaces,
        )
        ctx.reports_task = started(ctx.reports_task, deliveries.run, "the report deliveries")


@kopf.on.cleanup()
async def flush_run_records(memo: kopf.Memo, **_: Any) -> None:
    """On the way out: stop the incident loops (each writes what it holds), then write what the
    run recorder still holds. Bounded, so that SIGTERM ends the process within the grace period."""
    ctx = context(memo)
    try:
        await _stop_all(ctx)
    finally:  # whatever happened on the way: the lookups' connections go
        lookups, ctx.lookups = ctx.lookups, None  # a straggler falls back to the main client
        if lookups is not None:
            await lookups.close()


async def _stop_all(ctx: RuntimeContext) -> None:
    for task in (ctx.incidents_task, ctx.retention_task, ctx.reports_task):
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # said; the rest of the way out still runs
                logger.exception("a task ended with an error on the way out")
    if ctx.supervisor is not None:
        await ctx.supervisor.stop(timeout=LOOPS_STOP_TIMEOUT_S)
    if ctx.oncall is not None:
        await ctx.oncall.stop()
    if ctx.handoffs is not None:
        await ctx.handoffs.stop()
    if ctx.events_task is not None:
        unposted = await ctx.events.close(EVENTS_FLUSH_S)
        if unposted:
            logger.warning("%d Events not posted on the way out (the timeline keeps them)", unposted)
        ctx.events_task.cancel()
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


# No kopf index and no kopf watch over Incidents (`runtime.incidents`: the operator's own watch
# keeps compact facts of each). Archived incidents' repeat facts are compact too
# (`archive.ArchivedRepeats`, no kopf index: an archive is up to 1 MiB), filled by a listing at
# start and by retention's own writes.
ARCHIVE_PAGE = 10  # IncidentArchives are up to 1 MiB each
INDEX_ATTEMPTS = (1.0, 2.0, 5.0, 10.0)  # delays between tries of the start listing


async def index_archives(ctx: RuntimeContext) -> int:
    """Index every IncidentArchive's repeat facts, one page at a time; returns how many. Tried a
    few times; if the API server stays unreachable, repeats across the archive boundary are found
    only in archives written since (logged)."""
    namespaces: list[str | None] = list(ctx.config.namespaces) or [None]
    for delay in (*INDEX_ATTEMPTS, None):
        archives = 0
        try:
            for namespace in namespaces:
                async for page in ctx.kube.pages(archive.PLURAL, namespace, ARCHIVE_PAGE):
                    for item in page:
                        ctx.archived.put(str((item.get("metadata") or {}).get("namespace") or ""), item)
                    archives += len(page)
                    del page
        except Exception as exc:  # the API server may not answer yet
            if delay is None:
                logger.warning("could not list incident archives at start: %s", exc)
                return archives
            await asyncio.sleep(delay)
            continue
        return archives
    return 0


def _playbooks_of(index: kopf.Index[str, tuple[str, PlaybookEntry | str]], namespace: str) -> Playbooks:
    known = list(index.get(namespace, []))
    valid = sorted((e for _, e in known if isinstance(e, PlaybookEntry)), key=lambda e: e.name)
    return valid, {pb: e for pb, e in known if isinstance(e, str)}


def _supervisor(memo: kopf.Memo, index: kopf.Index[str, tuple[str, PlaybookEntry | str]]) -> Supervisor:
    """The supervisor of the incident loops, built at kopf's start (it needs kopf's Playbook
    index, which kopf hands its handlers)."""
    ctx = context(memo)
    if ctx.supervisor is not None:
        return ctx.supervisor

    def wake_waiting(namespace: str) -> None:  # a claim went without a run: its slot is free
        if ctx.supervisor is not None:
            limit = ctx.config.file.limits.maxOpenIncidentsPerNamespace
            for waking in ctx.open_ranks.of(namespace).to_wake(limit):
                ctx.supervisor.wake(waking)

    started_runs = StartedRuns(on_release=wake_waiting)

    async def list_objects(plural: str, namespace: str) -> list[dict[str, Any]]:
        return await (ctx.lookups or ctx.kube).list_objects(plural, namespace)  # the client of the moment

    list_playbooks = PlaybookListings(list_objects)

    def factory(uid: str, body: LiveBody) -> IncidentLoop:
        metadata = body.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")

        def post_event(record: Record) -> None:
            kind = "Warning" if record.warning else "Normal"
            ctx.events.post(body.current, kind, record.reason, record.message)

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
        ctx.events.post(body, "Warning", Reason.UNREADABLE, message)

    ctx.supervisor = Supervisor(factory, unreadable)
    return ctx.supervisor


def created_by_intake(ctx: RuntimeContext, body: Mapping[str, Any]) -> None:
    """An Incident the alert intake just created, as the API returned it: indexed and its loop
    started now, as its watch event would (which comes later with the same body and finds it
    done: nothing happens twice). Only where the watch runs: on the leader once its supervisor
    is up (a standby's intake leaves it to the leader's watch), in a namespace it watches whose
    incidents are all indexed already (`incidents.synced_stream`), and not when the watch showed
    it first (its body is as new or newer, the incident may be settled or deleted since). Its
    watch remembers it, so that a first state taken again after a 410 that lacks it says it is gone."""
    metadata = body.get("metadata") or {}
    namespace, uid = str(metadata.get("namespace") or ""), str(metadata.get("uid") or "")
    watched = ctx.config.namespaces
    supervisor = ctx.supervisor
    if (
        supervisor is None
        or supervisor.closing
        or supervisor.seen(uid)
        or (watched and namespace not in watched)
    ):
        return
    stream = incidents.synced_stream(ctx, namespace)
    if stream is None:
        return
    stream.watch.remember(body)
    incidents.observe_incident(ctx, supervisor, "ADDED", body)


@kopf.on.event(API_GROUP, API_VERSION, "playbooks")
async def playbook_changed(
    *, type: str, body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """Validate what the schema cannot, write Ready/Invalid, and wake the incidents it concerns
    (only when its spec changed, it came or went: our own status writes wake nobody)."""
    ctx = context(memo)
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
