"""Evidence stays under its size limit whatever the logs hold, and says what was cut; logs are
read from at most `limits.maxEvidencePods` pods, each read asking for no more than the budget left."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import yaml
from kubernetes import client

from incident_operator.api.models import IncidentSpec, IncidentStatus, PlaybookSpec, StepStatus
from incident_operator.controllers import actions
from incident_operator.controllers.actions import _fit
from incident_operator.core.planner import Outcome
from incident_operator.settings.config import Limits


def test_huge_logs_are_cut_to_the_limit_and_the_cut_is_recorded() -> None:
    data = {
        "pods.yaml": "- name: a\n",
        "events.yaml": "[]\n",
        "logs-a.txt": "x" * 600_000,
        "logs-b.txt": "y" * 600_000,
        "logs-unavailable.txt": "c: HTTP 404\n",
    }
    _fit(data, 900_000)
    assert sum(len(v.encode()) for v in data.values()) <= 900_000
    assert data["logs-a.txt"] == "x" * 600_000  # only as much is cut as needed (b first)
    assert data["logs-b.txt"].startswith("(trimmed")
    assert "logs-b.txt: 600000 bytes cut" in data["trimmed.txt"]
    assert data["logs-unavailable.txt"] == "c: HTTP 404\n"


def test_even_a_huge_event_list_is_cut() -> None:
    data = {"pods.yaml": "p" * 10, "events.yaml": "e" * 2_000_000}
    _fit(data, 100_000)
    assert sum(len(v.encode()) for v in data.values()) <= 100_000
    assert "events.yaml" in data["trimmed.txt"]


def test_small_evidence_is_untouched() -> None:
    data = {"pods.yaml": "p", "logs-a.txt": "l"}
    _fit(data, 10_000)
    assert data == {"pods.yaml": "p", "logs-a.txt": "l"}


# ----------------------------------------------------------------------------- what is read


class LogKube:
    """The part of `Kube` collectEvidence calls: pods, their logs (each call's arguments
    recorded, a log of `log_bytes` bytes served no longer than asked), the evidence ConfigMap."""

    def __init__(self, pods: list[Any], log_bytes: int) -> None:
        self.listed = pods
        self.log_bytes = log_bytes
        self.log_calls: list[tuple[str, int, int]] = []
        self.configmaps: dict[str, dict[str, str]] = {}

    async def pods(self, namespace: str, selector: dict[str, str]) -> list[Any]:
        return self.listed

    async def pod_log(self, namespace: str, name: str, *, lines: int, limit_bytes: int) -> str:
        self.log_calls.append((name, lines, limit_bytes))
        return ("x" * self.log_bytes)[:limit_bytes]  # the kubelet stops at limitBytes

    async def write_owned_configmap(
        self, namespace: str, name: str, data: dict[str, str], incident: str, incident_uid: str
    ) -> None:
        self.configmaps[name] = dict(data)


def pod(name: str, *, ready: bool = True, restarts: int = 0) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[], node_name="n1"),
        status=client.V1PodStatus(
            phase="Running",
            conditions=[client.V1PodCondition(type="Ready", status="True" if ready else "False")],
            container_statuses=[
                client.V1ContainerStatus(
                    name="web", image="web", image_id="", ready=ready, restart_count=restarts
                )
            ],
        ),
    )


def collect(kube: LogKube, limits: Limits, log_lines: int = 100) -> tuple[Outcome, dict[str, str]]:
    playbook = PlaybookSpec.model_validate(
        {
            "steps": [
                {
                    "name": "evidence",
                    "collectEvidence": {
                        "selector": {"app": "web"},
                        "logLines": log_lines,
                        "events": False,
                        "rolloutHistory": False,
                        "resourceUsage": False,
                    },
                }
            ]
        }
    )

    async def persist() -> None:
        return None

    ctx = actions.ActionContext(
        kube=kube,
        outbound=None,
        limits=limits,
        namespace="shop",
        incident="web-down",
        incident_uid="uid",
        spec=IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "availability"}),
        status=IncidentStatus(),
        playbook=playbook,
        step=playbook.steps[0],
        step_status=StepStatus(name="evidence", action="collectEvidence", attempts=1),
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        persist=persist,
    )
    outcome = asyncio.run(actions.collect_evidence(ctx))
    (data,) = kube.configmaps.values()
    return outcome, data


def test_logs_are_read_from_at_most_max_evidence_pods_and_the_rest_are_named() -> None:
    pods = [pod(f"web-{i:02}") for i in range(30)] + [
        pod("web-sick", ready=False),
        pod("web-flaky", restarts=7),
    ]
    kube = LogKube(pods, log_bytes=100)
    outcome, data = collect(kube, Limits(maxEvidencePods=5))
    read = [name for name, _, _ in kube.log_calls]
    assert read == ["web-sick", "web-flaky", "web-00", "web-01", "web-02"]  # the unhealthy first
    assert all(lines == 100 for _, lines, _ in kube.log_calls)  # tail_lines always passed
    assert (
        "logs of 27 more pods not read (limits.maxEvidencePods: 5): web-03, web-04" in data["unavailable.txt"]
    )
    assert "web-29" in data["unavailable.txt"]
    assert sorted(k for k in data if k.startswith("logs-")) == [f"logs-{n}.txt" for n in sorted(read)]
    assert "logs of 27 pods not read" in outcome.message
    assert len(yaml.safe_load(data["pods.yaml"])) == 32  # every matching pod is still summarised


def test_each_log_read_asks_for_at_most_what_is_left_of_the_budget_and_stops_when_spent() -> None:
    pods = [pod(f"web-{i}") for i in range(10)]
    kube = LogKube(pods, log_bytes=10_000_000)  # huge logs: never read whole
    limits = Limits(maxEvidenceBytes=30_000, maxLogBytesPerPod=12_000, maxEvidencePods=10)
    outcome, data = collect(kube, limits)
    asked = [limit for _, _, limit in kube.log_calls]
    summary = len(data["pods.yaml"].encode())
    assert asked == [12_000, 12_000, 30_000 - summary - actions.NOTES_RESERVE_BYTES - 24_000]  # what is left
    assert sum(asked) <= limits.maxEvidenceBytes
    assert (
        "logs of 7 pods not read (limits.maxEvidenceBytes: 30000 spent): web-3, web-4"
        in data["unavailable.txt"]
    )
    assert sum(len(v.encode()) for v in data.values()) <= limits.maxEvidenceBytes
    assert "trimmed.txt" not in data  # nothing read had to be thrown away
    assert outcome.ok


def test_no_log_is_read_when_the_pod_cap_is_zero_or_no_lines_are_asked_for() -> None:
    kube = LogKube([pod("web-1")], log_bytes=10)
    _, data = collect(kube, Limits(maxEvidencePods=0))
    assert kube.log_calls == []
    assert "logs of 1 more pods not read" in data["unavailable.txt"]
    kube = LogKube([pod("web-1")], log_bytes=10)
    _, data = collect(kube, Limits(), log_lines=0)
    assert kube.log_calls == []
    assert "unavailable.txt" not in data


def test_a_server_that_ignores_limit_bytes_still_costs_only_what_was_asked() -> None:
    class Careless(LogKube):
        async def pod_log(self, namespace: str, name: str, *, lines: int, limit_bytes: int) -> str:
            self.log_calls.append((name, lines, limit_bytes))
            return "y" * 50_000

    kube = Careless([pod("web-1"), pod("web-2")], log_bytes=0)
    _, data = collect(kube, Limits(maxLogBytesPerPod=2048))
    assert data["logs-web-1.txt"] == "y" * 2048
    assert [limit for _, _, limit in kube.log_calls] == [2048, 2048]
