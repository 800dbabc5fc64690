"""The action registry: one async function per playbook action key.

Each action gets an `ActionContext` and returns an `Outcome`; it never raises for an expected
failure (missing target, guardrail, timeout), it reports it. Every action is idempotent for a
given step attempt, which is what makes a re-run after a crash harmless:

- `scale` decides `replicasBefore`/`replicasAfter` once and persists them before it acts;
- `restart` stamps `kubectl.kubernetes.io/restartedAt` with the attempt's persisted start time;
- `deletePods` picks its victims once and persists their names before deleting them;
- `isolate` and `collectEvidence` write objects with deterministic names;
- `rollback` decides the revision (by its ReplicaSet or ControllerRevision) and persists it first;
- `job` creates a Job named from the incident, run, step and attempt (a re-run finds it), from a
  template the Job policy allows (`core.jobpolicy`), once a slot of
  `jobs.maxConcurrentPerNamespace` is free;
- `waitReady`, `httpCheck` and `promQuery` only read (a smoke test's POST is the caller's to make
  safe to repeat); `notify` sends an `Idempotency-Key` per attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import yaml

from incident_operator.adapters.kube import (
    ApiException,
    Kube,
    api_reason,
    conflict,
    not_found,
    owned_metadata,
    pod_name,
    pod_ready,
)
from incident_operator.adapters.outbound import EgressDenied, Outbound, RequestFailed
from incident_operator.api.actions import HttpCheckAction, PodsOf, SecretRef
from incident_operator.api.base import WorkloadRef
from incident_operator.api.keys import JOB_NAME_LABEL, LABEL_INCIDENT, RESTARTED_AT
from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    PlaybookProgress,
    PlaybookSpec,
    Step,
    StepStatus,
)
from incident_operator.api.reasons import Reason
from incident_operator.api.timestamps import format_time
from incident_operator.core import checks, jobpolicy, names, notices, revisions, secretrefs
from incident_operator.core.planner import Outcome, pods_to_delete, scale_decision
from incident_operator.settings import templates
from incident_operator.settings.config import JobsConfig, Limits

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
HTTP_TIMEOUT = httpx.Timeout(5.0, connect=3.0)


@dataclass
class ActionContext:
    kube: Kube
    outbound: Outbound
    limits: Limits
    namespace: str
    incident: str
    incident_uid: str
    spec: IncidentSpec
    status: IncidentStatus
    playbook: PlaybookSpec
    step: Step
    step_status: StepStatus
    now: Callable[[], datetime]
    persist: Callable[[], Awaitable[None]]
    """Persist `status` (with the changes made to `step_status`) before acting on them."""
    jobs: JobsConfig = field(default_factory=JobsConfig)
    """The Job policy (`jobs:` in the config): what a `job` step may run, how many at once."""
    target: WorkloadRef | None = None
    """The workload this run of the action acts on (`controllers.targets`); None: the step's fixed one."""
    incident_created: datetime | None = None
    """When the incident was created: of two runs that want each other's workloads, the later
    incident's gives way (`controllers.targets.lock`)."""
    prefetched: Prefetched | None = None
    """A read of the workload a scale acts on, started before its lock was taken (`Prefetched`)."""

    @property
    def workload(self) -> WorkloadRef:
        """The workload a scale, restart, waitReady or rollback step acts on now."""
        if self.target is not None:
            return self.target
        step_target = self.step.target
        fixed = step_target.fixed if step_target is not None else None
        if fixed is None:
            raise ValueError(f"step {self.step.name}: no workload resolved")
        return fixed

    @property
    def deadline(self) -> datetime:
        started = self.step_status.startedAt or self.now()
        return started + timedelta(seconds=self.step.timeoutSeconds)

    @property
    def run_id(self) -> str:
        progress = self.status.playbook
        return (progress.runId if progress else None) or "r1"

    def template_values(self) -> dict[str, str]:
        return {
            "name": self.incident,
            "namespace": self.namespace,
            "title": self.spec.title,
            "description": self.spec.description or "",
            "severity": str(self.spec.severity),
            "category": str(self.spec.category),
            "phase": str(self.status.phase or ""),
            "commander": self.spec.commander or "",
            "step": self.step.name,
            "url": "",
        }


Action = Callable[[ActionContext], Awaitable[Outcome]]


def _target_missing(ref: WorkloadRef, namespace: str) -> Outcome:
    return Outcome(False, f"{ref.kind} {namespace}/{ref.name} not found")


