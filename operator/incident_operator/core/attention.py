"""Which incidents need a loop at all (pure; cheap enough for every watch event of every incident).

An open incident always does. A Closed one never does. A Resolved one does until it is settled
(scale changes reverted, notices delivered: the planner sets `status.settled`), and again when a
person changes its spec (a root cause, an action item, closing it: the generation moves past
`status.observedGeneration`, and the post-mortem is written again) or its alert resolves or fires
again. Everything else keeps no task in the operator, so ten thousand resolved incidents cost
memory for their watch entries only.

Works on the raw dicts of the object, not the models: parsing every incident on every event
would cost more than the loops it saves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from incident_operator.api.models import Phase
from incident_operator.api.timestamps import parse_time
from incident_operator.core.alerts import alert_state


def needs_loop(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    annotations: Mapping[str, str],
    generation: int | None = None,
) -> bool:
    phase = status.get("phase")
    if phase == Phase.CLOSED:
        return False
    if phase != Phase.RESOLVED or spec.get("closed") or not status.get("settled"):
        return True
    if generation is not None and status.get("observedGeneration") != generation:
        return True
    alert = alert_state(dict(annotations))
    if alert is None:
        return False
    resolved_at = status.get("alertResolvedAt")
    if alert.status == "resolved":
        return resolved_at is None  # to record that the alert resolved
    try:
        return resolved_at is not None and alert.changed_at > parse_time(str(resolved_at))
    except ValueError:
        return True  # unreadable: let the loop look (it reports what it cannot read)
