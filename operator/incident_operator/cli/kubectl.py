"""`kubectl incident`: the on-call engineer's commands (console script `kubectl-incident`).

kubectl finds the script on PATH and passes the arguments after `incident` as they are. Each
command reads or changes Incidents through the API server with the user's own kubeconfig
(`--kubeconfig`, `--context`, `-n` as kubectl; the context's namespace by default), so RBAC and
the admission policies apply to the person, not to the operator. Changes are to `spec` only
(the operator owns `status`); lists edited in place (approvals, action items) carry the
resourceVersion they were read at, so two people editing at once never lose an edit.

Exit codes: 0 done, 1 the API server or the incident refused (the reason is printed, as kubectl
prints it), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, NoReturn

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from incident_operator.adapters.kube import CustomObjects, pod_ready
from incident_operator.api.actions import ACTIONS
from incident_operator.api.keys import API_GROUP, API_VERSION, REQUEST_ANNOTATION
from incident_operator.api.models import ROLE_TITLES, IncidentSpec, IncidentStatus, Phase, PlaybookSpec
from incident_operator.api.timestamps import format_time, parse_time, utc_now
from incident_operator.core import postmortem, report
from incident_operator.core.matching import Candidate, select
from incident_operator.core.planner import pods_to_delete, scale_decision
from incident_operator.core.validation import problems

PLURAL = "incidents"
RESOURCE = f"incident.{API_GROUP}"


class Failed(Exception):
    """A refusal to print as `error: ...` with exit code 1."""


# ----------------------------------------------------------------------------- API access


class Api:
    """The user's API client and namespace, from kubeconfig (or in-cluster config)."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if context and chosen is None:
                raise Failed(f'context "{context}" does not exist')
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            default_ns = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        except ConfigException:
            if kubeconfig or context:
                raise
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            self.api = client.ApiClient()
            default_ns = "default"
        self.namespace = namespace or default_ns
        self.objects = CustomObjects(self.api)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)

    def get(self, name: str) -> dict[str, Any]:
        return self.objects.get(PLURAL, self.namespace, name)

    def patch_spec(
        self, name: str, spec: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"spec": spec}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.objects.patch(PLURAL, self.namespace, name, body)

    def list(self, all_namespaces: bool) -> list[dict[str, Any]]:
        return self.objects.list(PLURAL, None if all_namespaces else self.namespace)

    def whoami(self) -> str:
        review = client.AuthenticationV1Api(self.api).create_self_subject_review(client.V1SelfSubjectReview())
        username = review.status.user_info.username if review.status and review.status.user_info else None
        if not username:
            raise Failed("the API server did not say who you are; give the name with --commander or --by")
        return str(username)