class Prefetched:
    """A read of the workload a scale step acts on, started while the loop reserves the step's
    breaker slot, before the step's lock is taken: one round trip less between an incident and
    its first action. What it read may be older than the lock (another run may have scaled the
    workload and given its lock back meanwhile), so the scale names the resourceVersion it read:
    a workload changed since is read again and decided anew (`scale`). Taken once; what is not
    taken is discarded (`discard`: cancelled if still running, its error never raised)."""

    def __init__(self, kube: Kube, namespace: str, ref: WorkloadRef) -> None:
        self.ref = ref
        self.task: asyncio.Task[Any] | None = asyncio.create_task(
            kube.read_workload(str(ref.kind), ref.name, namespace)
        )
        self.task.add_done_callback(retrieved)

    def take(self, ref: WorkloadRef) -> asyncio.Task[Any] | None:
        """The read of `ref`, once (None: another workload, or taken already)."""
        task = self.task
        if task is None or ref.kind != self.ref.kind or ref.name != self.ref.name:
            return None
        self.task = None
        return task

    def discard(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()


def retrieved(task: asyncio.Task[Any]) -> None:
    """An early task's error (`Prefetched`, `controllers.targets.EarlyClaim`) is its taker's to
    raise, or nobody's (never 'never retrieved')."""
    if not task.cancelled():
        task.exception()


def _replicas(workload: Any) -> int:
    return workload.spec.replicas if workload.spec.replicas is not None else 1


async def scale(ctx: ActionContext) -> Outcome:
    """Decide the replicas from a read of the workload, persist the decision, then scale. The
    read may be the loop's early one (`Prefetched`, made before the lock): then the scale names
    its resourceVersion (a precondition), and a 409 reads again under the lock: the replicas
    unchanged (only the status moved), it scales; changed, it decides anew. A decision written
    before a restart is acted on only while the workload still has the replicas it was decided
    from (already at the decided count: done); moved since (by someone else, or after this
    decision acted: it cannot tell), nothing is done and the step fails, saying so: never a stale
    count, never twice."""
    params = ctx.step.scale
    assert params is not None  # noqa: S101 - the registry dispatches by action key
    ref, st = ctx.workload, ctx.step_status
    early = ctx.prefetched.take(ref) if ctx.prefetched is not None else None
    resumed = st.replicasAfter is not None  # decided before a restart (or an attempt that failed)
    if resumed and early is not None:
        early.cancel()
        early = None
    try:
        workload = await early if early is not None else await _read(ctx, ref)
    except ApiException as exc:
        return _not_scaled(ctx, ref, exc)
    if not resumed:
        before = _replicas(workload)
        after, wanted = scale_decision(
            before, params, [ctx.playbook.guardrails.maxReplicas, ctx.limits.maxReplicas]
        )
        st.replicasBefore, st.replicasAfter = before, after
        st.message = f"scaling {ref.kind} {ref.name} {before} -> {after}" + (
            f" (capped from {wanted})" if after != wanted else ""
        )
        await ctx.persist()
    elif _replicas(workload) == st.replicasAfter:
        return _scaled(ref, st)
    elif _replicas(workload) != st.replicasBefore:
        return Outcome(
            False,
            f"{ref.kind} {ref.name} has {_replicas(workload)} replicas, not the {st.replicasBefore} the "
            f"decision {st.replicasBefore} -> {st.replicasAfter} was made from (changed since by someone "
            "else, or by this step before a restart): not scaled again; a person decides",
        )
    target = st.replicasAfter
    assert target is not None  # noqa: S101 - decided above, or before a restart
    version = workload.metadata.resource_version if early is not None and workload.metadata else None
    try:
        await ctx.kube.scale_workload(ref.kind, ref.name, ctx.namespace, target, version)
        return _scaled(ref, st)
    except ApiException as exc:
        if exc.status != 409 or version is None:
            return _not_scaled(ctx, ref, exc)
    try:  # the early read is older than the lock: read again under it
        workload = await _read(ctx, ref)
        if _replicas(workload) == st.replicasBefore:  # only its status moved: the decision holds
            await ctx.kube.scale_workload(ref.kind, ref.name, ctx.namespace, target)
            return _scaled(ref, st)
    except ApiException as exc:
        return _not_scaled(ctx, ref, exc)
    logger.info(
        "%s/%s: %s %s was scaled meanwhile; deciding again", ctx.namespace, ctx.incident, ref.kind, ref.name
    )
    st.replicasBefore = st.replicasAfter = None
    return await scale(dataclasses.replace(ctx, prefetched=None))  # no early read: no 409 again


def _not_scaled(ctx: ActionContext, ref: WorkloadRef, exc: ApiException) -> Outcome:
    return _target_missing(ref, ctx.namespace) if not_found(exc) else Outcome(False, api_reason(exc))


async def _read(ctx: ActionContext, ref: WorkloadRef) -> Any:
    return await ctx.kube.read_workload(ref.kind, ref.name, ctx.namespace)


def _scaled(ref: WorkloadRef, st: StepStatus) -> Outcome:
    capped = " (capped by guardrails or the operator's limits)" if "capped" in (st.message or "") else ""
    return Outcome(True, f"scaled {ref.kind} {ref.name} {st.replicasBefore} -> {st.replicasAfter}{capped}")


async def _guard_ready_percent(ctx: ActionContext, ready: int, total: int, what: str) -> Outcome | None:
    floor = ctx.playbook.guardrails.minReadyPercent
    if floor is None or total == 0:
        return None
    percent = 100.0 * ready / total
    if percent < floor:
        return Outcome(
            False,
            f"guardrail minReadyPercent={floor}: only {ready}/{total} ({percent:.0f}%) of {what} "
            "are Ready; not restarting more",
        )
    return None


async def restart(ctx: ActionContext) -> Outcome:
    ref = ctx.workload
    stamp = format_time(ctx.step_status.startedAt or ctx.now())
    try:
        workload = await ctx.kube.read_workload(ref.kind, ref.name, ctx.namespace)
    except ApiException as exc:
        return _target_missing(ref, ctx.namespace) if not_found(exc) else Outcome(False, api_reason(exc))
    annotations = (
        workload.spec.template.metadata.annotations if workload.spec.template.metadata else None
    ) or {}
    if annotations.get(RESTARTED_AT) == stamp:
        return Outcome(True, f"rollout restart of {ref.kind} {ref.name} already requested at {stamp}")
    desired = workload.spec.replicas if workload.spec.replicas is not None else 1
    refused = await _guard_ready_percent(
        ctx, workload.status.ready_replicas or 0, desired, f"{ref.kind} {ref.name}"
    )
    if refused:
        return refused
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    try:
        await ctx.kube.patch_workload(ref.kind, ref.name, ctx.namespace, patch)
    except ApiException as exc:
        return Outcome(False, api_reason(exc))
    return Outcome(True, f"rollout restart of {ref.kind} {ref.name} requested ({RESTARTED_AT}={stamp})")


def _pods_deleted_so_far(ctx: ActionContext) -> tuple[int, int]:
    """(by this incident, by this step): the incident's count covers earlier runs (before a
    re-fire), the other steps of this run (each of their targets too) and this step's other
    targets; the step's count, its other targets (a step's `max` is shared by its targets)."""
    progress = ctx.status.playbook
    steps = progress.steps if progress else []
    by_step = sum(len(t.pods or []) for t in ctx.step_status.targets or [])
    others = sum(s.pods_deleted() for s in steps if s.name != ctx.step.name)
    return (ctx.status.podsDeleted or 0) + others + by_step, by_step


async def pod_selector(ctx: ActionContext, params: PodsOf) -> dict[str, str] | Outcome:
    """The pods a step names: its selector, or its workload's own (`matchLabels`)."""
    if params.selector is not None:
        return params.selector
    ref = ctx.workload
    try:
        workload = await ctx.kube.read_workload(str(ref.kind), ref.name, ctx.namespace)
    except ApiException as exc:
        return _target_missing(ref, ctx.namespace) if not_found(exc) else Outcome(False, api_reason(exc))
    selector = workload.spec.selector.match_labels if workload.spec.selector else None
    if not selector:
        return Outcome(False, f"{ref.kind} {ref.name} selects its pods without matchLabels")
    return dict(selector)


async def delete_pods(ctx: ActionContext) -> Outcome:
    params = ctx.step.deletePods
    assert params is not None  # noqa: S101
    st = ctx.step_status
    if st.pods is None:
        selector = await pod_selector(ctx, params)
        if isinstance(selector, Outcome):
            return selector
        pods = await ctx.kube.pods(ctx.namespace, selector)
        live = [p for p in pods if p.metadata is not None and p.metadata.deletion_timestamp is None]
        ready = [p for p in live if pod_ready(p)]
        refused = await _guard_ready_percent(ctx, len(ready), len(live), f"pods {selector}")
        if refused:
            return refused
        spent, by_step = _pods_deleted_so_far(ctx)
        budget = min(max(0, params.max - by_step), max(0, ctx.limits.maxPodDeletionsPerIncident - spent))
        limit = ctx.playbook.guardrails.maxPodDeletions
        if limit is not None:
            budget = min(budget, max(0, limit - spent))
        candidates = [(pod_name(p), pod_ready(p)) for p in live]
        st.pods = pods_to_delete(candidates, params.onlyUnready, budget)
        eligible = len([c for c in candidates if not c[1]]) if params.onlyUnready else len(candidates)
        st.message = f"deleting {len(st.pods)} of {eligible} candidate pods"
        await ctx.persist()
    for name in st.pods:
        try:
            await ctx.kube.delete_pod(ctx.namespace, name)
        except ApiException as exc:
            if not not_found(exc):
                return Outcome(False, f"deleting pod {name}: {api_reason(exc)}")
    if not st.pods:
        return Outcome(True, "no pod needed deleting (none matched, or the guardrail budget is spent)")
    return Outcome(True, f"deleted {len(st.pods)} pods: {', '.join(st.pods)}")


async def _until_deadline(
    ctx: ActionContext, probe: Callable[[], Awaitable[Outcome | None]], waiting: str
) -> Outcome:
    """Call `probe` until it returns an Outcome or the step's deadline passes."""
    last = waiting
    while True:
        result = await probe()
        if isinstance(result, Outcome):
            return result
        if ctx.now() >= ctx.deadline:
            return Outcome(False, f"timed out after {ctx.step.timeoutSeconds}s: {last}")
        await asyncio.sleep(POLL_INTERVAL_S)


async def wait_ready(ctx: ActionContext) -> Outcome:
    ref = ctx.workload
    seen = {"last": "not observed yet"}

    async def probe() -> Outcome | None:
        try:
            readiness = await ctx.kube.readiness(ref.kind, ref.name, ctx.namespace)
        except ApiException as exc:
            if not_found(exc):
                return _target_missing(ref, ctx.namespace)
            seen["last"] = api_reason(exc)
            return None
        seen["last"] = readiness.describe()
        if readiness.rolled_out:
            return Outcome(True, f"{ref.kind} {ref.name} rolled out: {readiness.describe()}")
        return None

    result = await _until_deadline(ctx, probe, "waiting")
    if not result.ok and result.message.startswith("timed out"):
        return Outcome(
            False, f"timed out after {ctx.step.timeoutSeconds}s: {ref.kind} {ref.name} {seen['last']}"
        )
    return result


def _misconfigured(message: str) -> Outcome:
    return Outcome(False, message, blocked=Reason.MISCONFIGURED)


async def shared_secret(
    kube: Kube, namespace: str, name: str, field: str, *, url: str | None, key: str | None = None
) -> dict[str, str] | Outcome:
    """The values of Secret `name` a Playbook names in `field`, if its owner shared it with
    playbooks for the host of `url` (or, without `url`, of the URL its `key` holds; see
    `secretrefs`); else why not, as a Blocked outcome (Misconfigured), never a failure.
    Values are secrets: never logged, never in status."""
    try:
        secret = await kube.secret(namespace, name)
    except ApiException as exc:
        if not_found(exc):
            return _misconfigured(f"Secret {namespace}/{name} ({field}) not found")
        return Outcome(False, f"reading Secret {name}: {api_reason(exc)}")
    if key is not None and not secret.data.get(key):
        return _misconfigured(f"Secret {namespace}/{name} ({field}) has no key {key!r}")
    try:
        host = urllib.parse.urlsplit(url if url is not None else secret.data[key or ""]).hostname
    except (KeyError, ValueError):
        host = None
    refused = secretrefs.refusal(f"{namespace}/{name}", field, secret.labels, secret.annotations, host)
    return _misconfigured(refused) if refused else secret.data


async def secret_headers(
    kube: Kube, namespace: str, ref: SecretRef | None, url: str
) -> dict[str, str] | Outcome:
    """Every key of the Secret as a header of a request to `url`, if shared for its host."""
    if ref is None:
        return {}
    return await shared_secret(kube, namespace, ref.name, "headersSecretRef", url=url)


def _egress_denied(exc: EgressDenied) -> Outcome:
    """A request the egress policy refused: the step waits for a person (Misconfigured), with
    `egress denied: <host>` and nothing else (no request was made)."""
    return _misconfigured(str(exc))


async def _probe(
    outbound: Outbound, namespace: str, check: HttpCheckAction, headers: dict[str, str]
) -> tuple[bool, str, bool]:
    """(passed, what to report, final) of one request of a Playbook of `namespace` through the
    egress policies; final: asking again cannot help. Raises EgressDenied, and RequestFailed for
    what a person must fix (an invalid URL, a name that does not exist)."""
    send = dict(headers)
    if check.body is not None:
        send.setdefault("Content-Type", check.contentType)
    started = time.monotonic()
    try:
        reply = await outbound.request(
            str(check.method),
            check.url,
            timeout=HTTP_TIMEOUT,
            headers=send,
            content=check.body,
            namespace=namespace,
        )
    except RequestFailed as exc:
        if exc.misconfigured:
            raise
        return False, str(exc), exc.permanent
    latency_ms = 1000 * (time.monotonic() - started)
    ok, said = checks.http_verdict(check, reply.status_code, reply.body.decode(errors="replace"), latency_ms)
    return ok, said, False


async def http_check(ctx: ActionContext) -> Outcome:
    params = ctx.step.httpCheck
    assert params is not None  # noqa: S101
    try:  # the URL for this target (once per target: `controllers.targets`)
        url = checks.render_url(params, ctx.namespace, ctx.workload if params.target is not None else None)
    except ValueError as exc:
        return _misconfigured(f"httpCheck.url: {exc}")
    params = params.model_copy(update={"url": url})
    headers = await secret_headers(ctx.kube, ctx.namespace, params.headersSecretRef, url)
    if isinstance(headers, Outcome):
        return headers
    streak = 0
    asked = f"{params.method} {url}"
    while True:
        try:
            ok, last, final = await _probe(ctx.outbound, ctx.namespace, params, headers)
        except EgressDenied as exc:
            return _egress_denied(exc)
        except RequestFailed as exc:  # misconfigured: no outage of the service checked
            return _misconfigured(str(exc))  # the URL is not echoed, as for any bad URL
        if final:  # neither the policy nor the URL changes meanwhile; a bad URL is not echoed
            return Outcome(False, last)
        streak = streak + 1 if ok else 0
        if streak >= params.successThreshold:
            return Outcome(True, f"{asked}: {last} ({streak} consecutive)")
        if ctx.now() + timedelta(seconds=params.intervalSeconds) > ctx.deadline:
            return Outcome(False, f"timed out after {ctx.step.timeoutSeconds}s: {asked} last {last}")
        await asyncio.sleep(params.intervalSeconds)


async def prom_query(ctx: ActionContext) -> Outcome:
    params = ctx.step.promQuery
    assert params is not None  # noqa: S101
    headers = await secret_headers(ctx.kube, ctx.namespace, params.headersSecretRef, params.url)
    if isinstance(headers, Outcome):
        return headers
    url = params.url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": params.query})
    holding = checks.Holding()
    last = "no answer yet"
    while True:
        try:
            reply = await ctx.outbound.request(
                "GET", url, timeout=HTTP_TIMEOUT, headers=headers, namespace=ctx.namespace
            )
            answer = json.loads(reply.body)
            holds, last = checks.query_verdict(answer, params.expect)
        except EgressDenied as exc:
            return _egress_denied(exc)
        except RequestFailed as exc:
            if exc.misconfigured:
                return _misconfigured(f"Prometheus {params.url}: {exc}")
            if exc.permanent:
                return Outcome(False, f"Prometheus {params.url}: {exc}")
            holds, last = False, f"Prometheus {params.url}: {exc}"
        except checks.QueryError as exc:
            return Outcome(False, f"query {params.query!r}: {exc}")  # a wrong query stays wrong
        except (ValueError, KeyError, TypeError, IndexError):
            holds, last = False, f"Prometheus {params.url}: not a query answer (HTTP {reply.status_code})"
        held = holding.observe(holds, ctx.now())
        if holds and held >= timedelta(seconds=params.forSeconds):
            span = f" for {params.forSeconds}s" if params.forSeconds else ""
            return Outcome(True, f"{params.query}: {last}{span}")
        if ctx.now() + timedelta(seconds=params.intervalSeconds) > ctx.deadline:
            return Outcome(False, f"timed out after {ctx.step.timeoutSeconds}s: {params.query}: {last}")
        await asyncio.sleep(params.intervalSeconds)


async def rollback(ctx: ActionContext) -> Outcome:
    params = ctx.step.rollback
    assert params is not None  # noqa: S101
    ref, st = ctx.workload, ctx.step_status
    kind = str(ref.kind)
    try:
        history = await ctx.kube.rollout_history(kind, ref.name, ctx.namespace)
    except ApiException as exc:
        return _target_missing(ref, ctx.namespace) if not_found(exc) else Outcome(False, api_reason(exc))
    if st.revisionName is None:
        choice = revisions.choose(history.revisions, history.current, params.toRevision)
        if isinstance(choice, str):
            return Outcome(False, f"{kind} {ref.name}: {choice}")
        st.revision, st.revisionFrom, st.revisionName = choice.number, history.current, choice.name
        st.message = f"rolling back {kind} {ref.name} from revision {history.current} to {choice.describe()}"
        await ctx.persist()  # the decision, before the change: a re-run goes to the same revision
    restore = history.restores.get(st.revisionName or "")
    if restore is None:
        return Outcome(
            False, f"{kind} {ref.name}: {st.revisionName} (revision {st.revision}) no longer exists"
        )
    body: Any = (
        restore if kind == "StatefulSet" else [{"op": "replace", "path": "/spec/template", "value": restore}]
    )
    try:
        await ctx.kube.patch_workload(kind, ref.name, ctx.namespace, body)
    except ApiException as exc:
        return _target_missing(ref, ctx.namespace) if not_found(exc) else Outcome(False, api_reason(exc))
    return Outcome(
        True,
        f"rolled back {kind} {ref.name} from revision {st.revisionFrom} to revision {st.revision}"
        f" ({st.revisionName})",
    )


JOB_POLL_S = 1.0
JOB_QUEUE_POLL_S = 2.0
_job_slots: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
"""One lock per namespace while a Job step counts the running Jobs and creates its own, so that
two incidents of this process never both take the last slot."""


async def run_job(ctx: ActionContext) -> Outcome:
    params = ctx.step.job
    assert params is not None  # noqa: S101
    st = ctx.step_status
    refused = jobpolicy.problems(params.template, ctx.jobs)
    if refused:  # validated with the Playbook; the config may have tightened since the run started
        return _misconfigured("the Job policy refuses the template: " + "; ".join(refused))
    name = checks.job_name(ctx.incident, ctx.step.name, ctx.run_id, st.attempts)
    st.job = name
    meta = owned_metadata(name, ctx.incident, ctx.incident_uid)
    job_spec: dict[str, Any] = {
        "template": jobpolicy.pod_template(params.template, {LABEL_INCIDENT: ctx.incident}),
        "backoffLimit": params.backoffLimit,
        "activeDeadlineSeconds": params.timeoutSeconds,
    }
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": ctx.kube.to_dict(meta), "spec": job_spec}
    lock = _job_slots.setdefault(ctx.namespace, asyncio.Lock())
    queued = False
    while True:
        async with lock:
            try:
                jobs = await ctx.kube.jobs_labelled(ctx.namespace, LABEL_INCIDENT)
            except ApiException as exc:
                return Outcome(False, f"listing Jobs: {api_reason(exc)}")
            free, running = jobpolicy.slot(
                [ctx.kube.to_dict(j) for j in jobs], name, ctx.jobs.maxConcurrentPerNamespace
            )
            if free:
                # the Job ends by itself when the step's time is up (time queued counted), so a
                # retry never runs beside an attempt that timed out
                left = math.ceil((ctx.deadline - ctx.now()).total_seconds())
                job_spec["activeDeadlineSeconds"] = max(1, min(params.timeoutSeconds, left))
                try:
                    await ctx.kube.create_job(ctx.namespace, body)
                except ApiException as exc:
                    if not conflict(exc):  # 409: this attempt's Job exists already (a re-run after a crash)
                        return Outcome(False, f"creating Job {name}: {api_reason(exc)}")
                break
        waiting = (
            f"queued: {running} Jobs of the operator run in namespace {ctx.namespace} "
            f"(jobs.maxConcurrentPerNamespace: {ctx.jobs.maxConcurrentPerNamespace})"
        )
        if ctx.now() + timedelta(seconds=JOB_QUEUE_POLL_S) > ctx.deadline:
            return Outcome(False, f"timed out after {ctx.step.timeoutSeconds}s: {waiting}")
        if not queued:  # shown as the step's message while it waits, written once
            queued = True
            st.message = f"{waiting}; Job {name} waits for a free slot"
            await ctx.persist()
        await asyncio.sleep(JOB_QUEUE_POLL_S)
    if queued:
        st.message = None
    while True:
        try:
            job = await ctx.kube.read_job(ctx.namespace, name)
        except ApiException as exc:
            return Outcome(False, f"Job {name}: {api_reason(exc)}")
        done = {c.type: c for c in (job.status.conditions or []) if c.status == "True"} if job.status else {}
        if "Complete" in done or "Failed" in done:
            log = await _job_log(ctx, name, params.logLines)
            if "Complete" in done:
                return Outcome(True, f"Job {name} succeeded{log}")
            failed = done["Failed"]
            return Outcome(
                False, f"Job {name} failed: {failed.reason or ''} {failed.message or ''}".rstrip() + log
            )
        if ctx.now() + timedelta(seconds=JOB_POLL_S) > ctx.deadline:
            return Outcome(False, f"timed out after {ctx.step.timeoutSeconds}s: Job {name} still running")
        await asyncio.sleep(JOB_POLL_S)


async def _job_log(ctx: ActionContext, job: str, lines: int) -> str:
    """'; log: <last lines>' of the Job's newest pod, or why there is none."""
    if lines == 0:
        return ""
    pods = await ctx.kube.pods_labelled(ctx.namespace, f"{JOB_NAME_LABEL}={job}")
    if not pods:
        return "; log unavailable: no pod"
    newest = max(pods, key=lambda p: str(ctx.kube.to_dict(p)["metadata"].get("creationTimestamp")))
    try:
        text = await ctx.kube.pod_log(
            ctx.namespace, pod_name(newest), lines=lines, limit_bytes=ctx.limits.maxLogBytesPerPod
        )
    except ApiException as exc:
        return f"; log unavailable: {api_reason(exc)}"
    except Exception as exc:  # a kubelet that serves no logs is recorded, not fatal
        return f"; log unavailable: {type(exc).__name__}"
    tail = str(text).strip()[-MAX_LOG_IN_MESSAGE:]
    return f"; log: {tail}" if tail else "; log empty"


MAX_LOG_IN_MESSAGE = 2000


async def read_secret_url(ctx: ActionContext, name: str, key: str) -> str | Outcome:
    """The URL in key `key` of Secret `name` (urlSecretRef), if shared for the URL's own host."""
    data = await shared_secret(ctx.kube, ctx.namespace, name, "urlSecretRef", url=None, key=key)
    return data if isinstance(data, Outcome) else data[key]


async def notify(ctx: ActionContext) -> Outcome:
    params = ctx.step.notify
    assert params is not None  # noqa: S101
    target = params.slack or params.webhook
    assert target is not None  # noqa: S101 - CEL guarantees one of them
    url = await read_secret_url(ctx, target.urlSecretRef.name, target.urlSecretRef.key)
    if isinstance(url, Outcome):
        return url
    text = templates.render(params.message, ctx.template_values())
    if params.slack is not None:
        # The message and the values in it are the Playbook's and the incident's: people's text.
        payload: dict[str, Any] = {"text": notices.slack_escape(text)}
    else:
        payload = {
            "incident": ctx.incident,
            "namespace": ctx.namespace,
            "title": ctx.spec.title,
            "severity": str(ctx.spec.severity),
            "category": str(ctx.spec.category),
            "phase": str(ctx.status.phase or ""),
            "step": ctx.step.name,
            "message": text,
        }
    key = f"{ctx.incident_uid}/{ctx.run_id}/{ctx.step.name}/{ctx.step_status.attempts}"
    try:
        response = await ctx.outbound.request(
            "POST",
            url,
            json=payload,
            headers={"Idempotency-Key": key},
            timeout=HTTP_TIMEOUT,
            namespace=ctx.namespace,
        )
    except EgressDenied as exc:
        return _egress_denied(exc)
    except RequestFailed as exc:
        said = f"notification not delivered: {exc} (webhook URL from Secret)"
        return _misconfigured(said) if exc.misconfigured else Outcome(False, said)
    if response.status_code >= 300:
        return Outcome(False, f"notification rejected: HTTP {response.status_code}")
    return Outcome(True, f"notified ({'slack' if params.slack else 'webhook'}): {text[:200]}")


def evidence_name(incident: str, run_id: str, workload: WorkloadRef | None) -> str:
    """The evidence ConfigMap of a run (one per workload for a step with a target), a valid name
    however long the incident's and the workload's are (`core.names.bounded`)."""
    base = f"{incident}-evidence-{run_id}"
    return names.bounded(base if workload is None else f"{base}-{str(workload.kind).lower()}-{workload.name}")


async def collect_evidence(ctx: ActionContext) -> Outcome:
    params = ctx.step.collectEvidence
    assert params is not None  # noqa: S101
    selector = await pod_selector(ctx, params)
    if isinstance(selector, Outcome):
        return selector
    pods = await ctx.kube.pods(ctx.namespace, selector)
    data: dict[str, str] = {}
    summary = [
        {
            "name": pod_name(p),
            "phase": p.status.phase if p.status else None,
            "ready": pod_ready(p),
            "node": p.spec.node_name if p.spec else None,
            "restarts": _restarts(p),
        }
        for p in pods
    ]
    data["pods.yaml"] = yaml.safe_dump(summary, sort_keys=False)
    if params.events:
        events = await ctx.kube.events(ctx.namespace)
        names = {pod_name(p) for p in pods} | {ctx.incident}
        relevant = [
            {
                "time": str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp),
                "object": f"{e.involved_object.kind}/{e.involved_object.name}",
                "type": e.type,
                "reason": e.reason,
                "message": e.message,
            }
            for e in events
            if any((e.involved_object.name or "").startswith(n) for n in names)
        ]
        data["events.yaml"] = yaml.safe_dump(relevant[-500:], sort_keys=False)
    unavailable: list[str] = []
    if params.rolloutHistory:
        history, unavailable = await _rollout_histories(ctx)
        if history:
            data["rollout-history.yaml"] = yaml.safe_dump(history, sort_keys=False)
    if params.resourceUsage:
        usage = await _resource_usage(ctx, selector)
        if isinstance(usage, str):
            unavailable.append(f"resource usage: {usage}")
        else:
            data["resource-usage.yaml"] = yaml.safe_dump(usage, sort_keys=False)
    # Logs last: they get what is left of the budget after everything else.
    missing_logs: list[str] = []
    skipped: list[str] = []
    not_read = 0
    if params.logLines > 0:
        missing_logs, skipped, not_read = await _pod_logs(ctx, pods, params.logLines, data)
    if missing_logs:
        data["logs-unavailable.txt"] = "\n".join(missing_logs) + "\n"
    notes = [*missing_logs, *skipped, *unavailable]
    if notes:
        data["unavailable.txt"] = "\n".join(notes) + "\n"
    _fit(data, ctx.limits.maxEvidenceBytes)
    name = evidence_name(ctx.incident, ctx.run_id, ctx.workload if params.target is not None else None)
    try:
        await ctx.kube.write_owned_configmap(ctx.namespace, name, data, ctx.incident, ctx.incident_uid)
    except ApiException as exc:
        return Outcome(False, f"writing ConfigMap {name}: {api_reason(exc)}")
    named = [t.ref for t in ctx.step_status.targets or []] + [
        s.collectEvidence.target.fixed
        for s in ctx.playbook.steps
        if s.collectEvidence is not None
        and s.collectEvidence.target is not None
        and s.collectEvidence.target.fixed
    ]
    this_run = {evidence_name(ctx.incident, ctx.run_id, ref) for ref in [None, *named]}
    if params.target is None or ctx.status.evidenceRef not in this_run:  # the run's first names it
        ctx.status.evidenceRef = name
    logs_note = f"; logs unavailable for {len(missing_logs)} pods" if missing_logs else ""
    if not_read:
        logs_note += f"; logs of {not_read} pods not read (evidence limits)"
    return Outcome(True, f"evidence of {len(pods)} pods in ConfigMap {name}{logs_note}")


