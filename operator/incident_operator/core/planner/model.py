"""What the planner takes and gives: its input, its decision (status, intent, records). Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    PlaybookSpec,
    Severity,
)
from incident_operator.api.reasons import TIMELINE_ONLY, Reason
from incident_operator.core.matching import Selection
from incident_operator.core.paging import Addressee, Schedules
from incident_operator.core.pins import LiveVersion
from incident_operator.settings.config import SeverityRule


@dataclass(frozen=True)
class AlertState:
    """The alert's last recorded state (from the Incident's annotations)."""

    status: Literal["firing", "resolved"]
    changed_at: datetime


TIMELINE_LIMIT = 100
RETRY_BACKOFF_MAX_S = 30
HEALTH_GRACE_S = 300  # after the stabilization window, how long health may take to hold
HEALTH_RECHECK_S = 1
BUSY_RECHECK_S = 2
"""How soon a step waiting for another incident's lock on its workload (TargetBusy) tries again."""
BUSY_SLOW_AFTER_S = 60
BUSY_RECHECK_SLOW_S = 10
"""... and how soon once it has waited BUSY_SLOW_AFTER_S (the holder's run may wait for hours)."""
OPERATOR_ACTOR = "incident-operator"
"""The actor of what the operator itself does (timeline, Events); a person's name otherwise."""

IntentKind = Literal["run-step", "verify-health", "revert-scale"]


@dataclass(frozen=True)
class Intent:
    kind: IntentKind
    step: int = -1  # index into the playbook's steps (run-step, revert-scale)


@dataclass(frozen=True)
class Record:
    """Something worth telling humans: one timeline entry, one Event, one counter increment."""

    reason: Reason
    message: str
    warning: bool = False
    actor: str = OPERATOR_ACTOR
    playbook_counter: Literal["runs", "succeeded", "failed"] | None = None
    """Which counter of the Playbook's status this record increments, if any."""
    channels: tuple[str, ...] = ()
    """Notification channels this record is for in particular (an escalation level's)."""
    update_at: datetime | None = None
    """A public update's time (PublicUpdate): the notice carries that update."""
    cluster_wide: bool = False
    """It concerns every namespace (a cluster-scope trip of the breaker): its notice also goes to
    the channels subscribed to its event that filter no namespace, whatever their severities."""
    role: str | None = None
    """The role (its title) a RoleTold record tells its person of."""
    person: Addressee | None = None
    """The person its notice is addressed to (the one on call a level's schedule named; a role's
    holder), through its `channels`."""


@dataclass(frozen=True)
class Level:
    """One escalation level as it applies to an incident (its channels that take the namespace)."""

    after: timedelta | None
    """After detection; None: when the response target passes."""
    channels: tuple[str, ...]
    schedule: str | None = None
    """`NAMESPACE/NAME` of the OnCallSchedule whose person on call the channels are addressed to."""


def posts_event(record: Record) -> bool:
    """Whether a record is also posted as a Kubernetes Event (every warning and human action is;
    see TIMELINE_ONLY; the operator's own acknowledgement comes with PlaybookStarted and says the
    same thing)."""
    if record.warning or record.actor != OPERATOR_ACTOR:
        return True
    if record.reason == Reason.ACKNOWLEDGED:
        return False
    return record.reason not in TIMELINE_ONLY


EVENT_MESSAGE_MAX = 1024
"""An Event's message is cut to this many characters (as kopf cuts one: its start and its end)."""
EVENT_JOIN = " | "
"""Between the messages of the Normal records one Event carries (`events`)."""
_CUT = "..."


def events(records: Sequence[Record]) -> list[Record]:
    """The Events one status write posts for its `records` (those `posts_event` admits), in
    order: each Warning its own; the Normal ones folded into one, at the place of the last, with
    its reason (the most advanced: e.g. PlaybookStarted after Detected, Resolved after
    StepSucceeded) and the messages of all of them joined in order (EVENT_JOIN), cut to
    EVENT_MESSAGE_MAX keeping its start and its end. So a one-step lifecycle, two status writes,
    posts two Events; the timeline keeps every record."""
    posted = [r for r in records if posts_event(r)]
    normal = [r for r in posted if not r.warning]
    if len(normal) < 2:
        return posted
    message = EVENT_JOIN.join(r.message for r in normal)
    if len(message) > EVENT_MESSAGE_MAX:
        half = (EVENT_MESSAGE_MAX - len(_CUT)) // 2
        message = message[:half] + _CUT + message[-(EVENT_MESSAGE_MAX - len(_CUT) - half) :]
    last = max(i for i, r in enumerate(posted) if not r.warning)
    folded = dataclasses.replace(posted[last], message=message)
    return [folded if i == last else r for i, r in enumerate(posted) if r.warning or i == last]


