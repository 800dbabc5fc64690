"""`kubectl incident explain`: why an incident is where it is, or what an alert would meet.

`explain NAME` renders the incident's `status.explanation`, which the operator writes from what
its planner decided (`core.explain`); the plugin computes nothing of it. `explain --alert
FILE.json` replays an Alertmanager webhook payload (version 4) against the namespace's Playbooks:
the alert-to-incident mapping (`alerts.plan_alert`) with the operator's config read from its
ConfigMap (the defaults, said so, when it cannot be read), the same matcher, and `explain.replay`;
it creates nothing and says what only the operator knows when the alert arrives.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from incident_operator.api.keys import LABEL_FINGERPRINT
from incident_operator.api.models import Explanation, IncidentSpec
from incident_operator.api.timestamps import format_time, utc_now
from incident_operator.cli.kubectl.client import Api, Failed, parse_incident, server_error, table
from incident_operator.core.alerts import Alert, Skip, WebhookPayload, plan_alert
from incident_operator.core.explain import UNKNOWN_TO_A_REPLAY, replay
from incident_operator.core.matching import Candidate, select
from incident_operator.core.validation import problems
from incident_operator.settings.config import FileConfig

CONFIG_MAP = "incident-operator-config"
CONFIG_KEY = "config.yaml"
OPERATOR_NAMESPACE = "incident-operator"


def cmd_explain(api: Api, args: argparse.Namespace) -> None:
    if args.alert:
        if args.name:
            raise Failed("give NAME or --alert FILE, not both")
        _replay(api, args)
        return
    if not args.name:
        raise Failed("explain NAME, or explain --alert FILE.json")
    incident = api.get(args.name)
    spec, status = parse_incident(incident)
    why = status.explanation
    if why is None:
        raise Failed(
            f"incident {args.name} has no explanation yet: the operator writes it when it plans the "
            "incident (an operator older than this plugin does not)"
        )
    if args.output == "json":
        print(json.dumps(why.model_dump(mode="json", exclude_none=True), indent=2))
        return
    severity = status.effectiveSeverity or spec.severity
    print(
        f"Incident {args.name} (namespace {shown(api.namespace)}): phase {status.phase or 'Detected'}, "
        f"{severity} {spec.category}"
    )
    print(render(why))


def shown(text: str) -> str:
    """`text` safe for a terminal: control characters (an escape sequence in a Playbook's label
    value, a line break in a message) are shown as escapes, never sent to the terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def render(why: Explanation) -> str:
    """The explanation as a person reads it: candidates, the run's steps, what holds, what next.
    Every text is written by people or the operator and passes through `shown`."""
    return "\n".join(shown(line) for line in _lines(why))


def _lines(why: Explanation) -> list[str]:
    lines = [f"Explained at {format_time(why.at)}", f"Selection: {why.selection}", "", "Candidate playbooks:"]
    if why.candidates:
        rows = [["VERDICT", "PLAYBOOK", "PRIORITY", "WHY"]]
        rows += [
            [c.verdict, c.name, "-" if c.priority is None else str(c.priority), shown(c.why)]
            for c in why.candidates
        ]
        lines += ["  " + line for line in table(rows).splitlines()]
    else:
        lines.append("  none in the namespace")
    if why.moreCandidates:
        lines.append(f"  ... and {why.moreCandidates} more")
    lines.append("")
    lines.append(f"Run: {why.run or 'none'}")
    if why.steps:
        rows = [["#", "STEP", "ACTION", "STATE", "VERDICT", "REASON", "WHY"]]
        rows += [
            [str(n), s.name, s.action, s.state, s.verdict, shown(s.reason or "-"), shown(s.why or "-")]
            for n, s in enumerate(why.steps, start=1)
        ]
        lines += ["  " + line for line in table(rows).splitlines()]
    lines.append("")
    if why.hold is not None:
        lines.append(f"Held by: {why.hold.type} {why.hold.reason}: {why.hold.message}")
    lines.append(f"Next: {why.next}")
    return lines


# ----------------------------------------------------------------------------- --alert


def read_config(api: Api, namespace: str) -> tuple[FileConfig, str]:
    """The operator's config from its ConfigMap, and a line saying where it came from; the
    defaults when it cannot be read (not allowed, absent, invalid), said so."""
    where = f"ConfigMap {namespace}/{CONFIG_MAP}"
    try:
        found = api.core.read_namespaced_config_map(CONFIG_MAP, namespace)
    except ApiException as exc:
        return FileConfig(), f"config: the defaults ({where} unreadable: {server_error(exc)})"
    text = (found.data or {}).get(CONFIG_KEY)
    if text is None:
        return FileConfig(), f"config: the defaults ({where} has no key {CONFIG_KEY})"
    try:
        return FileConfig.model_validate(yaml.safe_load(text) or {}), f"config: {where}"
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        return FileConfig(), f"config: the defaults ({where} is invalid: {first})"


