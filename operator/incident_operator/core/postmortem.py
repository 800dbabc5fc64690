"""The post-mortem draft of an incident, in Markdown, following the seed's template (section 7.1).

Pure: a function of the incident's spec and status and of the time it is written. The operator
writes it into a ConfigMap `<incident>-postmortem` when the incident resolves and again whenever
it changes (a person's root cause, resolution or action items, which live in the spec) until the
incident is closed; `kubectl incident postmortem` prints it. The parts only people can write
(what went well, what did not) are headings for the team, never invented text.
"""

from __future__ import annotations

from datetime import datetime

from incident_operator.api.models import ROLE_TITLES, IncidentSpec, IncidentStatus, Phase, Roles
from incident_operator.api.reasons import ConditionType
from incident_operator.api.timestamps import format_time

SEVERITY_NAMES = {"P1": "Critical", "P2": "High", "P3": "Medium", "P4": "Low"}
TO_BE_WRITTEN = "_To be written by the team._"


def configmap_name(incident: str) -> str:
    return f"{incident}-postmortem"


def _cell(text: str | None) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return (text or "").replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _time(moment: datetime | None) -> str:
    return format_time(moment).replace("T", " ").replace("Z", " UTC") if moment else "—"


def duration(seconds: float | None) -> str:
    """Readable duration: 45 seconds, 12 minutes, 2.5 hours, 3.0 days."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


def _since(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return duration(max(0.0, (end - start).total_seconds()))


def _detection_method(spec: IncidentSpec) -> str:
    source = spec.source
    if spec.drill or (source is not None and str(source.type) == "drill"):
        return "Response drill"
    if source is not None and str(source.type) == "alert":
        started = f", firing since {_time(source.startsAt)}" if source.startsAt else ""
        return f"Automated monitoring alert `{source.alertname}`{started}"
    return "Reported by a person"


def _condition_message(status: IncidentStatus, type_: str) -> str | None:
    for condition in status.conditions or []:
        if condition.type == type_ and condition.status == "True":
            return condition.message
    return None


def render(namespace: str, name: str, spec: IncidentSpec, status: IncidentStatus, now: datetime) -> str:
    """The whole post-mortem draft."""
    severity = str(spec.severity)
    resolution = spec.resolution
    source = spec.source
    targets = ", ".join(f"{t.kind}/{t.name}" for t in spec.targets or []) or "none named"
    phase = str(status.phase or Phase.DETECTED)
    lines = [
        f"# Post-mortem: {spec.title}",
        "",
        f"_Draft written by incident-operator from Incident `{namespace}/{name}`. "
        "Edit the incident (`spec.resolution`, `spec.actionItems`), not this ConfigMap: it is "
        "regenerated until the incident is closed._",
        "",
        "## Summary",
        "",
        f"- **Incident**: `{namespace}/{name}` ({phase})",
        f"- **Severity**: {severity} ({SEVERITY_NAMES.get(severity, severity)})",
        f"- **Category**: {spec.category}",
        f"- **Summary**: {resolution.summary if resolution else TO_BE_WRITTEN}",
    ]
    if status.repeatOf:
        lines.append(f"- **Repeat of**: incident `{status.repeatOf}`")
    for change in status.severityHistory or []:
        what = f"{change.direction} by a person" if change.by == "person" else "escalated"
        lines.append(
            f"- **Severity {what}**: {change.previous} -> {change.severity} at {_time(change.at)} "
            f"({change.reason})"
        )
    if spec.commander:
        lines.append(f"- **Incident Commander**: {spec.commander}")
    roles = spec.roles or Roles()
    for field_name, title in ROLE_TITLES.items():
        if getattr(roles, field_name):
            lines.append(f"- **{title}**: {getattr(roles, field_name)}")
    lines += [
        "",
        "## Impact",
        "",
        f"- **Description**: {spec.description or TO_BE_WRITTEN}",
        f"- **Affected targets**: {targets}",
        "",
        "## Incident Timeline",
        "",
        "### Detection",
        f"- **Time**: {_time(status.detectedAt)}",
        f"- **Method**: {_detection_method(spec)}",
        f"- **Initial Assessment**: {spec.title}",
        "",
        "### Response",
    ]
    if status.acknowledgedAt is not None:
        by = f" by {spec.commander}" if spec.commander else ""
        lines.append(f"- **Acknowledged**: {_time(status.acknowledgedAt)}{by}")
    else:
        lines.append("- **Acknowledged**: not acknowledged by a person")
    breached = _condition_message(status, ConditionType.RESPONSE_TARGET_BREACHED)
    target = f"acknowledge by {_time(status.acknowledgeBy)}"
    lines.append(f"- **Response target**: {target}: " + (f"missed ({breached})" if breached else "met"))
    if status.escalations:
        lines.append(f"- **Escalations**: {status.escalations}")
    if status.playbook is not None:
        steps = ", ".join(f"{s.name} {s.state}" for s in status.playbook.steps)
        lines.append(f"- **Playbook**: `{status.playbook.name}` ({steps})")
    lines += [
        "",
        "### Resolution",
        f"- **Time**: {_time(status.resolvedAt)}",
        f"- **Fix**: {resolution.summary if resolution else 'automated remediation (see the timeline)'}",
        f"- **Verification**: {_condition_message(status, ConditionType.RESOLVED) or '—'}",
        "",
        "### Recovery",
        f"- **Closed**: {_time(status.closedAt) if status.closedAt else 'not yet (review open)'}",
        "",
        "## Response Times",
        "",
        "| measure | at | after detection |",
        "|---|---|---|",
    ]
    if source is not None and source.startsAt is not None:
        lines.append(
            f"| detection (alert start → detected) | {_time(status.detectedAt)} | "
            f"{_since(source.startsAt, status.detectedAt)} to detect |"
        )
    for label, moment in (
        ("acknowledged", status.acknowledgedAt),
        ("mitigated", status.mitigatedAt),
        ("resolved", status.resolvedAt),
        ("closed", status.closedAt),
    ):
        lines.append(f"| {label} | {_time(moment)} | {_since(status.detectedAt, moment)} |")
    lines += ["", "## Full Timeline", "", "| time (UTC) | event | by | details |", "|---|---|---|---|"]
    for entry in status.timeline or []:
        cells = (_time(entry.time), _cell(entry.type), _cell(entry.actor), _cell(entry.message))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Root Cause Analysis",
        "",
        "### What Happened",
        spec.description or spec.title,
        "",
        "### Why It Happened",
        (resolution.rootCause if resolution and resolution.rootCause else TO_BE_WRITTEN),
        "",
        "### How We Fixed It",
        resolution.summary if resolution else TO_BE_WRITTEN,
        "",
        "### Prevention Measures",
        "See the action items below.",
        "",
        "## What Went Well",
        "",
        TO_BE_WRITTEN,
        "",
        "## What Did Not Go Well",
        "",
        TO_BE_WRITTEN,
        "",
        "## Action Items",
        "",
    ]
    items = spec.actionItems or []
    today = now.date()
    for item in items:
        details = [part for part in (item.owner, f"due {item.due.isoformat()}" if item.due else None) if part]
        overdue = " **overdue**" if not item.done and item.due is not None and item.due < today else ""
        suffix = f" ({', '.join(details)})" if details else ""
        lines.append(f"- [{'x' if item.done else ' '}] `{item.id}`: {item.title}{suffix}{overdue}")
    if not items:
        lines.append("_None yet: `kubectl incident action add NAME --id ID --title TEXT`._")
    open_items = [i.id for i in items if not i.done]
    if status.phase is Phase.CLOSED and open_items:
        noun = "action item" if len(open_items) == 1 else "action items"
        lines += ["", f"_Closed with {len(open_items)} {noun} open: {', '.join(open_items)}._"]
    return "\n".join(lines) + "\n"
