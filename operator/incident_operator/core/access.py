"""What the operator must be allowed to do in a namespace to run a playbook there, and what to
tell people when it is not (pure: no kopf, no Kubernetes client, no I/O).

A namespace opts in to remediation with a RoleBinding that grants the ClusterRole
`incident-operator-remediator` to the operator's ServiceAccount. Before a playbook (or one of its
steps) starts, the engine asks the API server (SelfSubjectAccessReview) for exactly the
permissions listed here; if one is missing the incident is `Stalled` with reason `Forbidden` and
a message naming the RoleBinding to create, and it checks again later without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from incident_operator.api.models import IncidentSpec, PlaybookSpec, WorkloadRef

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, order=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""

    def describe(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {resource}" + (f".{self.group}" if self.group else "")


def _workload(ref: WorkloadRef) -> str:
    return "statefulsets" if str(ref.kind) == "StatefulSet" else "deployments"


def required(spec: IncidentSpec, playbook: PlaybookSpec) -> list[Permission]:
    """Every permission the playbook's steps and the health check after them use, sorted, unique."""
    needed: set[Permission] = {
        Permission("get", _workload(ref), "apps") for ref in spec.targets or []
    }  # the health check after the steps reads the targets
    for step in playbook.steps:
        if step.scale is not None:
            kind = _workload(step.scale.target)
            needed |= {Permission("get", kind, "apps"), Permission("patch", kind, "apps", "scale")}
        if step.restart is not None:
            kind = _workload(step.restart.target)
            needed |= {Permission("get", kind, "apps"), Permission("patch", kind, "apps")}
        if step.waitReady is not None:
            needed.add(Permission("get", _workload(step.waitReady.target), "apps"))
        if step.deletePods is not None:
            needed |= {Permission("list", "pods"), Permission("delete", "pods")}
        if step.notify is not None:
            needed.add(Permission("get", "secrets"))
        if step.isolate is not None:
            needed.add(Permission("create", "networkpolicies", "networking.k8s.io"))
        if step.rollback is not None:
            ref = step.rollback.target
            history = "replicasets" if str(ref.kind) == "Deployment" else "controllerrevisions"
            needed |= {
                Permission("get", _workload(ref), "apps"),
                Permission("patch", _workload(ref), "apps"),
                Permission("list", history, "apps"),
            }
        if step.job is not None:
            needed |= {Permission("create", "jobs", "batch"), Permission("get", "jobs", "batch")}
            if step.job.logLines > 0:
                needed |= {Permission("list", "pods"), Permission("get", "pods", subresource="log")}
        for check in (step.httpCheck, step.promQuery):
            if check is not None and check.headersSecretRef is not None:
                needed.add(Permission("get", "secrets"))
        if step.collectEvidence is not None:
            evidence = step.collectEvidence
            needed |= {
                Permission("list", "pods"),
                Permission("create", "configmaps"),
                Permission("update", "configmaps"),
            }
            if evidence.logLines > 0:
                needed.add(Permission("get", "pods", subresource="log"))
            if evidence.events:
                needed.add(Permission("list", "events"))
            if evidence.rolloutHistory:
                for ref in spec.targets or []:
                    history = "replicasets" if str(ref.kind) == "Deployment" else "controllerrevisions"
                    needed.add(Permission("list", history, "apps"))
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
