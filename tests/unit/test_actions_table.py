"""The actions are declared once (`api.actions.ACTIONS`): the Step model and its CRD schema, the
action registry, the access reviews, the shipped remediator RBAC, `kubectl incident plan` and the
engine's sets all follow that one table, and these tests fail when one of them does not."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from incident_operator.api.actions import (
    ACTION_KEYS,
    ACTIONS,
    CANCELLABLE_ACTIONS,
    HEALTH_RBAC,
    JOBS_RBAC,
    LOCK_RBAC,
    MUTATING_ACTIONS,
    OPT_IN,
    REMEDIATOR_RBAC,
    TARGET_ACTIONS,
    TargetAction,
)
from incident_operator.api.base import TargetKind, WorkloadRef
from incident_operator.api.models import IncidentSpec, PlaybookSpec, Step
from incident_operator.api.rbac import Permission
from incident_operator.controllers import actions
from incident_operator.core.access import required

ROOT = Path(__file__).resolve().parents[2]
COMMON_STEP_FIELDS = {"name", "requiresApproval", "timeoutSeconds", "retries", "continueOnFailure", "when"}
DEPLOY = {"kind": "Deployment", "name": "web"}
STS = {"kind": "StatefulSet", "name": "db"}
SECRET = {"name": "creds"}

# Parameters of every action, in the variants that change what it needs (each optional feature on
# and off, each workload kind). A new action without examples here fails `test_every_action_has_examples`.
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "scale": [{"target": DEPLOY, "replicas": 3}, {"target": STS, "delta": 1, "max": 5}],
    "restart": [{"target": DEPLOY}, {"target": STS}],
    "deletePods": [{"selector": {"app": "web"}}, {"selector": {"app": "web"}, "max": 3, "onlyUnready": True}],
    "waitReady": [{"target": DEPLOY}, {"target": STS}],
    "httpCheck": [{"url": "https://web/healthz"}, {"url": "https://web/", "headersSecretRef": SECRET}],
    "notify": [{"webhook": {"urlSecretRef": {"name": "hooks", "key": "team"}}, "message": "{title}"}],
    "collectEvidence": [
        {"selector": {"app": "web"}},
        {"selector": {"app": "web"}, "logLines": 0, "events": False, "rolloutHistory": False},
    ],
    "isolate": [{"selector": {"app": "web"}}],
    "rollback": [{"target": DEPLOY}, {"target": STS, "toRevision": 2}],
    "job": [
        {"template": {"spec": {"containers": [{"name": "c", "image": "postgres:16"}]}}},
        {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}, "logLines": 0},
    ],
    "promQuery": [
        {"url": "https://prom:9090", "query": "up", "expect": {"op": "==", "value": 1}},
        {
            "url": "https://prom:9090",
            "query": "up",
            "expect": {"op": ">", "value": 0},
            "headersSecretRef": SECRET,
        },
    ],
}
TARGETS = [
    WorkloadRef(kind=TargetKind.DEPLOYMENT, name="web"),
    WorkloadRef(kind=TargetKind.STATEFULSET, name="db"),
]


def examples() -> list[tuple[str, Any]]:
    return [
        (key, ACTIONS[key].params.model_validate(raw))
        for key, variants in EXAMPLES.items()
        for raw in variants
    ]


def test_every_action_is_a_step_field_whose_schema_is_the_tables_parameter_model() -> None:
    assert set(Step.model_fields) - COMMON_STEP_FIELDS == set(ACTIONS)
    assert tuple(ACTIONS) == ACTION_KEYS
    for key, action in ACTIONS.items():
        annotation = Step.model_fields[key].annotation
        assert action.params in typing.get_args(annotation), key


def test_every_action_has_an_implementation() -> None:
    assert set(actions.REGISTRY) == set(ACTIONS)


def test_every_action_has_examples() -> None:
    assert set(EXAMPLES) == set(ACTIONS)


@pytest.mark.parametrize(("key", "params"), examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_step_needs_no_more_than_its_action_declares_and_has_a_plan_line(key: str, params: Any) -> None:
    needs = set(ACTIONS[key].needs(params, TARGETS))
    assert needs <= ACTIONS[key].rbac, (key, needs - ACTIONS[key].rbac)
    line = ACTIONS[key].plan(params)
    assert len(line.split()) > 2, line  # a sentence about this step, not just the key


def test_the_rbac_declared_per_action_is_reached_by_some_example() -> None:
    """A declared grant no example needs is a grant nobody needs (metrics.k8s.io is best effort)."""
    reached = {p for key, params in examples() for p in ACTIONS[key].needs(params, TARGETS)}
    best_effort = {Permission("list", "pods", "metrics.k8s.io")}
    for key, action in ACTIONS.items():
        assert action.rbac - best_effort <= reached, (key, action.rbac - reached)


def role_grants(name: str = "incident-operator-remediator") -> set[Permission]:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name]
    grants = set()
    for rule in role["rules"]:
        assert not rule.get("resourceNames"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                name, _, sub = resource.partition("/")
                grants |= {Permission(verb, name, group, sub) for verb in rule["verbs"]}
    return grants


def test_the_shipped_remediator_role_grants_exactly_what_the_actions_and_the_engine_need() -> None:
    grants = role_grants()
    assert REMEDIATOR_RBAC - grants == set(), "manifests/install lacks these (add them to rbac.yaml)"
    assert grants - REMEDIATOR_RBAC == set(), "manifests/install grants these and nothing needs them"
    others = frozenset().union(*(a.rbac for k, a in ACTIONS.items() if k != "job"))
    assert others <= REMEDIATOR_RBAC  # every other action's needs
    assert REMEDIATOR_RBAC.isdisjoint(JOBS_RBAC)  # no Job without the second opt-in


def test_the_shipped_jobs_role_grants_exactly_what_a_job_step_needs_beyond_the_remediator() -> None:
    assert role_grants("incident-operator-jobs") == JOBS_RBAC
    assert ACTIONS["job"].rbac <= JOBS_RBAC | REMEDIATOR_RBAC  # the log tail: the remediator's
    assert ACTIONS["job"].rbac - REMEDIATOR_RBAC == JOBS_RBAC


def test_access_reviews_ask_for_what_the_steps_need_and_the_health_check_reads() -> None:
    spec = IncidentSpec.model_validate(
        {"title": "down", "severity": "P1", "category": "availability", "targets": [DEPLOY]}
    )
    playbook = PlaybookSpec.model_validate(
        {
            "steps": [
                {"name": "s", "scale": {"target": STS, "replicas": 2}},
                {"name": "i", "isolate": {"selector": {"a": "b"}}},
            ]
        }
    )
    assert required(spec, playbook) == sorted(
        {
            OPT_IN,  # every run asks for the namespace's opt-in
            Permission("get", "deployments", "apps"),  # the health check reads the incident's target
            Permission("get", "statefulsets", "apps"),
            Permission("patch", "statefulsets", "apps", "scale"),
            *LOCK_RBAC,  # the per-workload lock (a Lease)
            Permission("create", "networkpolicies", "networking.k8s.io"),
        }
    )
    assert HEALTH_RBAC <= REMEDIATOR_RBAC


def test_the_derived_sets() -> None:
    assert {"scale", "restart", "deletePods", "isolate", "rollback", "job"} == MUTATING_ACTIONS
    assert {"waitReady", "httpCheck", "promQuery"} == CANCELLABLE_ACTIONS
    assert CANCELLABLE_ACTIONS.isdisjoint(MUTATING_ACTIONS)  # only waiting may be cut short
    for key in TARGET_ACTIONS:  # their parameters carry a workload target
        assert "target" in ACTIONS[key].params.model_fields, key
    assert TargetAction.model_fields["target"].is_required()


def test_the_actions_reference_has_one_row_per_action_and_says_which_mutate() -> None:
    text = (ROOT / "docs" / "reference" / "actions.md").read_text()
    table = text[text.index("| action | does | kind |") :].split("\n\n")[0].splitlines()[2:]
    rows = {row.split("`")[1].split(":")[0]: row.rsplit("|", 2)[1].strip() for row in table}
    assert set(rows) == set(ACTIONS)
    for key, kind in rows.items():
        assert kind.startswith("mutating") == ACTIONS[key].mutating, (key, kind)


@pytest.mark.parametrize(
    "scenario",
    [
        {"scaleToZero": {"target": STS}},
        {"scaleToZero": {"target": DEPLOY}},
        {"deletePods": {"selector": {"app": "web"}, "count": 1}},
        {"fireAlert": {"alertname": "ServiceDown"}},
    ],
)
def test_a_drill_needs_only_what_the_remediator_role_grants_besides_opening_its_incident(
    scenario: dict[str, Any],
) -> None:
    from incident_operator.api.actions import DRILL_RBAC
    from incident_operator.api.keys import API_GROUP
    from incident_operator.api.models import DrillSpec
    from incident_operator.core.drills import needs

    spec = DrillSpec.model_validate({"schedule": "0 10 * * 1", "scenario": scenario})
    breaking = set(needs(spec)) - {Permission("create", "incidents", API_GROUP)}
    assert breaking <= DRILL_RBAC <= REMEDIATOR_RBAC


def test_a_playbook_of_requests_alone_still_needs_the_namespaces_opt_in() -> None:
    spec = IncidentSpec.model_validate({"title": "down", "severity": "P1", "category": "availability"})
    probe = PlaybookSpec.model_validate(
        {
            "steps": [
                {"name": "probe", "httpCheck": {"url": "http://web.shop.svc/healthz"}},
                {
                    "name": "query",
                    "promQuery": {
                        "url": "http://prom.shop.svc",
                        "query": "up",
                        "expect": {"op": ">", "value": 0},
                    },
                },
            ]
        }
    )
    assert required(spec, probe) == [OPT_IN]
    assert OPT_IN in role_grants()  # the remediator role grants it: the RoleBinding is the opt-in
