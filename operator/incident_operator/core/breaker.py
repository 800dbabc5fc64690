"""The circuit breaker and the storm guard: whether a mutating action may start now. Pure.

Per-step guardrails and per-playbook cooldowns bound one incident; these bound automation as a
whole (config `automation`):

- **The circuit breaker**: at most `maxMutatingActions.perNamespace` mutating actions of one
  namespace's incidents, and `clusterWide` of all, within a sliding window of `windowSeconds`.
- **The storm guard**: at most `maxConcurrentRunsPerPlaybook` runs of one Playbook that have acted
  and are still in flight. A run takes its slot with its first mutating action and keeps it until
  it is no longer in flight (its incident resolved, closed or deleted, or a re-fire started
  another run). A run that has acted is never refused by the storm guard: should the stored list
  have lost it (a resume, a drill past `RUN_GRACE`), it takes its slot back, even above the limit,
  rather than stop between two mutating steps (say, before its rollback).

A slot is reserved before every mutating action (a step's start and each retry) in one state
value the operator keeps in the API (a ConfigMap written with its resourceVersion, see
`controllers.automation`), so the limits hold across restarts, replicas and a leader handover.
An action is one workload acted on: a step on the incident's own targets takes one slot per
target it has not done yet (`Request.targets`), all at once or none (it waits until all fit: it
never acts on some of its targets and waits for the rest); a step that needs more slots than a
limit allows in a whole window never fits and does not wait for it: it is refused with reason
`ActionsAboveLimit` (the incident Stalled, the message naming the limit) until a person raises
the limit; a resume does not let it through. A reservation is idempotent: the same step attempt
asks again after a crash and is granted without counting twice (the key of each action is
`<uid>/<run>/<step>/<attempt>[/<Kind>/<name>]`; a step-level key stored before per-target
counting also covers the attempt). A scale revert after a run (`Request.restores`) is counted
but never refused: it restores what a step changed, and refusing it would leave workloads
scaled up. When a limit is reached the action waits (`AutomationPaused`, reason
`CircuitOpen` or `StormGuard`); the first refusal of a limit opens a *trip*, recorded in the
state so that people are told once per trip, whichever replica or incident sees it. A trip ends
a window after the last refusal (while steps keep waiting, the window sliding by one slot at a
time is the same trip), or when a person resumes automation (`resume`: the window, the runs
counted so far and the trips are forgotten). Steps wait only while a limit is reached: a slot
freed is taken at once, whether or not the trip has ended. An attempt that acted on nothing
(it found its workload locked by another incident, or its targets out of bounds) gives back what
it reserved (`release`): waiting for a workload uses no slot.

Time is passed in; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
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
MAX_RUNS = 1000
"""The most runs the state lists (each Playbook's at most `maxConcurrentRunsPerPlaybook`, but
Playbooks are many): a further run's first mutating step waits (`StormGuard`, scope
`cluster/runs`) as a run ends. With `clusterWide` at most 3,000 and the compact stored form
(`to_json`), the state stays well under `MAX_STATE_BYTES`."""
MAX_STATE_BYTES = 900_000
"""The most the stored state may take (a ConfigMap holds 1 MiB with its metadata): a bigger one is
not written (`StateTooLarge`), and the action waits (`BreakerUnavailable`)."""
DATA_KEY = "state"
"""The key of the state ConfigMap's data that holds `to_json`."""

CLUSTER = "cluster"
RUNS_SCOPE = "cluster/runs"
"""The scope of the cap on runs listed (`MAX_RUNS`), counted as a `cluster` scope."""
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
    acted: bool = False
    """An earlier mutating action of this run started already (an earlier mutating step, or an
    earlier attempt of this one): the run holds its storm-guard slot whatever the stored list
    says (a person's resume, the grace of a drill, the open-incidents index lagging may have
    dropped it), so a run is never stopped between its mutating steps."""
    targets: tuple[str, ...] = ()
    """The workloads ('Kind/name') the step acts on, each one action (a step on the incident's
    own targets: those not done yet); empty: the step is one action (a fixed target)."""
    restores: bool = False
    """A scale revert after the run: counted, never refused, takes no storm-guard slot."""

    @property
    def key(self) -> str:
        """The step attempt's key (the one action of a step without targets)."""
        return f"{self.uid}/{self.run}/{self.step}/{self.attempt}"

    @property
    def keys(self) -> tuple[str, ...]:
        """One key per action: per target, or the step attempt's."""
        if not self.targets:
            return (self.key,)
        return tuple(f"{self.key}/{target}" for target in dict.fromkeys(self.targets))


