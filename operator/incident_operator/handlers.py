"""Kopf handlers: framework settings, the per-Incident engine loop, Playbook validation.

Handlers are thin: they parse, call the pure core or the engine, and write status. Everything
kopf-specific is set in `configure` and nowhere else: watch and request timeouts, the finalizer
name and progress-storage prefix (our own, so they never collide with another Kopf operator),
and the level of Events kopf posts. Nothing here connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from incident_operator import API_GROUP, API_VERSION, attention, conditions, metrics, validation
from incident_operator.config import OperatorConfig
from incident_operator.engine import IncidentLoop, PlaybookEntry, Playbooks, parse_playbook, utc_now
from incident_operator.kube import AccessReviews
from incident_operator.notifier import Notifier
from incident_operator.planner import Record
from incident_operator.runrecords import RunRecorder

ANNOTATION_PREFIX = API_GROUP
FINALIZER = f"{API_GROUP}/finalizer"

# Watches are re-established at least this often, so a silently broken connection heals.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 30

logger = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "incident-operator"
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    memo.wakeups = {}  # incident uid -> asyncio.Event that wakes its loop
    memo.loop = asyncio.get_running_loop()
    memo.loops = {}  # incident uid -> its IncidentLoop (to wake only those a Playbook change concerns)
    memo.open_incidents = metrics.OpenIncidents()
    memo.notifier = Notifier(memo.kube, memo.outbound, memo.config.file.notifications)
    memo.run_records = RunRecorder(memo.kube)
    memo.run_records_task = asyncio.create_task(memo.run_records.run())
    memo.playbook_generations = {}  # (namespace, name) -> last generation seen
    recheck = memo.config.file.access.recheckSeconds
    memo.access_reviews = AccessReviews(memo.kube, denied_ttl=max(1.0, recheck / 2))


@kopf.on.cleanup()
async def flush_run_records(memo: kopf.Memo, **_: Any) -> None:
    """On the way out: write what the run recorder still holds."""
    memo.run_records_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.run_records_task


@kopf.index(API_GROUP, API_VERSION, "playbooks")
def playbooks_by_namespace(
    *, namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, tuple[str, PlaybookEntry | str]]:
    """Parsed once per Playbook change; an invalid one is kept as the reason, so it replaces a
    valid past and never runs."""
    return {namespace or "": (name, parse_playbook(name, spec, status))}


def _wake(memo: kopf.Memo, uid: str) -> None:
    """Wake an incident's loop; safe from any thread (kopf may call sync handlers in a thread pool)."""
    event = memo.wakeups.get(uid)
    if event is not None:
        memo.loop.call_soon_threadsafe(event.set)


@kopf.on.event(API_GROUP, API_VERSION, "incidents")
def incident_changed(*, uid: str, memo: kopf.Memo, **_: Any) -> None:
    _wake(memo, uid)


def _needs_loop(spec: kopf.Spec, status: kopf.Status, annotations: kopf.Annotations, **_: Any) -> bool:
    return attention.needs_loop(spec, status, annotations)


# Only incidents with something to do keep a task (see `attention`): kopf stops the daemon when
# the filter stops matching (a settled Resolved incident) and starts it again when it matches.
@kopf.daemon(API_GROUP, API_VERSION, "incidents", cancellation_timeout=10, when=_needs_loop)
async def incident_daemon(
    *,
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    assert namespace is not None  # noqa: S101 - Incidents are namespaced
    config: OperatorConfig = memo.config
    index: kopf.Index[str, tuple[str, PlaybookEntry | str]] = kwargs["playbooks_by_namespace"]
    wake = memo.wakeups.setdefault(uid, asyncio.Event())

    def playbooks() -> Playbooks:
        known = list(index.get(namespace, []))
        valid = sorted((e for _, e in known if isinstance(e, PlaybookEntry)), key=lambda e: e.name)
        return valid, {pb: e for pb, e in known if isinstance(e, str)}

    def post_event(record: Record) -> None:
        kopf.event(
            body, type="Warning" if record.warning else "Normal", reason=record.reason, message=record.message
        )

    async def wake_on_stop() -> None:
        await stopped.wait()
        wake.set()

    try:
        loop = IncidentLoop(
            kube=memo.kube,
            outbound=memo.outbound,
            config=config,
            namespace=namespace,
            name=name,
            uid=uid,
            body=body,
            playbooks=playbooks,
            post_event=post_event,
            open_incidents=memo.open_incidents,
            notifier=memo.notifier,
            access_reviews=memo.access_reviews,
            run_records=memo.run_records,
        )
    except ValidationError as exc:
        # A status the models refuse cannot be repaired by retrying; resetting it could run
        # completed steps again. Stop this incident's loop for good and say why, once.
        memo.wakeups.pop(uid, None)
        raise kopf.PermanentError(
            f"status unreadable ({exc.error_count()} problems); not reconciled"
        ) from None
    memo.loops[uid] = loop
    stopper = asyncio.create_task(wake_on_stop())
    try:
        await loop.run(lambda: bool(stopped), wake)
    finally:
        stopper.cancel()
        memo.wakeups.pop(uid, None)
        memo.loops.pop(uid, None)
        memo.open_incidents.update(uid, None, None)


@kopf.on.event(API_GROUP, API_VERSION, "playbooks")
async def playbook_changed(
    *, type: str, body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """Validate what the schema cannot, write Ready/Invalid, and wake the incidents it concerns
    (only when its spec changed, it came or went: our own status writes wake nobody)."""
    generation = body.get("metadata", {}).get("generation")
    key = (namespace or "", name)
    if type in ("ADDED", "DELETED", None) or memo.playbook_generations.get(key) != generation:
        for uid, loop in list(memo.loops.items()):
            if loop.namespace == namespace and loop.concerned_by(name):
                _wake(memo, uid)
    if type == "DELETED":
        memo.playbook_generations.pop(key, None)
    else:
        memo.playbook_generations[key] = generation
    if type == "DELETED" or namespace is None:
        return
    status = dict(body.get("status") or {})
    spec, found = validation.problems(dict(body.get("spec") or {}))
    now = utc_now()
    current = list(status.get("conditions") or [])
    if found:
        message = "; ".join(found)
        updated = conditions.set_condition(
            current, "Invalid", "True", "InvalidSpec", message, generation=generation, now=now
        )
        updated = conditions.set_condition(
            updated, "Ready", "False", "InvalidSpec", message, generation=generation, now=now
        )
    else:
        notes = validation.advice(spec) if spec else []
        message = "; ".join(notes) or "valid"
        updated = conditions.set_condition(
            current, "Invalid", "False", "Valid", "valid", generation=generation, now=now
        )
        updated = conditions.set_condition(
            updated, "Ready", "True", "Valid", message, generation=generation, now=now
        )
    steps = len(spec.steps) if spec else len((body.get("spec") or {}).get("steps") or [])
    if status.get("observedGeneration") == generation and updated == current and status.get("steps") == steps:
        return
    try:
        await memo.kube.patch_playbook_status(
            namespace, name, {"observedGeneration": generation, "steps": steps, "conditions": updated}
        )
    except Exception as exc:  # a transient failure is retried on the next event
        logger.warning("playbook %s/%s: could not write status: %s", namespace, name, exc)
        return
    if found and not conditions.is_true(current, "Invalid"):
        kopf.event(body, type="Warning", reason="Invalid", message=message)