MIN_LOG_READ_BYTES = 1024
"""Less than this left of the evidence budget: no more logs are read."""
NOTES_RESERVE_BYTES = 4096
"""Kept free of logs for the notes written after them (what was not read, and why)."""
SKIPPED_PODS_NAMED = 50
"""Pods whose logs were not read are named up to this many (then counted)."""


def _restarts(pod: Any) -> int:
    return sum(c.restart_count or 0 for c in (pod.status.container_statuses or [])) if pod.status else 0


async def _pod_logs(
    ctx: ActionContext, pods: list[Any], lines: int, data: dict[str, str]
) -> tuple[list[str], list[str], int]:
    """Read into `data` the logs of at most `limits.maxEvidencePods` pods (those not ready, then
    those restarting most, first), asking the API for no more than what `data` leaves of
    `limits.maxEvidenceBytes` (less a reserve for the notes) and at most
    `limits.maxLogBytesPerPod` per pod, so a huge log is never read whole; reading stops when
    the budget is spent. Returns the logs that could not be read, why the others were not read
    (one line per reason, naming the pods), and how many were not."""
    limits = ctx.limits
    used = sum(len(v.encode()) for v in data.values())
    budget = limits.maxEvidenceBytes - used - NOTES_RESERVE_BYTES
    ordered = sorted(pods, key=lambda p: (pod_ready(p), -_restarts(p), pod_name(p)))
    missing: list[str] = []
    over_budget: list[str] = []
    for pod in ordered[: limits.maxEvidencePods]:
        name = pod_name(pod)
        ask = min(limits.maxLogBytesPerPod, budget)
        if ask < MIN_LOG_READ_BYTES:
            over_budget.append(name)
            continue
        try:
            text = await ctx.kube.pod_log(ctx.namespace, name, lines=lines, limit_bytes=ask)
        except ApiException as exc:
            missing.append(f"{name}: {api_reason(exc)}")
            continue
        except Exception as exc:  # a kubelet that serves no logs is recorded, not fatal
            missing.append(f"{name}: {type(exc).__name__}")
            continue
        read = text.encode()
        if len(read) > ask:  # a server that ignored limitBytes: keep what was asked for
            text = read[:ask].decode(errors="ignore")
        data[f"logs-{name}.txt"] = text
        budget -= min(len(read), ask)
    skipped: list[str] = []
    beyond = [pod_name(p) for p in ordered[limits.maxEvidencePods :]]
    if beyond:
        skipped.append(
            f"logs of {len(beyond)} more pods not read (limits.maxEvidencePods: "
            f"{limits.maxEvidencePods}): {_named(beyond)}"
        )
    if over_budget:
        skipped.append(
            f"logs of {len(over_budget)} pods not read (limits.maxEvidenceBytes: "
            f"{limits.maxEvidenceBytes} spent): {_named(over_budget)}"
        )
    return missing, skipped, len(beyond) + len(over_budget)


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:SKIPPED_PODS_NAMED])
    return shown + (f" and {len(names) - SKIPPED_PODS_NAMED} more" if len(names) > SKIPPED_PODS_NAMED else "")