@dataclass
class Decision:
    status: IncidentStatus
    intent: Intent | None = None
    wake_at: datetime | None = None
    records: list[Record] = field(default_factory=list)


@dataclass(frozen=True)
class AutomationHold:
    """The circuit breaker or the storm guard refused the slot of the mutating step the plan
    would start (see `core.breaker`): the step waits."""

    reason: Reason
    """CircuitOpen or StormGuard."""
    message: str
    retry_at: datetime
    """When to ask again."""


@dataclass(frozen=True)
class PlanInput:
    spec: IncidentSpec
    status: IncidentStatus
    generation: int | None
    selection: Selection
    response_target: timedelta
    now: datetime
    cooldown_until: datetime | None = None
    cooldown_holder: str | None = None
    """The incident whose run holds the cooldown, if known."""
    alert: AlertState | None = None
    """For incidents opened by an alert: the alert's state as the intake recorded it."""
    forbidden: str | None = None
    """Why the operator may not run the playbook in this namespace (see `access`), or None."""
    waits_for_slot: str | None = None
    """Why the incident's automation waits for a slot under the namespace's cap on open incidents
    (see `openlimit`), or None: it may run."""
    automation_hold: AutomationHold | None = None
    """The breaker refused the slot of the mutating step this plan would start (asked after a
    first plan, as the cooldown is), or None."""
    access_recheck: timedelta = timedelta(seconds=30)
    """How soon to look again while `forbidden`."""
    busy: bool = False
    """Work of the engine's in flight (notifications being delivered): not settled yet."""
    automation_acknowledges: bool = False
    """Config `acknowledgement.automationCounts`: a playbook starting acknowledges the incident."""
    escalation: tuple[Level, ...] = ()
    """The severity's escalation policy (config), levels in order."""
    schedules: Schedules = field(default_factory=dict)
    """The OnCallSchedules the escalation levels name and those of the incident's namespace."""
    namespace: str = ""
    """The incident's namespace (where a role's holder is looked up in the schedules)."""
    tell_channels: tuple[str, ...] = ()
    """Config `oncall.channels`: where a role's holder is told of the role."""
    repeat_of: str | None = None
    """An earlier incident this one repeats (looked up by the engine; used at detection only)."""
    severity_rules: tuple[SeverityRule, ...] = ()
    """The config's `severityEscalation` rules that apply in the incident's namespace."""
    """Config `severityEscalation`: when the incident is treated as more severe."""
    response_targets: Mapping[Severity, timedelta] = field(default_factory=dict)
    """Every severity's response target (an escalated severity re-targets the deadline)."""
    pinned: PlaybookSpec | None = None
    """The run in flight's snapshot (`status.playbook.snapshot`) as a spec: what the run executes."""
    live: LiveVersion | None = None
    """The run's Playbook as it is now (None: deleted), compared with the pin."""
    update_every: Mapping[Severity, timedelta] = field(default_factory=dict)
    """Config `communication.updateEvery`: how often an open incident publishes an update, per
    severity (a severity absent: no cadence)."""
    workload_labels: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)
    """The labels of the incident's workloads ('Kind/name'), read by the engine when the run's
    Playbook bounds its steps on the incident's targets by a selector (`core.targets`)."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    blocked: Reason | None = None
    """Not a failure: the step cannot run until a person fixes something (e.g. Misconfigured).
    The step is Blocked, the incident Stalled with this reason, and the step is tried again
    later without using up an attempt."""


def cooldown_until(
    playbook: PlaybookSpec, targets: list[str], last_runs: dict[str, datetime] | None
) -> datetime | None:
    """When the playbook may run again on any of `targets` ('Kind/name'), or None if it may now."""
    if playbook.cooldownSeconds <= 0 or not last_runs:
        return None
    window = timedelta(seconds=playbook.cooldownSeconds)
    ends = [last_runs[t] + window for t in targets if t in last_runs]
    return max(ends) if ends else None
