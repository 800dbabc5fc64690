"""The action table: every playbook action, declared once with all that follows from it.

An entry (`Action`) holds the action's traits (mutating, cancellable, ...), its one-line summary
(README and API reference), the permissions a step of it needs (access reviews before it runs),
the most it can ever need (the shipped remediator ClusterRole is checked against the union), and
the line `kubectl incident plan` prints. Its parameters are the model below of the same name, a
field of `Step`. Adding an action is one parameter model, one entry here, and one function in
`controllers.actions.REGISTRY`; unit tests tie the four together. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, JsonValue, model_validator

from incident_operator.api.base import ApiModel, DnsName, WorkloadRef
from incident_operator.api.keys import API_GROUP
from incident_operator.api.rbac import HISTORIES, Permission, history_resource, on_workload, on_workloads
from incident_operator.api.targets import StepTarget


class SecretKeyRef(ApiModel):
    name: DnsName = Field(description="Secret in the Playbook's namespace.")
    key: str = Field(min_length=1, description="Key in the Secret.")


class ScaleAction(ApiModel):
    """Set replicas (absolute) or change them by delta, capped by max and guardrails.maxReplicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.replicas) != has(self.delta)",
                    "message": "give exactly one of replicas, delta",
                }
            ]
        }
    )

    target: StepTarget
    replicas: int | None = Field(default=None, ge=0, le=10000, description="Absolute replica count.")
    delta: int | None = Field(
        default=None, ge=-10000, le=10000, description="Change of the current replica count."
    )
    max: int | None = Field(default=None, ge=0, le=10000, description="Never scale above this.")


class TargetAction(ApiModel):
    target: StepTarget


_SELECTOR_OR_TARGET: dict[str, JsonValue] = {
    "x-kubernetes-validations": [
        {"rule": "has(self.selector) != has(self.target)", "message": "give exactly one of selector, target"}
    ]
}


class PodsOf(ApiModel):
    """Pods by a label selector, or the pods of a workload (`target`, e.g. the incident's own)."""

    selector: dict[str, str] | None = Field(
        default=None, min_length=1, description="Label selector (matchLabels) of the pods."
    )
    target: StepTarget | None = Field(
        default=None, description="The pods of this workload (its own selector), or of the incident's."
    )

    @model_validator(mode="after")
    def _one_of(self) -> PodsOf:
        if (self.selector is None) == (self.target is None):
            raise ValueError("give exactly one of selector, target")
        return self


class DeletePodsAction(PodsOf):
    """Delete individual pods (their controller replaces them), bounded."""

    model_config = ConfigDict(json_schema_extra=_SELECTOR_OR_TARGET)

    max: int = Field(default=1, ge=1, le=1000, description="Delete at most this many pods.")
    onlyUnready: bool = Field(default=False, description="Delete only pods that are not Ready.")


class SecretRef(ApiModel):
    name: DnsName = Field(description="Secret in the Playbook's namespace.")


class HttpMethod(StrEnum):
    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"


REQUEST_URL = r"^https?://[^/?#@]+([/?][^#]*)?$"
"""A URL a step may ask: http(s), no `user:password@` before the host, no `#fragment` (which would
turn `promQuery`'s `/api/v1/query` into a request of any path)."""
URL_RULE: dict[str, JsonValue] = {
    "rule": f"self.matches('{REQUEST_URL}')",
    "message": "must be an http(s) URL without user:password@ and without a #fragment",
}


def request_url(value: str) -> str:
    """`value` if it is a URL a step may ask (`REQUEST_URL`), else a ValueError saying why."""
    if not re.match(REQUEST_URL, value):
        raise ValueError(str(URL_RULE["message"]))
    return value


RequestUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        pattern="^https?://",
        json_schema_extra={"x-kubernetes-validations": [URL_RULE]},
    ),
    AfterValidator(request_url),
]
"""The `url` of a step that sends a request (`httpCheck`, `promQuery`): checked by the API server
(schema and CEL) and by the models alike."""