@dataclass(frozen=True)
class Verdict:
    granted: bool
    reason: Reason | None = None
    """CircuitOpen or StormGuard when refused."""
    scope: str | None = None
    message: str = ""
    retry_at: datetime | None = None
    """When to ask again (a refused action)."""
    counted: int = 0
    """Slots this grant took (0: asked again, already counted)."""
    tripped: bool = False
    """This refusal opened the trip: people are told (once per trip)."""
    write: bool = False
    """The state changed in a way that must be written (a slot taken, a trip opened)."""


def _ceil_second(moment: datetime) -> datetime:
    """Said to people to the second: never earlier than the slot frees."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def scope_kind(scope: str) -> str:
    return scope.split("/", 1)[0]


def _window(config: AutomationConfig) -> timedelta:
    return timedelta(seconds=config.maxMutatingActions.windowSeconds)


def _over(state: State, scope: str, config: AutomationConfig, need: int = 1) -> bool:
    """Whether `need` more actions (or one more run) would pass the limit of `scope` in (pruned)
    `state`."""
    kind, _, rest = scope.partition("/")
    limits = config.maxMutatingActions
    if kind == CLUSTER:
        return len(state.actions) + need > limits.clusterWide
    if kind == NAMESPACE:
        return sum(a.namespace == rest for a in state.actions) + need > limits.perNamespace
    namespace, _, playbook = rest.partition("/")
    held = sum(r.namespace == namespace and r.playbook == playbook for r in state.runs)
    return held >= config.maxConcurrentRunsPerPlaybook


def _frees(actions: list[Action], limit: int, need: int, window: timedelta) -> datetime:
    """When enough of `actions` (at or above `limit`) have left the window for `need` more."""
    leave = len(actions) + need - limit  # at least 1: the scope is over
    ordered = sorted(a.at for a in actions)
    return ordered[min(leave, len(ordered)) - 1] + window


def _needs(request: Request, need: int) -> str:
    """Said when a step needs more than one slot."""
    if need <= 1:
        return ""
    return f" (step {request.step} acts on {need} workloads: it takes {need} slots at once or waits)"


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
    stored = {a.key for a in state.actions}

    def counted(key: str) -> bool:
        return key in stored or digest(key) in stored

    if counted(request.key):
        return state, Verdict(granted=True)  # asked again (after a crash, or stored per step): once
    missing = [key for key in request.keys if not counted(key)]
    if not missing:
        return state, Verdict(granted=True)  # asked again (after a crash): counted once
    need = len(missing)
    if request.restores:  # counted, never refused (even above a limit)
        added = tuple(Action(now, request.namespace, key) for key in missing)
        return replace(state, actions=(*state.actions, *added)), Verdict(True, write=True, counted=need)
    above = _above_limit(request, need, config, now)
    if above is not None:
        return state, above
    limits = config.maxMutatingActions
    window = limits.windowSeconds
    playbook_scope = f"{PLAYBOOK}/{request.namespace}/{request.playbook}"
    listed = any(r.uid == request.uid and r.run == request.run for r in state.runs)
    run_held = listed or request.acted
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
    if refusal is None and not run_held and len(state.runs) >= MAX_RUNS:
        refusal = (
            Reason.STORM_GUARD,
            RUNS_SCOPE,
            f"storm guard: {len(state.runs)} runs that acted are in flight cluster-wide, the most the "
            f"breaker's state lists ({MAX_RUNS}); this run's mutating steps wait until one of them ends, "
            "or a person runs `kubectl incident automation resume`",
            now + RECHECK,
        )
    namespace_scope = f"{NAMESPACE}/{request.namespace}"
    slot = "a slot" if need == 1 else f"{need} slots"
    if refusal is None and _over(state, namespace_scope, config, need):
        mine = [a for a in state.actions if a.namespace == request.namespace]
        frees = _frees(mine, limits.perNamespace, need, _window(config))
        refusal = (
            Reason.CIRCUIT_OPEN,
            namespace_scope,
            f"circuit breaker open: {len(mine)} mutating actions in namespace {request.namespace} within "
            f"{window}s, the limit automation.maxMutatingActions.perNamespace ({limits.perNamespace})"
            f"{_needs(request, need)}; mutating steps wait until {format_time(_ceil_second(frees))} (the "
            f"window frees {slot}), or a person runs `kubectl incident automation resume`",
            frees,
        )
    if refusal is None and _over(state, CLUSTER, config, need):
        frees = _frees(list(state.actions), limits.clusterWide, need, _window(config))
        refusal = (
            Reason.CIRCUIT_OPEN,
            CLUSTER,
            f"circuit breaker open: {len(state.actions)} mutating actions cluster-wide within {window}s, "
            f"the limit automation.maxMutatingActions.clusterWide ({limits.clusterWide})"
            f"{_needs(request, need)}; "
            f"mutating steps wait until {format_time(_ceil_second(frees))} (the window frees {slot}), or "
            "a person runs `kubectl incident automation resume`",
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
    if not listed:  # a run that acted and was dropped from the list takes its slot back
        runs = (*runs, RunSlot(now, request.namespace, request.playbook, request.uid, request.run))
    added = tuple(Action(now, request.namespace, key) for key in missing)
    state = replace(state, actions=(*state.actions, *added), runs=runs)
    return state, Verdict(granted=True, write=True, counted=need)


def release(state: State, request: Request) -> State | None:
    """Give back what `request` reserved when its attempt acted on nothing (it waited for another
    incident's lock, `TargetBusy`, or its targets left the bounds, `OutOfBounds`): its actions'
    keys, and its run's storm-guard slot when the run had not acted before this attempt
    (`Request.acted`); so a step that waits for hours neither uses slots nor counts again as the
    window slides. Idempotent: None when there is nothing to give back (nothing to write). A scale
    revert (`restores`) is never given back."""
    if request.restores:
        return None
    keys = set(request.keys)
    keys |= {digest(key) for key in keys}
    actions = tuple(a for a in state.actions if a.key not in keys)
    runs = state.runs
    if not request.acted:
        runs = tuple(r for r in runs if not (r.uid == request.uid and r.run == request.run))
    if len(actions) == len(state.actions) and len(runs) == len(state.runs):
        return None
    return replace(state, actions=actions, runs=runs)


def _above_limit(request: Request, need: int, config: AutomationConfig, now: datetime) -> Verdict | None:
    """A step needing more slots than a limit gives in a whole window: it never fits, so it is
    refused at once (reason `ActionsAboveLimit`, no trip, nothing written) rather than wait for
    ever; it goes once a person raises the limit (a resume empties the window, which is not
    enough). None: it may fit."""
    limits = config.maxMutatingActions
    for scope, name, limit in (
        (f"{NAMESPACE}/{request.namespace}", "perNamespace", limits.perNamespace),
        (CLUSTER, "clusterWide", limits.clusterWide),
    ):
        if need > limit:
            message = (
                f"step {request.step} acts on {need} workloads, more than "
                f"automation.maxMutatingActions.{name} ({limit}) allows within {limits.windowSeconds}s; "
                f"it takes all its slots at once, so it never fits and none of them is touched: raise "
                f"automation.maxMutatingActions.{name} to at least {need}, or act by hand and resolve "
                "the incident (resuming automation does not lift a limit)"
            )
            return Verdict(False, Reason.ACTIONS_ABOVE_LIMIT, scope, message, now + RECHECK)
    return None


def resume(state: State, now: datetime, by: str | None = None) -> State:
    """A person closes the breaker: the window so far, the runs counted and every trip are
    forgotten; counting starts again from now (a run that has acted takes its storm-guard slot
    back with its next mutating step, see `Request.acted`)."""
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


class StateTooLarge(ValueError):
    """The state would not fit its ConfigMap (`MAX_STATE_BYTES`)."""


def encode(state: State) -> str:
    """`to_json`, refused (`StateTooLarge`) above `MAX_STATE_BYTES`."""
    text = to_json(state)
    size = len(text.encode())
    if size > MAX_STATE_BYTES:
        raise StateTooLarge(f"{size} bytes, above the {MAX_STATE_BYTES} one ConfigMap holds safely")
    return text


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded up: a slot never frees early."""
    micro = (moment - EPOCH) // timedelta(microseconds=1)
    return -(-micro // 1000)


def from_ms(value: object) -> datetime:
    """A stored time: milliseconds since the epoch, or (as first stored) RFC 3339."""
    if isinstance(value, int) and not isinstance(value, bool):
        return EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        return parse_time(value)
    raise ValueError(value)


def digest(key: str) -> str:
    """The stored form of an action's key: 16 hex digits of its SHA-256 (only ever compared)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def to_json(state: State) -> str:
    """The state as stored: compact JSON, times in milliseconds since the epoch (rounded up),
    action keys as digests (about 100 bytes an action at most)."""
    body: dict[str, Any] = {
        "actions": [[to_ms(a.at), a.namespace, digest(a.key)] for a in state.actions],
        "runs": [[to_ms(r.at), r.namespace, r.playbook, r.uid, r.run] for r in state.runs],
        "trips": {
            scope: [to_ms(trip.since), to_ms(trip.last)] for scope, trip in sorted(state.trips.items())
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
            actions.append(Action(from_ms(at), str(namespace), str(key)))
        except (TypeError, ValueError):
            continue
    for item in raw.get("runs") or []:
        try:
            at, namespace, playbook, uid, run = item
            runs.append(RunSlot(from_ms(at), str(namespace), str(playbook), str(uid), str(run)))
        except (TypeError, ValueError):
            continue
    for scope, item in (raw.get("trips") or {}).items() if isinstance(raw.get("trips"), dict) else ():
        try:
            since, last = item
            trips[str(scope)] = Trip(from_ms(since), from_ms(last))
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
