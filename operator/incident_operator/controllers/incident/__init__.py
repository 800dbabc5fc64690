"""The remediation engine: one loop per Incident that plans, persists, acts and records.

Owns the order of effects, which is what makes every step run exactly once:
1. `planner.plan` computes the next status and intent (pure);
2. the status is patched *before* the action: a step is `Running`. For actions that persist
   their own decision before changing anything, or change nothing (`START_UNWRITTEN_ACTIONS`),
   this write is held and goes out with the action's decision or with the outcome;
3. the action runs (idempotent per attempt, see `actions`);
4. `planner.complete` folds the outcome in; the result is held for the next plan, and both go
   out in one patch, before the next action (so an outcome is always written before anything
   else acts, and a transition with nothing to do in between costs no write of its own).
Each record becomes a timeline entry (inside the status), a counter, and for what people read
in `kubectl describe` a Kubernetes Event (`planner.posts_event`; the Normal records of the
status writes within a second share one Event, `planner.events`, `eventhold`). The loop sleeps until the
planner's next deadline or a change of the Incident or its Playbooks, and survives API errors
with a bounded backoff.

Modules, by job (each says what state it owns):
- `loop`: drives the iterations above (`IncidentLoop`, what the supervisor runs);
- `inputs`: gathers what the planner is fed (Playbooks, config, live body, access review);
- `commit`: the status write and what follows it (Events, metrics, notices, run counts);
  the status as written, as planned from, and the decisions held in between;
- `eventhold`: the Events of the incident, held a second so a fast run's writes share one;
- `draft`: the post-mortem draft's ConfigMap, written before the status that names it;
- `ledger`: the Playbook's cooldown claims and run counts;
- `slots`: runs started under the cap on open incidents that the watch does not show yet;
- `execute`: running one intent (an action, a scale revert, the health check).
"""

from incident_operator.controllers.incident.commit import status_patch
from incident_operator.controllers.incident.inputs import (
    PlaybookEntry,
    PlaybookListings,
    Playbooks,
    parse_playbook,
)
from incident_operator.controllers.incident.loop import IncidentLoop

__all__ = ["IncidentLoop", "PlaybookEntry", "PlaybookListings", "Playbooks", "parse_playbook", "status_patch"]