async def _rollout_histories(ctx: ActionContext) -> tuple[dict[str, Any], list[str]]:
    """Each target's revisions with their times and change-cause (recent changes), and what could
    not be read."""
    found: dict[str, Any] = {}
    unavailable: list[str] = []
    step_target = ctx.step.target
    refs = [ctx.workload] if step_target is not None else ctx.spec.targets or []
    for ref in refs:
        key = f"{ref.kind}/{ref.name}"
        try:
            history = await ctx.kube.rollout_history(str(ref.kind), ref.name, ctx.namespace)
        except ApiException as exc:
            unavailable.append(f"rollout history of {key}: {api_reason(exc)}")
            continue
        found[key] = {
            "currentRevision": history.current,
            "revisions": revisions.history(history.revisions, history.current),
        }
    return found, unavailable


async def _resource_usage(ctx: ActionContext, selector: dict[str, str]) -> list[dict[str, Any]] | str:
    """CPU and memory per container from the metrics API (metrics-server), or why not."""
    try:
        listed = await ctx.kube.pod_metrics(
            ctx.namespace, ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        )
    except ApiException as exc:
        if exc.status in (404, 503):
            return "the metrics API (metrics.k8s.io) does not answer in this cluster"
        return api_reason(exc)
    return [
        {
            "pod": item.get("metadata", {}).get("name"),
            "time": item.get("timestamp"),
            "containers": [
                {"name": c.get("name"), **(c.get("usage") or {})} for c in item.get("containers") or []
            ],
        }
        for item in listed.get("items") or []
    ]


