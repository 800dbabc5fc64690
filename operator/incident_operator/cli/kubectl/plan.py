"""`kubectl incident plan`: the Playbook that would run, and what each step would do now."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from incident_operator.adapters.kube import pod_ready
from incident_operator.api.actions import ACTIONS
from incident_operator.api.models import PlaybookSpec
from incident_operator.cli.kubectl.client import Api, Failed, parse_incident, server_error
from incident_operator.core.matching import Candidate, select
from incident_operator.core.planner import pods_to_delete, scale_decision
from incident_operator.core.validation import problems


def cmd_plan(api: Api, args: argparse.Namespace) -> None:
    spec, status = parse_incident(api.get(args.name))
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
    target = getattr(params, "target", None)
    if target is not None and target.fixed is None:  # the incident's own: resolved when it starts
        live = None
    if action == "deletePods" and params.selector is None:
        live = None
    return live(api, playbook, action, params) if live else ACTIONS[action].plan(params)


def _workload_plan(api: Api, playbook: PlaybookSpec, action: str, params: Any) -> str:
    ns = api.namespace
    ref = params.target.fixed
    read = (
        api.apps.read_namespaced_deployment_scale
        if str(ref.kind) == "Deployment"
        else (api.apps.read_namespaced_stateful_set_scale)
    )
    try:
        current = read(ref.name, ns)
    except ApiException as exc:
        return f"{ref.kind}/{ref.name}: {server_error(exc)}"
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
        admitted = f"the API server refuses it for you (the operator's rights differ): {server_error(exc)}"
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
