"""Permissions as the API server's access reviews and RBAC rules name them. Pure.

What an action needs is declared with the action (`api.actions.ACTIONS`); the engine asks for it
with SelfSubjectAccessReviews before acting, and a unit test holds the shipped remediator
ClusterRole to exactly the union of what the actions and the engine can need.
"""

from __future__ import annotations

from dataclasses import dataclass

from incident_operator.api.keys import API_GROUP


@dataclass(frozen=True, order=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""

    def describe(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {resource}" + (f".{self.group}" if self.group else "")


def workload_resource(kind: str) -> str:
    """The resource of a workload kind (Deployment or StatefulSet)."""
    return "statefulsets" if str(kind) == "StatefulSet" else "deployments"


def history_resource(kind: str) -> str:
    """Where a workload's revisions live: ReplicaSets of a Deployment, ControllerRevisions otherwise."""
    return "replicasets" if str(kind) == "Deployment" else "controllerrevisions"


def on_workload(verb: str, kind: str, subresource: str = "") -> Permission:
    return Permission(verb, workload_resource(kind), "apps", subresource)


def on_workloads(verb: str, subresource: str = "") -> frozenset[Permission]:
    """`verb` on both workload kinds (what an action may need, whichever kind a step names)."""
    return frozenset(on_workload(verb, kind, subresource) for kind in ("Deployment", "StatefulSet"))


HISTORIES = frozenset(Permission("list", history_resource(k), "apps") for k in ("Deployment", "StatefulSet"))


# The operator's authenticated HTTP endpoints (`/metrics`, `/reports`), guarded as controller-runtime
# guards its metrics: a TokenReview says who sent the bearer token, a SubjectAccessReview whether that
# identity may do what the endpoint needs. A unit test holds the shipped ClusterRoles to these names.
METRICS_PATH = "/metrics"
METRICS_VERB = "get"
"""`/metrics` needs `get` on the non-resource URL METRICS_PATH (ClusterRole METRICS_READER_ROLE)."""
METRICS_READER_ROLE = "incident-operator-metrics-reader"
REPORT_READ = Permission("list", "incidents", API_GROUP)
"""`/reports/YYYY-MM?namespace=NS` needs this in NS; the cluster-wide report at cluster scope."""
SCHEDULE_READ = Permission("get", "oncallschedules", API_GROUP)
"""`/oncall/NS/NAME.ics` with a bearer token needs this on that schedule (or its calendar token)."""
ENDPOINT_REVIEWS = frozenset(
    {
        Permission("create", "tokenreviews", "authentication.k8s.io"),
        Permission("create", "subjectaccessreviews", "authorization.k8s.io"),
    }
)
"""What the operator's ClusterRole grants so that it can guard its endpoints."""
