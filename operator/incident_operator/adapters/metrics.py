"""Every Prometheus metric of the operator, defined once (prefix `incident_operator_`).

Other modules call the functions here; none defines a metric of its own. Served on the
operator's HTTP port at `/metrics`. Counters start at zero when the operator starts (as
Prometheus expects); `incidents_open` is rebuilt from the incidents the operator watches.
Response drills (`spec.drill`) carry `drill="true"` and never mix with production figures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from incident_operator.api.actions import ACTIONS as ACTION_TABLE
from incident_operator.api.models import Category, IncidentSpec, IncidentStatus, Phase, Severity, SourceType
from incident_operator.api.reasons import Reason

# Seconds: 30 s .. 24 h, around the response targets (15 min, 1 h, 4 h, 24 h).
DURATION_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)

INCIDENTS_OPEN = Gauge(
    "incident_operator_incidents_open",
    "Incidents not yet Resolved or Closed, by severity and category (drills excluded).",
    ["severity", "category"],
)
INCIDENTS_TOTAL = Counter(
    "incident_operator_incidents_total",
    "Incidents detected, by severity, category and source (manual, alert, drill).",
    ["severity", "category", "source"],
)
TIME_TO_ACKNOWLEDGE = Histogram(
    "incident_operator_time_to_acknowledge_seconds",
    "Detection to acknowledgement (MTTA).",
    ["severity", "drill"],
    buckets=DURATION_BUCKETS,
)
TIME_TO_MITIGATE = Histogram(
    "incident_operator_time_to_mitigate_seconds",
    "Detection to the first successful mitigating step.",
    ["severity", "drill"],
    buckets=DURATION_BUCKETS,
)
TIME_TO_RESOLVE = Histogram(
    "incident_operator_time_to_resolve_seconds",
    "Detection to resolution (MTTR).",
    ["severity", "drill"],
    buckets=DURATION_BUCKETS,
)
TIME_TO_DETECT = Histogram(
    "incident_operator_time_to_detect_seconds",
    "The alert's start (startsAt) to the operator's detection of the incident (MTTD; alert incidents).",
    ["severity", "drill"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
)
REPEATS = Counter(
    "incident_operator_repeat_incidents_total",
    "Incidents that repeat an earlier one (same alert or category, same targets, inside the window).",
    ["severity"],
)
ESCALATIONS = Counter(
    "incident_operator_escalations_total",
    "Escalation levels reached while no person acknowledged (their channels were told), by level.",
    ["severity", "level"],
)
ACTION_ITEMS_OPEN = Gauge(
    "incident_operator_action_items_open",
    "Action items not done, over the incidents the operator watches (drills excluded).",
)
DRILLS = Counter(
    "incident_operator_drills_total",
    "Drill runs, by result (Passed, Failed, Skipped).",
    ["result"],
)
DRILL_RESPONSE = Histogram(
    "incident_operator_drill_response_seconds",
    "A drill's start (the break) to the response's detection, acknowledgement, mitigation, resolution.",
    ["measure"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
)
RESPONSE_TARGET_BREACHES = Counter(
    "incident_operator_response_target_breaches_total",
    "Incidents not acknowledged within their severity's response target.",
    ["severity"],
)
ACTIONS = Counter(
    "incident_operator_actions_total",
    "Playbook actions carried out, by action and result (succeeded, failed).",
    ["action", "result"],
)
ACTIONS_DEFERRED = Counter(
    "incident_operator_actions_deferred_total",
    "Playbook automation held before it acted, by reason: OpenIncidentLimit (an incident's run waits "
    "under limits.maxOpenIncidentsPerNamespace), CircuitOpen (a mutating step waits under "
    "automation.maxMutatingActions), StormGuard (under automation.maxConcurrentRunsPerPlaybook), "
    "BreakerUnavailable (the breaker's state cannot be read or written), ActionsAboveLimit (a step acts "
    "on more workloads than a limit of automation.maxMutatingActions allows in one window). "
    "Counted once per hold, not per recheck.",
    ["reason"],
)
AUTOMATION_PAUSED = Gauge(
    "incident_operator_automation_paused",
    "Scopes in which the circuit breaker or the storm guard holds a mutating step now, by kind of "
    "scope (cluster: 0 to 2, the cluster-wide window and the cap on runs listed; namespace: "
    "namespaces at automation.maxMutatingActions.perNamespace; playbook: Playbooks at "
    "automation.maxConcurrentRunsPerPlaybook).",
    ["scope"],
)
BREAKER_ERRORS = Counter(
    "incident_operator_breaker_errors_total",
    "Reads and writes of the breaker's state (automation.stateConfigMap) that failed, by reason "
    "(Forbidden, NotFound, TooLarge, Invalid, Contended, or the error's kind): while they fail, "
    "mutating steps wait (Stalled, reason BreakerUnavailable).",
    ["reason"],
)
NOTIFICATIONS = Counter(
    "incident_operator_notifications_total",
    "Notices delivered to channels, by channel (its name in notifications.channels) and result "
    "(succeeded; failed: every attempt failed, reported as NotificationFailed on the incident).",
    ["channel", "result"],
)
LEADER = Gauge(
    "incident_operator_leader",
    "1 while this replica acts (holds the leader Lease, or runs without leader election), 0 on a standby.",
)
ALERTS_RECEIVED = Counter(
    "incident_operator_alerts_received_total",
    "Alerts received from Alertmanager, by status (firing, resolved).",
    ["status"],
)


REPORT_PASSES = Counter(
    "incident_operator_report_passes_total",
    "Passes of the monthly report deliveries (config reports.deliver) the leader made.",
)
REPORT_DELIVERIES = Counter(
    "incident_operator_report_deliveries_total",
    "Monthly reports sent to a channel, by result (sent, failed).",
    ["result"],
)


ALERTS_SKIPPED = Counter(
    "incident_operator_alerts_skipped_total",
    "Alerts that opened or changed nothing, by reason (NotAllowed, QuotaExceeded, NamespaceNotFound, ...).",
    ["reason"],
)


# The series whose labels are known in advance exist from the start (at zero), so that the first
# incident, breach, action or alert after a start is an increase a dashboard's `increase()` sees
# (a series born at 1 shows none). Channels and escalation levels come from the configuration:
# the notifier exports theirs (`notification_channel`, `escalation_levels`).
for _severity in Severity:
    RESPONSE_TARGET_BREACHES.labels(str(_severity))
    for _histogram in (TIME_TO_DETECT, TIME_TO_ACKNOWLEDGE, TIME_TO_MITIGATE, TIME_TO_RESOLVE):
        _histogram.labels(str(_severity), "false")
    for _category in Category:
        for _source in SourceType:
            INCIDENTS_TOTAL.labels(str(_severity), str(_category), str(_source))
for _action in ACTION_TABLE:
    for _result in ("succeeded", "failed"):
        ACTIONS.labels(action=_action, result=_result)
for _status in ("firing", "resolved"):
    ALERTS_RECEIVED.labels(status=_status)
for _reason in (
    Reason.OPEN_INCIDENT_LIMIT,
    Reason.CIRCUIT_OPEN,
    Reason.STORM_GUARD,
    Reason.BREAKER_UNAVAILABLE,
    Reason.ACTIONS_ABOVE_LIMIT,
):
    ACTIONS_DEFERRED.labels(reason=str(_reason))


def alert_skipped(reason: str) -> None:
    ALERTS_SKIPPED.labels(reason=reason).inc()


def action_done(action: str, ok: bool) -> None:
    ACTIONS.labels(action=action, result="succeeded" if ok else "failed").inc()


def notification_done(channel: str, ok: bool) -> None:
    NOTIFICATIONS.labels(channel=channel, result="succeeded" if ok else "failed").inc()


def notification_channel(channel: str) -> None:
    """Export a configured channel's series at zero, so that its first failure is an increase."""
    for result in ("succeeded", "failed"):
        NOTIFICATIONS.labels(channel=channel, result=result)


