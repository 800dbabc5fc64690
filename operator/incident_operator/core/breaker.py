"""The circuit breaker and the storm guard: whether a mutating action may start now. Pure.

Per-step guardrails and per-playbook cooldowns bound one incident; these bound automation as a
whole (config `automation`):

- **The circuit breaker**: at most `maxMutatingActions.perNamespace` mutating actions of one
  namespace's incidents, and `clusterWide` of all, within a sliding window of `windowSeconds`.
- **The storm guard**: at most `maxConcurrentRunsPerPlaybook` runs of one Playbook that have acted
  and are still in flight. A run takes its slot with its first mutating action and keeps it until
  it is no longer in flight (its incident resolved, closed or deleted, or a re-fire started
  another run).

A slot is reserved before every mutating action (a step's start and each retry) in one state
value the operator keeps in the API (a ConfigMap written with its resourceVersion, see
`controllers.automation`), so the limits hold across restarts, replicas and a leader handover.
A reservation is idempotent: the same step attempt asks again after a crash and is granted
without counting twice. When a limit is reached the action waits (`AutomationPaused`, reason
`CircuitOpen` or `StormGuard`); the first refusal of a limit opens a *trip*, recorded in the
state so that people are told once per trip, whichever replica or incident sees it. A trip ends
a window after the last refusal (while steps keep waiting, the window sliding by one slot at a
time is the same trip), or when a person resumes automation (`resume`: the window, the runs
counted so far and the trips are forgotten). Steps wait only while a limit is reached: a slot
freed is taken at once, whether or not the trip has ended.

Time is passed in; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from incident_operator.api.reasons import Reason
from incident_operator.api.timestamps import format_time, parse_time
from incident_operator.settings.config import AutomationConfig

RUN_GRACE = timedelta(seconds=120)
"""A run that took its storm-guard slot counts for at least this long, even where the open
incidents index does not show it in flight yet (its status write has not come back as a watch
event), or at all (a drill: drills are not indexed)."""
RECHECK = timedelta(seconds=10)
"""How soon a refused step asks again at the latest: under the storm guard no time frees its slot
(a run ending does), and under the circuit breaker a person's resume is seen as soon."""
DATA_KEY = "state"
"""The key of the state ConfigMap's data that holds `to_json`."""

CLUSTER = "cluster"
NAMESPACE = "namespace"
PLAYBOOK = "playbook"
SCOPE_KINDS = (CLUSTER, NAMESPACE, PLAYBOOK)
"""The kinds of scope a trip has (the label of `incident_operator_automation_paused`)."""

InFlight = Callable[[str, str, str], bool | None]
"""(namespace, incident uid, run id) -> whether that run is still in flight; None: unknown
(kept)."""


@dataclass(frozen=True)
class Action:
    """One mutating action counted by the circuit breaker."""

    at: datetime
    namespace: str
    key: str
    """`<incident uid>/<run id>/<step>/<attempt>`: asked again, it is the same action."""


@dataclass(frozen=True)
class RunSlot:
    """One run holding a storm-guard slot of its Playbook."""

    at: datetime
    namespace: str
    playbook: str
    uid: str
    run: str


@dataclass(frozen=True)
class Trip:
    """A limit reached and an action refused: people are told once, when it opens."""

    since: datetime
    last: datetime
    """The last refusal written (refreshed at most every third of the window while actions are
    refused): the trip closes a window after it."""


@dataclass(frozen=True)
class State:
    """What the breaker keeps in the API."""

    actions: tuple[Action, ...] = ()
    runs: tuple[RunSlot, ...] = ()
    trips: Mapping[str, Trip] = field(default_factory=dict)
    """Open trips by scope (`cluster`, `namespace/NS`, `playbook/NS/NAME`)."""
    resumed_at: datetime | None = None
    resumed_by: str | None = None


@dataclass(frozen=True)
class Request:
    """A mutating action about to start."""

    namespace: str
    uid: str
    run: str
    step: str
    attempt: int
    playbook: str

    @property
    def key(self) -> str:
        return f"{self.uid}/{self.run}/{self.step}/{self.attempt}"


@dataclass(frozen=True)
class Verdict:
    granted: bool
    reason: Reason | None = None
    """CircuitOpen or StormGuard when refused."""
    scope: str | None = None
    message: str = ""
    retry_at: datetime | None = None
    """When to ask again (a refused action)."""
    tripped: bool = False
    """This refusal opened the trip: people are told (once per trip)."""
    write: bool = False
    """The state changed in a way that must be written (a slot taken, a trip opened)."""


def scope_kind(scope: str) -> str:
    return scope.split("/", 1)[0]


