"""What the operator must be allowed to do in a namespace to run a playbook there, and what to
tell people when it is not (pure: no kopf, no Kubernetes client, no I/O).

A namespace opts in to remediation with a RoleBinding that grants the ClusterRole
`incident-operator-remediator` to the operator's ServiceAccount. Before a playbook (or one of its
steps) starts, the engine asks the API server (SelfSubjectAccessReview) for exactly the
permissions listed here; if one is missing the incident is `Stalled` with reason `Forbidden` and
a message naming the RoleBinding to create, and it checks again later without a restart.

Job steps need a second opt-in: the ClusterRole `incident-operator-jobs` (create, get and list
Jobs: `api.actions.JOBS_RBAC`), granted by a RoleBinding of that name. A namespace with the first
but not the second stalls a playbook with a Job step the same way, naming the second.
"""

from __future__ import annotations

from incident_operator.api.actions import ACTIONS, JOBS_RBAC, OPT_IN
from incident_operator.api.models import IncidentSpec, PlaybookSpec
from incident_operator.api.rbac import Permission, on_workload

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


def required(spec: IncidentSpec, playbook: PlaybookSpec) -> list[Permission]:
    """Every permission the playbook's steps and the health check after them use, and the opt-in
    itself (`OPT_IN`), sorted, unique.

    What a step needs is declared with its action (`api.actions.ACTIONS[...].needs`)."""
    targets = spec.targets or []
    needed = {OPT_IN}  # every run, requests alone included, needs the namespace's opt-in
    needed.update(on_workload("get", ref.kind) for ref in targets)  # the health check reads them
    for step in playbook.steps:
        needed.update(ACTIONS[step.action].needs(step.params, targets))
    return sorted(needed)


def forbidden_message(
    namespace: str,
    denied: list[Permission],
    username: str | None,
    binding: str = "incident-operator-remediator",
    jobs_binding: str = "incident-operator-jobs",
) -> str:
    """Why the operator cannot act in `namespace`, and the one command per missing opt-in: the
    remediator's, and the Jobs' for what only `incident-operator-jobs` grants."""
    who = username or "the operator"
    if username and username.startswith(SERVICE_ACCOUNT_PREFIX):
        subject = "--serviceaccount=" + username.removeprefix(SERVICE_ACCOUNT_PREFIX)
    elif username:
        subject = f"--user={username}"
    else:
        subject = "--serviceaccount=incident-operator:incident-operator"
    jobs = [p for p in denied if p in JOBS_RBAC]
    others = [p for p in denied if p not in JOBS_RBAC]
    parts = []
    for missing, name, what in ((others, binding, "remediation"), (jobs, jobs_binding, "Job steps")):
        if missing:
            parts.append(
                f"{who} may not {', '.join(p.describe() for p in missing)} in namespace {namespace}: "
                f"the namespace has not opted in to {what} (RoleBinding {name} is missing). Opt in "
                f"with: kubectl create rolebinding {name} -n {namespace} --clusterrole={name} {subject}"
            )
    return " ".join(parts)
