"""The API of incident-operator as pydantic models: the single source of the CRD schemas.

Pure: imports neither kopf nor a Kubernetes client. Field names are the wire names (camelCase)
of group `incident-operator.dev`, version `v1alpha1` (see docs/design/DESIGN.md). `crdgen` turns these
models into `crds/*.yaml`; a unit test fails when the committed CRDs drift from them.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from incident_operator.api.actions import (
    ACTION_KEYS,
    ACTIONS,
    TARGET_ACTIONS,
    CollectEvidenceAction,
    DeletePodsAction,
    HttpCheckAction,
    IsolateAction,
    JobAction,
    NotifyAction,
    PromQueryAction,
    RollbackAction,
    ScaleAction,
    TargetAction,
)
from incident_operator.api.base import ApiModel, DnsName, StepName, WorkloadRef
from incident_operator.api.targets import MAX_TARGETS, AllowedTargets, StepTarget, TargetStatus


class Severity(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class Category(StrEnum):
    AVAILABILITY = "availability"
    PERFORMANCE = "performance"
    SECURITY = "security"
    DATA = "data"


class Phase(StrEnum):
    DETECTED = "Detected"
    ACKNOWLEDGED = "Acknowledged"
    INVESTIGATING = "Investigating"
    MITIGATING = "Mitigating"
    MONITORING = "Monitoring"
    RESOLVED = "Resolved"
    CLOSED = "Closed"


class SourceType(StrEnum):
    MANUAL = "manual"
    ALERT = "alert"
    DRILL = "drill"


class PlaybookRef(ApiModel):
    name: DnsName = Field(description="Name of a Playbook in the Incident's namespace.")


class Source(ApiModel):
    """Where the incident came from: a person, an Alertmanager alert, or a response drill."""

    type: SourceType = Field(default=SourceType.MANUAL, description="manual, alert or drill.")
    alertname: str | None = Field(default=None, description="Alert name (alert incidents).")
    fingerprint: str | None = Field(default=None, description="Alertmanager fingerprint (alert incidents).")
    labels: dict[str, str] | None = Field(default=None, description="Alert labels.")
    annotations: dict[str, str] | None = Field(default=None, description="Alert annotations.")
    startsAt: datetime | None = Field(default=None, description="When the alert started firing.")


class Resolution(ApiModel):
    summary: str = Field(min_length=1, description="What was done; declares the incident resolved.")
    rootCause: str | None = Field(default=None, description="Root cause, if known.")


class Approval(ApiModel):
    """A step a person approved, and who: the API server admits only the requesting user as `by`."""

    step: StepName = Field(description="Name of the step with requiresApproval.")
    by: str = Field(min_length=1, max_length=253, description="Who approved: the requesting user's name.")
    run: str | None = Field(
        default=None,
        max_length=16,
        pattern="^r[0-9]+$",
        description="The run approved (status.playbook.runId); without it, the run in flight when the "
        "operator first sees the approval (recorded in status.approvalRuns). Never carries over to "
        "another run.",
    )


class ActionItem(ApiModel):
    """An improvement action from the post-incident review (seed 7.2)."""

    id: StepName = Field(description="Short id, unique in the incident (e.g. pool-alert).")
    title: str = Field(min_length=1, max_length=512, description="What is to be done.")
    owner: str | None = Field(default=None, max_length=256, description="Who does it.")
    due: date | None = Field(default=None, description="Due date (YYYY-MM-DD); overdue after it.")
    done: bool | None = Field(default=None, description="Done.")


UpdateStatus = Literal["investigating", "identified", "monitoring", "resolved"]
"""The status words of a public update (seed 4.2, Statuspage's words)."""


class StatusUpdate(ApiModel):
    """A user-facing update for the status page, written by the communications lead (seed 4.2)."""

    time: datetime
    message: str = Field(min_length=1, max_length=2000)
    status: UpdateStatus | None = Field(
        default=None,
        description=(
            "The status word the update announces: investigating, identified, monitoring or resolved; "
            "without it, the word of the incident's phase when the update is shown."
        ),
    )
    public: bool | None = Field(
        default=None,
        description=(
            "Shown on the status page and sent to statuspage channels (needs the verb publish); "
            "without it the update is internal."
        ),
    )


ROLE_HOLDER_MAX = 256
"""The longest role holder (`spec.commander`, `spec.roles.*`) the CRD accepts, and the longest
`status.rolesTold[].who` keeps (`core.paging.WHO_MAX`)."""


class Roles(ApiModel):
    """The response team besides the Incident Commander (`spec.commander`), seed 3.1."""

    techLead: str | None = Field(
        default=None, max_length=ROLE_HOLDER_MAX, description="Technical Lead: leads the fix."
    )
    comms: str | None = Field(
        default=None,
        max_length=ROLE_HOLDER_MAX,
        description="Communications Lead: status page and stakeholders.",
    )
    customerSuccess: str | None = Field(
        default=None, max_length=ROLE_HOLDER_MAX, description="Customer Success: talks to affected customers."
    )


ROLE_TITLES = {
    "techLead": "Technical Lead",
    "comms": "Communications Lead",
    "customerSuccess": "Customer Success",
}


class SeverityChange(ApiModel):
    """The severity the operator treats an incident as, changed by an escalation rule or by a
    person editing spec.severity."""

    previous: Severity
    severity: Severity
    at: datetime
    reason: str
    by: Literal["rule", "person"] | None = Field(
        default=None, description="rule: a severityEscalation rule; person: spec.severity was edited."
    )
    direction: Literal["raised", "lowered"] | None = Field(
        default=None, description="raised: more severe (towards P1); lowered: less severe."
    )


class IncidentSpec(ApiModel):
    """Human intent. The operator never rewrites spec."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(oldSelf.closed) || !oldSelf.closed || self == oldSelf",
                    "message": "a closed incident is read-only history",
                }
            ]
        }
    )

    title: str = Field(min_length=1, max_length=256, description="One-line summary of the incident.")
    description: str | None = Field(default=None, description="Details: impact, symptoms, links.")
    severity: Severity = Field(description="P1 (critical) to P4 (low); sets the response target.")
    category: Category = Field(description="availability, performance, security or data.")
    targets: list[WorkloadRef] | None = Field(
        default=None, max_length=MAX_TARGETS, description="Affected workloads."
    )
    playbookRef: PlaybookRef | None = Field(
        default=None, description="Playbook to run; without it the highest-priority match is used."
    )
    source: Source | None = Field(default=None, description="Where the incident came from.")
    commander: str | None = Field(
        default=None,
        description="Incident Commander; setting it acknowledges.",
        # In the CRD only: the API server refuses a longer new value, while an Incident stored
        # before the limit (0.1.0 had none) keeps its value (validation ratcheting) and is still
        # read and planned (`status.rolesTold` keeps it cut to ROLE_HOLDER_MAX).
        json_schema_extra={"maxLength": ROLE_HOLDER_MAX},
    )
    roles: Roles | None = Field(
        default=None, description="Technical Lead, Communications Lead, Customer Success (seed 3.1)."
    )
    approvals: list[Approval] | None = Field(
        default=None,
        max_length=64,
        description="Steps a person approved, and who (checked by the API server).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["step"]},
    )
    paused: bool | None = Field(default=None, description="Stop all automation on this incident.")
    resolution: Resolution | None = Field(default=None, description="A human declares it resolved.")
    closed: bool | None = Field(default=None, description="Post-incident review done; read-only history.")
    drill: bool | None = Field(default=None, description="A response drill, kept out of production MTTx.")
    public: bool | None = Field(
        default=None,
        description=(
            "Shown on the status page if its namespace is in the config's statusPage.namespaces "
            "(default there: statusPage.publicSeverities); true needs the verb publish."
        ),
    )
    updates: list[StatusUpdate] | None = Field(
        default=None,
        max_length=200,
        description="Updates, oldest first; only those marked public reach the status page.",
    )
    estimatedResolution: datetime | None = Field(
        default=None,
        description="When the team expects the incident to be resolved (RFC 3339; seed 4.2); shown on the "
        "status page.",
    )
    actionItems: list[ActionItem] | None = Field(
        default=None,
        max_length=100,
        description="Improvement actions from the post-incident review (seed 7.2).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )


class Condition(ApiModel):
    """metav1.Condition."""

    type: str = Field(min_length=1, max_length=316)
    status: str = Field(pattern="^(True|False|Unknown)$")
    observedGeneration: int | None = Field(default=None, ge=0)
    lastTransitionTime: datetime
    reason: str = Field(min_length=1, max_length=1024)
    message: str = Field(default="", max_length=32768)


class StepState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    AWAITING_APPROVAL = "AwaitingApproval"
    BLOCKED = "Blocked"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class StepStatus(ApiModel):
    """Progress of one playbook step; persisted before and after each action (exactly once)."""

    name: str
    action: str
    state: StepState = StepState.PENDING
    attempts: int = Field(default=0, ge=0)
    startedAt: datetime | None = None
    finishedAt: datetime | None = None
    message: str | None = None
    # What a mutating step decided before it acted, so that a re-run after a crash repeats the
    # same change instead of making a second one (exactly once).
    replicasBefore: int | None = None
    replicasAfter: int | None = None
    pods: list[str] | None = None
    reverted: bool | None = None
    revision: int | None = Field(default=None, description="rollback: the revision gone back to.")
    revisionFrom: int | None = Field(default=None, description="rollback: the revision before it.")
    revisionName: str | None = Field(
        default=None, description="rollback: the ReplicaSet or ControllerRevision gone back to."
    )
    job: str | None = Field(default=None, description="job: the Job of this attempt.")
    targets: list[TargetStatus] | None = Field(
        default=None,
        max_length=MAX_TARGETS,
        description="A step on the incident's own targets: each resolved target with its own "
        "exactly-once state (a target done is never acted on again).",
    )

    def pods_deleted(self) -> int:
        """How many pods this step chose to delete: its own and those of each of its targets."""
        return len(self.pods or []) + sum(len(t.pods or []) for t in self.targets or [])


class PinnedPlaybook(ApiModel):
    """What a run executes, copied from the Playbook when the run starts: an edit of the Playbook
    never changes a run in flight."""

    steps: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The Playbook's steps as they were when the run started.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )
    guardrails: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    revertOnResolve: bool | None = None
    stabilizationSeconds: int | None = None
    cooldownSeconds: int | None = None
    onAlertResolved: Literal["SkipMutatingSteps", "Continue"] | None = Field(
        default=None, description="Set only when not the default (SkipMutatingSteps)."
    )
    allowedTargets: dict[str, Any] | None = Field(
        default=None,
        description="The bounds of the steps on the incident's own targets, as the run started.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class ApprovalRun(ApiModel):
    """An approval given without `run`, and the run it was bound to when the operator first saw it."""

    step: str
    by: str
    run: str


class PlaybookProgress(ApiModel):
    name: str
    runId: str | None = Field(
        default=None, description="This run of the playbook on this incident (r1, r2 after a re-fire, ...)."
    )
    generation: int | None = Field(default=None, description="The Playbook's generation the run pinned.")
    digest: str | None = Field(default=None, description="sha256 of the pinned steps and settings.")
    snapshot: PinnedPlaybook | None = Field(
        default=None, description="The steps (and guardrails, stabilization, revert) this run executes."
    )
    newerGeneration: int | None = Field(
        default=None, description="A newer Playbook generation seen during the run (used by the next run)."
    )
    targets: list[WorkloadRef] | None = Field(
        default=None,
        max_length=MAX_TARGETS,
        description="The incident's targets this run acts on, pinned per kind: those a step on the "
        "incident's targets (target.fromIncident) resolved, added when the run's first step of their kind "
        "resolved them. A later step of a kind pinned here acts on these; an edit of spec.targets for that "
        "kind applies from the next run. A step of a kind not pinned here (none resolved yet, or refused: "
        "NoTarget, OutOfBounds) resolves against spec.targets as it is then. Unset: nothing pinned yet.",
    )
    steps: list[StepStatus] = Field(default_factory=list)


class TimelineEntry(ApiModel):
    time: datetime
    type: str
    message: str
    actor: str | None = None


class EscalationEntry(ApiModel):
    level: int = Field(ge=1)
    at: datetime
    channels: list[str]
    schedule: str | None = Field(
        default=None, max_length=317, description="The OnCallSchedule the level named (NAMESPACE/NAME)."
    )
    person: str | None = Field(
        default=None,
        max_length=63,
        description="Who was on call in it when the level fired, and was paged (none: nobody was on "
        "call, and the channels' own recipients were).",
    )


class RoleTold(ApiModel):
    """A person told of a role given to them (once; recorded so that a restart does not tell again)."""

    role: str = Field(max_length=32, description="commander, techLead, comms or customerSuccess.")
    who: str = Field(max_length=ROLE_HOLDER_MAX, description="The role's holder as spec names them.")
    person: str | None = Field(
        default=None, max_length=63, description="The schedule person they are (none: found in no schedule)."
    )
    told: bool = Field(description="Whether they had a contact to be told on.")


class EscalationStatus(ApiModel):
    """Where the incident's escalation policy stands: the level reached, and when each was."""

    level: int = Field(default=0, ge=0)
    history: list[EscalationEntry] = Field(default_factory=list)


class CommunicationStatus(ApiModel):
    """The communication cadence (config communication.updateEvery, seed 4.2): when the next update
    is due, which overdue period was reminded of, which public update was announced last."""

    nextUpdateBy: datetime | None = Field(
        default=None, description="When the next update (any entry of spec.updates) is due."
    )
    remindedFor: datetime | None = Field(
        default=None,
        description="The due time of the overdue period a reminder (updateOverdue) was sent for: once each.",
    )
    lastPublished: datetime | None = Field(
        default=None,
        description="The time of the newest public update announced to statuspage channels (each once); "
        "1970-01-01T00:00:00Z: none yet.",
    )


class ActionItemCounts(ApiModel):
    open: int = 0
    overdue: int = 0


EXPLANATION_TEXT_MAX = 1024
"""The longest text of `status.explanation` (longer ones are cut, ending in '...')."""
EXPLANATION_CANDIDATES_MAX = 20
"""Candidate Playbooks named in `status.explanation` (the rest are counted in `moreCandidates`)."""


CandidateVerdict = Literal["Chosen", "Matched", "NotMatched", "NotConsidered", "Invalid"]
StepVerdict = Literal["Ran", "Failed", "Running", "Waits", "Skipped", "Pending"]


class ExplainedCandidate(ApiModel):
    """One Playbook of the incident's namespace, and why it was chosen or not."""

    name: str = Field(max_length=253)
    verdict: CandidateVerdict = Field(
        description="Chosen (runs or would run), Matched (fits, but another was chosen), NotMatched, "
        "NotConsidered (spec.playbookRef names another) or Invalid (never runs)."
    )
    priority: int | None = None
    why: str = Field(max_length=EXPLANATION_TEXT_MAX, description="Which parts of its match held or not.")


class ExplainedStep(ApiModel):
    """One step of the run: whether it ran, runs, waits, was skipped, or is still to come, and why."""

    name: str = Field(max_length=63)
    action: str = Field(max_length=63)
    state: str = Field(max_length=63, description="The step's state (status.playbook.steps[].state).")
    verdict: StepVerdict
    reason: str | None = Field(
        default=None,
        max_length=316,
        description="Why it waits or was skipped, as a reason (AwaitingApproval, CooldownActive, Forbidden, "
        "Misconfigured, AlertResolved, ... as the planner records them).",
    )
    why: str | None = Field(default=None, max_length=EXPLANATION_TEXT_MAX)


class ExplainedHold(ApiModel):
    """What holds the incident's automation now: the condition that says so."""

    type: str = Field(max_length=316)
    reason: str = Field(max_length=316)
    message: str = Field(default="", max_length=EXPLANATION_TEXT_MAX)


class Explanation(ApiModel):
    """Why the incident is where it is: the Playbooks considered, the run and each of its steps,
    what holds automation and what happens next. Written by the operator from what its planner
    decided, only when it changes (`kubectl incident explain` renders it)."""

    at: datetime = Field(description="When the explanation last changed.")
    selection: str = Field(
        max_length=EXPLANATION_TEXT_MAX, description="Which Playbook would be chosen now, and why."
    )
    candidates: list[ExplainedCandidate] = Field(default_factory=list, max_length=EXPLANATION_CANDIDATES_MAX)
    moreCandidates: int | None = Field(default=None, ge=0, description="Candidates left out (the limit).")
    playbook: str | None = Field(default=None, max_length=253, description="The playbook of the run, if any.")
    runId: str | None = Field(default=None, max_length=63)
    generation: int | None = Field(default=None, description="The Playbook generation the run pinned.")
    run: str | None = Field(default=None, max_length=EXPLANATION_TEXT_MAX, description="About the run.")
    steps: list[ExplainedStep] = Field(default_factory=list, max_length=50)
    hold: ExplainedHold | None = Field(default=None, description="What holds automation, if anything.")
    next: str = Field(max_length=EXPLANATION_TEXT_MAX, description="What would happen next.")


class IncidentStatus(ApiModel):
    """Observations, written only by the operator through the status subresource."""

    observedGeneration: int | None = Field(
        default=None, description="The spec generation the operator last acted on."
    )
    phase: Phase | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    detectedAt: datetime | None = None
    acknowledgedAt: datetime | None = None
    acknowledgeBy: datetime | None = None
    mitigatedAt: datetime | None = None
    resolvedAt: datetime | None = None
    closedAt: datetime | None = None
    monitoringSince: datetime | None = None
    alertResolvedAt: datetime | None = None
    playbook: PlaybookProgress | None = None
    timeline: list[TimelineEntry] | None = None
    evidenceRef: str | None = None
    postmortemRef: str | None = None
    runs: int | None = Field(default=None, description="Playbook runs started on this incident.")
    podsDeleted: int | None = Field(
        default=None, description="Pods deleted by earlier runs (guardrail budgets span re-fires)."
    )
    settled: bool | None = Field(
        default=None, description="Resolved and nothing left to do: the operator keeps no task for it."
    )
    repeatOf: str | None = Field(
        default=None,
        description="An earlier incident with the same alert (or category) and targets, within the window.",
    )
    escalations: int | None = Field(default=None, description="Times the incident was escalated.")
    escalation: EscalationStatus | None = Field(
        default=None, description="The escalation level reached while nobody acknowledged, and its history."
    )
    actionItems: ActionItemCounts | None = Field(default=None, description="Open and overdue action items.")
    roles: Roles | None = Field(default=None, description="The roles as last recorded in the timeline.")
    communication: CommunicationStatus | None = Field(
        default=None, description="Update cadence: next update due, reminders sent, public updates announced."
    )
    rolesTold: list[RoleTold] | None = Field(
        default=None,
        max_length=64,
        description="The holders of roles the operator told (or found no contact for), once each.",
    )
    effectiveSeverity: Severity | None = Field(
        default=None,
        description="The severity the incident is treated as after an escalation rule (spec.severity "
        "is not rewritten); response target and escalation policy follow it.",
    )
    severityHistory: list[SeverityChange] | None = Field(
        default=None,
        max_length=10,
        description="Severity changes (escalation rules, and people editing spec.severity), oldest first; "
        "the newest ten are kept.",
    )
    declaredSeverity: Severity | None = Field(
        default=None,
        description="spec.severity as the operator last acted on it: an edit by a person is noticed "
        "against it (severityHistory, a new response deadline, the new severity's escalation policy).",
    )
    approvalRuns: list[ApprovalRun] | None = Field(
        default=None,
        max_length=64,
        description="Approvals given without `run`, bound to the run in flight when first seen.",
    )
    explanation: Explanation | None = Field(
        default=None,
        description="Why the incident is where it is: candidate Playbooks, the run's steps, what holds "
        "automation, what happens next (`kubectl incident explain`).",
    )


# ----------------------------------------------------------------------------- Playbook


class When(ApiModel):
    """Run the step only if an earlier step ended so; otherwise it is Skipped."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.stepFailed) != has(self.stepSucceeded)",
                    "message": "give exactly one of stepFailed, stepSucceeded",
                }
            ]
        }
    )

    stepFailed: StepName | None = Field(default=None, description="Run only if this earlier step failed.")
    stepSucceeded: StepName | None = Field(
        default=None, description="Run only if this earlier step succeeded."
    )

    @property
    def step(self) -> str:
        return self.stepFailed or self.stepSucceeded or ""


_ONE_ACTION_RULE = "[" + ", ".join(f"has(self.{key})" for key in ACTION_KEYS) + "].filter(x, x).size() == 1"


class Step(ApiModel):
    """One remediation step: a name and exactly one action key."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": _ONE_ACTION_RULE,
                    "message": "a step needs exactly one action: " + ", ".join(ACTION_KEYS),
                }
            ]
        }
    )

    name: StepName
    requiresApproval: bool = Field(default=False, description="Wait until spec.approvals names this step.")
    timeoutSeconds: int = Field(default=300, ge=1, le=86400, description="Fail an attempt after this long.")
    retries: int = Field(default=0, ge=0, le=10, description="Extra attempts after a failure.")
    continueOnFailure: bool = Field(default=False, description="Go on with the next step if this one fails.")
    when: When | None = Field(
        default=None,
        description="Run only if an earlier step failed (or succeeded); a step named in stepFailed "
        "does not stall the playbook when it fails.",
    )
    scale: ScaleAction | None = None
    restart: TargetAction | None = None
    deletePods: DeletePodsAction | None = None
    waitReady: TargetAction | None = None
    httpCheck: HttpCheckAction | None = None
    notify: NotifyAction | None = None
    collectEvidence: CollectEvidenceAction | None = None
    isolate: IsolateAction | None = None
    rollback: RollbackAction | None = None
    job: JobAction | None = None
    promQuery: PromQueryAction | None = None

    @property
    def action(self) -> str:
        for key in ACTION_KEYS:
            if getattr(self, key) is not None:
                return key
        raise ValueError(f"step {self.name} has no action")

    @property
    def params(self) -> Any:
        """The parameters of the step's action (e.g. a ScaleAction)."""
        return getattr(self, self.action)

    @property
    def target(self) -> StepTarget | None:
        """The workload target of a step that acts on one (scale, restart, waitReady, rollback)."""
        return self.params.target if self.action in TARGET_ACTIONS else None

    @property
    def from_incident(self) -> bool:
        """It acts on the incident's own targets (`target.fromIncident`)."""
        target = self.target
        return target is not None and target.fromIncident is not None

    @property
    def mutates(self) -> bool:
        """It changes the cluster, or may (every Job): what safety counts (opt-in, approvals, the
        alert-resolved rule, the breaker)."""
        return ACTIONS[self.action].mutating

    @property
    def mitigates(self) -> bool:
        """Its start moves the phase to Mitigating and its success sets Mitigated: a mutating
        action, but a Job only with `job.mitigates` (a check such as pg_isready is no mitigation)."""
        if self.job is not None:
            return self.job.mitigates
        return ACTIONS[self.action].mutating