def _window(config: AutomationConfig) -> timedelta:
    return timedelta(seconds=config.maxMutatingActions.windowSeconds)


def _over(state: State, scope: str, config: AutomationConfig) -> bool:
    """Whether the limit of `scope` is reached in (pruned) `state`."""
    kind, _, rest = scope.partition("/")
    limits = config.maxMutatingActions
    if kind == CLUSTER:
        return len(state.actions) >= limits.clusterWide
    if kind == NAMESPACE:
        return sum(a.namespace == rest for a in state.actions) >= limits.perNamespace
    namespace, _, playbook = rest.partition("/")
    held = sum(r.namespace == namespace and r.playbook == playbook for r in state.runs)
    return held >= config.maxConcurrentRunsPerPlaybook


def prune(state: State, config: AutomationConfig, now: datetime, in_flight: InFlight | None = None) -> State:
    """Forget actions older than the window, runs no longer in flight (after `RUN_GRACE`), and
    trips with no refusal for a whole window (a limit reached again and again as the window
    slides, with steps waiting all along, is one trip, not one per slot freed)."""
    since = now - _window(config)
    actions = tuple(a for a in state.actions if a.at > since)
    runs = tuple(
        r
        for r in state.runs
        if r.at > now - RUN_GRACE or in_flight is None or in_flight(r.namespace, r.uid, r.run) is not False
    )
    pruned = replace(state, actions=actions, runs=runs)
    trips = {scope: trip for scope, trip in state.trips.items() if trip.last > since}
    return replace(pruned, trips=trips)


def reserve(
    state: State,
    request: Request,
    config: AutomationConfig,
    now: datetime,
    in_flight: InFlight | None = None,
) -> tuple[State, Verdict]:
    """Take a slot for `request`, or say why it waits. Returns the state to keep and the verdict
    (write the state when `verdict.write`)."""
    state = prune(state, config, now, in_flight)
    if any(a.key == request.key for a in state.actions):
        return state, Verdict(granted=True)  # asked again (after a crash): counted once
    limits = config.maxMutatingActions
    window = limits.windowSeconds
    playbook_scope = f"{PLAYBOOK}/{request.namespace}/{request.playbook}"
    run_held = any(r.uid == request.uid and r.run == request.run for r in state.runs)
    refusal: tuple[Reason, str, str, datetime] | None = None
    if not run_held and _over(state, playbook_scope, config):
        count = sum(r.namespace == request.namespace and r.playbook == request.playbook for r in state.runs)
        refusal = (
            Reason.STORM_GUARD,
            playbook_scope,
            f"storm guard: {count} runs of Playbook {request.namespace}/{request.playbook} have acted "
            f"and are in flight, the limit automation.maxConcurrentRunsPerPlaybook "
            f"({config.maxConcurrentRunsPerPlaybook}); this run's mutating steps wait until one of them "
            "ends, or a person runs `kubectl incident automation resume`",
            now + RECHECK,
        )
    namespace_scope = f"{NAMESPACE}/{request.namespace}"
    if refusal is None and _over(state, namespace_scope, config):
        mine = [a for a in state.actions if a.namespace == request.namespace]
        frees = min(a.at for a in mine) + _window(config)
        refusal = (
            Reason.CIRCUIT_OPEN,
            namespace_scope,
            f"circuit breaker open: {len(mine)} mutating actions in namespace {request.namespace} within "
            f"{window}s, the limit automation.maxMutatingActions.perNamespace ({limits.perNamespace}); "
            f"mutating steps wait until {format_time(frees)} (the window frees a slot), or a person runs "
            "`kubectl incident automation resume`",
            frees,
        )
    if refusal is None and _over(state, CLUSTER, config):
        frees = min(a.at for a in state.actions) + _window(config)
        refusal = (
            Reason.CIRCUIT_OPEN,
            CLUSTER,
            f"circuit breaker open: {len(state.actions)} mutating actions cluster-wide within {window}s, "
            f"the limit automation.maxMutatingActions.clusterWide ({limits.clusterWide}); mutating steps "
            f"wait until {format_time(frees)} (the window frees a slot), or a person runs "
            "`kubectl incident automation resume`",
            frees,
        )
    if refusal is not None:
        reason, scope, message, retry_at = refusal
        retry_at = min(retry_at, now + RECHECK)  # a person's resume is seen as soon
        trip = state.trips.get(scope)
        tripped = trip is None
        refresh = trip is not None and now - trip.last >= _window(config) / 3
        if tripped or refresh:
            state = replace(state, trips={**state.trips, scope: Trip(trip.since if trip else now, now)})
        write = tripped or refresh
        verdict = Verdict(False, reason, scope, message, max(retry_at, now), tripped=tripped, write=write)
        return state, verdict
    runs = state.runs
    if not run_held:
        runs = (*runs, RunSlot(now, request.namespace, request.playbook, request.uid, request.run))
    state = replace(state, actions=(*state.actions, Action(now, request.namespace, request.key)), runs=runs)
    return state, Verdict(granted=True, write=True)


