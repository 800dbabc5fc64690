"""Playbook run records are batched: many incidents, one write per Playbook per flush; a conflict
keeps the tally for the next flush without losing or double-counting anything."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes.client.exceptions import ApiException

from incident_operator.adapters.runledger import RunRecorder


class FakeKube:
    """The two calls the recorder makes, against an in-memory Playbook with a resourceVersion."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {"runs": 3}
        self.version = 1
        self.patches: list[dict[str, Any]] = []
        self.conflict_next = False

    async def get_playbook(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": str(self.version)}, "status": dict(self.status)}

    async def patch_playbook_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        if self.conflict_next or resource_version != str(self.version):
            self.conflict_next = False
            raise ApiException(status=409, reason="Conflict")
        self.patches.append(status)
        self.status.update(status)
        self.version += 1


def test_many_runs_become_one_write_and_conflicts_are_retried_without_loss() -> None:
    kube = FakeKube()
    recorder = RunRecorder(kube)
    for i in range(100):
        recorder.add("ns", "pb", ["runs", "succeeded"], {"lastRuns": {f"Deployment/w{i % 3}": f"t{i}"}})
    kube.conflict_next = True
    asyncio.run(recorder.flush())
    assert kube.patches == []  # conflicted: kept
    recorder.add("ns", "pb", ["failed"], {"lastRun": "t100"})
    asyncio.run(recorder.flush())
    assert len(kube.patches) == 1
    assert kube.status["runs"] == 103
    assert kube.status["succeeded"] == 100
    assert kube.status["failed"] == 1
    assert kube.status["lastRuns"] == {"Deployment/w0": "t99", "Deployment/w1": "t97", "Deployment/w2": "t98"}
    assert recorder.pending == {}


def test_a_run_that_starts_and_ends_within_the_interval_is_one_write_whenever_it_started() -> None:
    kube, now = FakeKube(), [100.0]
    recorder = RunRecorder(kube, interval=1.0, clock=lambda: now[0])

    async def cycle() -> None:
        await recorder.flush(aged_only=True)  # what the writer does once an interval

    recorder.add("ns", "pb", ["runs"], {"lastRun": "t0"})  # just before the writer's cycle
    now[0] += 0.25
    asyncio.run(cycle())
    assert kube.patches == []  # a quarter second old: it waits for the run's end
    now[0] += 0.25
    recorder.add("ns", "pb", ["succeeded"], {})
    now[0] += 0.75  # the next cycle: past a second after the first count
    asyncio.run(cycle())
    assert kube.patches == [{"runs": 4, "succeeded": 1, "lastRun": "t0"}]
    recorder.add("ns", "other", ["runs"], {})
    kube.conflict_next = True
    now[0] += 1.0
    asyncio.run(cycle())  # conflicted: kept, as old as it was
    assert recorder.pending[("ns", "other")].since == now[0] - 1.0
    now[0] += 1.0
    asyncio.run(cycle())
    assert len(kube.patches) == 2
    assert recorder.pending == {}