def _payload(path: str) -> WebhookPayload:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise Failed(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise Failed(f"{path} is not JSON: {exc}") from None
    try:
        payload = WebhookPayload.model_validate(raw)
    except ValidationError as exc:
        raise Failed(f"{path} is not an Alertmanager webhook payload: {exc.errors()[0]['msg']}") from None
    if payload.version != "4":
        raise Failed(f"{path} is webhook payload version {payload.version}; the operator takes version 4")
    return payload


def _playbooks(api: Api, namespace: str, config: FileConfig) -> tuple[list[Candidate], dict[str, str]]:
    valid, invalid = [], {}
    for pb in api.objects.list("playbooks", namespace):
        meta = pb.get("metadata") or {}
        parsed, found = problems(dict(pb.get("spec") or {}), config.jobs)
        if parsed is None or found:
            invalid[str(meta.get("name"))] = "; ".join(found) or "invalid spec"
        else:
            valid.append(Candidate(str(meta.get("name")), parsed, meta.get("generation")))
    return sorted(valid, key=lambda c: c.name), invalid


def _existing(api: Api, namespace: str, fingerprint: str) -> str | None:
    """The open incident of this alert, if any (the operator records the alert's state on it)."""
    found = api.objects.list("incidents", namespace, label_selector=f"{LABEL_FINGERPRINT}={fingerprint}")
    open_ = [i for i in found if not (i.get("spec") or {}).get("closed")]
    return str(open_[0]["metadata"]["name"]) if open_ else None


def _replay(api: Api, args: argparse.Namespace) -> None:
    """Print, per alert of the payload, what its incident would meet here (or why none opens);
    with -o json, one document with the same."""
    payload = _payload(args.alert)
    config, source = read_config(api, args.operator_namespace)
    lines = [
        f"Replay of {args.alert} ({len(payload.alerts)} alerts) in namespace {api.namespace}: "
        "nothing is created",
        source,
    ]
    documents: list[dict[str, Any]] = []
    for alert in payload.alerts:
        said, why = _replay_one(api, args, config, alert)
        lines += ["", *said]
        if why is not None:
            lines += render(why).splitlines()
        documents.append(
            {"said": said, **({} if why is None else why.model_dump(mode="json", exclude_none=True))}
        )
    if args.output == "json":
        document = {"config": source, "alerts": documents, "unknown": list(UNKNOWN_TO_A_REPLAY)}
        print(json.dumps(document, indent=2))
        return
    lines += ["", "Not known to a replay (the operator decides them when the alert arrives):"]
    lines += [f"  - {unknown}" for unknown in UNKNOWN_TO_A_REPLAY]
    print("\n".join(shown(line) for line in lines))


def _replay_one(
    api: Api, args: argparse.Namespace, config: FileConfig, alert: Alert
) -> tuple[list[str], Explanation | None]:
    planned = plan_alert(alert, config.alertIntake, (), own_namespace=args.operator_namespace)
    if isinstance(planned, Skip):
        return [f"Alert {planned.fingerprint}: opens no incident ({planned.code}): {planned.reason}"], None
    name = planned.base_name
    if planned.namespace != api.namespace:
        return [
            f"Alert {planned.fingerprint}: its incident would be in namespace {planned.namespace}, "
            f"not {api.namespace}: replay it with -n {planned.namespace}"
        ], None
    spec = IncidentSpec.model_validate(planned.spec)
    said = [f"Alert {planned.fingerprint} ({alert.status}): incident {name}, {spec.severity} {spec.category}"]
    try:
        existing = _existing(api, api.namespace, planned.fingerprint)
    except ApiException as exc:
        existing = None
        said.append(f"Whether it has an open incident already is unknown: {server_error(exc)}")
    if existing is not None:
        said.append(
            f"It has an open incident already, {existing}: the operator records the alert's state on it "
            f"(kubectl incident explain {existing})"
        )
        return said, None
    if alert.status == "resolved":
        said.append("It is resolved and has no open incident: the operator opens none")
        return said, None
    playbooks, invalid = _playbooks(api, api.namespace, config)
    selection = select(spec, playbooks, invalid)
    why = replay(spec, playbooks, invalid, selection, incident=name, namespace=api.namespace, now=utc_now())
    return said, why
