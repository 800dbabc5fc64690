"""What to tell people, and in which shape. Pure.

`notices` turns one committed change of an incident (old status, new status, the records of the
change) into notices: opened, phase, stepFailed, breached, resolved, updateOverdue (the reminder
of the update cadence), update (a public update, for statuspage channels), and for paging: escalated
(to the level's channels), acknowledged and resolved (to every channel that paged for it).
`channels_for` picks the channels. One function per channel type renders a notice: `slack_body`,
`webhook_body`, `statuspage_body` (and `statuspage_io` for Statuspage's API), `pagerduty` (Events
API v2), `opsgenie` (Alert API), `email` (plain text and HTML from the same text).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase, Severity, StatusUpdate
from incident_operator.api.reasons import Reason
from incident_operator.api.timestamps import format_time
from incident_operator.core.paging import Addressee
from incident_operator.core.planner import OPERATOR_ACTOR, Record, communication
from incident_operator.settings.channels import (
    Channel,
    ChannelBase,
    EmailChannel,
    NotificationEvent,
    OpsgenieChannel,
    PagerDutyChannel,
    StatuspageChannel,
)
from incident_operator.settings.config import Notifications, StatusPageConfig
from incident_operator.settings.templates import render

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
    channels: tuple[str, ...] = ()
    """Channels this notice goes to whatever they subscribe to (escalation, paging follow-ups)."""
    update_at: datetime | None = None
    """An `update` notice: the time of the public update it announces (`spec.updates[].time`)."""
    cluster_wide: bool = False
    """Also for every channel subscribed to the event with no namespace filter, whatever its
    severities (a cluster-scope trip: the platform hears of it whichever namespace tripped it;
    a channel filtered to other namespaces does not, as it would read their incident's name)."""
    person: Addressee | None = None
    """The person it is addressed to (`core.paging`): email to them, Slack mentioning them,
    Opsgenie with them as responder, PagerDuty naming them; the channels' recipients otherwise."""
    personal: bool = False
    """Told to `person` only, through the channels it names and no other (the overdue-update
    reminder: the channels subscribed to the event get a notice of their own); a channel that
    cannot reach them sends nothing (never to its own recipients)."""
    mentioned_in: tuple[str, ...] = ()
    """Channels a `personal` twin of this notice reaches by Slack, mentioning its person: a Slack
    channel among them posts the news once (that mention), not once more unaddressed."""


@dataclass(frozen=True)
class IncidentView:
    namespace: str
    name: str
    spec: IncidentSpec
    phase: Phase
    page_ids: Mapping[str, str] = field(default_factory=dict)
    """Statuspage incident ids by channel, as recorded on the Incident (see `page_id_annotation`)."""
    effective: Severity | None = None
    """status.effectiveSeverity: the severity a rule escalated the incident to, if any."""

    @property
    def severity(self) -> Severity:
        """What notices say and channels filter on: the severity the incident is treated as."""
        return self.effective or self.spec.severity


def notices(
    old: IncidentStatus, new: IncidentStatus, records: Sequence[Record], view: IncidentView
) -> list[Notice]:
    title = f"[{view.severity}] {view.spec.title} ({view.namespace}/{view.name})"
    found: list[Notice] = []
    reasons = {r.reason: r for r in records}
    if Reason.DETECTED in reasons:
        found.append(Notice("opened", f"{title}: opened, {view.spec.category}"))
    elif (
        old.phase is not None
        and new.phase is not None
        and old.phase != new.phase
        and new.phase not in (Phase.RESOLVED,)
    ):
        found.append(Notice("phase", f"{title}: {old.phase} -> {new.phase}"))
    paged = tuple(
        dict.fromkeys(c for e in (new.escalation.history if new.escalation else []) for c in e.channels)
    )
    for record in records:
        if record.reason == Reason.STEP_FAILED:
            found.append(Notice("stepFailed", f"{title}: {record.message}"))
        elif record.reason == Reason.RESPONSE_TARGET_BREACHED:
            found.append(
                Notice("breached", f"{title}: not acknowledged within the {view.severity} response target")
            )
        elif record.reason == Reason.ESCALATED:
            message = f"{title}: escalated, {record.message}"
            found.append(Notice("escalated", message, record.channels, person=record.person))
        elif record.reason == Reason.ROLE_TOLD and record.person is not None:
            you = f"{record.person.name}, you are {record.role or 'given a role'}"
            message = f"{title}: {you} (kubectl -n {view.namespace} get incident {view.name})"
            found.append(Notice("roleAssigned", message, record.channels, person=record.person))
        elif record.reason == Reason.ACKNOWLEDGED and record.actor != OPERATOR_ACTOR and paged:
            found.append(Notice("acknowledged", f"{title}: acknowledged by {record.actor}", paged))
        elif record.reason == Reason.RESOLVED:
            found.append(Notice("resolved", f"{title}: resolved. {record.message}", paged))
        elif record.reason == Reason.UPDATE_OVERDUE:
            person = record.person
            slack = record.channels if person is not None and _slack_id(person) else ()
            found.append(Notice("updateOverdue", f"{title}: {record.message}", mentioned_in=slack))
            if person is not None:
                message = f"{title}: {person.name}, {record.message}"
                found.append(Notice("updateOverdue", message, record.channels, person=person, personal=True))
        elif record.reason == Reason.PUBLIC_UPDATE:
            found.append(Notice("update", f"{title}: {record.message}", update_at=record.update_at))
        elif record.reason == Reason.AUTOMATION_TRIPPED:  # once per trip, whichever incident saw it
            message = f"automation paused: {record.message}"
            found.append(Notice("automationPaused", message, cluster_wide=record.cluster_wide))
    return found


def channels_for(
    config: Notifications, notice: Notice, view: IncidentView, page: StatusPageConfig
) -> list[Channel]:
    """The channels that take the notice: those subscribed to its event (within their severity
    and namespace filters; a cluster-wide notice also every one of them without a namespace
    filter), and those it names (the engine chose them for this namespace).
    A `statuspage` channel takes only public incidents (`page.publishes`, the status page's rule).
    A `personal` notice goes only to the channels it names; a Slack channel its personal twin
    mentions the person in (`mentioned_in`) does not take it."""
    if notice.personal:
        return [c for c in config.channels if c.name in notice.channels]
    return [
        c
        for c in config.channels
        if not (c.type == "slack" and c.name in notice.mentioned_in)
        and (
            c.name in notice.channels
            or (
                notice.event in c.takes
                and (not c.severities or view.severity in c.severities)
                and (not c.namespaces or view.namespace in c.namespaces)
            )
            or (notice.cluster_wide and notice.event in c.takes and not c.namespaces)
        )
        and (c.type != "statuspage" or page.publishes(view.namespace, view.spec))
    ]


def public_updates(spec: IncidentSpec) -> list[StatusUpdate]:
    """The updates marked `public: true`, oldest first (an update without it is internal)."""
    return communication.public_updates(spec.updates)


def page_status(spec: IncidentSpec, phase: Phase, update: StatusUpdate | None = None) -> str:
    """The status word a status page shows (Investigating, Identified, Monitoring, Resolved):
    Resolved once the incident is; else the word of `update` (or of the newest public update)
    when it names one; else the phase's."""
    if phase in (Phase.RESOLVED, Phase.CLOSED):
        return STATUSPAGE_STATUS[phase]
    updates = public_updates(spec)
    chosen = update or (updates[-1] if updates else None)
    if chosen is not None and chosen.status is not None:
        return chosen.status.capitalize()
    return STATUSPAGE_STATUS[phase]


def announced(notice: Notice, spec: IncidentSpec) -> StatusUpdate | None:
    """The public update an `update` notice announces (None: another notice, or the update is gone)."""
    if notice.update_at is None:
        return None
    return next((u for u in reversed(public_updates(spec)) if u.time == notice.update_at), None)


def public_text(channel: StatuspageChannel, notice: Notice, view: IncidentView) -> str:
    """What a status page is told of a notice: the latest public update, or the status and the
    title; through the channel's template, which sees only public fields. Never the notice's own
    text (step failures, job logs, who acknowledged) nor the description."""
    updates = public_updates(view.spec)
    update = announced(notice, view.spec) or (updates[-1] if updates else None)
    status = page_status(view.spec, view.phase, update)
    said = update.message if update is not None else f"{status}: {view.spec.title}"
    if channel.template is None:
        return said
    values = {
        "title": view.spec.title,
        "severity": str(view.severity),
        "phase": status,
        "event": notice.event,
        "notice": said,
    }
    return render(channel.template, {k: v for k, v in values.items() if k in channel.public_fields})


def slack_escape(value: str) -> str:
    """Slack's escaping of message text: `&`, `<` and `>` as entities, so text that came from
    people cannot write a control sequence (`<!channel>`, `<@U123>`, `<http://x|y>` links)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def text(channel: ChannelBase, notice: Notice, view: IncidentView, escape: Callable[[str], str] = str) -> str:
    """The notice's text, through the channel's template if it has one. `escape` applies to what
    came from people (the notice, the incident's fields), not to the template itself: that is
    the operator's configuration, and may use the channel's formatting on purpose."""
    if channel.template is None:
        return escape(notice.message)
    values = {
        "name": view.name,
        "namespace": view.namespace,
        "title": view.spec.title,
        "description": view.spec.description or "",
        "severity": str(view.severity),
        "category": str(view.spec.category),
        "phase": str(view.phase),
        "commander": view.spec.commander or "",
        "event": notice.event,
        "notice": notice.message,
    }
    return render(channel.template, {k: escape(v) for k, v in values.items()})


def link(channel: ChannelBase, view: IncidentView) -> str | None:
    if channel.linkTemplate is None:
        return None
    return render(channel.linkTemplate, {"name": view.name, "namespace": view.namespace})


PAGERDUTY_SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}
PAGERDUTY_ACTION = {"escalated": "trigger", "acknowledged": "acknowledge", "resolved": "resolve"}


def dedup_key(view: IncidentView) -> str:
    """One page per incident in the paging system: its trigger, acknowledgement and resolution
    carry the same key (PagerDuty's dedup_key, Opsgenie's alias)."""
    return f"incident-operator/{view.namespace}/{view.name}"


def pagerduty(
    channel: PagerDutyChannel, notice: Notice, view: IncidentView, routing_key: str
) -> dict[str, object]:
    """An Events API v2 event: trigger on escalation, acknowledge and resolve afterwards."""
    event: dict[str, object] = {
        "routing_key": routing_key,
        "event_action": PAGERDUTY_ACTION.get(notice.event, "trigger"),
        "dedup_key": dedup_key(view),
    }
    if event["event_action"] == "trigger":
        targets = ", ".join(f"{t.kind}/{t.name}" for t in view.spec.targets or [])
        event["payload"] = {
            "summary": (for_person(notice) + text(channel, notice, view))[:1024],
            "source": f"{view.namespace}/{view.name}",
            "severity": PAGERDUTY_SEVERITY[str(view.severity)],
            "component": targets or None,
            "group": view.namespace,
            "class": str(view.spec.category),
            "custom_details": {
                "incident": f"{view.namespace}/{view.name}",
                "title": view.spec.title,
                "phase": str(view.phase),
                "kubectl": f"kubectl -n {view.namespace} get incident {view.name}",
            },
        }
        href = link(channel, view)
        if href:
            event["links"] = [{"href": href, "text": f"incident {view.namespace}/{view.name}"}]
    return event


OPSGENIE_PRIORITY = {"P1": "P1", "P2": "P2", "P3": "P3", "P4": "P4"}


def opsgenie(channel: OpsgenieChannel, notice: Notice, view: IncidentView) -> tuple[str, dict[str, object]]:
    """(path under the API URL, body) of an Alert API request: create on escalation, then
    acknowledge and close by alias."""
    alias = dedup_key(view)
    if notice.event in ("acknowledged", "resolved"):
        verb = "acknowledge" if notice.event == "acknowledged" else "close"
        path = f"/v2/alerts/{quote(alias, safe='')}/{verb}?identifierType=alias"
        return path, {"source": "incident-operator", "note": text(channel, notice, view)[:25000]}
    href = link(channel, view)
    details = {"incident": f"{view.namespace}/{view.name}", "phase": str(view.phase)}
    if href:
        details["link"] = href
    body: dict[str, object] = {
        "message": f"[{view.severity}] {view.spec.title}"[:130],
        "alias": alias,
        "description": (for_person(notice) + text(channel, notice, view))[:15000],
        "priority": OPSGENIE_PRIORITY[str(view.severity)],
        "source": "incident-operator",
        "tags": [str(view.spec.category), view.namespace],
        "details": details,
    }
    person = notice.person
    if person is not None and person.opsgenieUser:
        body["responders"] = [{"type": "user", "username": person.opsgenieUser}]
        details["onCall"] = person.name
    return "/v2/alerts", body


def email(channel: EmailChannel, notice: Notice, view: IncidentView) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of a notice: both bodies from the same text."""
    body = text(channel, notice, view)
    facts = [
        ("Incident", f"{view.namespace}/{view.name}"),
        ("Severity", str(view.severity)),
        ("Category", str(view.spec.category)),
        ("Phase", str(view.phase)),
        ("Commander", view.spec.commander or "none yet"),
    ]
    href = link(channel, view)
    if href:
        facts.append(("Link", href))
    subject = f"[{view.severity}] {view.spec.title}: {notice.event}"[:200]
    plain = (
        body
        + "\n\n"
        + "\n".join(f"{k}: {v}" for k, v in facts)
        + (f"\n\nkubectl -n {view.namespace} get incident {view.name}\n")
    )
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts
    )
    rich = (
        f"<!doctype html><html><body><p>{html.escape(body)}</p><table>{rows}</table>"
        f"<p><code>kubectl -n {html.escape(view.namespace)} get incident {html.escape(view.name)}</code></p>"
        "</body></html>"
    )
    return subject, plain, rich


def for_person(notice: Notice) -> str:
    """'for alice (on call in ns/primary): ' before a page's text, when it is addressed to someone."""
    person = notice.person
    if person is None:
        return ""
    return f"for {person.name} (on call in {person.schedule}): " if notice.event == "escalated" else ""


def _slack_id(person: Addressee | None) -> str | None:
    """Their Slack member id if it is one ([A-Z0-9]+, checked by the schedule's CRD and here:
    nothing else may become a control sequence)."""
    if person is None or not person.slackId or not person.slackId.isalnum():
        return None
    return person.slackId


def slack_mention(notice: Notice) -> str:
    """`<@ID> ` mentioning the person a notice is addressed to."""
    found = _slack_id(notice.person)
    return f"<@{found}> " if found else ""


def slack_body(channel: ChannelBase, notice: Notice, view: IncidentView) -> dict[str, object]:
    """A Slack incoming webhook's body, what people wrote escaped (`slack_escape`), mentioning
    the person it is addressed to."""
    return {"text": slack_mention(notice) + text(channel, notice, view, slack_escape)}


def statuspage_body(channel: StatuspageChannel, notice: Notice, view: IncidentView) -> dict[str, object]:
    """Our status page shape (a `statuspage` channel in `json` mode): one `id` per incident, and
    only what the status page shows (`public_text`, the public updates)."""
    body: dict[str, object] = {
        "id": dedup_key(view),
        "action": "create" if notice.event == "opened" else "update",
        "title": view.spec.title,
        "status": page_status(view.spec, view.phase, announced(notice, view.spec)),
        "impact": STATUSPAGE_IMPACT[str(view.severity)],
        "message": public_text(channel, notice, view),
        "updates": [
            {
                "time": format_time(u.time),
                "status": communication.update_word(u, view.phase),
                "message": u.message,
            }
            for u in public_updates(view.spec)
        ],
        "incident": f"{view.namespace}/{view.name}",
    }
    if view.spec.estimatedResolution is not None:
        body["estimatedResolution"] = format_time(view.spec.estimatedResolution)
    if notice.update_at is not None:
        body["update"] = format_time(notice.update_at)
    return body


def webhook_body(channel: ChannelBase, notice: Notice, view: IncidentView) -> dict[str, object]:
    """A JSON webhook's body: the notice with the incident's fields."""
    body: dict[str, object] = {
        "event": notice.event,
        "incident": view.name,
        "namespace": view.namespace,
        "title": view.spec.title,
        "severity": str(view.severity),
        "category": str(view.spec.category),
        "phase": str(view.phase),
        "message": text(channel, notice, view),
    }
    if notice.person is not None:
        body["person"] = notice.person.name
    return body


def statuspage_io(
    channel: StatuspageChannel, notice: Notice, view: IncidentView, page_incident: str | None
) -> tuple[str, str, dict[str, object]]:
    """(method, path under the API URL, body) for Statuspage's incident API: create the page
    incident the first time, then update that one."""
    incident: dict[str, object] = {
        "status": page_status(view.spec, view.phase, announced(notice, view.spec)).lower(),
        "body": public_text(channel, notice, view),
    }
    base = f"/v1/pages/{quote(channel.pageId or '', safe='')}/incidents"
    if page_incident is not None:
        return "PATCH", f"{base}/{quote(page_incident, safe='')}", {"incident": incident}
    incident.update(
        name=view.spec.title,
        impact_override=STATUSPAGE_IMPACT[str(view.severity)],
        metadata={"incident_operator": {"incident": f"{view.namespace}/{view.name}"}},
    )
    return "POST", base, {"incident": incident}
