"""The monthly incident report (seed section 9.2), computed from Incident objects as the API
returns them, never from process memory: the operator at `/reports/YYYY-MM` and `kubectl incident
report` give the same figures.

Pure, apart from drawing the chart (matplotlib, imported only when HTML is asked for). An
incident belongs to the month of its detection (`status.detectedAt`, else its creation). Drills
are counted apart and kept out of every figure.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from incident_operator.api.models import IncidentSpec, IncidentStatus
from incident_operator.api.reasons import ConditionType
from incident_operator.api.timestamps import parse_time
from incident_operator.core.postmortem import SEVERITY_NAMES, duration

SEVERITIES = ("P1", "P2", "P3", "P4")
CATEGORIES = ("availability", "performance", "security", "data")
CATEGORY_NAMES = {
    "availability": "Service Outages",
    "performance": "Performance Issues",
    "security": "Security Issues",
    "data": "Data Issues",
}
FORMATS = ("md", "json", "html")
TIMINGS = (
    ("timeToDetectSeconds", "MTTD (alert start to detection)"),
    ("timeToAcknowledgeSeconds", "Time to acknowledge"),
    ("timeToMitigateSeconds", "Time to mitigate"),
    ("timeToResolveSeconds", "MTTR (time to resolve)"),
)


class ReportError(ValueError):
    """A bad month or format; the message says which."""


MIN_YEAR, MAX_YEAR = 1970, 9998


def parse_month(text: str) -> tuple[int, int]:
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise ReportError(f"month must be YYYY-MM, got {text[:20]!r}") from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:  # 9999-12 would end in a year datetime cannot hold
        raise ReportError(f"month must be between {MIN_YEAR}-01 and {MAX_YEAR}-12, got {text!r}")
    return parsed.year, parsed.month


SERVED_FROM_YEAR = 2000
"""The first year `/reports` serves: earlier months hold no incidents of this operator, and each
month asked for costs a report (and for html a chart) to build."""


def servable_month(year: int, month: int, now: datetime) -> None:
    """Refuse (ReportError) a month `/reports` does not build: after the current one (nothing to
    count yet) or before SERVED_FROM_YEAR."""
    current = (now.year, now.month)
    if (year, month) > current:
        raise ReportError(
            f"month {year:04d}-{month:02d} has not begun: reports cover "
            f"{SERVED_FROM_YEAR}-01 to {current[0]:04d}-{current[1]:02d}"
        )
    if year < SERVED_FROM_YEAR:
        raise ReportError(f"month must be {SERVED_FROM_YEAR}-01 or later, got {year:04d}-{month:02d}")


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def detected_within(
    objects: Iterable[Mapping[str, Any]], start: datetime, end: datetime
) -> list[Mapping[str, Any]]:
    """The raw objects a report of [start, end) reads: those detected in it (`status.detectedAt`,
    else the creation time, as `build` reads them), and those whose detection time cannot be read
    at all (`build` counts them as unreadable). A caller that reads a year of incidents a page at a
    time keeps only one month of them."""
    kept: list[Mapping[str, Any]] = []
    for obj in objects:
        status, metadata = obj.get("status"), obj.get("metadata")
        raw = status.get("detectedAt") if isinstance(status, Mapping) else None
        if raw is None and isinstance(metadata, Mapping):
            raw = metadata.get("creationTimestamp")
        try:
            detected = parse_time(str(raw)) if raw is not None else None
        except ValueError:
            detected = None
        if detected is None or start <= detected < end:
            kept.append(obj)
    return kept


_STATUS_READ = ("detectedAt", "acknowledgedAt", "mitigatedAt", "resolvedAt", "repeatOf", "escalations")
"""What `build` reads of an incident's status (besides the breach condition)."""
_METADATA_READ = ("name", "namespace", "uid", "creationTimestamp")


