"""The public status page (seed 4.2): what users may know about incidents, and nothing else.

Pure: built from Incident objects as the API returns them and the `statusPage` config. Only
public incidents appear (`StatusPageConfig.publishes`: never a drill, only in the listed
`namespaces`, there `spec.public`, or a severity in `publicSeverities` unless `spec.public:
false`), and of each only: its title, the status in the words users know (Investigating,
Identified, Monitoring, Resolved), the impact, the affected services (named components, or the
workloads' names), when it started, was last updated and was resolved, its estimated resolution
(`spec.estimatedResolution`, until resolved), and the updates marked `public: true` (an update
without it is internal), oldest first in JSON, newest first in HTML, each with its status word
(`updates[].status`, else the phase's). Nothing from status beyond the phase and its times (no
playbook, steps, pods, evidence, timeline or conditions) is ever read into the page, so nothing
internal can leak into it. Rendered as HTML that needs no JavaScript, JSON, and an Atom feed.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase
from incident_operator.api.timestamps import format_time
from incident_operator.core.notices import STATUSPAGE_IMPACT, page_status, public_updates
from incident_operator.core.planner.communication import update_word
from incident_operator.settings.config import StatusPageConfig

IMPACT_ORDER = ("none", "minor", "major", "critical")
IMPACT_WORDS = {
    "none": "No impact",
    "minor": "Minor impact",
    "major": "Major impact",
    "critical": "Critical impact",
}


@dataclass(frozen=True)
class Update:
    time: datetime
    message: str
    status: str = ""
    """Its status word (investigating, identified, monitoring, resolved): its own, else the
    incident's phase's now."""


@dataclass(frozen=True)
class PublicIncident:
    id: str
    title: str
    status: str
    impact: str
    services: tuple[str, ...]
    started: datetime
    updated: datetime
    resolved: datetime | None
    updates: tuple[Update, ...]
    estimated: datetime | None = None
    """spec.estimatedResolution, while the incident is not resolved."""


@dataclass(frozen=True)
class Page:
    title: str
    generated: datetime
    current: tuple[PublicIncident, ...]
    history: tuple[PublicIncident, ...]

    @property
    def overall(self) -> str:
        if not self.current:
            return "All systems operational"
        worst = max((i.impact for i in self.current), key=IMPACT_ORDER.index)
        return {"critical": "Major outage", "major": "Partial outage"}.get(worst, "Degraded performance")


def _one(obj: Mapping[str, Any], config: StatusPageConfig) -> PublicIncident | None:
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    if namespace not in config.namespaces:
        return None
    try:
        spec = IncidentSpec.model_validate(obj.get("spec") or {})
        status = IncidentStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        return None
    if not config.publishes(namespace, spec) or status.detectedAt is None:
        return None
    phase = status.phase or Phase.DETECTED
    updates = tuple(
        sorted(
            (Update(u.time, u.message, update_word(u, phase)) for u in public_updates(spec)),
            key=lambda u: u.time,
        )
    )
    moments = [status.detectedAt, status.mitigatedAt, status.monitoringSince, status.resolvedAt]
    moments += [u.time for u in updates]
    services = tuple(
        dict.fromkeys(config.components.get(f"{t.kind}/{t.name}", t.name) for t in spec.targets or [])
    )
    return PublicIncident(
        id=f"{metadata.get('namespace', '')}-{metadata.get('name', '')}",
        title=spec.title,
        status=page_status(spec, phase),
        impact=STATUSPAGE_IMPACT[str(spec.severity)],
        services=services,
        started=status.detectedAt,
        updated=max(m for m in moments if m is not None),
        resolved=status.resolvedAt,
        updates=updates,
        estimated=spec.estimatedResolution if status.resolvedAt is None else None,
    )


def build(objects: Iterable[Mapping[str, Any]], config: StatusPageConfig, now: datetime) -> Page:
    found = [i for i in (_one(o, config) for o in objects) if i is not None]
    current = sorted((i for i in found if i.resolved is None), key=lambda i: i.started, reverse=True)
    since = now - timedelta(days=config.historyDays)
    history = sorted(
        (i for i in found if i.resolved is not None and i.resolved >= since),
        key=lambda i: i.resolved or i.started,
        reverse=True,
    )
    return Page(config.title, now, tuple(current), tuple(history))


def _incident_json(i: PublicIncident) -> dict[str, Any]:
    return {
        "id": i.id,
        "title": i.title,
        "status": i.status,
        "impact": i.impact,
        "services": list(i.services),
        "started": format_time(i.started),
        "updated": format_time(i.updated),
        "resolved": format_time(i.resolved) if i.resolved else None,
        "estimatedResolution": format_time(i.estimated) if i.estimated else None,
        "updates": [
            {"time": format_time(u.time), "status": u.status, "message": u.message} for u in i.updates
        ],
    }


def to_json(page: Page) -> dict[str, Any]:
    return {
        "title": page.title,
        "status": page.overall,
        "generated": format_time(page.generated),
        "incidents": [_incident_json(i) for i in page.current],
        "history": [_incident_json(i) for i in page.history],
    }


def _when(moment: datetime) -> str:
    return f"<time datetime='{format_time(moment)}'>{moment.strftime('%Y-%m-%d %H:%M UTC')}</time>"


def _incident_html(i: PublicIncident) -> str:
    e = html.escape
    services = ", ".join(i.services) or "not named"
    updates = (
        "".join(
            f"<li>{_when(u.time)} · <strong>{e(u.status.capitalize())}</strong>: {e(u.message)}</li>"
            for u in reversed(i.updates)
        )
        or "<li>No update yet.</li>"
    )
    resolved = f"<p>Resolved {_when(i.resolved)}</p>" if i.resolved else ""
    if i.estimated is not None:
        resolved += f"<p>Estimated resolution {_when(i.estimated)}</p>"
    return (
        f"<article aria-labelledby='{e(i.id)}'><h3 id='{e(i.id)}'>{e(i.title)}</h3>"
        f"<p><strong>{e(i.status)}</strong> · {e(IMPACT_WORDS[i.impact])} · Affected: {e(services)}</p>"
        f"<p>Started {_when(i.started)} · Last updated {_when(i.updated)}</p>{resolved}"
        f"<h4>Updates</h4><ol reversed>{updates}</ol></article>"
    )


def to_html(page: Page, base_url: str | None = None) -> str:
    """The page as HTML; its links to the JSON and the feed under `base_url` (statusPage.baseURL),
    or relative to the site's root without one."""
    e = html.escape
    base = e(base_url or "")
    current = "".join(_incident_html(i) for i in page.current) or "<p>No incidents right now.</p>"
    history = "".join(_incident_html(i) for i in page.history) or "<p>No incidents in this period.</p>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(page.title)}</title>"
        "<link rel='alternate' type='application/atom+xml' "
        f"href='{base}/status/feed.atom' title='Incident feed'>"
        "<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:1rem;"
        "line-height:1.45;color:#111}article{border-top:1px solid #bbb;padding:.5rem 0}"
        "h2{font-size:1.2rem}h3{font-size:1.05rem;margin-bottom:.2rem}</style></head><body>"
        f"<header><h1>{e(page.title)}</h1></header><main>"
        f"<section aria-labelledby='now'><h2 id='now'>{e(page.overall)}</h2>{current}</section>"
        f"<section aria-labelledby='past'><h2 id='past'>Past incidents</h2>{history}</section>"
        f"</main><footer><p>Last refreshed {_when(page.generated)}. "
        f"<a href='{base}/status.json'>JSON</a> · "
        f"<a href='{base}/status/feed.atom'>Atom feed</a></p></footer>"
        "</body></html>"
    )