URL_TARGET_FIELD = "(^|[^{])([{][{])*[{]target(Name|Kind)[}]"
"""A field of an httpCheck URL that names the workload checked (`{targetName}`, `{targetKind}`):
it needs a `target`. A regular expression (RE2 as CEL's `matches`, and Python's `re`, read it
alike): the field opened by a `{` after an even number of others, so a doubled `{{targetName}}`
is the literal text it renders to, not a field (as the template itself reads it)."""


class HttpCheckAction(ApiModel):
    """Ask a URL until it answers as expected: a health endpoint, or a smoke test (a POST that
    must answer 200 with some text within a latency bound). With a `target`, once per workload,
    the URL a template over it (`{targetName}`, `{targetKind}`, `{namespace}`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.body) || "
                    "(has(self.method) && self.method in ['POST', 'PUT', 'PATCH'])",
                    "message": "a body needs method POST, PUT or PATCH",
                },
                {
                    "rule": f"has(self.target) || !self.url.matches('{URL_TARGET_FIELD}')",
                    "message": "url names {targetName} or {targetKind}: give a target",
                },
            ]
        }
    )

    url: RequestUrl = Field(
        description=(
            "URL to ask, e.g. http://web.shop.svc/healthz (a Service of the namespace) or a public URL. "
            "A template: {namespace} is the incident's namespace; with a target, {targetName} and "
            "{targetKind} the workload checked (the check runs once per target), e.g. "
            "http://{targetName}.{namespace}.svc/healthz; {{ and }} are literal braces. The rendered "
            "URL passes the egress policy like any other."
        )
    )
    target: StepTarget | None = Field(
        default=None,
        description="Check once per workload: a fixed one, or the incident's own targets "
        "(fromIncident, within the Playbook's allowedTargets, pinned for the run like any step's).",
    )
    method: HttpMethod = Field(default=HttpMethod.GET, description="GET (default), HEAD, POST, PUT or PATCH.")
    body: str | None = Field(default=None, max_length=65536, description="Request body (sent as is).")
    contentType: str = Field(
        default="application/json", max_length=256, description="Content-Type of the body."
    )
    headersSecretRef: SecretRef | None = Field(
        default=None,
        description="A Secret whose keys are header names and values header values (e.g. Authorization).",
    )
    expectStatus: int = Field(default=200, ge=100, le=599)
    expectBodyContains: str | None = Field(
        default=None, min_length=1, max_length=4096, description="The answer's body must contain this text."
    )
    maxLatencyMs: int | None = Field(
        default=None, ge=1, le=600000, description="An answer slower than this counts as a failure."
    )
    intervalSeconds: int = Field(default=5, ge=1, le=3600)
    successThreshold: int = Field(default=1, ge=1, le=100, description="Consecutive successes needed.")

    @model_validator(mode="after")
    def _target_fields_need_a_target(self) -> HttpCheckAction:
        if self.target is None and re.search(URL_TARGET_FIELD, self.url):
            raise ValueError("url names {targetName} or {targetKind}: give a target")
        return self


class WebhookTarget(ApiModel):
    urlSecretRef: SecretKeyRef


class NotifyAction(ApiModel):
    """Post a message (a template over the incident) to a JSON webhook or a Slack webhook."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.webhook) != has(self.slack)",
                    "message": "give exactly one of webhook, slack",
                }
            ]
        }
    )

    webhook: WebhookTarget | None = None
    slack: WebhookTarget | None = None
    message: str = Field(min_length=1, description="Template, e.g. '{severity} {title}: {phase}'.")


class CollectEvidenceAction(PodsOf):
    """Pods, logs, events, rollout history and resource usage into a ConfigMap (one per target)."""

    model_config = ConfigDict(json_schema_extra=_SELECTOR_OR_TARGET)

    logLines: int = Field(default=100, ge=0, le=10000)
    events: bool = True
    rolloutHistory: bool = Field(
        default=True,
        description="Record the rollout history (revisions, times, change-cause) of the incident's targets.",
    )
    resourceUsage: bool = Field(
        default=True, description="Record the pods' CPU and memory where the metrics API answers."
    )


