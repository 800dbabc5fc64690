"""The step planner: incident + playbook + clock → the next status and the next intent.

Pure: no kopf, no Kubernetes client, no I/O, time passed in. The engine calls `plan` whenever
something may have changed; it persists `Decision.status` (if it differs), records
`Decision.records` (timeline entry + Event + counter), then carries out `Decision.intent`. The
outcome of an action goes back through `complete`, which returns the next status.

Exactly once: a step is marked `Running` (attempts + 1) in a persisted status *before* its action
runs, and `Succeeded`/`Failed` after. A step found `Running` after a crash is resumed with the same
attempt, and every action is idempotent for a given attempt (see `actions`).

The parts: `model` (input and decision), `builder` (one decision in the making), `incident`
(the incident's own life: `plan`, `check_deadlines`), `steps` (a playbook run, `complete`).
"""

from incident_operator.core.planner.builder import backoff, bound_timeline, with_records
from incident_operator.core.planner.incident import check_deadlines, effective_severity, plan
from incident_operator.core.planner.model import (
    BUSY_RECHECK_S,
    HEALTH_GRACE_S,
    HEALTH_RECHECK_S,
    OPERATOR_ACTOR,
    RETRY_BACKOFF_MAX_S,
    TIMELINE_LIMIT,
    AlertState,
    AutomationHold,
    Decision,
    Intent,
    IntentKind,
    Level,
    Outcome,
    PlanInput,
    Record,
    cooldown_until,
    events,
    posts_event,
)
from incident_operator.core.planner.steps import complete, pods_to_delete, scale_decision

__all__ = [
    "BUSY_RECHECK_S",
    "HEALTH_GRACE_S",
    "HEALTH_RECHECK_S",
    "OPERATOR_ACTOR",
    "RETRY_BACKOFF_MAX_S",
    "TIMELINE_LIMIT",
    "AlertState",
    "AutomationHold",
    "Decision",
    "Intent",
    "IntentKind",
    "Level",
    "Outcome",
    "PlanInput",
    "Record",
    "backoff",
    "bound_timeline",
    "check_deadlines",
    "complete",
    "cooldown_until",
    "effective_severity",
    "events",
    "plan",
    "pods_to_delete",
    "posts_event",
    "scale_decision",
    "with_records",
]
