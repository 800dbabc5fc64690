"""Which Playbook handles an Incident. Pure.

With `spec.playbookRef`, that Playbook (in the Incident's namespace) or nothing. Without it,
the highest-`priority` Playbook whose `match` fits: every part that is given must match
(severity in `severities`, category in `categories`, the alert's name in `alertnames`, and
each of `labels` equal to the alert's label). Ties break by name, so the choice is stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from incident_operator.api.models import IncidentSpec, Match, PlaybookSpec
from incident_operator.api.reasons import Reason


@dataclass(frozen=True)
class Candidate:
    name: str
    spec: PlaybookSpec
    generation: int | None = None
    """metadata.generation of the Playbook (pinned by a run that starts with it)."""


@dataclass(frozen=True)
class Selection:
    """The chosen playbook, or why there is none (`reason` is a condition reason)."""

    playbook: Candidate | None
    reason: Reason
    message: str


def matches(match: Match, incident: IncidentSpec) -> bool:
    source = incident.source
    labels = (source.labels if source else None) or {}
    alertname = source.alertname if source else None
    if match.severities is not None and incident.severity not in match.severities:
        return False
    if match.categories is not None and incident.category not in match.categories:
        return False
    if match.alertnames is not None and alertname not in match.alertnames:
        return False
    return all(labels.get(key) == value for key, value in (match.labels or {}).items())


def select(
    incident: IncidentSpec, playbooks: Iterable[Candidate], invalid: Mapping[str, str] | None = None
) -> Selection:
    """Choose among valid `playbooks`; `invalid` (name: why) are never chosen, and said so."""
    available = list(playbooks)
    invalid = invalid or {}
    if incident.playbookRef is not None:
        wanted = incident.playbookRef.name
        for candidate in available:
            if candidate.name == wanted:
                return Selection(candidate, Reason.PLAYBOOK_SELECTED, f"playbook {wanted} (playbookRef)")
        if wanted in invalid:
            return Selection(
                None,
                Reason.INVALID_PLAYBOOK,
                f"playbook {wanted} is Invalid and never runs: {invalid[wanted]}",
            )
        return Selection(
            None, Reason.PLAYBOOK_NOT_FOUND, f"playbookRef names {wanted}, which does not exist here"
        )
    fitting = [c for c in available if matches(c.spec.match, incident)]
    if not fitting:
        skipped = f"; Invalid, not considered: {', '.join(sorted(invalid))}" if invalid else ""
        return Selection(
            None,
            Reason.NO_MATCHING_PLAYBOOK,
            f"none of {len(available)} playbooks matches severity {incident.severity}, "
            f"category {incident.category}{skipped}",
        )
    best = sorted(fitting, key=lambda c: (-c.spec.priority, c.name))[0]
    return Selection(
        best, Reason.PLAYBOOK_SELECTED, f"playbook {best.name} (priority {best.spec.priority}, matched)"
    )
