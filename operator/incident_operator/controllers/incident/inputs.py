"""What the planner is fed: one incident's observations gathered into a `PlanInput`.

Owns the reading side of an incident loop: parsing Playbooks as the loop uses them, the
severity rules, response targets and escalation levels that apply in the namespace, the alert
state and repeat lookup from the live body, the access review of the chosen playbook, and
whether the watch's Playbook index is behind the API's listing (`index_behind`, read through
the shared `PlaybookListings`). It holds no state of its own (the live body and the clock are
read at each call) and writes nothing: decisions are `planner.plan`'s, writes are `commit`'s.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from incident_operator.adapters.kube import AccessReviews
from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    Phase,
    PlaybookSpec,
    PlaybookStatus,
    Severity,
)
from incident_operator.api.reasons import ConditionType, Reason
from incident_operator.api.timestamps import format_time
from incident_operator.controllers.incident.slots import StartedRuns
from incident_operator.controllers.people import ScheduleBook
from incident_operator.core import access, alerts, openlimit, paging, pins, repeats, validation
from incident_operator.core.matching import Candidate, Selection
from incident_operator.core.planner import AlertState, Level, PlanInput, effective_severity
from incident_operator.settings import config
from incident_operator.settings.config import OperatorConfig

logger = logging.getLogger(__name__)

History = Callable[[repeats.RepeatKey], list[repeats.Seen]]
"""Earlier incidents by repeat key (`repeats.History`, kept by the operator from watch events)."""

OpenInNamespace = Callable[[], openlimit.Ranking]
"""The open incidents of the incident's namespace, ranked (fed from watch events in the operator)."""


Playbooks = tuple[list["PlaybookEntry"], dict[str, str]]
"""The namespace's valid Playbooks, and the invalid ones by name with why."""


@dataclass(frozen=True)
class PlaybookEntry:
    name: str
    spec: PlaybookSpec
    status: PlaybookStatus
    generation: int | None = None
    digest: str | None = None
    """`pins.digest` of the spec: what a run pins, compared with the run in flight."""

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.name, self.spec, self.generation)


def parse_playbook(
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    generation: int | None = None,
    jobs: config.JobsConfig = validation.DEFAULT_JOBS,
) -> PlaybookEntry | str:
    """A Playbook as the engine uses it, or why it is invalid (it is marked Invalid and never runs);
    `jobs` is the operator's Job policy (`jobs:` in its config)."""
    parsed, found = validation.problems(dict(spec), jobs)
    if parsed is None or found:
        return "; ".join(found) or "invalid spec"
    try:
        parsed_status = PlaybookStatus.model_validate(dict(status))
    except ValidationError:
        return "unreadable status"
    return PlaybookEntry(name, parsed, parsed_status, generation, pins.digest(parsed))


@dataclass(frozen=True)
class Run:
    """The run in flight, as the loop executes it: its pinned Playbook (with the live Playbook's
    status, for cooldowns and counters) and the live version compared with the pin."""

    entry: PlaybookEntry
    live: pins.LiveVersion | None


