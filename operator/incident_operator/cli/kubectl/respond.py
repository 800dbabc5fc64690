"""`kubectl incident` commands of the response: list, open, ack, assign, approve, pause, resolve, close."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from incident_operator.api.keys import API_GROUP, API_VERSION
from incident_operator.api.models import ROLE_TITLES, Phase, StepState
from incident_operator.api.timestamps import format_time, utc_now
from incident_operator.cli.kubectl.client import (
    PLURAL,
    RESOURCE,
    Api,
    Failed,
    age,
    edit_list,
    server_error,
    table,
)


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
    _name_person(api, args.name, "commander", who)
    print(f"{RESOURCE}/{args.name} acknowledged: {who} is the Incident Commander")


ROLE_FIELDS = {"tech-lead": "techLead", "comms": "comms", "customer-success": "customerSuccess"}


def _name_person(api: Api, name: str, field: str, who: str) -> None:
    """Set `commander` or a role to `who`; say plainly why when the API server refuses it."""
    spec = {"commander": who} if field == "commander" else {"roles": {field: who}}
    try:
        api.patch_spec(name, spec)
    except ApiException as exc:
        if exc.status not in (403, 422):
            raise
        if "verb assign" not in (exc.body or ""):
            raise
        raise Failed(
            f"you may not name {who} as {field} of incident {name}: naming someone other than "
            "yourself needs the verb assign on incidents in this namespace (ClusterRole "
            f"incident-operator-responder); ask for it, or name yourself.\n{server_error(exc)}"
        ) from None


def cmd_assign(api: Api, args: argparse.Namespace) -> None:
    current = api.get(args.name)
    if (current.get("spec") or {}).get("closed"):
        raise Failed(f"incident {args.name} is closed: it is read-only history")
    who = args.person or api.whoami()
    field = "commander" if args.role == "commander" else ROLE_FIELDS[args.role]
    _name_person(api, args.name, field, who)
    if args.role == "commander":
        print(f"{RESOURCE}/{args.name}: {who} is the Incident Commander (acknowledged)")
        return
    print(f"{RESOURCE}/{args.name}: {who} is the {ROLE_TITLES[field]}")


SETTLED_STEP_STATES = frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED})


def run_in_flight(incident: dict[str, Any]) -> str | None:
    """The id of the playbook run in flight (`status.playbook.runId`), or None: no run started, or
    every step of the last one settled. An approval names it, so that it never carries over."""
    playbook = (incident.get("status") or {}).get("playbook") or {}
    run = playbook.get("runId")
    steps = playbook.get("steps") or []
    if not run or (steps and all(s.get("state") in SETTLED_STEP_STATES for s in steps)):
        return None
    return str(run)


def cmd_approve(api: Api, args: argparse.Namespace) -> None:
    who = args.by or api.whoami()
    run: str | None = None

    def add(approvals: list[dict[str, Any]], incident: dict[str, Any]) -> list[dict[str, Any]]:
        nonlocal run
        steps = {s["name"] for s in ((incident.get("status") or {}).get("playbook") or {}).get("steps") or []}
        if steps and args.step not in steps:
            raise Failed(
                f"incident {args.name} has no step {args.step!r} (steps: {', '.join(sorted(steps))})"
            )
        run = run_in_flight(incident)
        approval = {"step": args.step, "by": who, **({"run": run} if run else {})}
        return [a for a in approvals if a.get("step") != args.step] + [approval]

    edit_list(api, args.name, "approvals", add)
    print(f"{RESOURCE}/{args.name} step {args.step} approved by {who}" + (f" for run {run}" if run else ""))


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


UPDATE_WORDS = ("investigating", "identified", "monitoring", "resolved")
"""`--status`: the words of `spec.updates[].status`."""
_ETA = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?$")


def eta(text: str, now: datetime) -> str:
    """`--eta`: an RFC 3339 time, or a duration from now (45m, 2h, 1h30m), as RFC 3339."""
    found = _ETA.fullmatch(text.strip())
    if found and any(found.groups()):
        hours, minutes = (int(g or 0) for g in found.groups())
        return format_time(now + timedelta(hours=hours, minutes=minutes))
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is not None and when.tzinfo is not None:
        return format_time(when.astimezone(UTC))
    raise Failed(f"--eta must be an RFC 3339 time or a duration such as 45m or 2h, got {text!r}") from None


def cmd_update(api: Api, args: argparse.Namespace) -> None:
    """An update to the incident: internal, or with --public for the status page (the
    communications lead's words; the update marked public and the incident made public, in one
    write that needs the verb publish). `--status` gives its status word, `--eta` sets
    spec.estimatedResolution in the same write."""
    now = utc_now()
    update: dict[str, Any] = {"time": format_time(now), "message": args.message}
    if args.public:
        update["public"] = True
    if getattr(args, "status", None):
        update["status"] = args.status
    also: dict[str, Any] = {"public": True} if args.public else {}
    if getattr(args, "eta", None):
        also["estimatedResolution"] = eta(args.eta, now)

    def add(updates: list[dict[str, Any]], _: dict[str, Any]) -> list[dict[str, Any]]:
        return [*updates, update]

    try:
        edit_list(api, args.name, "updates", add, also=also or None)
    except ApiException as exc:
        if exc.status not in (403, 422) or "verb publish" not in (exc.body or ""):
            raise
        raise Failed(
            f"you may not publish to the status page from incident {args.name}: public updates "
            "need the verb publish on incidents in this namespace (ClusterRole "
            "incident-operator-responder); ask for it, or post the update without --public.\n"
            f"{server_error(exc)}"
        ) from None
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