def _fit(data: dict[str, str], limit: int) -> None:
    """Trim entries so the ConfigMap stays under `limit` bytes; what was cut is said in the evidence."""
    total = sum(len(v.encode()) for v in data.values())
    cut: list[str] = []
    for key in sorted(
        (k for k in data if k.startswith("logs-") and k != "logs-unavailable.txt"), reverse=True
    ):
        if total <= limit:
            break
        size = len(data[key].encode())
        data[key] = "(trimmed: evidence exceeded its size limit)\n"
        total -= size - len(data[key])
        cut.append(f"{key}: {size} bytes cut")
    for key in ("events.yaml", "pods.yaml"):
        if total > limit and key in data:
            size = len(data[key].encode())
            data[key] = "(trimmed: evidence exceeded its size limit)\n"
            total -= size - len(data[key])
            cut.append(f"{key}: {size} bytes cut")
    if cut:
        data["trimmed.txt"] = (
            f"evidence limited to {limit} bytes (limits.maxEvidenceBytes):\n" + "\n".join(cut) + "\n"
        )


async def isolate(ctx: ActionContext) -> Outcome:
    params = ctx.step.isolate
    assert params is not None  # noqa: S101
    name = f"{ctx.incident}-isolate"
    try:
        await ctx.kube.create_deny_all_policy(
            ctx.namespace, owned_metadata(name, ctx.incident, ctx.incident_uid), params.selector
        )
    except ApiException as exc:
        if not conflict(exc):
            return Outcome(False, f"creating NetworkPolicy {name}: {api_reason(exc)}")
    return Outcome(True, f"isolated pods {json.dumps(params.selector)} with deny-all NetworkPolicy {name}")


