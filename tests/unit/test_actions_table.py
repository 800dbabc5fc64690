"""The actions are declared once (models.ACTIONS): the Step model, the CRD's one-action rule, the
action registry and the engine's sets all follow that one table."""

from __future__ import annotations

from incident_operator.api.models import (
    ACTION_KEYS,
    ACTIONS,
    CANCELLABLE_ACTIONS,
    MUTATING_ACTIONS,
    TARGET_ACTIONS,
    Step,
    TargetAction,
)
from incident_operator.controllers import actions


def test_every_action_is_a_step_field_and_every_step_field_beyond_the_common_ones_is_an_action() -> None:
    common = {"name", "requiresApproval", "timeoutSeconds", "retries", "continueOnFailure", "when"}
    assert set(Step.model_fields) - common == set(ACTIONS)
    assert tuple(ACTIONS) == ACTION_KEYS


def test_every_action_has_an_implementation() -> None:
    assert set(actions.REGISTRY) == set(ACTIONS)


def test_the_derived_sets() -> None:
    assert {"scale", "restart", "deletePods", "isolate", "rollback"} == MUTATING_ACTIONS
    assert {"waitReady", "httpCheck", "promQuery"} == CANCELLABLE_ACTIONS
    assert CANCELLABLE_ACTIONS.isdisjoint(MUTATING_ACTIONS)  # only waiting may be cut short
    for key in TARGET_ACTIONS:  # their parameters carry a workload target
        annotation = Step.model_fields[key].annotation
        assert "target" in getattr(annotation, "__args__", (annotation,))[0].model_fields, key
    assert TargetAction.model_fields["target"].is_required()
