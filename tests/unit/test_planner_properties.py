"""Properties of the planner, driven through generated histories by a small pure model of the engine.

`Engine` below does what `controllers.incident.IncidentLoop.iterate` does with the planner, without
I/O: plan, persist the decision's status, carry out its intent (an outcome comes later, as an
event), fold the outcome in with `complete` (held in memory) and plan again. A restart drops
everything held in memory and goes on from the last persisted status, as a new operator process
would. The engine holds the start of `START_UNWRITTEN_ACTIONS` until the action persists its own
decision; the model always writes it first, which is the planner's contract (`planner` module:
a step is `Running` in a persisted status before its action runs).

The events are generated: a step's outcome, the clock moving, spec edits (acknowledge, resolve,
close, pause, severity, approvals), the alert resolving or firing again, and restarts; so are the
playbooks (1-4 steps, mutating and read-only actions, retries 0-3, approvals, when-conditions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_operator.api.actions import CANCELLABLE_ACTIONS
from incident_operator.api.models import (
    Approval,
    IncidentSpec,
    IncidentStatus,
    Phase,
    PlaybookSpec,
    Resolution,
    Severity,
    StepState,
)
from incident_operator.core.conditions import find_condition
from incident_operator.core.matching import Candidate, select
from incident_operator.core.phases import rank
from incident_operator.core.planner import (
    AlertState,
    Decision,
    Intent,
    Outcome,
    PlanInput,
    Record,
    complete,
    plan,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TARGET = {"kind": "Deployment", "name": "web"}
WEB = {"app": "web"}
ACTION_BODIES: tuple[dict[str, Any], ...] = (
    # mutating
    {"scale": {"target": TARGET, "replicas": 4}},
    {"restart": {"target": TARGET}},
    {"deletePods": {"selector": WEB, "max": 2}},
    {"isolate": {"selector": WEB}},
    {"job": {"template": {"spec": {"containers": []}}, "mitigates": True}},
    # read-only
    {"collectEvidence": {"selector": WEB}},
    {"httpCheck": {"url": "http://web/healthz"}},
    {"waitReady": {"target": TARGET}},
    {"job": {"template": {"spec": {"containers": []}}}},
)
RESPONSE_TARGETS = {s: timedelta(minutes=5 * (i + 1)) for i, s in enumerate(Severity)}
PLANS_PER_EVENT = 10  # the engine plans again at once after an outcome; a bound, not a limit reached
EXAMPLES = settings(max_examples=50, deadline=None)


# ----------------------------------------------------------------------------- the model


@dataclass
class Write:
    """One persisted status, with the records written with it (held ones included)."""

    before: IncidentStatus
    after: IncidentStatus
    records: list[Record]


@dataclass
class Act:
    """An intent carried out, with the last persisted status at that moment."""

    intent: Intent
    persisted: IncidentStatus


@dataclass
class Call:
    """One call of the planner (`plan` or `complete`): its input status and its decision."""

    before: IncidentStatus
    decision: Decision


@dataclass
class Engine:
    playbook: PlaybookSpec
    from_alert: bool
    automation_acknowledges: bool
    spec: IncidentSpec = field(init=False)
    now: datetime = T0
    generation: int = 1
    persisted: IncidentStatus = field(default_factory=IncidentStatus)
    memory: IncidentStatus = field(default_factory=IncidentStatus)
    held: list[Record] = field(default_factory=list)
    in_flight: Intent | None = None
    alert: AlertState | None = None
    writes: list[Write] = field(default_factory=list)
    acts: list[Act] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        body: dict[str, Any] = {"title": "web down", "severity": "P2", "category": "availability"}
        if self.from_alert:
            body["source"] = {"type": "alert", "alertname": "WebDown"}
            self.alert = AlertState("firing", T0)
        self.spec = IncidentSpec.model_validate(body)

    # the engine's side

    def input(self) -> PlanInput:
        return PlanInput(
            spec=self.spec,
            status=self.memory,
            generation=self.generation,
            selection=select(self.spec, [Candidate("pb", self.playbook)]),
            response_target=RESPONSE_TARGETS[self.spec.severity],
            now=self.now,
            alert=self.alert,
            automation_acknowledges=self.automation_acknowledges,
            response_targets=RESPONSE_TARGETS,
        )

    def commit(self, status: IncidentStatus, records: list[Record]) -> None:
        self.writes.append(Write(self.persisted, status, [*self.held, *records]))
        self.persisted = self.memory = status  # never changed in place: the planner copies its input
        self.held = []

    def pump(self) -> None:
        """Plan (and act) until the engine would wait for something: an outcome or an event."""
        for _ in range(PLANS_PER_EVENT):
            if self.in_flight is not None:
                return
            before = self.memory
            decision = plan(self.input())
            self.calls.append(Call(before, decision))
            self.commit(decision.status, decision.records)
            if decision.intent is None:
                return
            self.act(decision.intent)

    def act(self, intent: Intent) -> None:
        self.acts.append(Act(intent, self.persisted))
        self.in_flight = intent
        if self.scale_step_undecided(intent):
            working = self.memory.model_copy(deep=True)
            assert working.playbook is not None
            step = working.playbook.steps[intent.step]
            step.replicasBefore, step.replicasAfter = 2, 4  # the action persists its decision first
            self.commit(working, [])

    def scale_step_undecided(self, intent: Intent) -> bool:
        progress = self.memory.playbook
        if intent.kind != "run-step" or progress is None:
            return False
        step = progress.steps[intent.step]
        return step.action == "scale" and step.replicasBefore is None

    def outcome(self, ok: bool) -> None:
        intent, self.in_flight = self.in_flight, None
        if intent is None:
            return
        before = self.memory
        after = complete(self.input(), intent, Outcome(ok, "ok" if ok else "boom"), self.playbook)
        self.calls.append(Call(before, after))
        self.memory = after.status  # held: written with the next plan
        self.held += after.records
        if after.wake_at is not None:
            self.commit(self.memory, [])
            return
        self.pump()

    def restart(self) -> None:
        self.in_flight = None
        self.held = []
        self.memory = self.persisted
        self.pump()

    # the world's side

    def edit(self, **changes: Any) -> None:
        if self.spec.closed:
            return  # a closed incident is read-only (the API server refuses the edit)
        self.spec = self.spec.model_copy(update=changes)
        self.generation += 1
        intent = self.in_flight
        if intent is not None and (self.spec.resolution or self.spec.closed) and self.cancellable(intent):
            self.in_flight = None  # a waiting step is cancelled; the engine plans again at once
        self.pump()

    def cancellable(self, intent: Intent) -> bool:
        progress = self.memory.playbook
        if intent.kind != "run-step" or progress is None:
            return False
        return progress.steps[intent.step].action in CANCELLABLE_ACTIONS

    def handle(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind in ("succeed", "fail"):
            self.outcome(kind == "succeed")
        elif kind == "tick":
            self.now += timedelta(seconds=value)
            self.pump()
        elif kind == "restart":
            self.restart()
        elif kind == "acknowledge":
            self.edit(commander="alice")
        elif kind == "resolve":
            self.edit(resolution=Resolution(summary="fixed by hand"))
        elif kind == "close":
            self.edit(closed=True)
        elif kind == "pause":
            self.edit(paused=value or None)
        elif kind == "severity":
            self.edit(severity=value)
        elif kind == "approve":
            name = f"s{value}"
            approvals = self.spec.approvals or []
            if all(a.step != name for a in approvals):
                self.edit(approvals=[*approvals, Approval(step=name, by="bob")])
        elif kind == "alert" and self.alert is not None:  # it resolves, or fires again
            self.alert = AlertState("resolved" if self.alert.status == "firing" else "firing", self.now)
            self.pump()


# ----------------------------------------------------------------------------- generated input


@st.composite
def playbooks(draw: st.DrawFn) -> PlaybookSpec:
    steps = []
    count = draw(st.integers(1, 4))
    for index in range(count):
        step: dict[str, Any] = {
            "name": f"s{index}",
            **draw(st.sampled_from(ACTION_BODIES)),
            "retries": draw(st.sampled_from((0, 0, 1, 2, 3))),
            "requiresApproval": draw(st.sampled_from((False, False, False, True))),
            "continueOnFailure": draw(st.booleans()),
        }
        if index > 0 and draw(st.booleans()):
            earlier = f"s{draw(st.integers(0, index - 1))}"
            step["when"] = {draw(st.sampled_from(("stepFailed", "stepSucceeded"))): earlier}
        steps.append(step)
    body = {
        "steps": steps,
        "stabilizationSeconds": draw(st.integers(0, 60)),
        "revertOnResolve": draw(st.booleans()),
    }
    return PlaybookSpec.model_validate(body)


WEIGHTS = {
    "succeed": 32,
    "fail": 16,
    "tick": 24,
    "alert": 16,
    "approve": 12,
    "restart": 16,
    "acknowledge": 3,
    "pause": 3,
    "severity": 3,
    "resolve": 1,
    "close": 1,
}
"""How often each event comes: mostly outcomes and time passing, as in a real incident; the ones
that end automation (resolve, close) rarely, so that runs get far."""
KINDS = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]


@st.composite
def events(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    if kind == "tick":
        return kind, draw(st.integers(0, draw(st.sampled_from((5, 120, 7200)))))
    if kind == "approve":
        return kind, draw(st.integers(0, 3))
    if kind == "pause":
        return kind, draw(st.booleans())
    if kind == "severity":
        return kind, draw(st.sampled_from(list(Severity)))
    return kind, None


@dataclass(frozen=True)
class Scenario:
    playbook: PlaybookSpec
    from_alert: bool
    automation_acknowledges: bool
    events: list[tuple[str, Any]]

    def run(self) -> Engine:
        """The engine driven through the events (its trace is what the properties read)."""
        engine = Engine(self.playbook, self.from_alert, self.automation_acknowledges)
        engine.pump()
        for event in self.events:
            engine.handle(event)
        return engine


scenarios = st.builds(
    Scenario,
    playbooks(),
    st.sampled_from((True, True, False)),
    st.booleans(),
    st.lists(events(), min_size=10, max_size=80),
)


# ----------------------------------------------------------------------------- properties


def phase_rank(status: IncidentStatus) -> int:
    return -1 if status.phase is None else rank(status.phase)


def refired(before: IncidentStatus, after: IncidentStatus, records: list[Record]) -> bool:
    """The one way back: a re-fire of the alert reopens a Monitoring or Resolved incident (back to
    Investigating) and says so in the timeline (a `Refired` entry, which is what these records
    become). From there the phase moves forward as usual, possibly in the same plan: the playbook
    runs again at once and a mutating step takes it to Mitigating."""
    return (
        before.phase in (Phase.MONITORING, Phase.RESOLVED)
        and after.phase is not None
        and rank(after.phase) >= rank(Phase.INVESTIGATING)
        and any(r.reason == "Refired" for r in records)
    )


@EXAMPLES
@given(scenarios)
def test_phases_never_go_back_except_by_a_recorded_refire(scenario: Scenario) -> None:
    engine = scenario.run()
    for call in engine.calls:
        before, after = call.before, call.decision.status
        assert phase_rank(after) >= phase_rank(before) or refired(before, after, call.decision.records)
    for write in engine.writes:
        assert phase_rank(write.after) >= phase_rank(write.before) or refired(
            write.before, write.after, write.records
        )


@EXAMPLES
@given(scenarios)
def test_a_step_starts_at_most_one_plus_retries_times_per_run(scenario: Scenario) -> None:
    engine = scenario.run()
    retries = {s.name: s.retries for s in engine.playbook.steps}
    started: dict[tuple[str | None, str], set[int]] = {}
    for act in engine.acts:
        progress = act.persisted.playbook
        if act.intent.kind != "run-step" or progress is None:
            continue
        step = progress.steps[act.intent.step]
        started.setdefault((progress.runId, step.name), set()).add(step.attempts)
    for (_, name), attempts in started.items():
        assert len(attempts) <= 1 + retries[name]
        assert max(attempts) <= 1 + retries[name]
    for write in engine.writes:
        for step in write.after.playbook.steps if write.after.playbook else []:
            assert step.attempts <= 1 + retries[step.name]


@EXAMPLES
@given(scenarios)
def test_at_most_one_mutating_step_is_in_flight(scenario: Scenario) -> None:
    engine = scenario.run()
    mutating = {s.name for s in engine.playbook.steps if s.mutates}
    statuses = [c.decision.status for c in engine.calls] + [w.after for w in engine.writes]
    for status in statuses:
        running = [
            s.name
            for s in (status.playbook.steps if status.playbook else [])
            if s.state is StepState.RUNNING and s.name in mutating
        ]
        assert len(running) <= 1, running


@EXAMPLES
@given(scenarios)
def test_every_intent_is_derivable_from_the_status_persisted_before_it_acts(scenario: Scenario) -> None:
    engine = scenario.run()
    for act in engine.acts:
        status, intent = act.persisted, act.intent
        progress = status.playbook
        resolved = find_condition([c.model_dump(mode="json") for c in status.conditions or []], "Resolved")
        is_resolved = resolved is not None and resolved["status"] == "True"
        if intent.kind == "run-step":
            assert progress is not None
            step = progress.steps[intent.step]
            assert step.state is StepState.RUNNING
            assert step.attempts >= 1
            assert step.startedAt is not None
            assert not is_resolved
        elif intent.kind == "verify-health":
            assert progress is not None
            assert status.monitoringSince is not None
            assert all(
                s.state in (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED) for s in progress.steps
            )
            assert not is_resolved
        else:
            assert progress is not None
            step = progress.steps[intent.step]
            assert is_resolved
            assert step.state is StepState.SUCCEEDED
            assert step.replicasBefore is not None
            assert not step.reverted