FEED_URN = "urn:incident-operator:status"
"""The feed's id without a statusPage.baseURL (an Atom id must be absolute; a Host header is no source)."""


def to_atom(page: Page, base_url: str | None) -> str:
    """The page as an Atom feed. With `base_url` (statusPage.baseURL) ids and links are absolute
    URLs under it; without, ids are `urn:` names and links relative to the site's root. Never
    built from a request (its Host header is whatever the sender wrote)."""
    e = html.escape
    base = base_url or ""
    feed_id = f"{base}/status" if base_url else FEED_URN
    entries = []
    for i in (*page.current, *page.history):
        latest = i.updates[-1].message if i.updates else f"{i.status}: {i.title}"
        if i.estimated is not None:
            latest += f" (estimated resolution {format_time(i.estimated)})"
        entry_id = f"{base}/status#{i.id}" if base_url else f"{FEED_URN}:{i.id}"
        entries.append(
            "<entry>"
            f"<id>{e(entry_id)}</id><title>{e(i.status)}: {e(i.title)}</title>"
            f"<updated>{format_time(i.updated)}</updated>"
            f"<link href='{e(base)}/status#{e(i.id)}'/>"
            f"<summary>{e(latest)}</summary></entry>"
        )
    return (
        "<?xml version='1.0' encoding='utf-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom'>"
        f"<id>{e(feed_id)}</id><title>{e(page.title)}</title>"
        f"<updated>{format_time(page.generated)}</updated>"
        f"<link rel='self' href='{e(base)}/status/feed.atom'/>" + "".join(entries) + "</feed>"
    )