def escalation_levels(severity: str, levels: int) -> None:
    """Export the escalation series of a configured policy at zero (levels 1..`levels`)."""
    for level in range(1, levels + 1):
        ESCALATIONS.labels(severity, str(level))


def leading(now: bool) -> None:
    LEADER.set(1 if now else 0)


def alert_received(status: str) -> None:
    ALERTS_RECEIVED.labels(status=status).inc()


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def observe_transition(spec: IncidentSpec, old: IncidentStatus, new: IncidentStatus) -> None:
    """Count what changed between two persisted statuses of one incident."""
    severity, drill = str(spec.severity), "true" if is_drill(spec) else "false"
    if old.detectedAt is None and new.detectedAt is not None:
        INCIDENTS_TOTAL.labels(severity, str(spec.category), source(spec)).inc()
        started = spec.source.startsAt if spec.source is not None else None
        elapsed = _seconds(started, new.detectedAt)
        if elapsed is not None:
            TIME_TO_DETECT.labels(severity, drill).observe(elapsed)
    if old.repeatOf is None and new.repeatOf is not None and drill == "false":
        REPEATS.labels(severity).inc()
    before = len(old.escalation.history) if old.escalation else 0
    for entry in (new.escalation.history if new.escalation else [])[before:]:
        if drill == "false":
            ESCALATIONS.labels(severity, str(entry.level)).inc()
    for field, histogram in (
        ("acknowledgedAt", TIME_TO_ACKNOWLEDGE),
        ("mitigatedAt", TIME_TO_MITIGATE),
        ("resolvedAt", TIME_TO_RESOLVE),
    ):
        if getattr(old, field) is None and getattr(new, field) is not None:
            elapsed = _seconds(new.detectedAt, getattr(new, field))
            if elapsed is not None:
                histogram.labels(severity, drill).observe(elapsed)


