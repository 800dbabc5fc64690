"""What to tell people, and in which shape. Pure.

`notices` turns one committed change of an incident (old status, new status, the records of the
change) into notices: opened, phase, stepFailed, breached, resolved. `channels_for` picks the
configured channels (plus, on a breach, the severity's escalation channels). `payload` renders a
notice for a Slack incoming webhook, a generic JSON webhook, or a status page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from incident_operator.config import Channel, NotificationEvent, Notifications
from incident_operator.models import IncidentSpec, IncidentStatus, Phase
from incident_operator.planner import Record
from incident_operator.templates import render

STATUSPAGE_STATUS = {
    Phase.DETECTED: "Investigating",
    Phase.ACKNOWLEDGED: "Investigating",
    Phase.INVESTIGATING: "Investigating",
    Phase.MITIGATING: "Identified",
    Phase.MONITORING: "Monitoring",
    Phase.RESOLVED: "Resolved",
    Phase.CLOSED: "Resolved",
}
STATUSPAGE_IMPACT = {"P1": "critical", "P2": "major", "P3": "minor", "P4": "none"}


@dataclass(frozen=True)
class Notice:
    event: NotificationEvent
    message: str


@dataclass(frozen=True)
class IncidentView:
    namespace: str
    name: str
    spec: IncidentSpec
    phase: Phase


def notices(
    old: IncidentStatus, new: IncidentStatus, records: Sequence[Record], view: IncidentView
) -> list[Notice]:
    title = f"[{view.spec.severity}] {view.spec.title} ({view.namespace}/{view.name})"
    found: list[Notice] = []
    reasons = {r.reason: r for r in records}
    if "Detected" in reasons:
        found.append(Notice("opened", f"{title}: opened, {view.spec.category}"))
    elif (
        old.phase is not None
        and new.phase is not None
        and old.phase != new.phase
        and new.phase not in (Phase.RESOLVED,)
    ):
        found.append(Notice("phase", f"{title}: {old.phase} -> {new.phase}"))
    for record in records:
        if record.reason == "StepFailed":
            found.append(Notice("stepFailed", f"{title}: {record.message}"))
        elif record.reason == "ResponseTargetBreached":
            found.append(
                Notice(
                    "breached", f"{title}: not acknowledged within the {view.spec.severity} response target"
                )
            )
        elif record.reason == "Resolved":
            found.append(Notice("resolved", f"{title}: resolved. {record.message}"))
    return found


def channels_for(config: Notifications, notice: Notice, view: IncidentView) -> list[Channel]:
    chosen = [
        c
        for c in config.channels
        if notice.event in c.events
        and (not c.severities or view.spec.severity in c.severities)
        and (not c.namespaces or view.namespace in c.namespaces)
    ]
    if notice.event == "breached":
        names = set(config.escalation.get(view.spec.severity, ()))
        chosen += [
            c
            for c in config.channels
            if c.name in names and c not in chosen and (not c.namespaces or view.namespace in c.namespaces)
        ]
    return chosen


def text(channel: Channel, notice: Notice, view: IncidentView) -> str:
    if channel.template is None:
        return notice.message
    values = {
        "name": view.name,
        "namespace": view.namespace,
        "title": view.spec.title,
        "description": view.spec.description or "",
        "severity": str(view.spec.severity),
        "category": str(view.spec.category),
        "phase": str(view.phase),
        "commander": view.spec.commander or "",
        "event": notice.event,
        "notice": notice.message,
    }
    return render(channel.template, values)


def payload(channel: Channel, notice: Notice, view: IncidentView) -> dict[str, object]:
    message = text(channel, notice, view)
    if channel.type == "slack":
        return {"text": message}
    if channel.type == "statuspage":
        return {
            "title": view.spec.title,
            "status": STATUSPAGE_STATUS[view.phase],
            "impact": STATUSPAGE_IMPACT[str(view.spec.severity)],
            "message": message,
            "incident": f"{view.namespace}/{view.name}",
        }
    return {
        "event": notice.event,
        "incident": view.name,
        "namespace": view.namespace,
        "title": view.spec.title,
        "severity": str(view.spec.severity),
        "category": str(view.spec.category),
        "phase": str(view.phase),
        "message": message,
    }
