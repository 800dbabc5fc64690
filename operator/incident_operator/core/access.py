"""What the operator must be allowed to do in a namespace to run a playbook there, and what to
tell people when it is not (pure: no kopf, no Kubernetes client, no I/O).

A namespace opts in to remediation with a RoleBinding that grants the ClusterRole
`incident-operator-remediator` to the operator's ServiceAccount. Before a playbook (or one of its
steps) starts, the engine asks the API server (SelfSubjectAccessReview) for exactly the
permissions listed here; if one is missing the incident is `Stalled` with reason `Forbidden` and
a message naming the RoleBinding to create, and it checks again later without a restart.
"""

from __future__ import annotations

from incident_operator.api.actions import ACTIONS
from incident_operator.api.models import IncidentSpec, PlaybookSpec
from incident_operator.api.rbac import Permission, on_workload

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


def required(spec: IncidentSpec, playbook: PlaybookSpec) -> list[Permission]:
    """Every permission the playbook's steps and the health check after them use, sorted, unique.

    What a step needs is declared with its action (`api.actions.ACTIONS[...].needs`)."""
    targets = spec.targets or []
    needed = {on_workload("get", ref.kind) for ref in targets}  # the health check reads the targets
    for step in playbook.steps:
        needed.update(ACTIONS[step.action].needs(step.params, targets))
    return sorted(needed)


def forbidden_message(
    namespace: str,
    denied: list[Permission],
    username: str | None,
    binding: str = "incident-operator-remediator",
) -> str:
    """Why the operator cannot act in `namespace`, and the one command that opts the namespace in."""
    who = username or "the operator"
    if username and username.startswith(SERVICE_ACCOUNT_PREFIX):
        subject = "--serviceaccount=" + username.removeprefix(SERVICE_ACCOUNT_PREFIX)
    elif username:
        subject = f"--user={username}"
    else:
        subject = "--serviceaccount=incident-operator:incident-operator"
    missing = ", ".join(p.describe() for p in denied)
    return (
        f"{who} may not {missing} in namespace {namespace}: the namespace has not opted in to "
        f"remediation (RoleBinding {binding} is missing). Opt in with: kubectl create rolebinding "
        f"{binding} -n {namespace} --clusterrole={binding} {subject}"
    )