def slim(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """What `build` (and `archive.history`, by uid) reads of a raw Incident: its metadata's name,
    namespace, uid and creation time, its spec, and of its status the times, repeat, escalations
    and the ResponseTargetBreached condition; not its timeline, steps or explanation (most of a
    realistic body). `build` reads every object through it, so the slim object and the whole
    count alike on every path (`/reports`, the plugin, delivered reports): what it reads and cannot
    parse is unreadable; a field it does not read (an unknown or broken timeline entry, say)
    never makes an incident unreadable, as for an archived incident. So `/reports` keeps a month of
    incidents at a fraction of their size."""
    metadata, status = obj.get("metadata"), obj.get("status")
    kept: dict[str, Any] = {"spec": obj.get("spec")}
    if isinstance(metadata, Mapping):
        kept["metadata"] = {k: metadata[k] for k in _METADATA_READ if k in metadata}
    if isinstance(status, Mapping):
        conditions = status.get("conditions")
        kept["status"] = {k: status[k] for k in _STATUS_READ if k in status}
        if isinstance(conditions, list):
            kept["status"]["conditions"] = [
                c
                for c in conditions
                if not isinstance(c, Mapping) or c.get("type") == ConditionType.RESPONSE_TARGET_BREACHED
            ]
    else:
        kept["status"] = status
    return kept


@dataclass
class _Item:
    name: str
    spec: IncidentSpec
    status: IncidentStatus
    detected: datetime


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def summary(values: list[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p90 (nearest rank); None without values."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 1),
        "p50": round(rank(0.5), 1),
        "p90": round(rank(0.9), 1),
    }


@dataclass
class Report:
    month: str
    namespace: str | None
    generated: datetime
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"month": self.month, "namespace": self.namespace, **self.figures}


def _items(objects: Iterable[Mapping[str, Any]]) -> tuple[list[_Item], int]:
    items, unreadable = [], 0
    for whole in objects:
        obj = slim(whole)  # what is read, and only that, decides readable: every path counts alike
        metadata = obj.get("metadata") or {}
        try:
            spec = IncidentSpec.model_validate(obj.get("spec") or {})
            status = IncidentStatus.model_validate(obj.get("status") or {})
            created = metadata.get("creationTimestamp")
            detected = status.detectedAt or (parse_time(str(created)) if created else None)
        except (ValidationError, ValueError):
            unreadable += 1
            continue
        if detected is None:
            continue
        name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        items.append(_Item(name, spec, status, detected))
    return items, unreadable


def _is_drill(spec: IncidentSpec) -> bool:
    return bool(spec.drill) or (spec.source is not None and str(spec.source.type) == "drill")


def _breached(status: IncidentStatus) -> bool:
    return any(
        c.type == ConditionType.RESPONSE_TARGET_BREACHED and c.status == "True"
        for c in status.conditions or []
    )


def build(
    objects: Iterable[Mapping[str, Any]], year: int, month: int, now: datetime, namespace: str | None = None
) -> Report:
    """The report for one month over `objects` (raw Incident objects)."""
    start, end = month_bounds(year, month)
    items, unreadable = _items(objects)
    in_month = [i for i in items if start <= i.detected < end]
    drills = [i for i in in_month if _is_drill(i.spec)]
    real = [i for i in in_month if not _is_drill(i.spec)]
    severity = Counter(str(i.spec.severity) for i in real)
    category = Counter(str(i.spec.category) for i in real)
    timings: dict[str, list[float]] = {key: [] for key, _ in TIMINGS}
    for i in real:
        started = i.spec.source.startsAt if i.spec.source is not None else None
        for key, value in (
            ("timeToDetectSeconds", _seconds(started, i.status.detectedAt)),
            ("timeToAcknowledgeSeconds", _seconds(i.status.detectedAt, i.status.acknowledgedAt)),
            ("timeToMitigateSeconds", _seconds(i.status.detectedAt, i.status.mitigatedAt)),
            ("timeToResolveSeconds", _seconds(i.status.detectedAt, i.status.resolvedAt)),
        ):
            if value is not None:
                timings[key].append(value)
    all_items = [item for i in real for item in i.spec.actionItems or []]
    done = sum(1 for item in all_items if item.done)
    overdue = sum(1 for item in all_items if not item.done and item.due is not None and item.due < now.date())
    targets = Counter(f"{t.kind}/{t.name}" for i in real for t in i.spec.targets or [])
    weeks: dict[str, Counter[str]] = {}
    monday = (start - timedelta(days=start.weekday())).date()
    while monday < end.date():
        weeks[monday.isoformat()] = Counter()
        monday += timedelta(days=7)
    for i in real:
        week = (i.detected.date() - timedelta(days=i.detected.weekday())).isoformat()
        weeks.setdefault(week, Counter())[str(i.spec.severity)] += 1
    figures: dict[str, Any] = {
        "total": len(real),
        "bySeverity": {s: severity.get(s, 0) for s in SEVERITIES},
        "byCategory": {c: category.get(c, 0) for c in CATEGORIES},
        "drills": len(drills),
        **{key: summary(values) for key, values in timings.items()},
        "responseTargetBreaches": sum(1 for i in real if _breached(i.status)),
        "repeatIncidents": sum(1 for i in real if i.status.repeatOf),
        "escalations": sum(i.status.escalations or 0 for i in real),
        "actionItems": {
            "total": len(all_items),
            "done": done,
            "open": len(all_items) - done,
            "overdue": overdue,
            "completionRate": round(done / len(all_items), 3) if all_items else None,
        },
        "topTargets": [{"target": t, "incidents": n} for t, n in targets.most_common(5)],
        "incidentsPerWeek": {w: {s: c.get(s, 0) for s in SEVERITIES} for w, c in sorted(weeks.items())},
        "unreadable": unreadable,
    }
    return Report(f"{year:04d}-{month:02d}", namespace, now, figures)


def _timing_line(label: str, figure: Mapping[str, Any]) -> str:
    if not figure["count"]:
        return f"{label}: no data"
    return (
        f"{label}: average {duration(figure['mean'])} "
        f"(p50 {duration(figure['p50'])}, p90 {duration(figure['p90'])}; "
        f"{figure['count']} incident{'s' if figure['count'] != 1 else ''})"
    )


def sections(report: Report) -> list[tuple[str, bool, list[str]]]:
    """(heading, numbered, lines) in the seed's layout; Markdown and HTML are drawn from these."""
    f = report.figures
    ranked = sorted(CATEGORIES, key=lambda c: (-f["byCategory"][c], CATEGORIES.index(c)))
    categories = [
        f"{CATEGORY_NAMES[c]}: {round(100 * f['byCategory'][c] / f['total'])}%"
        for c in ranked
        if f["byCategory"][c]
    ]
    items = f["actionItems"]
    completion = f"{round(100 * items['completionRate'])}%" if items["completionRate"] is not None else "—"
    return [
        (
            "Incident Volume",
            False,
            [
                f"Total Incidents: {f['total']}",
                *(f"{s} ({SEVERITY_NAMES[s]}): {f['bySeverity'][s]}" for s in SEVERITIES),
                f"Drills (not counted above): {f['drills']}",
            ],
        ),
        ("Response Times", False, [_timing_line(label, f[key]) for key, label in TIMINGS]),
        ("Top Incident Categories", True, categories or ["No incidents this month."]),
        (
            "Response Quality",
            False,
            [
                f"Response target breaches: {f['responseTargetBreaches']}",
                f"Repeat incidents: {f['repeatIncidents']}",
                f"Escalations: {f['escalations']}",
                f"Action items: {items['done']} of {items['total']} done ({completion}), "
                f"{items['overdue']} overdue",
            ],
        ),
        (
            "Top Affected Targets",
            True,
            [f"{t['target']}: {t['incidents']}" for t in f["topTargets"]] or ["None named."],
        ),
    ]


def _scope(report: Report) -> str:
    return f"namespace {report.namespace}" if report.namespace else "all namespaces"


def to_markdown(report: Report) -> str:
    lines = [f"## Monthly Incident Summary: {report.month} ({_scope(report)})"]
    for heading, numbered, entries in sections(report):
        lines += ["", f"### {heading}"]
        single = len(entries) == 1 and entries[0].endswith(".")  # "None named." is a sentence
        lines += (
            entries
            if single
            else [f"{n}. {x}" if numbered else f"- {x}" for n, x in enumerate(entries, start=1)]
        )
    return "\n".join(lines) + "\n"


def chart_png(report: Report) -> bytes:
    """Incidents per week by severity, stacked bars (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    weeks = report.figures["incidentsPerWeek"]
    labels = list(weeks)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    bottom = [0] * len(labels)
    colours = {"P1": "#b2182b", "P2": "#ef8a62", "P3": "#67a9cf", "P4": "#2166ac"}
    for severity in SEVERITIES:
        values = [weeks[w][severity] for w in labels]
        ax.bar(labels, values, bottom=bottom, label=severity, color=colours[severity])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title(f"Incidents per week by severity, {report.month}")
    ax.set_xlabel("week starting (Monday)")
    ax.set_ylabel("incidents")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def to_html(report: Report) -> str:
    """A self-contained page: the figures as HTML, and the chart as an embedded PNG with a table
    of the same numbers for screen readers and text browsers."""
    e = html.escape
    chart = base64.b64encode(chart_png(report)).decode()
    weeks = report.figures["incidentsPerWeek"]
    rows = "".join(
        f"<tr><th scope='row'>{e(w)}</th>" + "".join(f"<td>{c[s]}</td>" for s in SEVERITIES) + "</tr>"
        for w, c in weeks.items()
    )
    parts = []
    for heading, numbered, entries in sections(report):
        tag = "ol" if numbered else "ul"
        parts.append(
            f"<h2>{e(heading)}</h2><{tag}>" + "".join(f"<li>{e(x)}</li>" for x in entries) + f"</{tag}>"
        )
    title = f"Monthly Incident Summary: {report.month} ({_scope(report)})"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:48rem;margin:1rem auto;padding:0 1rem}"
        "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2rem .5rem}"
        "</style></head><body>"
        f"<h1>{e(title)}</h1>"
        f"<img src='data:image/png;base64,{chart}' "
        "alt='Incidents per week by severity (the table below has the same numbers)'>"
        "<table><caption>Incidents per week by severity</caption><thead><tr><th scope='col'>week of</th>"
        + "".join(f"<th scope='col'>{s}</th>" for s in SEVERITIES)
        + f"</tr></thead><tbody>{rows}</tbody></table>"
        + "".join(parts)
        + f"<p><small>Generated {e(report.generated.strftime('%Y-%m-%d %H:%M UTC'))} by incident-operator."
        "</small></p></body></html>"
    )


def render(report: Report, fmt: str) -> tuple[str, str]:
    """(content type, body) for one of FORMATS."""
    if fmt == "json":
        return "application/json", json.dumps(report.to_json(), indent=2) + "\n"
    if fmt == "md":
        return "text/markdown; charset=utf-8", to_markdown(report)
    if fmt == "html":
        return "text/html; charset=utf-8", to_html(report)
    raise ReportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def today_month(now: datetime) -> str:
    return date(now.year, now.month, 1).strftime("%Y-%m")
