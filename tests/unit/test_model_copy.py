"""`ApiModel.__deepcopy__` (what `model_copy(deep=True)` runs on every plan): the copy of a real
incident status after a run equals pydantic's own deep copy, and shares nothing that can change."""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime
from enum import Enum
from typing import Any

import pydantic.main
import pytest
from pydantic import BaseModel

from incident_operator.api import base
from incident_operator.api.models import IncidentStatus, TimelineEntry
from tests.unit.fake_kube import FakeKube
from tests.unit.test_incident_loop import Clock, new_loop

ONE_STEP = [{"name": "scale-web", "scale": {"target": {"kind": "Deployment", "name": "web"}, "delta": 1}}]


def status_after_a_run() -> IncidentStatus:
    """The status a one-step run left: conditions, timeline, the pinned playbook, its steps."""
    api = FakeKube(
        {"title": "web down", "severity": "P2", "category": "availability"},
        {"steps": ONE_STEP, "stabilizationSeconds": 0},
        {"web": 2},
    )
    loop = new_loop(api, Clock())
    asyncio.run(asyncio.wait_for(loop.run(lambda: bool(api.status().get("settled")), asyncio.Event()), 5))
    status = IncidentStatus.model_validate(api.status())
    assert status.playbook is not None
    assert status.playbook.steps
    assert status.timeline
    assert status.conditions
    return status


def changeable(a: Any, b: Any, path: str = "status") -> list[str]:
    """Where the trees `a` and `b` share an object that can change (a model, list or dict)."""
    if isinstance(a, (str, int, float, bool, datetime, Enum)) or a is None:
        return []
    shared = [path] if a is b else []
    if isinstance(a, BaseModel):
        return shared + [
            p
            for name in type(a).model_fields
            for p in changeable(getattr(a, name), getattr(b, name), f"{path}.{name}")
        ]
    if isinstance(a, list):
        return shared + [
            p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in changeable(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, dict):
        return shared + [p for k in a for p in changeable(a[k], b[k], f"{path}.{k}")]
    return [*shared, path]  # an unexpected type: shared only if the copy fell back to the general way


def test_the_copy_equals_pydantics_own_and_keeps_what_was_set() -> None:
    status = status_after_a_run()
    copied = status.model_copy(deep=True)
    theirs = BaseModel.__deepcopy__(status)
    assert copied == status == theirs
    assert copied.model_dump(exclude_unset=True, mode="json") == status.model_dump(
        exclude_unset=True, mode="json"
    )
    assert copied.model_fields_set == status.model_fields_set
    assert copy.deepcopy(status) == status


def test_the_copy_shares_nothing_that_can_change() -> None:
    status = status_after_a_run()
    before = status.model_dump(mode="json")
    copied = status.model_copy(deep=True)
    assert changeable(status, copied) == []
    assert copied.playbook is not None
    assert copied.timeline is not None
    assert copied.conditions is not None
    copied.playbook.steps[0].message = "changed in the copy"
    copied.timeline.append(TimelineEntry(time=datetime(2026, 12, 1), type="Note", message="only in the copy"))
    copied.conditions[0].message = "changed in the copy"
    fields_set = set(status.model_fields_set)
    copied.model_fields_set.add("evidenceRef")
    assert status.model_dump(mode="json") == before
    assert status.model_fields_set == fields_set


def test_a_status_is_copied_without_pythons_general_deep_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """What made the copy slow (a memo of every object): not reached for anything in a status."""
    status = status_after_a_run()

    def general(value: Any, memo: Any = None) -> Any:
        raise AssertionError(f"copy.deepcopy reached for a {type(value).__name__}")

    monkeypatch.setattr(base.copy, "deepcopy", general)
    monkeypatch.setattr(pydantic.main, "deepcopy", general)  # what pydantic's own copy calls
    assert status.model_copy(deep=True) == status