class IsolateAction(ApiModel):
    selector: dict[str, str] = Field(
        min_length=1, description="Pods to cut off with a deny-all NetworkPolicy."
    )


class RollbackAction(ApiModel):
    """Put a workload back on an earlier revision's pod template, as `kubectl rollout undo` does."""

    target: StepTarget
    toRevision: int | None = Field(
        default=None, ge=1, description="The revision to go back to (default: the one before the current)."
    )


class CompareOp(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="


class Expectation(ApiModel):
    op: CompareOp = Field(description="<, <=, >, >=, == or !=")
    value: float = Field(description="Every sample of the query's answer is compared with this.")


class PromQueryAction(ApiModel):
    """A PromQL condition that must hold (for every series of the answer) for forSeconds."""

    url: RequestUrl = Field(
        description=(
            "Prometheus base URL, e.g. http://prometheus.shop.svc:9090 (a Service of the namespace)"
            " or a granted host."
        )
    )
    query: str = Field(min_length=1, max_length=8192, description="PromQL (instant query).")
    expect: Expectation
    forSeconds: int = Field(default=0, ge=0, le=86400, description="Held this long (0: once).")
    intervalSeconds: int = Field(default=5, ge=1, le=3600, description="Between queries.")
    headersSecretRef: SecretRef | None = Field(
        default=None, description="A Secret whose keys are header names (e.g. Authorization)."
    )


class JobAction(ApiModel):
    """Run a Kubernetes Job from a pod template (a check such as pg_isready, or clearing a queue)."""

    template: dict[str, Any] = Field(
        description="A PodTemplateSpec (metadata, spec); restartPolicy defaults to Never.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    timeoutSeconds: int = Field(
        default=300, ge=1, le=86400, description="activeDeadlineSeconds of the Job; failed after it."
    )
    backoffLimit: int = Field(default=0, ge=0, le=10, description="Pod retries inside the Job.")
    logLines: int = Field(default=50, ge=0, le=1000, description="Lines of the pod's log recorded.")
    mitigates: bool = Field(
        default=False,
        description="Its success is a mitigation (e.g. clearing a queue); a check (pg_isready) is not.",
    )


Targets = Sequence[WorkloadRef]
"""The incident's own targets (`spec.targets`), for actions that act on them."""


@dataclass(frozen=True)
class Action:
    """One playbook action, declared once: everything else about it is derived or checked."""

    params: type[ApiModel]
    """The model of its parameters: the `Step` field of the same key (and so its CRD schema)."""
    summary: str
    """One line for people: the README's and the API reference's action tables."""
    needs: Callable[[Any, Targets], Iterable[Permission]]
    """The permissions one step of it needs, given its parameters and the incident's targets."""
    rbac: frozenset[Permission]
    """The most `needs` can ever return: what the remediator ClusterRole must grant for it."""
    plan: Callable[[Any], str]
    """What a step of it will do, for `kubectl incident plan` (which adds live facts where it can)."""
    mutating: bool
    """Changes the cluster (or may: a Job runs what its author wrote). Safety treats it so: opt-in,
    approvals, the alert-resolved rule and the breaker. Whether its success mitigates (phase
    Mitigating, condition Mitigated) is `Step.mitigates`: the same, except for a Job."""
    cancellable: bool = False
    """Only waits or reads: cancelled when a person resolves or closes the incident meanwhile."""
    target: bool = False
    """Its parameters carry `target` (a workload of the incident, checked after the steps)."""
    start_unwritten: bool = False
    """The step's start need not be written before the action runs, because the action either
    persists its own decision before it changes anything (scale, deletePods) or changes nothing
    (waitReady, httpCheck). The engine then writes the start together with that decision or with
    the outcome: one status write per step instead of two, with the same exactly-once guarantee."""


def _secret_ref(ref: SecretRef | SecretKeyRef | None) -> set[Permission]:
    return {Permission("get", "secrets")} if ref is not None else set()


def _scale_plan(p: ScaleAction) -> str:
    change = f"to {p.replicas}" if p.replicas is not None else f"by {p.delta:+d}"
    cap = f", at most {p.max}" if p.max is not None else ""
    return f"scale {p.target.describe()} {change}{cap}"


def _job_plan(p: JobAction) -> str:
    image = ((p.template.get("spec") or {}).get("containers") or [{}])[0].get("image", "?")
    return f"run a Job ({image}) for at most {p.timeoutSeconds}s"


JOBS_RBAC = frozenset(
    {
        Permission("create", "jobs", "batch"),
        Permission("get", "jobs", "batch"),
        Permission("list", "jobs", "batch"),
    }
)
"""What the `incident-operator-jobs` ClusterRole grants: a Job step's own rights, a separate
opt-in of a namespace (RoleBinding `incident-operator-jobs`). Listing counts the operator's
Jobs running (`jobs.maxConcurrentPerNamespace`)."""


def _job_needs(p: JobAction, _: Targets) -> set[Permission]:
    needs = set(JOBS_RBAC)
    if p.logLines > 0:
        needs |= {Permission("list", "pods"), Permission("get", "pods", subresource="log")}
    return needs


def _evidence_needs(p: CollectEvidenceAction, targets: Targets) -> set[Permission]:
    needs = {Permission("list", "pods"), Permission("create", "configmaps")}
    needs.add(Permission("update", "configmaps"))
    if p.logLines > 0:
        needs.add(Permission("get", "pods", subresource="log"))
    if p.events:
        needs.add(Permission("list", "events"))
    if p.rolloutHistory:
        kinds = p.target.kinds if p.target is not None else [ref.kind for ref in targets]
        needs |= {Permission("list", history_resource(kind), "apps") for kind in kinds}
    return needs | _on_targets(
        p.target, ("get", "")
    )  # resourceUsage is best effort: without metrics.k8s.io it is noted, not needed


LOCK_RBAC = frozenset(
    Permission(verb, "leases", "coordination.k8s.io") for verb in ("get", "create", "update", "delete")
)
"""A mutating step on a workload first takes its lock, a Lease in the namespace (`controllers.targets`)."""


def _on_targets(target: StepTarget | None, *rights: tuple[str, str]) -> set[Permission]:
    """`rights` (verb, subresource) on every kind the step may act on (none without a target)."""
    if target is None:
        return set()
    return {on_workload(verb, kind, sub) for kind in target.kinds for verb, sub in rights}


def _pods(p: PodsOf) -> str:
    return p.target.describe() if p.target is not None else _selector(p.selector or {})


def _selector(selector: dict[str, str]) -> str:
    return json.dumps(selector, sort_keys=True)


ACTIONS: dict[str, Action] = {
    "scale": Action(
        ScaleAction,
        "Set a Deployment's or StatefulSet's replicas (or change them by a delta), within guardrails.",
        needs=lambda p, _: _on_targets(p.target, ("get", ""), ("patch", "scale")) | LOCK_RBAC,
        rbac=on_workloads("get") | on_workloads("patch", "scale") | LOCK_RBAC,
        plan=_scale_plan,
        mutating=True,
        target=True,
        start_unwritten=True,
    ),
    "restart": Action(
        TargetAction,
        "Rolling restart of a Deployment or StatefulSet, as `kubectl rollout restart` does.",
        needs=lambda p, _: _on_targets(p.target, ("get", ""), ("patch", "")) | LOCK_RBAC,
        rbac=on_workloads("get") | on_workloads("patch") | LOCK_RBAC,
        plan=lambda p: f"rollout restart of {p.target.describe()}: its pods replaced gradually",
        mutating=True,
        target=True,
    ),
    "deletePods": Action(
        DeletePodsAction,
        "Delete a bounded number of pods (optionally only unready ones); their controller replaces them.",
        needs=lambda p, _: (
            {Permission("list", "pods"), Permission("delete", "pods")}
            | (_on_targets(p.target, ("get", "")) | LOCK_RBAC if p.target is not None else set())
        ),
        rbac=frozenset({Permission("list", "pods"), Permission("delete", "pods")})
        | on_workloads("get")
        | LOCK_RBAC,
        plan=lambda p: f"delete at most {p.max} {'unready ' if p.onlyUnready else ''}pods of {_pods(p)}",
        mutating=True,
        target=True,
        start_unwritten=True,
    ),
    "waitReady": Action(
        TargetAction,
        "Wait until a workload is rolled out and available.",
        needs=lambda p, _: _on_targets(p.target, ("get", "")),
        rbac=on_workloads("get"),
        plan=lambda p: f"wait until {p.target.describe()} is rolled out and available",
        mutating=False,
        cancellable=True,
        target=True,
        start_unwritten=True,
    ),
    "httpCheck": Action(
        HttpCheckAction,
        "Ask a URL until it answers as expected (status, body text, latency): a health check or smoke test.",
        needs=lambda p, _: _secret_ref(p.headersSecretRef),
        rbac=frozenset({Permission("get", "secrets")}),
        plan=lambda p: (
            f"{p.method} {p.url} until it answers {p.expectStatus}"
            + (f" containing {p.expectBodyContains!r}" if p.expectBodyContains else "")
            + (f" within {p.maxLatencyMs}ms" if p.maxLatencyMs else "")
            + (f", once for each of {p.target.describe()}" if p.target is not None else "")
        ),
        mutating=False,
        cancellable=True,
        start_unwritten=True,
        target=True,
    ),
    "notify": Action(
        NotifyAction,
        "Post a message (a template over the incident) to a webhook or Slack URL kept in a Secret.",
        needs=lambda p, _: {Permission("get", "secrets")},
        rbac=frozenset({Permission("get", "secrets")}),
        plan=lambda p: (
            f"post to the {'Slack' if p.slack else 'webhook'} URL of its Secret: {p.message[:80]!r}"
        ),
        mutating=False,
    ),
    "collectEvidence": Action(
        CollectEvidenceAction,
        "Record pods, logs, events, rollout history and resource usage in a ConfigMap (changes nothing).",
        needs=_evidence_needs,
        rbac=frozenset(
            {
                Permission("list", "pods"),
                Permission("get", "pods", subresource="log"),
                Permission("list", "events"),
                Permission("create", "configmaps"),
                Permission("update", "configmaps"),
                Permission("list", "pods", "metrics.k8s.io"),
            }
        )
        | HISTORIES,
        plan=lambda p: f"logs and events of pods of {_pods(p)} into a ConfigMap (changes nothing)",
        mutating=False,
        target=True,
    ),
    "isolate": Action(
        IsolateAction,
        "Cut pods off the network with a deny-all NetworkPolicy owned by the incident.",
        needs=lambda p, _: {Permission("create", "networkpolicies", "networking.k8s.io")},
        rbac=frozenset({Permission("create", "networkpolicies", "networking.k8s.io")}),
        plan=lambda p: f"deny-all NetworkPolicy for pods {p.selector}",
        mutating=True,
    ),
    "rollback": Action(
        RollbackAction,
        "Put a workload back on an earlier revision's pod template, as `kubectl rollout undo` does.",
        needs=lambda p, _: (
            _on_targets(p.target, ("get", ""), ("patch", ""))
            | {Permission("list", history_resource(kind), "apps") for kind in p.target.kinds}
            | LOCK_RBAC
        ),
        rbac=on_workloads("get") | on_workloads("patch") | HISTORIES | LOCK_RBAC,
        plan=lambda p: (
            f"roll {p.target.describe()} back to "
            + (f"revision {p.toRevision}" if p.toRevision else "the previous version")
            + " (its pod template)"
        ),
        mutating=True,
        target=True,
        start_unwritten=True,
    ),
    "job": Action(
        JobAction,
        "Run a Job from a pod template (a check such as pg_isready, or a fix when `mitigates`).",
        needs=_job_needs,
        rbac=JOBS_RBAC | {Permission("list", "pods"), Permission("get", "pods", subresource="log")},
        plan=_job_plan,
        mutating=True,  # it runs what its author wrote; it mitigates only with `mitigates` (Step.mitigates)
    ),
    "promQuery": Action(
        PromQueryAction,
        "A PromQL condition that must hold for every series for a while (Prometheus instant queries).",
        needs=lambda p, _: _secret_ref(p.headersSecretRef),
        rbac=frozenset({Permission("get", "secrets")}),
        plan=lambda p: (
            f"PromQL {p.query!r} {p.expect.op} {p.expect.value:g}"
            + (f" for {p.forSeconds}s" if p.forSeconds else "")
            + f" ({p.url})"
        ),
        mutating=False,
        cancellable=True,
        start_unwritten=True,
    ),
}
"""The one table of actions: the step keys, the sets below, access reviews, the remediator's
RBAC, `kubectl incident plan` and the documentation derive from it (unit tests tie it to the Step
model's fields and to the action registry)."""

ACTION_KEYS = tuple(ACTIONS)
MUTATING_ACTIONS = frozenset(k for k, t in ACTIONS.items() if t.mutating)
CANCELLABLE_ACTIONS = frozenset(k for k, t in ACTIONS.items() if t.cancellable)
TARGET_ACTIONS = frozenset(k for k, t in ACTIONS.items() if t.target)
START_UNWRITTEN_ACTIONS = frozenset(k for k, t in ACTIONS.items() if t.start_unwritten)

HEALTH_RBAC = on_workloads("get")
"""Beyond the actions: the health check after the steps reads the incident's targets."""
POSTMORTEM_RBAC = frozenset({Permission("create", "configmaps"), Permission("update", "configmaps")})
"""Beyond the actions: the post-mortem draft is a ConfigMap in the incident's namespace."""
RETENTION_RBAC = frozenset({Permission("get", "configmaps")})
"""Beyond the actions: retention (config `retention`) reads the post-mortem into the archive (the
ConfigMaps an incident owns go with it: the garbage collector follows their ownerReference)."""
DRILL_RBAC = (
    on_workloads("get")
    | on_workloads("patch", "scale")
    | {Permission("list", "pods"), Permission("delete", "pods")}
)
"""Beyond the actions: what a Drill needs to break its target (`core.drills.needs`)."""
SERVICE_RBAC = frozenset(
    {
        Permission("get", "services"),
        Permission("list", "endpointslices", "discovery.k8s.io"),
        Permission("list", "pods"),
    }
)
"""Beyond the actions: a request of a Playbook to one of its namespace's Services (`NAME.NS.svc`)
reads that Service and, if headless, its EndpointSlices and the pods it selects (the per-namespace
egress policy: never a host-network pod)."""
INTAKE_RBAC = on_workloads("list") | {
    Permission("list", "pods"),
    Permission("list", "replicasets", "apps"),
    Permission("get", "services"),
}
"""Beyond the actions: alert intake resolves an alert's `pod` label to its Deployment (through its
ReplicaSet) or StatefulSet, and a `service` label to the workloads its selector matches, with the
namespace's remediator rights (a namespace that has not opted in gets the alert's other targets)."""
OPT_IN = Permission("remediate", "incidents", API_GROUP)
"""The namespace opted in: a custom verb only the remediator role grants, asked for before every
run, whatever its steps need, so that a playbook of requests alone (`httpCheck`, `promQuery`,
`notify`) runs nowhere that did not opt in either."""
REMEDIATOR_RBAC = (
    (frozenset().union(*(a.rbac for a in ACTIONS.values())) - JOBS_RBAC)
    | {OPT_IN}
    | HEALTH_RBAC
    | POSTMORTEM_RBAC
    | RETENTION_RBAC
    | DRILL_RBAC
    | SERVICE_RBAC
    | INTAKE_RBAC
)
"""Exactly what the `incident-operator-remediator` ClusterRole grants (a unit test compares): every
action's, but a Job's own (`JOBS_RBAC`, the `incident-operator-jobs` ClusterRole)."""
