"""`kubectl incident` commands that read or look back: timeline, postmortem, report, history, and
`drill run`."""

from __future__ import annotations

import argparse
import json
import sys

from kubernetes.client.exceptions import ApiException

from incident_operator.api.keys import API_GROUP, REQUEST_ANNOTATION
from incident_operator.api.timestamps import format_time, utc_now
from incident_operator.cli.kubectl.client import Api, Failed, age, parse_incident, server_error, table
from incident_operator.core import archive, postmortem, report


def cmd_drill(api: Api, args: argparse.Namespace) -> None:
    """`drill run NAME`: ask the operator to run a Drill now (recorded with who asked)."""
    who = api.whoami()
    stamp = format_time(utc_now())
    patch = {"metadata": {"annotations": {REQUEST_ANNOTATION: f"{stamp} by {who}"}}}
    api.objects.patch("drills", api.namespace, args.name, patch)
    print(f"drill.{API_GROUP}/{args.name} run requested by {who}")


def cmd_timeline(api: Api, args: argparse.Namespace) -> None:
    now = utc_now()
    timeline = (api.get(args.name).get("status") or {}).get("timeline") or []
    rows = [["TIME", "AGO", "EVENT", "BY", "MESSAGE"]]
    for entry in timeline:
        stamp = str(entry.get("time", ""))
        rows.append(
            [
                stamp,
                age(stamp, now),
                entry.get("type", ""),
                entry.get("actor") or "-",
                entry.get("message", ""),
            ]
        )
    print(table(rows) if timeline else f"incident {args.name} has no timeline yet")


def cmd_postmortem(api: Api, args: argparse.Namespace) -> None:
    incident = api.get(args.name)
    ref = (incident.get("status") or {}).get("postmortemRef")
    why = "the operator has not written it yet (it does once the incident resolves)"
    if ref:
        try:
            cm = api.core.read_namespaced_config_map(ref, api.namespace)
        except ApiException as exc:
            if exc.status != 403:
                raise
            why = "you may not read ConfigMaps in this namespace"
        else:
            print((cm.data or {}).get("postmortem.md", ""), end="")
            return
    spec, status = parse_incident(incident)
    name = postmortem.configmap_name(args.name)
    print(f"note: not from ConfigMap {name}: {why}; rendered from the incident", file=sys.stderr)
    print(postmortem.render(api.namespace, args.name, spec, status, utc_now()), end="")


def cmd_report(api: Api, args: argparse.Namespace) -> None:
    now = utc_now()
    try:
        year, month = report.parse_month(args.month or report.today_month(now))
    except report.ReportError as exc:
        raise Failed(str(exc)) from None
    incidents = api.list(args.all_namespaces)
    try:
        archives = api.archives(args.all_namespaces, f"{year:04d}-{month:02d}")
    except ApiException as exc:
        if exc.status not in (403, 404):
            raise
        print(f"note: archived incidents not counted: {server_error(exc)}", file=sys.stderr)
        archives = []
    history = archive.history(incidents, archives)
    built = report.build(history, year, month, now, None if args.all_namespaces else api.namespace)
    print(report.render(built, args.format)[1], end="")


def cmd_history(api: Api, args: argparse.Namespace) -> None:
    """`history [--month YYYY-MM]`: the incidents retention archived (and deleted), oldest first."""
    month = None
    if args.month:
        try:
            year, number = report.parse_month(args.month)
        except report.ReportError as exc:
            raise Failed(str(exc)) from None
        month = f"{year:04d}-{number:02d}"
    found = archive.archived_incidents(api.archives(args.all_namespaces, month))
    if args.output == "json":
        print(json.dumps(found, indent=2))
        return
    if not found:
        scope = "any namespace" if args.all_namespaces else f"namespace {api.namespace}"
        print(f"no archived incidents in {scope}" + (f" for {month}" if month else ""))
        return
    found.sort(key=lambda i: (archive.detected_stamp(i), i["metadata"]["name"]))
    rows = [["NAMESPACE", "NAME", "SEVERITY", "CATEGORY", "DETECTED", "RESOLVED", "CLOSED", "TITLE"]]
    if not args.all_namespaces:
        rows[0] = rows[0][1:]
    for incident in found:
        spec, status = incident["spec"], incident["status"]
        row = [
            incident["metadata"]["namespace"],
            incident["metadata"]["name"],
            str(spec.get("severity") or "-") + (" (drill)" if spec.get("drill") else ""),
            str(spec.get("category") or "-"),
            archive.detected_stamp(incident) or "-",
            str(status.get("resolvedAt") or "-"),
            str(status.get("closedAt") or "-"),
            str(spec.get("title") or ""),
        ]
        rows.append(row if args.all_namespaces else row[1:])
    print(table(rows))
