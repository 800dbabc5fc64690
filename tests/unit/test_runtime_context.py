"""The handlers' shared state lives in one RuntimeContext that every per-object memo refers to."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from incident_operator.runtime import handlers
from incident_operator.runtime.context import RuntimeContext, context


def test_a_supervisor_built_through_one_objects_memo_is_the_one_every_other_memo_sees() -> None:
    # kopf hands each watched object a shallow copy of the operator's memo (inventory.recall)
    ctx = RuntimeContext.__new__(RuntimeContext)  # no API client needed: the factory is not called
    ctx.supervisor = None
    root = kopf.Memo(ctx=ctx)
    incident_a, incident_b, playbook = copy.copy(root), copy.copy(root), copy.copy(root)
    empty: Any = {}
    built = handlers._supervisor(incident_a, empty)
    assert handlers._supervisor(incident_b, empty) is built
    assert context(playbook).supervisor is built  # a Playbook change wakes the same loops
    assert context(root).supervisor is built  # and the cleanup stops them
