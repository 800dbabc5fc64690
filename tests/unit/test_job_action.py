"""The `job` action against an in-memory Kube: the pod it creates (the operator's labels only, no
ServiceAccount token), and the per-namespace cap (a step at the cap waits, queued, within its
timeout; it never creates a Job beyond the cap)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from incident_operator.api.models import IncidentSpec, PlaybookSpec, StepStatus
from incident_operator.controllers import actions
from incident_operator.settings.config import JobsConfig
from tests.unit.test_jobpolicy import RESTRICTED

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class JobKube:
    """The Kube methods `run_job` calls; `running` is how many other operator Jobs run, per list."""

    def __init__(self, running: list[int]) -> None:
        self.running = running
        self.created: list[dict[str, Any]] = []
        self.lists = 0

    def to_dict(self, obj: Any) -> Any:
        return client.ApiClient().sanitize_for_serialization(obj)

    async def jobs_labelled(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert selector == "incident-operator.dev/incident"
        count = self.running[min(self.lists, len(self.running) - 1)]
        self.lists += 1
        others: list[dict[str, Any]] = [
            {"metadata": {"name": f"other-{i}"}, "status": {}} for i in range(count)
        ]
        done = {
            "metadata": {"name": "old"},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]},
        }
        return [*others, done] + [{"metadata": c["metadata"], "status": {}} for c in self.created]

    async def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        self.created.append(body)

    async def read_job(self, namespace: str, name: str) -> Any:
        complete = SimpleNamespace(type="Complete", status="True")
        return SimpleNamespace(status=SimpleNamespace(conditions=[complete]))


def run(
    kube: JobKube, *, timeout: int = 60, cap: int = 3, template: Any = RESTRICTED
) -> tuple[Any, Any, list[str]]:
    playbook = PlaybookSpec.model_validate(
        {
            "steps": [
                {"name": "check", "timeoutSeconds": timeout, "job": {"template": template, "logLines": 0}}
            ]
        }
    )
    status = StepStatus(name="check", action="job", attempts=1, startedAt=T0)
    clock = [T0]
    persisted: list[str] = []

    def now() -> datetime:
        clock[0] += timedelta(seconds=1)  # each look at the clock is a second later
        return clock[0]

    async def persist() -> None:
        persisted.append(status.message or "")

    ctx = actions.ActionContext(
        kube=kube,
        outbound=None,
        limits=None,
        namespace="shop",
        incident="db-1",
        incident_uid="uid",
        spec=IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "data"}),
        status=SimpleNamespace(playbook=None),
        playbook=playbook,
        step=playbook.steps[0],
        step_status=status,
        now=now,
        persist=persist,
        jobs=JobsConfig(maxConcurrentPerNamespace=cap),
    )
    return asyncio.run(actions.run_job(ctx)), status, persisted


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions, "JOB_QUEUE_POLL_S", 0.001)
    monkeypatch.setattr(actions, "JOB_POLL_S", 0.001)


def test_the_pod_carries_the_operators_labels_only_and_no_token() -> None:
    kube = JobKube([0])
    outcome, status, persisted = run(kube)
    assert outcome.ok, outcome
    (body,) = kube.created
    assert body["metadata"]["name"] == status.job == "db-1-check-r1-1"
    assert body["metadata"]["labels"] == {"incident-operator.dev/incident": "db-1"}
    pod = body["spec"]["template"]
    assert pod["metadata"] == {"labels": {"incident-operator.dev/incident": "db-1"}}
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod["spec"]
    assert persisted == []  # not queued: nothing to tell


def test_a_job_at_the_cap_waits_queued_then_runs_when_a_slot_frees() -> None:
    kube = JobKube([3, 3, 2])  # the namespace runs 3 (the cap), then one finishes
    outcome, _, persisted = run(kube)
    assert outcome.ok, outcome
    assert kube.lists == 3
    assert len(kube.created) == 1
    assert len(persisted) == 1  # told once, not on every look
    assert persisted[0].startswith("queued: 3 Jobs of the operator run in namespace shop")
    assert "waits for a free slot" in persisted[0]


def test_a_job_that_never_gets_a_slot_times_out_with_its_own_timeout_and_creates_nothing() -> None:
    kube = JobKube([5])
    outcome, _, persisted = run(kube, timeout=10)
    assert not outcome.ok
    assert outcome.message.startswith("timed out after 10s: queued: 5 Jobs of the operator run")
    assert kube.created == []
    assert kube.lists <= 10  # bounded by the step's timeout (the clock moves a second per look)
    assert persisted


def test_a_template_the_policy_refuses_is_never_created() -> None:
    hostile = {"spec": {**RESTRICTED["spec"], "hostPID": True}}
    kube = JobKube([0])
    outcome, _, _ = run(kube, template=hostile)
    assert not outcome.ok
    assert outcome.blocked == "Misconfigured"  # the config tightened since: not a failed step
    assert "job.template.spec.hostPID" in outcome.message
    assert kube.created == []
    assert kube.lists == 0


def test_the_job_ends_by_itself_when_the_steps_time_is_up_time_queued_included() -> None:
    kube = JobKube([3, 3, 2])  # queued for a while first
    outcome, _, _ = run(kube, timeout=60)
    assert outcome.ok, outcome
    (body,) = kube.created
    # the step started at T0 with 60 s; the fake clock moved a second per look before creating
    assert body["spec"]["activeDeadlineSeconds"] < 60
    assert body["spec"]["activeDeadlineSeconds"] >= 50