class Match(ApiModel):
    """All given parts must match; an empty match matches every incident."""

    severities: list[Severity] | None = None
    categories: list[Category] | None = None
    alertnames: list[str] | None = None
    labels: dict[str, str] | None = None


class Guardrails(ApiModel):
    maxReplicas: int | None = Field(
        default=None, ge=0, le=10000, description="No scale step goes above this."
    )
    maxPodDeletions: int | None = Field(
        default=None, ge=0, le=10000, description="Most pods deleted per incident."
    )
    minReadyPercent: int | None = Field(
        default=None, ge=0, le=100, description="No pod restart while fewer replicas are Ready."
    )


_FROM_INCIDENT_STEP = " || ".join(
    f"(has(s.{key}) && has(s.{key}.target) && has(s.{key}.target.fromIncident))"
    for key in sorted(TARGET_ACTIONS)
)
BOUNDS_NEEDED = "a step with target.fromIncident needs spec.allowedTargets (the bounds it acts within)"


class PlaybookSpec(ApiModel):
    """How to respond to matching incidents: ordered steps, each one action, within guardrails."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"has(self.allowedTargets) || !self.steps.exists(s, {_FROM_INCIDENT_STEP})",
                    "message": BOUNDS_NEEDED,
                }
            ]
        }
    )

    description: str | None = None
    priority: int = Field(
        default=0, ge=-1000, le=1000, description="Among matching playbooks, the highest wins."
    )
    match: Match = Field(default_factory=Match)
    steps: list[Step] = Field(
        min_length=1,
        max_length=50,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    revertOnResolve: bool = Field(default=False, description="Undo scale changes once resolved.")
    cooldownSeconds: int = Field(
        default=0, ge=0, le=604800, description="No re-run on the same target this soon."
    )
    stabilizationSeconds: int = Field(
        default=60, ge=0, le=86400, description="Monitoring time before Resolved."
    )
    guardrails: Guardrails = Field(default_factory=Guardrails)
    onAlertResolved: Literal["SkipMutatingSteps", "Continue"] = Field(
        default="SkipMutatingSteps",
        description="When the alert that opened the incident resolves during the run: "
        "SkipMutatingSteps (default) skips the mutating steps not yet running (diagnostic steps and "
        "the health check still run); Continue runs them all.",
    )
    allowedTargets: AllowedTargets | None = Field(
        default=None,
        description="Bounds of the steps on the incident's own targets (target.fromIncident): kinds, "
        "names (globs) and a label selector; required by such a step. A target outside them is "
        "never touched: the step waits (OutOfBounds).",
    )

    @model_validator(mode="after")
    def _bounded(self) -> PlaybookSpec:
        if self.allowedTargets is None and any(s.from_incident for s in self.steps):
            raise ValueError(BOUNDS_NEEDED)
        return self


class PlaybookStatus(ApiModel):
    observedGeneration: int | None = None
    steps: int | None = Field(default=None, description="Number of steps (for the printer column).")
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    lastRun: datetime | None = None
    runs: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    lastRuns: dict[str, datetime] | None = Field(
        default=None, description="When this playbook last started per target ('Kind/name'), for cooldowns."
    )
    lastRunBy: dict[str, str] | None = Field(
        default=None, description="Which incident run ('incident/runId') holds each target's cooldown."
    )


# ----------------------------------------------------------------------------- Drill


class ScaleToZeroScenario(ApiModel):
    target: WorkloadRef = Field(description="The workload scaled to zero replicas for the drill.")


class DeletePodsScenario(ApiModel):
    selector: dict[str, str] = Field(min_length=1, description="Label selector (matchLabels) of the pods.")
    count: int = Field(default=1, ge=1, le=100, description="How many pods to delete.")


class FireAlertScenario(ApiModel):
    alertname: str = Field(min_length=1, max_length=253)
    labels: dict[str, str] = Field(default_factory=dict, description="More labels of the alert.")
    annotations: dict[str, str] = Field(default_factory=dict, description="summary, description, ...")


class DrillScenario(ApiModel):
    """What the drill breaks, on purpose: exactly one of the three."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.scaleToZero), has(self.deletePods), has(self.fireAlert)]"
                    ".filter(x, x).size() == 1",
                    "message": "give exactly one of scaleToZero, deletePods, fireAlert",
                }
            ]
        }
    )

    scaleToZero: ScaleToZeroScenario | None = None
    deletePods: DeletePodsScenario | None = None
    fireAlert: FireAlertScenario | None = None


