"""`kubectl incident` arguments: the parser, and `main`, which runs one command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from incident_operator.cli.kubectl.automation import DEFAULT_CONFIGMAP, DEFAULT_NAMESPACE, cmd_automation
from incident_operator.cli.kubectl.client import Api, Failed, server_error
from incident_operator.cli.kubectl.explain import OPERATOR_NAMESPACE, cmd_explain
from incident_operator.cli.kubectl.plan import cmd_plan
from incident_operator.cli.kubectl.respond import (
    ROLE_FIELDS,
    UPDATE_WORDS,
    cmd_ack,
    cmd_action,
    cmd_approve,
    cmd_assign,
    cmd_close,
    cmd_list,
    cmd_open,
    cmd_pause,
    cmd_resolve,
    cmd_resume,
    cmd_update,
)
from incident_operator.cli.kubectl.review import (
    cmd_drill,
    cmd_history,
    cmd_postmortem,
    cmd_report,
    cmd_timeline,
)
from incident_operator.core import report


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
    p = named("update", cmd_update, "add an update (internal; --public for the status page)")
    p.add_argument("message", metavar="MESSAGE", help="what happened; with --public, in users' words")
    p.add_argument(
        "--public",
        action="store_true",
        help="a public update: shown on the status page with the incident (needs the verb publish)",
    )
    p.add_argument(
        "--status",
        choices=UPDATE_WORDS,
        help="the status word the update announces (default: the word of the incident's phase)",
    )
    p.add_argument(
        "--eta",
        metavar="TIME",
        help="the estimated resolution, in the same write: RFC 3339 (2026-12-01T15:00:00Z) or from now "
        "(45m, 2h, 1h30m)",
    )
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
    p = command("history", cmd_history, "list the incidents retention archived (IncidentArchive)")
    p.add_argument("--month", help="YYYY-MM of detection (default: every month)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="over every namespace")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    named("plan", cmd_plan, "which playbook would run, and what each step would change now")
    p = command(
        "explain",
        cmd_explain,
        "why an incident is where it is (candidate playbooks, each step, what next); with --alert, "
        "what an Alertmanager payload would meet here, creating nothing",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="the incident")
    p.add_argument("--alert", metavar="FILE.json", help="replay an Alertmanager webhook payload (version 4)")
    p.add_argument(
        "--operator-namespace",
        default=OPERATOR_NAMESPACE,
        help="where the operator's ConfigMap incident-operator-config is (--alert)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = command("drill", cmd_drill, "run a Drill now (drill run NAME)")
    p.add_argument("verb", choices=["run"])
    p.add_argument("name", metavar="NAME", help="the Drill")
    p = command(
        "automation",
        cmd_automation,
        "the circuit breaker and the storm guard: status, or resume automation they paused",
    )
    p.add_argument("verb", choices=["status", "resume"])
    p.add_argument(
        "--operator-namespace",
        default=DEFAULT_NAMESPACE,
        help=f"where the operator keeps the breaker's state (default: {DEFAULT_NAMESPACE})",
    )
    p.add_argument(
        "--state-configmap",
        default=DEFAULT_CONFIGMAP,
        help=f"the ConfigMap (config automation.stateConfigMap, default: {DEFAULT_CONFIGMAP})",
    )
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
        print(server_error(exc), file=sys.stderr)
        return 1
    except (Failed, ConfigException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