def _server_error(exc: ApiException) -> str:
    """As kubectl says it: `Error from server (NotFound): ...`."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    reason = body.get("reason") or exc.reason or "Error"
    message = body.get("message") or exc.reason or str(exc.status)
    return f"Error from server ({reason}): {message}"


def _edit_list(
    api: Api,
    name: str,
    key: str,
    change: Callable[[list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]],
) -> dict[str, Any]:
    """Read the incident, change one of its spec lists, write it back guarded by resourceVersion
    (retried on a conflict: someone else edited meanwhile)."""
    for _ in range(5):
        incident = api.get(name)
        spec = incident.get("spec") or {}
        if spec.get("closed") and key != "actionItems":
            raise Failed(f"incident {name} is closed: it is read-only history")
        updated = change([dict(x) for x in spec.get(key) or []], incident)
        try:
            return api.patch_spec(name, {key: updated}, incident["metadata"]["resourceVersion"])
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise Failed(f"incident {name} kept changing; try again")


# ----------------------------------------------------------------------------- formatting


def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    seconds = max(0, int((now - parse_time(stamp)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _parse(incident: dict[str, Any]) -> tuple[IncidentSpec, IncidentStatus]:
    try:
        return (
            IncidentSpec.model_validate(incident.get("spec") or {}),
            IncidentStatus.model_validate(incident.get("status") or {}),
        )
    except ValidationError as exc:
        raise Failed(
            f"incident {incident['metadata']['name']} cannot be read: {exc.errors()[0]['msg']}"
        ) from None


# ----------------------------------------------------------------------------- commands


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
            _age(meta.get("creationTimestamp"), now),
            str(spec.get("title", ""))[:60],
        ]
        rows.append(([meta["namespace"]] if args.all_namespaces else []) + row)
    print(_table(rows))


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

    _edit_list(api, args.name, "approvals", add)
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

    _edit_list(api, args.name, "updates", add)
    if args.public:
        api.patch_spec(args.name, {"public": True})
    print(f"{RESOURCE}/{args.name} updated" + (" and shown on the status page" if args.public else ""))


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
                _age(stamp, now),
                entry.get("type", ""),
                entry.get("actor") or "-",
                entry.get("message", ""),
            ]
        )
    print(_table(rows) if timeline else f"incident {args.name} has no timeline yet")


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
    spec, status = _parse(incident)
    name = postmortem.configmap_name(args.name)
    print(f"note: not from ConfigMap {name}: {why}; rendered from the incident", file=sys.stderr)
    print(postmortem.render(api.namespace, args.name, spec, status, utc_now()), end="")


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

        _edit_list(api, args.name, "actionItems", add)
        print(f"{RESOURCE}/{args.name} action item {args.id} added")
        return

    def done(items: list[dict[str, Any]], _: dict[str, Any]) -> list[dict[str, Any]]:
        if not any(i.get("id") == args.id for i in items):
            known = ", ".join(i.get("id", "?") for i in items) or "none"
            raise Failed(f"incident {args.name} has no action item {args.id!r} (has: {known})")
        return [{**i, "done": True} if i.get("id") == args.id else i for i in items]

    _edit_list(api, args.name, "actionItems", done)
    print(f"{RESOURCE}/{args.name} action item {args.id} done")


def cmd_report(api: Api, args: argparse.Namespace) -> None:
    now = utc_now()
    try:
        year, month = report.parse_month(args.month or report.today_month(now))
    except report.ReportError as exc:
        raise Failed(str(exc)) from None
    incidents = api.list(args.all_namespaces)
    built = report.build(incidents, year, month, now, None if args.all_namespaces else api.namespace)
    print(report.render(built, args.format)[1], end="")


def cmd_plan(api: Api, args: argparse.Namespace) -> None:
    spec, status = _parse(api.get(args.name))
    raw = api.objects.list("playbooks", api.namespace)
    valid, invalid = [], {}
    for pb in raw:
        parsed, found = problems(pb.get("spec") or {})
        if parsed is None or found:
            invalid[pb["metadata"]["name"]] = "; ".join(found)
        else:
            valid.append(Candidate(pb["metadata"]["name"], parsed))
    selection = select(spec, sorted(valid, key=lambda c: c.name), invalid)
    if status.playbook is not None:
        print(
            f"playbook {status.playbook.name} already ran or runs (phase {status.phase}); "
            "what its steps would change now:"
        )
    if selection.playbook is None:
        raise Failed(f"no playbook would run: {selection.message}")
    playbook = selection.playbook.spec
    print(f"{selection.message}: {len(playbook.steps)} steps")
    for number, step in enumerate(playbook.steps, start=1):
        approval = " (needs approval)" if step.requiresApproval else ""
        when = ""
        if step.when is not None:
            when = f" (only if {step.when.step} {'failed' if step.when.stepFailed else 'succeeded'})"
        print(f"{number}. {step.name}: {_step_plan(api, playbook, step.action, step.params)}{approval}{when}")


def _step_plan(api: Api, playbook: PlaybookSpec, action: str, params: Any) -> str:
    """What one step would do: the action table's line, with live facts (current replicas, a
    server-side dry run, the pods it would delete) where the API gives them."""
    live = _LIVE_PLANS.get(action)
    return live(api, playbook, action, params) if live else ACTIONS[action].plan(params)


def _workload_plan(api: Api, playbook: PlaybookSpec, action: str, params: Any) -> str:
    ns = api.namespace
    ref = params.target
    read = (
        api.apps.read_namespaced_deployment_scale
        if str(ref.kind) == "Deployment"
        else (api.apps.read_namespaced_stateful_set_scale)
    )
    try:
        current = read(ref.name, ns)
    except ApiException as exc:
        return f"{ref.kind}/{ref.name}: {_server_error(exc)}"
    before = current.spec.replicas if current.spec and current.spec.replicas is not None else 1
    if action == "restart":
        return f"rollout restart of {ref.kind}/{ref.name}: its {before} pods replaced gradually"
    if action == "waitReady":
        return f"wait until {ref.kind}/{ref.name} ({before} replicas) is rolled out and available"
    after, wanted = scale_decision(before, params, [playbook.guardrails.maxReplicas])
    patch = (
        api.apps.patch_namespaced_deployment_scale
        if str(ref.kind) == "Deployment"
        else api.apps.patch_namespaced_stateful_set_scale
    )
    try:
        patch(ref.name, ns, {"spec": {"replicas": after}}, dry_run="All")
        admitted = "the API server admits it (dry run)"
    except ApiException as exc:
        admitted = f"the API server refuses it for you (the operator's rights differ): {_server_error(exc)}"
    capped = f" (capped from {wanted})" if wanted != after else ""
    return (
        f"scale {ref.kind}/{ref.name} {before} -> {after}{capped}; {admitted}; "
        "the operator's limits may cap it lower"
    )


def _delete_pods_plan(api: Api, playbook: PlaybookSpec, action: str, params: Any) -> str:
    selector = ",".join(f"{k}={v}" for k, v in sorted(params.selector.items()))
    pods = api.core.list_namespaced_pod(api.namespace, label_selector=selector).items
    live = [
        (str(p.metadata.name), pod_ready(p))
        for p in pods
        if p.metadata is not None and p.metadata.deletion_timestamp is None
    ]
    budget = min(params.max, playbook.guardrails.maxPodDeletions or params.max)
    chosen = pods_to_delete(live, params.onlyUnready, budget)
    return f"delete {len(chosen)} of {len(live)} pods matching {selector}: {', '.join(chosen) or 'none'}"


_LIVE_PLANS: dict[str, Callable[[Api, PlaybookSpec, str, Any], str]] = {
    "scale": _workload_plan,
    "restart": _workload_plan,
    "waitReady": _workload_plan,
    "deletePods": _delete_pods_plan,
}
"""Actions whose plan line reads the cluster; every other action's line is `ACTIONS[...].plan`."""