class DrillIncidentTemplate(ApiModel):
    severity: Severity = Field(default=Severity.P3)
    category: Category = Field(default=Category.AVAILABILITY)
    title: str | None = Field(default=None, max_length=200)
    playbookRef: PlaybookRef | None = Field(default=None, description="The Playbook the response should run.")


class DrillExpectations(ApiModel):
    """What a good response achieves, in seconds from the drill's start; each optional."""

    acknowledgedWithinSeconds: int | None = Field(default=None, ge=1, le=86400)
    mitigatedWithinSeconds: int | None = Field(default=None, ge=1, le=86400)
    resolvedWithinSeconds: int | None = Field(default=None, ge=1, le=86400)


class DrillSpec(ApiModel):
    """A response drill (seed 8.2): break something on purpose, score the response, restore."""

    scenario: DrillScenario
    incident: DrillIncidentTemplate = Field(default_factory=DrillIncidentTemplate)
    expect: DrillExpectations = Field(default_factory=DrillExpectations)
    schedule: str | None = Field(
        default=None, max_length=100, description="Cron schedule (UTC), e.g. '0 10 * * 1'."
    )
    suspend: bool | None = Field(default=None, description="No scheduled runs (a requested run still runs).")
    restore: bool = Field(default=True, description="Put the target back if the response did not.")
    timeoutSeconds: int = Field(
        default=900, ge=10, le=86400, description="A run is scored after this at the latest."
    )