def drill_done(result: str, measured: Any = None) -> None:
    """Count a drill run; observe its figures (drills.Timings) when it ran."""
    DRILLS.labels(result).inc()
    if measured is None:
        return
    for measure in ("detect", "acknowledge", "mitigate", "resolve"):
        value = getattr(measured, measure)
        if value is not None:
            DRILL_RESPONSE.labels(measure).observe(value)


def breaker_error(reason: str) -> None:
    BREAKER_ERRORS.labels(reason=reason).inc()


def action_deferred(reason: str) -> None:
    ACTIONS_DEFERRED.labels(reason=reason).inc()


def automation_paused_by(paused: Callable[[], dict[str, int]]) -> None:
    """Read `incident_operator_automation_paused` from `paused` (scopes by kind in which a step
    waits now) at every scrape."""

    def reader(scope: str) -> Callable[[], float]:
        return lambda: float(paused().get(scope, 0))

    for scope in ("cluster", "namespace", "playbook"):
        AUTOMATION_PAUSED.labels(scope=scope).set_function(reader(scope))


def breach(spec: IncidentSpec) -> None:
    if not is_drill(spec):
        RESPONSE_TARGET_BREACHES.labels(str(spec.severity)).inc()


def is_drill(spec: IncidentSpec) -> bool:
    return bool(spec.drill) or (spec.source is not None and str(spec.source.type) == "drill")


def source(spec: IncidentSpec) -> str:
    return "drill" if is_drill(spec) else (str(spec.source.type) if spec.source else "manual")


class OpenActionItems:
    """Open action items per incident, so `action_items_open` follows the watched incidents
    (closed ones included: their items stay open until done). Incremental, like OpenIncidents."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._total = 0

    def update(self, uid: str, count: int) -> None:
        with self._lock:
            before = self._open.pop(uid, 0)
            if count:
                self._open[uid] = count
            self._total += count - before
            ACTION_ITEMS_OPEN.set(self._total)


class OpenIncidents:
    """Which incidents are open, so `incidents_open` follows the watched state.

    Incremental: an update moves one incident between label sets (O(1)), so the gauge costs the
    same with ten thousand incidents as with ten.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str, str]] = {}

    def update(self, uid: str, spec: IncidentSpec | None, phase: Phase | None) -> None:
        with self._lock:
            before = self._open.get(uid)
            if spec is None or is_drill(spec) or phase in (Phase.RESOLVED, Phase.CLOSED):
                after = None
                self._open.pop(uid, None)
            else:
                after = (str(spec.severity), str(spec.category))
                self._open[uid] = after
            if before == after:
                return
            if before is not None:
                INCIDENTS_OPEN.labels(*before).dec()
            if after is not None:
                INCIDENTS_OPEN.labels(*after).inc()