class PlaybookListings:
    """The API's listing of a namespace's Playbooks, one at a time per namespace and shared: a
    caller joins the next listing that has not started yet (so what it gets was read after it
    asked), and a listing starts when the one before it ended. A storm of incidents in one
    namespace costs a listing per listing's duration, not one per incident."""

    def __init__(self, list_objects: Callable[..., Awaitable[list[dict[str, Any]]]]) -> None:
        self._list = list_objects
        self._next: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}
        self._running: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, namespace: str) -> list[dict[str, Any]]:
        future = self._next.get(namespace)
        if future is None:
            future = self._next[namespace] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(namespace, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():  # the listing was, not this caller: a failed listing to it
                raise ListingCancelled(f"the listing of {namespace}'s Playbooks was cancelled") from None
            raise

    async def _run(self, namespace: str, future: asyncio.Future[list[dict[str, Any]]]) -> None:
        try:
            async with self._running.setdefault(namespace, asyncio.Lock()):
                if self._next.get(namespace) is future:
                    del self._next[namespace]  # who asks from now on waits for the next listing
                try:
                    future.set_result(await self._list("playbooks", namespace))
                except Exception as exc:  # every caller of this listing gets it
                    future.set_exception(exc)
                    future.exception()  # retrieved: no warning when every caller left
        finally:  # cancelled (the operator stops): its callers are told, never left waiting
            if self._next.get(namespace) is future:
                del self._next[namespace]
            if not future.done():
                future.cancel()


class ListingCancelled(Exception):
    """The shared listing a caller waited for was cancelled (not the caller)."""


def index_behind(
    listed: Iterable[Mapping[str, Any]], playbooks: Playbooks, only: str | None = None
) -> list[str]:
    """The Playbooks of `listed` (the API's listing of the namespace) that the watch's index
    `playbooks` lacks, or holds at an older generation: the index is behind the API. With
    `only`, that Playbook alone is looked at (an incident's `playbookRef`)."""
    entries, invalid = playbooks
    known = {e.name: e.generation for e in entries}
    behind = []
    for item in listed:
        metadata = item.get("metadata") or {}
        name, generation = str(metadata.get("name") or ""), metadata.get("generation")
        if name in invalid or (only is not None and name != only):
            continue
        held = known.get(name)
        newer = isinstance(held, int) and isinstance(generation, int) and held < generation
        if name not in known or newer:
            behind.append(name)
    return sorted(behind)


def pinned_run(status: IncidentStatus, playbooks: Playbooks) -> Run | None:
    """The run in flight pinned in `status`, or None (no run, or one started before runs were
    pinned: it goes on with the live Playbook)."""
    progress = status.playbook
    if progress is None or progress.snapshot is None:
        return None
    entries, invalid = playbooks
    current = next((e for e in entries if e.name == progress.name), None)
    live_spec = current.spec if current is not None else None
    entry = PlaybookEntry(
        progress.name,
        pins.pinned_spec(progress.snapshot, live_spec),
        current.status if current is not None else PlaybookStatus(),
        progress.generation,
        progress.digest,
    )
    if current is not None:
        return Run(entry, pins.LiveVersion(current.generation, current.digest, current.spec))
    if progress.name in invalid:
        return Run(entry, pins.LiveVersion(None, None))
    return Run(entry, None)


@functools.cache
def _severity_rules(
    rules: tuple[config.SeverityRule, ...], namespace: str
) -> tuple[config.SeverityRule, ...]:
    """The config's severity rules that apply in `namespace`, as the planner takes them (computed
    once per config and namespace, not on every plan)."""
    return tuple(r for r in rules if not r.namespaces or namespace in r.namespaces)


@functools.cache
def _response_targets(targets: config.ResponseTargets) -> Mapping[Severity, timedelta]:
    return MappingProxyType({s: getattr(targets, str(s)) for s in Severity})


@functools.cache
def _update_every(cadence: config.UpdateCadence) -> Mapping[Severity, timedelta]:
    return MappingProxyType({s: every for s in Severity if (every := cadence.of(s)) is not None})


@dataclass(frozen=True)
class Inputs:
    """Builds the plan input of one incident from its live body, the config and the clock."""

    config: OperatorConfig
    namespace: str
    name: str
    body: Mapping[str, Any]  # kopf's live view: spec and annotation changes show up here
    clock: Callable[[], datetime]
    history: History | None = None
    access_reviews: AccessReviews | None = None
    open_in_namespace: OpenInNamespace | None = None
    started_runs: StartedRuns | None = None
    schedules: ScheduleBook | None = None
    """The watched OnCallSchedules (escalation levels that name one, roles' holders)."""

    def spec(self) -> IncidentSpec:
        return IncidentSpec.model_validate(dict(self.body.get("spec") or {}))

    def build(
        self,
        spec: IncidentSpec,
        selection: Selection,
        status: IncidentStatus,
        *,
        cooldown: datetime | None,
        holder: str | None = None,
        forbidden: str | None,
        busy: bool,
        run: Run | None = None,
        waits_for_slot: str | None = None,
        labels: Mapping[str, Mapping[str, str] | None] | None = None,
    ) -> PlanInput:
        severity = effective_severity(spec, status)
        targets = self.config.file.responseTargets
        levels = self._escalation(severity)
        refs = tuple(level.schedule for level in levels if level.schedule is not None)
        book = self.schedules
        return PlanInput(
            spec=spec,
            status=status,
            generation=self.body.get("metadata", {}).get("generation"),
            selection=selection,
            response_target=getattr(targets, str(severity)),
            now=self.clock(),
            cooldown_until=cooldown,
            cooldown_holder=holder,
            alert=self._alert(spec),
            forbidden=forbidden,
            waits_for_slot=waits_for_slot,
            busy=busy,
            access_recheck=timedelta(seconds=self.config.file.access.recheckSeconds),
            automation_acknowledges=self.config.file.acknowledgement.automationCounts,
            escalation=levels,
            schedules=book.schedules(self.namespace, refs) if book is not None else {},
            namespace=self.namespace,
            tell_channels=self._tell_channels(),
            repeat_of=self._repeat_of() if status.detectedAt is None else None,
            severity_rules=_severity_rules(self.config.file.severityEscalation, self.namespace),
            response_targets=_response_targets(targets),
            update_every=_update_every(self.config.file.communication.updateEvery),
            pinned=run.entry.spec if run is not None else None,
            live=run.live if run is not None else None,
            workload_labels=labels or {},
        )

    def waits_for_slot(self, status: IncidentStatus, *, has_playbook: bool = True) -> str | None:
        """Why this incident's automation waits under `limits.maxOpenIncidentsPerNamespace`
        (`openlimit`), or None: always for an incident the cap does not count, and for one that
        uses no slot (no run in flight, and paused or no playbook to run: `has_playbook`)."""
        spec = self.body.get("spec") or {}
        if self.open_in_namespace is None or not openlimit.counted(spec, status.phase):
            return None
        if status.playbook is None and (spec.get("paused") or not has_playbook):
            return None
        metadata = self.body.get("metadata") or {}
        detected = {"detectedAt": format_time(status.detectedAt)} if status.detectedAt else {}
        me = openlimit.OpenIncident(
            name=self.name,
            uid=str(metadata.get("uid") or ""),
            created=openlimit.created_of(metadata, detected),
            running=status.playbook is not None,
        )
        limit = self.config.file.limits.maxOpenIncidentsPerNamespace
        ranking = self.open_in_namespace()
        started = self.started_runs.of(self.namespace, ranking) if self.started_runs else frozenset()
        return ranking.waits(me, limit, self.namespace, started)

    def said_it_waits(self, status: IncidentStatus) -> bool:
        """Whether its status says its automation waits for a slot (`openlimit`)."""
        return any(
            c.type == ConditionType.AUTOMATION_PAUSED
            and c.status == "True"
            and c.reason == Reason.OPEN_INCIDENT_LIMIT
            for c in status.conditions or []
        )

    def note_run(self, before: IncidentStatus, after: IncidentStatus) -> None:
        """Claim the slot of a run this plan started, before anything awaits (see `slots`); a
        plan without a run holds none."""
        if self.started_runs is None:
            return
        uid = str((self.body.get("metadata") or {}).get("uid") or "")
        if after.playbook is None:
            self.started_runs.release(self.namespace, uid)
        elif before.playbook is None or before.playbook.runId != after.playbook.runId:
            self.started_runs.claim(self.namespace, uid, after.playbook.runId or "")

    def _tell_channels(self) -> tuple[str, ...]:
        """The `oncall.channels` that take this namespace (as escalation channels do): a channel scoped to
        other namespaces never carries this incident's role messages."""
        scopes = {c.name: c.namespaces for c in self.config.file.notifications.channels}
        return tuple(
            n
            for n in self.config.file.oncall.channels
            if n in scopes and (not scopes[n] or self.namespace in scopes[n])
        )

    def _escalation(self, severity: Severity) -> tuple[Level, ...]:
        """The severity's escalation levels, each with its channels that take this namespace
        (a level left with none does not apply here)."""
        notifications = self.config.file.notifications
        policy = notifications.escalation.get(severity)
        if policy is None:
            return ()
        scopes = {c.name: c.namespaces for c in notifications.channels}
        levels = []
        for level in policy.levels:
            channels = tuple(
                n for n in level.channels if n in scopes and (not scopes[n] or self.namespace in scopes[n])
            )
            after = None if level.afterSeconds is None else timedelta(seconds=level.afterSeconds)
            schedule = paging.schedule_key(level.schedule, self.namespace) if level.schedule else None
            if channels:
                levels.append(Level(after, channels, schedule))
        return tuple(levels)

    def _repeat_of(self) -> str | None:
        key = repeats.key_of(self.body.get("spec") or {})
        if key is None or self.history is None:
            return None
        window = timedelta(days=self.config.file.repeats.windowDays)
        return repeats.previous(self.name, self.clock(), self.history(key), window)

    def _alert(self, spec: IncidentSpec) -> AlertState | None:
        if spec.source is None or str(spec.source.type) != "alert":
            return None
        return alerts.alert_state(dict(self.body.get("metadata", {}).get("annotations") or {}))

    async def access_problem(
        self, spec: IncidentSpec, chosen: PlaybookEntry | None, phase: Phase | None
    ) -> str | None:
        """Why the chosen playbook may not run here (a permission the namespace did not grant)."""
        if self.access_reviews is None or chosen is None or phase in (Phase.RESOLVED, Phase.CLOSED):
            return None
        needed = access.required(spec, chosen.spec)
        try:
            denied = await self.access_reviews.denied(self.namespace, needed, time.monotonic())
        except Exception as exc:  # unknown: let the actions try, and report what they meet
            logger.warning("incident %s/%s: access review failed: %s", self.namespace, self.name, exc)
            return None
        if not denied:
            return None
        username = await self.access_reviews.username()
        settings = self.config.file.access
        return access.forbidden_message(
            self.namespace, denied, username, settings.remediatorBinding, settings.jobsBinding
        )