class DrillResult(StrEnum):
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class DrillRun(ApiModel):
    id: str
    start: datetime
    finished: datetime | None = None
    incident: str | None = None
    requestedBy: str | None = None
    result: DrillResult
    reasons: list[str] | None = None
    replicasBefore: int | None = None
    restored: bool | None = None
    timeToDetectSeconds: float | None = None
    timeToAcknowledgeSeconds: float | None = None
    timeToMitigateSeconds: float | None = None
    timeToResolveSeconds: float | None = None


class DrillStatus(ApiModel):
    observedGeneration: int | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    lastRun: datetime | None = None
    nextRunAt: datetime | None = None
    lastRequest: str | None = Field(default=None, description="The run request last handled.")
    runs: list[DrillRun] | None = Field(
        default=None, max_length=20, description="The latest runs, newest last."
    )


# ----------------------------------------------------------------------------- IncidentArchive

ARCHIVE_POSTMORTEM_MAX = 65_536
"""The longest post-mortem text an archive entry keeps (bytes of UTF-8; a longer one is cut)."""


class ArchivedSource(ApiModel):
    type: SourceType = SourceType.MANUAL
    alertname: str | None = None
    startsAt: datetime | None = Field(default=None, description="When the alert started firing (MTTD).")


class ArchivedIncident(ApiModel):
    """One Incident as the archive keeps it (the report's, repeats' and history's facts, the post-mortem)."""

    name: DnsName
    title: str | None = None
    severity: Severity
    category: Category
    source: ArchivedSource | None = None
    drill: bool | None = None
    targets: list[WorkloadRef] | None = None
    commander: str | None = None
    createdAt: datetime | None = Field(default=None, description="The Incident's creationTimestamp.")
    detectedAt: datetime | None = None
    acknowledgedAt: datetime | None = None
    mitigatedAt: datetime | None = None
    resolvedAt: datetime | None = None
    closedAt: datetime | None = None
    breachedAt: datetime | None = Field(
        default=None, description="When the response target was breached (condition ResponseTargetBreached)."
    )
    repeatOf: str | None = None
    escalations: int | None = None
    escalation: EscalationStatus | None = None
    effectiveSeverity: Severity | None = None
    severityHistory: list[SeverityChange] | None = None
    resolution: Resolution | None = None
    actionItems: list[ActionItem] | None = None
    postmortem: str | None = Field(
        default=None,
        description=f"The post-mortem in Markdown (at most {ARCHIVE_POSTMORTEM_MAX} bytes kept).",
    )
    postmortemTruncated: bool | None = None