# ----------------------------------------------------------------------------- arguments


def parser() -> argparse.ArgumentParser:
    def connection(default: Any) -> argparse.ArgumentParser:
        flags = argparse.ArgumentParser(add_help=False)
        flags.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file (as kubectl)")
        flags.add_argument("--context", default=default, help="the kubeconfig context to use (as kubectl)")
        flags.add_argument(
            "-n", "--namespace", default=default, help="the namespace (default: the context's)"
        )
        return flags

    # Accepted before and after the command; after it, an absent flag must not reset one given before.
    common = connection(argparse.SUPPRESS)
    top = argparse.ArgumentParser(
        prog="kubectl incident",
        description="Work on incident-operator Incidents: open, acknowledge, approve, resolve, close, "
        "review (timeline, post-mortem, action items) and report.",
        parents=[connection(None)],
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, fn: Callable[[Api, argparse.Namespace], None], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[common])
        p.set_defaults(fn=fn)
        return p

    def named(name: str, fn: Callable[[Api, argparse.Namespace], None], text: str) -> argparse.ArgumentParser:
        p = command(name, fn, text)
        p.add_argument("name", metavar="NAME", help="the incident")
        return p

    p = command("list", cmd_list, "list incidents")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    p = command("open", cmd_open, "open an incident")
    p.add_argument("name", metavar="NAME", nargs="?", help="its name (default: from the title)")
    p.add_argument("--title", required=True)
    p.add_argument("--severity", choices=["P1", "P2", "P3", "P4"], default="P3")
    p.add_argument("--category", choices=list(report.CATEGORIES), default="availability")
    p.add_argument("--description")
    p.add_argument("--target", action="append", metavar="KIND/NAME", help="affected workload (repeatable)")
    p.add_argument("--playbook", help="the Playbook to run (default: the best match)")
    p.add_argument("--commander", help="acknowledge it at once as this Incident Commander")
    p.add_argument("--drill", action="store_true", help="a response drill, kept out of production figures")
    p = named("ack", cmd_ack, "acknowledge: become (or name) the Incident Commander")
    p.add_argument("--commander", help="who (default: you, as the API server knows you)")
    p = named("assign", cmd_assign, "give a person a role of the response (seed 3.1)")
    p.add_argument(
        "role",
        choices=["commander", *ROLE_FIELDS],
        metavar="ROLE",
        help="commander, tech-lead, comms or customer-success",
    )
    p.add_argument(
        "person", metavar="PERSON", nargs="?", help="who (default: you, as the API server knows you)"
    )
    p = named("approve", cmd_approve, "approve a step that requires approval")
    p.add_argument("step", metavar="STEP")
    p.add_argument("--by", help="who approves (default: you; the API server checks it is you)")
    named("pause", cmd_pause, "stop all automation on the incident")
    named("resume", cmd_resume, "let automation go on")
    p = named("resolve", cmd_resolve, "declare the incident resolved")
    p.add_argument("--summary", required=True, help="what was done")
    p.add_argument("--root-cause", help="the root cause, if known")
    named("close", cmd_close, "close the incident after its review (read-only afterwards)")
    p = named("update", cmd_update, "add a user-facing update for the status page")
    p.add_argument("message", metavar="MESSAGE", help="what users should know, in their words")
    p.add_argument("--public", action="store_true", help="also show the incident on the status page")
    named("timeline", cmd_timeline, "print the incident's timeline with relative times")
    named("postmortem", cmd_postmortem, "print the post-mortem draft (Markdown)")
    p = command("action", cmd_action, "add an action item, or mark one done")
    p.add_argument("verb", choices=["add", "done"])
    p.add_argument("name", metavar="NAME", help="the incident")
    p.add_argument("id", metavar="ID", nargs="?", help="the item's id (done)")
    p.add_argument("--id", dest="new_id", metavar="ID", help="the new item's id (add)")
    p.add_argument("--title", help="what is to be done (add)")
    p.add_argument("--owner", help="who does it (add)")
    p.add_argument("--due", help="due date YYYY-MM-DD (add)")
    p = command("report", cmd_report, "the monthly incident report")
    p.add_argument("--month", help="YYYY-MM (default: this month)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="over every namespace")
    p.add_argument("--format", choices=list(report.FORMATS), default="md")
    named("plan", cmd_plan, "which playbook would run, and what each step would change now")
    p = command("drill", cmd_drill, "run a Drill now (drill run NAME)")
    p.add_argument("verb", choices=["run"])
    p.add_argument("name", metavar="NAME", help="the Drill")
    return top


def _usage(top: argparse.ArgumentParser, message: str) -> NoReturn:
    top.error(message)


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.command == "action":
        if args.verb == "add":
            if not args.new_id or not args.title or args.id:
                _usage(top, "action add NAME --id ID --title TEXT [--owner WHO] [--due YYYY-MM-DD]")
            args.id = args.new_id
        elif not args.id:
            _usage(top, "action done NAME ID")
    try:
        api = Api(args.kubeconfig, args.context, args.namespace)
        args.fn(api, args)
    except ApiException as exc:
        print(_server_error(exc), file=sys.stderr)
        return 1
    except (Failed, ConfigException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
