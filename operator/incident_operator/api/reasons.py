"""Every condition type and every reason the operator writes (conditions, timeline entries, Events).

One place for the words of the API: the planner and the controllers produce these members, the
notifier and the reports match them, and the API reference (`docs/reference/api.md`) lists them
with their descriptions. A `StrEnum` member *is* its string, so the objects written to the API are
the same as before; what changes is that a typo is a NameError, not a silently dead branch.
Pure: imports nothing.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    """`status.conditions[].type` of the three kinds."""

    # Incident
    ACKNOWLEDGED = "Acknowledged"
    MITIGATED = "Mitigated"
    RESOLVED = "Resolved"
    RESPONSE_TARGET_BREACHED = "ResponseTargetBreached"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    ACTION_ITEMS_OPEN = "ActionItemsOpen"
    AUTOMATION_PAUSED = "AutomationPaused"
    UPDATE_OVERDUE = "UpdateOverdue"
    # Playbook and Drill
    READY = "Ready"
    INVALID = "Invalid"
    # Drill
    RUNNING = "Running"


CONDITION_DESCRIPTIONS: dict[ConditionType, str] = {
    ConditionType.ACKNOWLEDGED: "True once a commander is set (CommanderAssigned) or a playbook starts "
    "(PlaybookStarted).",
    ConditionType.MITIGATED: "True once the first mutating step succeeded (MitigationApplied).",
    ConditionType.RESOLVED: "True when health held after the stabilization window (Stabilized) or a human "
    "declared a resolution (DeclaredByHuman); False again when the alert re-fires (Refired).",
    ConditionType.RESPONSE_TARGET_BREACHED: "True when acknowledgeBy passed without acknowledgement "
    "(AckDeadlinePassed); it stays True after a late acknowledgement.",
    ConditionType.RECONCILING: "True while automation works (StepRunning, AwaitingApproval, Monitoring); "
    "False when it does not (Idle, Paused, OpenIncidentLimit, CooldownActive, Forbidden, Stalled, Resolved, "
    "Closed).",
    ConditionType.STALLED: "True when automation cannot go on without a human: StepFailed (the message names "
    "the step and why), PlaybookNotFound, NoMatchingPlaybook, InvalidPlaybook, HealthNotRestored, Forbidden, "
    "BreakerUnavailable (the breaker's state cannot be kept: mutating steps wait), ActionsAboveLimit (a step "
    "acts on more workloads than a limit of automation.maxMutatingActions allows in one window).",
    ConditionType.ACTION_ITEMS_OPEN: "Post-mortem action items: True while some are open (Open, Overdue), "
    "False when there are none (NoActionItems) or all are done (AllDone).",
    ConditionType.AUTOMATION_PAUSED: "True while the operator holds the incident's playbook automation "
    "(OpenIncidentLimit: more open incidents in the namespace than limits.maxOpenIncidentsPerNamespace, "
    "this one not among the oldest; CircuitOpen: more mutating actions within the window than "
    "automation.maxMutatingActions allows; StormGuard: too many runs of its Playbook in flight); "
    "the incident is recorded, timed and escalated as usual. False once "
    "automation goes on (AutomationResumed) or the incident resolved first (Resolved) or closed (Closed).",
    ConditionType.UPDATE_OVERDUE: "True when no update (spec.updates) was published within the "
    "severity's communication.updateEvery since the last one or detection (UpdateOverdue; one reminder "
    "per overdue period); False after the next update (UpdatePublished) or once resolved (Resolved).",
    ConditionType.READY: "Playbook: True when it passed validation; Drill: False with InvalidSpec or "
    "InvalidSchedule when it cannot run; OnCallSchedule: True (Valid) when its status says who is on call, "
    "False (InvalidSpec) when its spec has problems (the message names them).",
    ConditionType.INVALID: "Playbook and OnCallSchedule: True (InvalidSpec) when validation found problems; "
    "a Playbook never runs, a schedule names nobody.",
    ConditionType.RUNNING: "Drill: True while a run is in progress (Running); False after it, with the "
    "run's result as the reason (Passed, Failed, Skipped).",
}


class Reason(StrEnum):
    """Reasons of conditions, timeline entries (`status.timeline[].reason`) and Events."""

    # the incident's life
    DETECTED = "Detected"
    REPEAT = "Repeat"
    ACKNOWLEDGED = "Acknowledged"
    COMMANDER_ASSIGNED = "CommanderAssigned"
    ROLE_ASSIGNED = "RoleAssigned"
    ROLE_TOLD = "RoleTold"
    ROLE_NOT_TOLD = "RoleNotTold"
    HANDOFF = "Handoff"
    SEVERITY_ESCALATED = "SeverityEscalated"
    SEVERITY_CHANGED = "SeverityChanged"
    ESCALATED = "Escalated"
    RESPONSE_TARGET_BREACHED = "ResponseTargetBreached"
    ACK_DEADLINE_PASSED = "AckDeadlinePassed"
    PAUSED = "Paused"
    OPEN_INCIDENT_LIMIT = "OpenIncidentLimit"
    AUTOMATION_RESUMED = "AutomationResumed"
    CIRCUIT_OPEN = "CircuitOpen"
    STORM_GUARD = "StormGuard"
    AUTOMATION_TRIPPED = "AutomationTripped"
    BREAKER_UNAVAILABLE = "BreakerUnavailable"
    ACTIONS_ABOVE_LIMIT = "ActionsAboveLimit"
    RESOLVED = "Resolved"
    DECLARED_BY_HUMAN = "DeclaredByHuman"
    STABILIZED = "Stabilized"
    CLOSED = "Closed"
    CLOSED_WITH_OPEN_ACTION_ITEMS = "ClosedWithOpenActionItems"
    SUMMARY = "Summary"
    # alerts
    ALERT_RESOLVED = "AlertResolved"
    ALERT_FIRING = "AlertFiring"
    REFIRED = "Refired"
    # playbooks and steps
    PLAYBOOK_SELECTED = "PlaybookSelected"
    PLAYBOOK_STARTED = "PlaybookStarted"
    PLAYBOOK_NOT_FOUND = "PlaybookNotFound"
    NO_MATCHING_PLAYBOOK = "NoMatchingPlaybook"
    INVALID_PLAYBOOK = "InvalidPlaybook"
    IDLE = "Idle"
    COOLDOWN_ACTIVE = "CooldownActive"
    FORBIDDEN = "Forbidden"
    ACCESS_GRANTED = "AccessGranted"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    MISCONFIGURED = "Misconfigured"
    UNBLOCKED = "Unblocked"
    NO_TARGET = "NoTarget"
    OUT_OF_BOUNDS = "OutOfBounds"
    TARGET_BUSY = "TargetBusy"
    TARGETS_INCOMPLETE = "TargetsIncomplete"
    TARGETS_PINNED = "TargetsPinned"
    TARGETS_CHANGED = "TargetsChanged"
    PLAYBOOK_CHANGED = "PlaybookChanged"
    PLAYBOOK_REF_IGNORED = "PlaybookRefIgnored"
    STEP_RUNNING = "StepRunning"
    STEP_STARTED = "StepStarted"
    STEP_SUCCEEDED = "StepSucceeded"
    STEP_FAILED = "StepFailed"
    STEP_RETRYING = "StepRetrying"
    STEP_SKIPPED = "StepSkipped"
    MITIGATION_APPLIED = "MitigationApplied"
    MONITORING = "Monitoring"
    HEALTH_NOT_RESTORED = "HealthNotRestored"
    STALLED = "Stalled"
    SCALE_REVERTED = "ScaleReverted"
    SCALE_REVERT_FAILED = "ScaleRevertFailed"
    # after the incident
    NO_ACTION_ITEMS = "NoActionItems"
    OPEN = "Open"
    OVERDUE = "Overdue"
    ALL_DONE = "AllDone"
    POSTMORTEM_NOT_WRITTEN = "PostmortemNotWritten"
    NOTIFICATION_FAILED = "NotificationFailed"
    # communication (seed 4.2)
    UPDATE_OVERDUE = "UpdateOverdue"
    UPDATE_PUBLISHED = "UpdatePublished"
    PUBLIC_UPDATE = "PublicUpdate"
    # objects the operator cannot use
    INVALID_SPEC = "InvalidSpec"
    INVALID_SCHEDULE = "InvalidSchedule"
    INVALID = "Invalid"
    VALID = "Valid"
    UNREADABLE = "Unreadable"
    # drills
    READY = "Ready"
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"
    SKIPPED = "Skipped"


REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.DETECTED: "The incident was opened (timeline; its words are in the Event of the status write "
    "that records it, usually PlaybookStarted's).",
    Reason.REPEAT: "The incident repeats an earlier one (same alert or category, same targets); "
    "timeline only, see status.repeatOf.",
    Reason.ACKNOWLEDGED: "Someone or something acknowledged the incident (timeline; condition Acknowledged).",
    Reason.COMMANDER_ASSIGNED: "Acknowledged because spec.commander was set.",
    Reason.ROLE_ASSIGNED: "A response role (spec.roles) changed.",
    Reason.ROLE_TOLD: "A role's holder, a person of an OnCallSchedule, is told of the role (once).",
    Reason.ROLE_NOT_TOLD: "A role's holder could not be told: not in a schedule of the namespace, no "
    "contact, or no `oncall.channels` configured.",
    Reason.HANDOFF: "An OnCallSchedule's turn changed hands; the incoming person was told (or why not).",
    Reason.SEVERITY_ESCALATED: "A severityEscalation rule raised the effective severity (warning).",
    Reason.SEVERITY_CHANGED: "A person edited spec.severity: the response deadline and the escalation "
    "policy follow the new severity (a warning when raised).",
    Reason.ESCALATED: "An escalation level was paged because nobody acknowledged in time.",
    Reason.RESPONSE_TARGET_BREACHED: "The acknowledgement deadline passed (warning; also a condition type).",
    Reason.ACK_DEADLINE_PASSED: "Condition reason of ResponseTargetBreached.",
    Reason.PAUSED: "spec.paused stopped automation.",
    Reason.OPEN_INCIDENT_LIMIT: "The namespace has more open incidents than "
    "limits.maxOpenIncidentsPerNamespace: this one's playbook automation waits until older ones resolve "
    "(warning; a reason of AutomationPaused and Reconciling).",
    Reason.AUTOMATION_RESUMED: "Automation that waited goes on (a reason of AutomationPaused, False).",
    Reason.CIRCUIT_OPEN: "The circuit breaker is open: more mutating actions within the window than "
    "automation.maxMutatingActions allows (perNamespace or clusterWide, the message names which); "
    "the incident's next mutating step waits until the window frees a slot or a person runs "
    "`kubectl incident automation resume` (warning; a reason of AutomationPaused and Reconciling).",
    Reason.STORM_GUARD: "The storm guard holds: automation.maxConcurrentRunsPerPlaybook runs of this "
    "Playbook have acted and are still in flight; this run's next mutating step waits until one ends "
    "or a person resumes automation (warning; a reason of AutomationPaused and Reconciling).",
    Reason.AUTOMATION_TRIPPED: "This incident's step tripped the circuit breaker or the storm guard: "
    "people are told once per trip (notice `automationPaused`) (warning).",
    Reason.BREAKER_UNAVAILABLE: "The breaker's state (automation.stateConfigMap) cannot be read or "
    "written (the message says why: the operator's Role does not cover a changed stateNamespace or "
    "stateConfigMap, the namespace is missing, the state is too large, writers contend): mutating "
    "steps wait, none acts unbounded; asked again within seconds (warning; a reason of Stalled and "
    "Reconciling; metric incident_operator_breaker_errors_total).",
    Reason.ACTIONS_ABOVE_LIMIT: "A mutating step acts on more workloads (each one action) than "
    "automation.maxMutatingActions.perNamespace or clusterWide allows within one window: it takes all its "
    "slots at once, so it never fits and acts on none of them until a person raises the limit (a resume "
    "does not lift it) or resolves the incident (warning; a reason of Stalled and Reconciling).",
    Reason.RESOLVED: "The incident is resolved (timeline, Event, which also carries the records written with "
    "it, such as the last step's outcome; a reason of Reconciling and Stalled).",
    Reason.DECLARED_BY_HUMAN: "Resolved because spec.resolution was set.",
    Reason.STABILIZED: "Resolved because health held through the stabilization window.",
    Reason.CLOSED: "The post-incident review is done; the incident is read-only history.",
    Reason.CLOSED_WITH_OPEN_ACTION_ITEMS: "Closed while post-mortem action items were still open (warning).",
    Reason.SUMMARY: "Older timeline entries were summarised to keep the status bounded.",
    Reason.ALERT_RESOLVED: "The alert that opened the incident resolved.",
    Reason.ALERT_FIRING: "The alert fired again (warning).",
    Reason.REFIRED: "The alert fired again after the incident had resolved: it is reopened (warning).",
    Reason.PLAYBOOK_SELECTED: "Condition reason: a playbook was chosen (by playbookRef or by matching).",
    Reason.PLAYBOOK_STARTED: "A playbook run started; also acknowledges when automation acknowledges.",
    Reason.PLAYBOOK_NOT_FOUND: "spec.playbookRef names a Playbook that does not exist (warning).",
    Reason.NO_MATCHING_PLAYBOOK: "No Playbook of the namespace matches the incident.",
    Reason.INVALID_PLAYBOOK: "The chosen Playbook is Invalid, or became invalid during the run (warning).",
    Reason.IDLE: "Condition reason of Reconciling: nothing to run.",
    Reason.COOLDOWN_ACTIVE: "The playbook ran on these targets too recently (cooldownSeconds).",
    Reason.FORBIDDEN: "The operator may not act in the namespace (no remediator RoleBinding, or for a "
    "Job step no jobs RoleBinding) (warning).",
    Reason.ACCESS_GRANTED: "The namespace opted in since: remediation proceeds.",
    Reason.AWAITING_APPROVAL: "A step waits for a matching entry in spec.approvals.",
    Reason.APPROVED: "A step was approved (spec.approvals) for the run in flight.",
    Reason.MISCONFIGURED: "A step cannot run until a person fixes its configuration (e.g. a Secret "
    "the Playbook names is not shared with playbooks, or the egress policy refuses its URL: `egress "
    "denied: <host>`): the step is Blocked, never Failed (warning).",
    Reason.NO_TARGET: "A step on the incident's own targets (target.fromIncident) has none to act on "
    "(none of its kind in spec.targets): it is Blocked and waits (warning).",
    Reason.OUT_OF_BOUNDS: "A target of the incident is outside the Playbook's allowedTargets, or it names "
    "more targets than a step holds (64): the step acts on nothing and waits; the message names the "
    "target and the bound, or the count (warning).",
    Reason.TARGET_BUSY: "Another incident's run holds the workload (the lock, a Lease "
    "incident-operator-lock-<kind>-<name> in the namespace, held from the run's first mutating action "
    "on it until the run settles: resolved, closed, deleted, stopped on a failed step, no mutating step "
    "left, or replaced by a re-fire): the step waits and tries again; the message names the holder "
    "(warning).",
    Reason.TARGETS_INCOMPLETE: "Alert intake opened the incident without some of the workloads its alert's "
    "labels name: more than 64 (the rest are left out), or the workloads its pod/service labels name "
    "could not be read (e.g. the namespace has not opted in): the message says which, with each "
    "lookup's reason; add them to spec.targets (warning).",
    Reason.TARGETS_PINNED: "A run pinned the incident's targets a step of it acts on "
    "(status.playbook.targets), when the first step of their kind resolved them: every later step of "
    "that kind in the run acts on those; an edit of spec.targets for that kind applies from the next "
    "run (a kind no step resolved yet is read from spec.targets as it is).",
    Reason.TARGETS_CHANGED: "spec.targets changed, for a kind the run pinned, during a run: the run goes on "
    "acting on its pinned targets of that kind; the edit applies from the next run (health checks both).",
    Reason.UNBLOCKED: "Condition reason of Stalled (False): a Blocked step could run again.",
    Reason.PLAYBOOK_CHANGED: "The Playbook changed during a run: the run goes on with its pinned "
    "version, or, stalled on a failed or blocked step, ends so that a new run uses the edit.",
    Reason.PLAYBOOK_REF_IGNORED: "spec.playbookRef changed during a run: it applies from the next run.",
    Reason.STEP_RUNNING: "Condition reason of Reconciling: a step runs.",
    Reason.STEP_STARTED: "A step started (timeline only; its outcome is in an Event).",
    Reason.STEP_SUCCEEDED: "A step succeeded.",
    Reason.STEP_FAILED: "A step failed and has no retries left (warning).",
    Reason.STEP_RETRYING: "A step failed and will be retried (warning).",
    Reason.STEP_SKIPPED: "A step's `when` did not hold, so it was skipped.",
    Reason.MITIGATION_APPLIED: "Condition reason of Mitigated: the first mutating step succeeded.",
    Reason.MONITORING: "All steps done; health is watched through the stabilization window (timeline only).",
    Reason.HEALTH_NOT_RESTORED: "Health did not hold after the steps (warning).",
    Reason.STALLED: "Automation cannot go on without a human (warning).",
    Reason.SCALE_REVERTED: "A scale step was reverted after the incident resolved (revertOnResolve).",
    Reason.SCALE_REVERT_FAILED: "Reverting a scale step failed (warning).",
    Reason.NO_ACTION_ITEMS: "Condition reason of ActionItemsOpen: the post-mortem has no action items.",
    Reason.OPEN: "Condition reason of ActionItemsOpen: some action items are open.",
    Reason.OVERDUE: "Condition reason of ActionItemsOpen: some open action item is past its due date.",
    Reason.ALL_DONE: "Condition reason of ActionItemsOpen: every action item is done.",
    Reason.POSTMORTEM_NOT_WRITTEN: "The post-mortem ConfigMap could not be written (warning).",
    Reason.NOTIFICATION_FAILED: "A notice could not be delivered to a channel (warning).",
    Reason.UPDATE_OVERDUE: "No update was published within communication.updateEvery: one reminder "
    "(notice updateOverdue) to the communications lead, or the commander (warning; also a condition type).",
    Reason.UPDATE_PUBLISHED: "An update after an overdue period: UpdateOverdue is False again.",
    Reason.PUBLIC_UPDATE: "A public update was announced to the statuspage channels (notice update), once.",
    Reason.INVALID_SPEC: "The object's spec is invalid: it is never acted on (warning).",
    Reason.INVALID_SCHEDULE: "A Drill's schedule cannot be parsed.",
    Reason.INVALID: "Event on a Playbook or OnCallSchedule that became Invalid (warning; the message lists "
    "the problems).",
    Reason.VALID: "Condition reason of a Playbook's or OnCallSchedule's Ready (True) and Invalid (False).",
    Reason.READY: "Condition reason of a Drill's Ready: it waits for its next run.",
    Reason.RUNNING: "Condition reason of a Drill's Running: a run is in progress.",
    Reason.PASSED: "A Drill run's result: the response met every expectation.",
    Reason.FAILED: "A Drill run's result: the response missed an expectation (the message says which).",
    Reason.SKIPPED: "A Drill run's result: it did not run (the message says why).",
    Reason.UNREADABLE: "Event on an Incident whose status the models refuse: not reconciled till it changes.",
}

TIMELINE_ONLY: frozenset[Reason] = frozenset({Reason.STEP_STARTED, Reason.MONITORING, Reason.REPEAT})
"""Normal records kept in the timeline but not posted as Events: the start of a step is followed
by its outcome's Event, Monitoring by Resolved (or a warning), and a repeat shows in
`status.repeatOf`; `status.timeline` still has every entry. The other Normal records of the status
writes within about a second share one Event, with the last one's reason (`core.planner.events`,
`controllers.incident.eventhold`); each warning has its own."""
