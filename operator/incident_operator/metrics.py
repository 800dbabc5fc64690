"""Every Prometheus metric of the operator, defined once (prefix `incident_operator_`).

Other modules call the small functions here; none defines a metric of its own. Served on the
operator's HTTP port at `/metrics` (added with the metrics feature).
"""

from __future__ import annotations

from prometheus_client import Counter

ACTIONS = Counter(
    "incident_operator_actions_total",
    "Playbook actions carried out, by action and result (succeeded, failed).",
    ["action", "result"],
)


def action_done(action: str, ok: bool) -> None:
    ACTIONS.labels(action=action, result="succeeded" if ok else "failed").inc()