class IncidentArchiveSpec(ApiModel):
    """Incidents of one namespace detected in one month, archived by the operator's retention and
    then deleted; entries keyed by the Incident's uid, so archiving one twice never counts it twice."""

    month: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="The month of detection, YYYY-MM.")
    count: int = Field(default=0, ge=0, description="Number of entries (for the printer column).")
    entries: dict[str, ArchivedIncident] = Field(
        default_factory=dict, description="The archived incidents, keyed by their uid."
    )


class IncidentArchiveStatus(ApiModel):
    """Unused: an archive has no observed state (kept for the CRD's shape)."""


# ----------------------------------------------------------------------------- OnCallSchedule

PersonName = Annotated[
    str, Field(min_length=1, max_length=63, pattern="^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$")
]
"""A person's name in a schedule (`alice`, `bob.smith`): what layers and overrides refer to."""

OVERRIDE_LAYER = "override"
"""`Shift.layer` and `status.current.layer` of a moment an override covers (no layer may be named so)."""

Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: tuple[Weekday, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
"""In the order of `date.weekday()`."""


class OnCallPerson(ApiModel):
    """Someone who may appear in the schedule's layers and overrides, with their contact methods."""

    name: PersonName = Field(description="The name layers and overrides refer to.")
    user: str | None = Field(
        default=None,
        max_length=512,
        description="Their Kubernetes username (e.g. oidc:alice@example.com): acknowledging as the "
        "person on call is done as this user.",
    )
    email: str | None = Field(default=None, max_length=254, description="Their email address.")
    slackId: str | None = Field(
        default=None, max_length=32, pattern="^[A-Z0-9]+$", description="Their Slack member id (U012AB3CD)."
    )
    opsgenieUser: str | None = Field(
        default=None, max_length=254, description="Their Opsgenie username (usually an email)."
    )
    pagerdutyUser: str | None = Field(default=None, max_length=254, description="Their PagerDuty user id.")


class RotationRestriction(ApiModel):
    """A window of local time the layer covers (e.g. weekdays 09:00-17:00), and nothing outside."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self.from < self.to", "message": "from must be before to"}]
        }
    )

    days: list[Weekday] | None = Field(
        default=None,
        max_length=7,
        description="Days of the week (Mon ... Sun) the window opens on; all without.",
    )
    from_: str = Field(
        alias="from",
        max_length=5,
        pattern="^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time (HH:MM, 24 hours) the window opens.",
    )
    to: str = Field(
        max_length=5,
        pattern="^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
        description="Local time (HH:MM, or 24:00 for the end of the day) the window closes; after from.",
    )


ROTATION_PATTERN = "^P([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+S)?)?$"


class RotationLayer(ApiModel):
    """People taking turns in order, each for `rotation` from `start`, on the schedule's local clock."""

    name: StepName = Field(description="The layer's name (not `override`).")
    start: datetime = Field(
        description="The first handoff (RFC 3339; without an offset, local time of timeZone). The layer "
        "covers nothing before it."
    )
    rotation: str = Field(
        max_length=32,
        pattern=ROTATION_PATTERN,
        description="How long each turn is, an ISO 8601 duration of weeks, days, hours, minutes or "
        "seconds (P7D, P1D, PT12H); at least PT1M, at most P366D.",
    )
    people: list[PersonName] = Field(
        min_length=1, max_length=100, description="Names from spec.people, in the order of their turns."
    )
    restrictions: list[RotationRestriction] | None = Field(
        default=None,
        max_length=21,
        description="Windows of local time the layer covers; without, it covers all the time.",
    )


class Override(ApiModel):
    """Someone on call instead of whoever the layers say, from start to end."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.end > self.start", "message": "end must be after start"}
            ]
        }
    )

    person: PersonName = Field(description="A name from spec.people.")
    start: datetime = Field(description="From (RFC 3339).")
    end: datetime = Field(description="Until (RFC 3339), after start.")


class OnCallScheduleSpec(ApiModel):
    """Who is on call when: rotation layers (later ones take precedence) and overrides (they win)."""

    timeZone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone (Europe/Berlin) the layers' rotations and restrictions count in.",
    )
    people: list[OnCallPerson] = Field(
        min_length=1,
        max_length=100,
        description="Who may appear in layers and overrides, with their contact methods.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    layers: list[RotationLayer] = Field(
        default_factory=list,
        max_length=10,
        description="Rotations; a later layer takes precedence over earlier ones where it covers a moment.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    overrides: list[Override] | None = Field(
        default=None,
        max_length=200,
        description="Someone on call instead, for a while; they win over every layer (of overlapping "
        "overrides, the one that starts last). Keyed by person and start, so that several writers "
        "(GitOps, `kubectl incident oncall override`) merge under server-side apply.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["person", "start"],
        },
    )
    calendarTokenSecret: DnsName | None = Field(
        default=None,
        description="A Secret of this namespace whose key `token` lets calendar apps read the schedule's "
        "iCalendar feed without a Kubernetes token (`/oncall/NAMESPACE/NAME.ics?token=...`).",
    )


class OnCallCurrent(ApiModel):
    """Who is on call now."""

    person: str = Field(max_length=63)
    layer: str = Field(max_length=63, description="The layer, or `override`.")
    until: datetime | None = Field(
        default=None, description="When their turn ends (none: not within a year)."
    )


class OnCallNext(ApiModel):
    """Who is on call next: the first turn of another person."""

    person: str = Field(max_length=63)
    layer: str = Field(max_length=63, description="The layer, or `override`.")
    from_: datetime = Field(alias="from", description="When their turn starts.")


class OnCallHandoff(ApiModel):
    """A handoff the operator recorded (the incoming person and when)."""

    at: datetime = Field(description="When the turn started.")
    person: str = Field(max_length=63, description="Who came on call.")
    layer: str | None = Field(default=None, max_length=63, description="The layer, or `override`.")
    until: datetime | None = Field(
        default=None,
        description="When the turn was to end, as the schedule said then: a turn of the same person "
        "that starts before it (an edit moved the handoff) is not announced again.",
    )
    announced: str | None = Field(
        default=None,
        max_length=512,
        description="How the incoming person was told (the channels), or why not. Recorded before the "
        "announcement is sent: a handoff is announced at most once.",
    )


class MailSent(ApiModel):
    """Mail the operator sent to a person of this schedule (for `oncall.maxMailsPerPersonPerHour`)."""

    person: str = Field(max_length=63)
    at: datetime
    address: str | None = Field(
        default=None,
        max_length=254,
        description="The address mailed, lowercased: the limit counts per address, over every schedule "
        "that lists it (none: the person's address in this schedule).",
    )


class OnCallScheduleStatus(ApiModel):
    """Who is on call now and next, kept true by the operator at every boundary."""

    observedGeneration: int | None = None
    current: OnCallCurrent | None = Field(default=None, description="Who is on call now (none: nobody).")
    next: OnCallNext | None = Field(
        default=None, description="Who is on call next (none: nobody within a year)."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    handoffs: list[OnCallHandoff] | None = Field(
        default=None, max_length=20, description="The latest handoffs, newest last."
    )
    mailsSent: list[MailSent] | None = Field(
        default=None,
        max_length=1000,
        description="Mail sent to its people within the last hour (the operator's rate limit, kept "
        "across restarts), oldest first; at most the limit's worth per address, and the newest 1000.",
    )