def resume(state: State, now: datetime, by: str | None = None) -> State:
    """A person closes the breaker: the window so far, the runs counted and every trip are
    forgotten; counting starts again from now."""
    return State(resumed_at=now, resumed_by=by)


def tripped_counts(scopes: Iterable[str]) -> dict[str, int]:
    """Scopes by kind (every kind present, 0 when none): the paused gauge."""
    counts = dict.fromkeys(SCOPE_KINDS, 0)
    for scope in scopes:
        kind = scope_kind(scope)
        if kind in counts:
            counts[kind] += 1
    return counts


# ----------------------------------------------------------------------------- the stored form


def to_json(state: State) -> str:
    """The state as stored (compact JSON, one time format)."""
    body: dict[str, Any] = {
        "actions": [[format_time(a.at), a.namespace, a.key] for a in state.actions],
        "runs": [[format_time(r.at), r.namespace, r.playbook, r.uid, r.run] for r in state.runs],
        "trips": {
            scope: [format_time(trip.since), format_time(trip.last)]
            for scope, trip in sorted(state.trips.items())
        },
    }
    if state.resumed_at is not None:
        body["resumedAt"] = format_time(state.resumed_at)
    if state.resumed_by:
        body["resumedBy"] = state.resumed_by
    return json.dumps(body, separators=(",", ":"))


def from_json(text: str | None) -> State:
    """The stored state; what cannot be read is left out (an empty or broken value is an empty
    state: a person who may write it may resume automation anyway)."""
    if not text:
        return State()
    try:
        raw = json.loads(text)
    except ValueError:
        return State()
    if not isinstance(raw, dict):
        return State()
    actions, runs, trips = [], [], dict[str, Trip]()
    for item in raw.get("actions") or []:
        try:
            at, namespace, key = item
            actions.append(Action(parse_time(str(at)), str(namespace), str(key)))
        except (TypeError, ValueError):
            continue
    for item in raw.get("runs") or []:
        try:
            at, namespace, playbook, uid, run = item
            runs.append(RunSlot(parse_time(str(at)), str(namespace), str(playbook), str(uid), str(run)))
        except (TypeError, ValueError):
            continue
    for scope, item in (raw.get("trips") or {}).items() if isinstance(raw.get("trips"), dict) else ():
        try:
            since, last = item
            trips[str(scope)] = Trip(parse_time(str(since)), parse_time(str(last)))
        except (TypeError, ValueError):
            continue
    resumed_at = None
    if raw.get("resumedAt"):
        try:
            resumed_at = parse_time(str(raw["resumedAt"]))
        except ValueError:
            resumed_at = None
    by = raw.get("resumedBy")
    return State(tuple(actions), tuple(runs), trips, resumed_at, str(by) if by else None)


def describe(state: State) -> list[str]:
    """Lines for people (`kubectl incident automation status`): what the state records (the
    plugin does not know the operator's window, so nothing is pruned), and the open trips."""
    per_namespace: dict[str, int] = {}
    for action in state.actions:
        per_namespace[action.namespace] = per_namespace.get(action.namespace, 0) + 1
    oldest = f", the oldest at {format_time(min(a.at for a in state.actions))}" if state.actions else ""
    lines = [f"mutating actions recorded in the window: {len(state.actions)}{oldest}"]
    lines += [f"  {ns}: {n}" for ns, n in sorted(per_namespace.items())]
    per_playbook: dict[str, int] = {}
    for run in state.runs:
        key = f"{run.namespace}/{run.playbook}"
        per_playbook[key] = per_playbook.get(key, 0) + 1
    lines.append("runs that acted, per Playbook:")
    lines += [f"  {pb}: {n}" for pb, n in sorted(per_playbook.items())] or ["  none"]
    if state.trips:
        lines.append("paused:")
        lines += [
            f"  {scope} since {format_time(trip.since)}, last refused {format_time(trip.last)}"
            for scope, trip in sorted(state.trips.items())
        ]
    else:
        lines.append("paused: no")
    if state.resumed_at is not None:
        by = f" by {state.resumed_by}" if state.resumed_by else ""
        lines.append(f"last resumed {format_time(state.resumed_at)}{by}")
    return lines
