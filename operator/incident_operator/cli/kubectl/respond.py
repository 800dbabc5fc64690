"""`kubectl incident` commands of the response: list, open, ack, assign, approve, pause, resolve, close."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date
from typing import Any

from incident_operator.api.keys import API_GROUP, API_VERSION
from incident_operator.api.models import ROLE_TITLES, Phase
from incident_operator.api.timestamps import format_time, utc_now
from incident_operator.cli.kubectl.client import PLURAL, RESOURCE, Api, Failed, age, edit_list, table


def cmd_list(api: Api, args: argparse.Namespace) -> None:
    now = utc_now()
    items = sorted(api.list(args.all_namespaces), key=lambda i: i["metadata"].get("creationTimestamp") or "")
    if not items:
        where = "any namespace" if args.all_namespaces else f"{api.namespace} namespace"
        print(f"No incidents found in {where}.", file=sys.stderr)
        return
    header = ["NAME", "SEVERITY", "PHASE", "COMMANDER", "AGE", "TITLE"]
    rows = [(["NAMESPACE"] if args.all_namespaces else []) + header]
    for item in items:
        spec, status, meta = item.get("spec") or {}, item.get("status") or {}, item["metadata"]
        row = [
            meta["name"],
            _severity(spec, status),
            str(status.get("phase", "-")),
            str(spec.get("commander") or "-"),
            age(meta.get("creationTimestamp"), now),
            str(spec.get("title", ""))[:60],
        ]
        rows.append(([meta["namespace"]] if args.all_namespaces else []) + row)
    print(table(rows))


def _severity(spec: dict[str, Any], status: dict[str, Any]) -> str:
    """P2, or P2->P1 once an escalation rule treats it as more severe."""
    declared = str(spec.get("severity", "-"))
    effective = status.get("effectiveSeverity")
    return f"{declared}->{effective}" if effective and effective != declared else declared


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'incident'}-"


def cmd_open(api: Api, args: argparse.Namespace) -> None:
    spec: dict[str, Any] = {"title": args.title, "severity": args.severity, "category": args.category}
    if args.description:
        spec["description"] = args.description
    if args.target:
        spec["targets"] = [_target(t) for t in args.target]
    if args.playbook:
        spec["playbookRef"] = {"name": args.playbook}
    if args.drill:
        spec["drill"] = True
    if args.commander:
        spec["commander"] = args.commander
    metadata = {"name": args.name} if args.name else {"generateName": _slug(args.title)}
    body = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Incident",
        "metadata": metadata,
        "spec": spec,
    }
    created = api.objects.create(PLURAL, api.namespace, body)
    print(f"{RESOURCE}/{created['metadata']['name']} created")


def _target(text: str) -> dict[str, str]:
    kind, _, name = text.partition("/")
    kinds = {
        "deployment": "Deployment",
        "deploy": "Deployment",
        "statefulset": "StatefulSet",
        "sts": "StatefulSet",
    }
    if not name or kind.lower() not in kinds:
        raise Failed(f"target must be Deployment/NAME or StatefulSet/NAME, got {text!r}")
    return {"kind": kinds[kind.lower()], "name": name}


def cmd_ack(api: Api, args: argparse.Namespace) -> None:
    who = args.commander or api.whoami()
    current = api.get(args.name)
    if (current.get("spec") or {}).get("closed"):
        raise Failed(f"incident {args.name} is closed: it is read-only history")
    api.patch_spec(args.name, {"commander": who})
    print(f"{RESOURCE}/{args.name} acknowledged: {who} is the Incident Commander")


ROLE_FIELDS = {"tech-lead": "techLead", "comms": "comms", "customer-success": "customerSuccess"}


def cmd_assign(api: Api, args: argparse.Namespace) -> None:
    current = api.get(args.name)
    if (current.get("spec") or {}).get("closed"):
        raise Failed(f"incident {args.name} is closed: it is read-only history")
    who = args.person or api.whoami()
    if args.role == "commander":
        api.patch_spec(args.name, {"commander": who})
        print(f"{RESOURCE}/{args.name}: {who} is the Incident Commander (acknowledged)")
        return
    api.patch_spec(args.name, {"roles": {ROLE_FIELDS[args.role]: who}})
    title = ROLE_TITLES[ROLE_FIELDS[args.role]]
    print(f"{RESOURCE}/{args.name}: {who} is the {title}")


def cmd_approve(api: Api, args: argparse.Namespace) -> None:
    who = args.by or api.whoami()

    def add(approvals: list[dict[str, Any]], incident: dict[str, Any]) -> list[dict[str, Any]]:
        steps = {s["name"] for s in ((incident.get("status") or {}).get("playbook") or {}).get("steps") or []}
        if steps and args.step not in steps:
            raise Failed(
                f"incident {args.name} has no step {args.step!r} (steps: {', '.join(sorted(steps))})"
            )
        return [a for a in approvals if a.get("step") != args.step] + [{"step": args.step, "by": who}]

    edit_list(api, args.name, "approvals", add)
    print(f"{RESOURCE}/{args.name} step {args.step} approved by {who}")


def cmd_pause(api: Api, args: argparse.Namespace) -> None:
    api.patch_spec(args.name, {"paused": True})
    print(f"{RESOURCE}/{args.name} paused: no automation runs until `kubectl incident resume {args.name}`")


def cmd_resume(api: Api, args: argparse.Namespace) -> None:
    api.patch_spec(args.name, {"paused": None})
    print(f"{RESOURCE}/{args.name} resumed")


def cmd_resolve(api: Api, args: argparse.Namespace) -> None:
    resolution = {"summary": args.summary, **({"rootCause": args.root_cause} if args.root_cause else {})}
    api.patch_spec(args.name, {"resolution": resolution})
    print(f"{RESOURCE}/{args.name} resolved")


def cmd_close(api: Api, args: argparse.Namespace) -> None:
    incident = api.get(args.name)
    spec = incident.get("spec") or {}
    if not spec.get("resolution") and (incident.get("status") or {}).get("phase") != Phase.RESOLVED:
        raise Failed(f"incident {args.name} is not resolved: resolve it first (`kubectl incident resolve`)")
    open_items = [i["id"] for i in spec.get("actionItems") or [] if not i.get("done")]
    api.patch_spec(args.name, {"closed": True})
    print(f"{RESOURCE}/{args.name} closed")
    if open_items:
        noun = "action item" if len(open_items) == 1 else "action items"
        print(f"note: closed with {len(open_items)} open {noun}: {', '.join(open_items)}", file=sys.stderr)


def cmd_update(api: Api, args: argparse.Namespace) -> None:
    """A user-facing update for the status page (the communications lead's words)."""
    stamp = format_time(utc_now())

    def add(updates: list[dict[str, Any]], _: dict[str, Any]) -> list[dict[str, Any]]:
        return [*updates, {"time": stamp, "message": args.message}]

    edit_list(api, args.name, "updates", add)
    if args.public:
        api.patch_spec(args.name, {"public": True})
    print(f"{RESOURCE}/{args.name} updated" + (" and shown on the status page" if args.public else ""))


def cmd_action(api: Api, args: argparse.Namespace) -> None:
    if args.verb == "add":
        item: dict[str, Any] = {"id": args.id, "title": args.title}
        if args.owner:
            item["owner"] = args.owner
        if args.due:
            try:
                item["due"] = date.fromisoformat(args.due).isoformat()
            except ValueError:
                raise Failed(f"--due must be a date YYYY-MM-DD, got {args.due!r}") from None

        def add(items: list[dict[str, Any]], _: dict[str, Any]) -> list[dict[str, Any]]:
            if any(i.get("id") == args.id for i in items):
                raise Failed(f"incident {args.name} already has action item {args.id!r}")
            return [*items, item]

        edit_list(api, args.name, "actionItems", add)
        print(f"{RESOURCE}/{args.name} action item {args.id} added")
        return

    def done(items: list[dict[str, Any]], _: dict[str, Any]) -> list[dict[str, Any]]:
        if not any(i.get("id") == args.id for i in items):
            known = ", ".join(i.get("id", "?") for i in items) or "none"
            raise Failed(f"incident {args.name} has no action item {args.id!r} (has: {known})")
        return [{**i, "done": True} if i.get("id") == args.id else i for i in items]

    edit_list(api, args.name, "actionItems", done)
    print(f"{RESOURCE}/{args.name} action item {args.id} done")