REGISTRY: dict[str, Action] = {
    "rollback": rollback,
    "job": run_job,
    "promQuery": prom_query,
    "scale": scale,
    "restart": restart,
    "deletePods": delete_pods,
    "waitReady": wait_ready,
    "httpCheck": http_check,
    "notify": notify,
    "collectEvidence": collect_evidence,
    "isolate": isolate,
}


async def run(ctx: ActionContext) -> Outcome:
    """Run the step's action within its timeout; unexpected errors become a failed Outcome."""
    action = REGISTRY[ctx.step.action]
    remaining = (ctx.deadline - ctx.now()).total_seconds()
    if remaining <= 0:
        return Outcome(False, f"timed out after {ctx.step.timeoutSeconds}s")
    try:
        return await asyncio.wait_for(action(ctx), timeout=remaining + 1)
    except TimeoutError:
        return Outcome(False, f"timed out after {ctx.step.timeoutSeconds}s")
    except ApiException as exc:
        return Outcome(False, api_reason(exc))
    except templates.TemplateError as exc:
        return Outcome(False, f"message template: {exc}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # anything else is a failed step with a reason, never a dead loop
        logger.exception(
            "step %s of incident %s/%s failed unexpectedly", ctx.step.name, ctx.namespace, ctx.incident
        )
        return Outcome(False, f"unexpected error: {type(exc).__name__}")


def workload_targets(
    spec: IncidentSpec, playbook: PlaybookSpec | None, pinned: list[WorkloadRef] | None = None
) -> list[WorkloadRef]:
    """The workloads an incident is about: the targets its run pinned (`pinned`: it acted on
    some), its own targets now, and the fixed ones its playbook acts on."""
    refs = [*(pinned or []), *(spec.targets or [])]
    for step in playbook.steps if playbook else []:
        fixed = step.target.fixed if step.target is not None else None
        if fixed is not None:
            refs.append(fixed)
    unique: dict[tuple[str, str], WorkloadRef] = {}
    for ref in refs:
        unique.setdefault((str(ref.kind), ref.name), ref)
    return list(unique.values())


async def verify_health(
    kube: Kube,
    outbound: Outbound,
    namespace: str,
    spec: IncidentSpec,
    playbook: PlaybookSpec,
    *,
    progress: PlaybookProgress | None = None,
) -> Outcome:
    """After the stabilization window: every target (those the run pinned, `progress.targets`,
    and those the incident names now) rolled out, every httpCheck URL answering (once per
    target for one with a target)."""
    problems: list[str] = []
    healthy: list[str] = []
    pinned = progress.targets if progress is not None else None
    for ref in workload_targets(spec, playbook, pinned):
        try:
            readiness = await kube.readiness(str(ref.kind), ref.name, namespace)
        except ApiException as exc:
            problems.append(f"{ref.kind} {ref.name}: {'not found' if not_found(exc) else api_reason(exc)}")
            continue
        (healthy if readiness.rolled_out else problems).append(
            f"{ref.kind} {ref.name} {readiness.describe()}"
        )
    for step in playbook.steps:
        if step.httpCheck is None:
            continue
        for check in _health_checks(namespace, step, progress=progress, problems=problems):
            headers = await secret_headers(kube, namespace, check.headersSecretRef, check.url)
            if isinstance(headers, Outcome):
                problems.append(headers.message)
                continue
            try:
                ok, last, _ = await _probe(outbound, namespace, check, headers)
            except (EgressDenied, RequestFailed) as exc:
                ok, last = False, str(exc)
            (healthy if ok else problems).append(f"{check.method} {check.url}: {last}")
    if problems:
        return Outcome(False, "; ".join(problems))
    return Outcome(True, "; ".join(healthy) or "no workload or URL to check")


def _health_checks(
    namespace: str,
    step: Step,
    *,
    progress: PlaybookProgress | None,
    problems: list[str],
) -> list[HttpCheckAction]:
    """An httpCheck step as the health check asks it: once, or once per target with its URL
    rendered for it. A check on the incident's targets is asked on the targets its step resolved
    (recorded in the step's status, within the run's pin); a step that never resolved any
    (skipped by `when`, or Blocked with continueOnFailure) is not a health check of the run and
    is not asked: resolving it here, without the workloads' labels, would refuse under a selector
    bound and fail health for ever. A fixed target is asked as named. What cannot be asked is
    added to `problems`."""
    check = step.httpCheck
    assert check is not None  # noqa: S101 - callers check
    refs: list[WorkloadRef | None] = [None]
    if check.target is not None and check.target.fixed is not None:
        refs = [check.target.fixed]
    elif check.target is not None:
        recorded = next((s for s in progress.steps if s.name == step.name), None) if progress else None
        if recorded is None or recorded.targets is None:
            return []  # it never resolved targets: nothing of the run to ask
        refs = [t.ref for t in recorded.targets]
    asked = []
    for ref in refs:
        try:
            asked.append(check.model_copy(update={"url": checks.render_url(check, namespace, ref)}))
        except ValueError as exc:
            problems.append(f"step {step.name}: httpCheck.url: {exc}")
    return asked


async def revert_scale(kube: Kube, namespace: str, step: Step, step_status: StepStatus) -> Outcome:
    """Put each workload the scale step changed back to its replicas before it."""
    changed = [
        (t.ref, t.replicasBefore)
        for t in step_status.targets or []
        if t.replicasBefore is not None and t.state == "Succeeded"
    ]
    fixed = step.target.fixed if step.target is not None else None
    if fixed is not None and step_status.replicasBefore is not None:
        changed.append((fixed, step_status.replicasBefore))
    said = []
    for ref, replicas in changed:
        try:
            await kube.scale_workload(str(ref.kind), ref.name, namespace, replicas)
        except ApiException as exc:
            return Outcome(False, f"reverting {ref.kind} {ref.name}: {api_reason(exc)}")
        said.append(f"{ref.kind} {ref.name} back to {replicas} replicas")
    return Outcome(True, "; ".join(said) or "nothing to revert")
