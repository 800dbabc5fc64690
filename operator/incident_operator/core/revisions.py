"""A workload's rollout history and which revision a rollback goes back to. Pure.

A Deployment's revisions are its ReplicaSets (annotation `deployment.kubernetes.io/revision`,
the pod template without the `pod-template-hash` label); a StatefulSet's are its
ControllerRevisions (`revision`, and `data`: a patch that restores the template). The effects
module reads them from the API and hands them here as `Revision`s; this module chooses, as
`kubectl rollout undo` does: the newest revision older than the current one, or the one asked for.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from incident_operator.api.keys import RESTARTED_AT
from incident_operator.api.timestamps import format_time

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"


@dataclass(frozen=True)
class Revision:
    number: int
    name: str
    """The ReplicaSet or ControllerRevision that holds it (stable while its number moves)."""
    created: datetime | None
    change_cause: str | None
    replicas: int | None = None
    fingerprint: str = ""
    """What the pods run (the template without restart stamps): equal for a restart of the same
    version, so that a rollback after a restart still goes back to the previous version."""

    def describe(self) -> str:
        cause = self.change_cause or "no change-cause"
        when = format_time(self.created) if self.created else "unknown time"
        return f"revision {self.number} ({self.name}, {when}): {cause}"


def revision_number(annotations: dict[str, str] | None) -> int | None:
    raw = (annotations or {}).get(REVISION_ANNOTATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def choose(revisions: list[Revision], current: int | None, wanted: int | None) -> Revision | str:
    """The revision to go back to, or why there is none (the step fails with that reason)."""
    if not revisions:
        return "no rollout history (no earlier ReplicaSet or ControllerRevision)"
    if wanted is not None:
        found = next((r for r in revisions if r.number == wanted), None)
        if found is None:
            known = ", ".join(str(r.number) for r in sorted(revisions, key=lambda r: r.number))
            return f"revision {wanted} not found (known: {known})"
        return found
    if current is None:
        return "the current revision is unknown"
    now = next((r for r in revisions if r.number == current), None)
    running = now.fingerprint if now is not None else ""
    earlier = [r for r in revisions if r.number < current]
    if not earlier:
        return f"no revision before the current one ({current})"
    different = [r for r in earlier if not running or r.fingerprint != running]
    if not different:
        return f"every earlier revision runs what revision {current} runs (only restarts since)"
    return max(different, key=lambda r: r.number)


def fingerprint(template: dict[str, Any] | None) -> str:
    """A digest of a pod template without what a restart or the ReplicaSet adds."""
    clean = template_without_hash(template or {})
    meta = clean.get("metadata")
    if isinstance(meta, dict):
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(RESTARTED_AT, None)
        for key in ("annotations", "labels"):
            if key in meta and not meta[key]:
                del meta[key]
        if not meta:
            del clean["metadata"]
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:16]


def template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as its Deployment would carry it (no pod-template-hash)."""
    result = copy.deepcopy(template)
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return result


def history(revisions: list[Revision], current: int | None) -> list[dict[str, Any]]:
    """The rollout history for evidence: oldest first, the current one marked."""
    return [
        {
            "revision": r.number,
            "name": r.name,
            "created": format_time(r.created) if r.created else None,
            "changeCause": r.change_cause,
            "replicas": r.replicas,
            "current": r.number == current,
        }
        for r in sorted(revisions, key=lambda r: r.number)
    ]
