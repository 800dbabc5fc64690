"""Alert intake fills an incident's targets from the labels alerts really carry: `deployment` and
`statefulset` as named, a `pod` label through its owner (ReplicaSet → Deployment, or StatefulSet),
a `service` label through its selector; what cannot be read leaves the incident opened without."""

from __future__ import annotations

import asyncio
from typing import Any

from incident_operator.adapters.kube import ApiException
from incident_operator.api.reasons import REASON_DESCRIPTIONS, Reason
from incident_operator.controllers.intake import Intake
from incident_operator.core import alerts
from incident_operator.settings.config import OperatorConfig


class Cluster:
    """Pods, ReplicaSets, Services and workloads of namespace `shop`, as the intake reads them."""

    def __init__(self, *, forbidden: bool = False) -> None:
        self.forbidden = forbidden
        self.created: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.owner_refs = {
            ("Pod", "web-7d9c-x1"): [("ReplicaSet", "web-7d9c", True)],
            ("ReplicaSet", "web-7d9c"): [("Deployment", "web", True)],
            ("Pod", "db-0"): [("StatefulSet", "db", True)],
            ("Pod", "bare"): [],
        }
        self.selectors = {"frontend": {"app": "web"}, "headless": {}}
        self.templates = [
            ("Deployment", "web", {"app": "web", "tier": "a"}),
            ("Deployment", "web-canary", {"app": "web", "tier": "b"}),
            ("Deployment", "api", {"app": "api"}),
            ("StatefulSet", "db", {"app": "db"}),
        ]

    def _check(self) -> None:
        if self.forbidden:
            raise ApiException(status=403, reason="Forbidden")

    async def owners(self, kind: str, namespace: str, name: str) -> list[tuple[str, str, bool]] | None:
        self._check()
        return self.owner_refs.get((kind, name))

    async def service_selector(self, namespace: str, name: str) -> dict[str, str] | None:
        self._check()
        return self.selectors.get(name)

    async def workload_templates(self, namespace: str) -> list[tuple[str, str, dict[str, str]]]:
        self._check()
        return self.templates

    async def create_object(self, plural: str, namespace: str, body: dict[str, Any]) -> Any:
        self.created.append(body)
        return {**body, "metadata": {**body["metadata"], "namespace": namespace, "uid": "u-1"}}

    async def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str, when: Any
    ) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, message))

    async def list_objects(self, *args: Any, **kwargs: Any) -> Any:
        return []


def opened(labels: dict[str, str], cluster: Cluster | None = None) -> list[dict[str, str]] | None:
    cluster = cluster or Cluster()
    alert = alerts.Alert.model_validate(
        {"status": "firing", "labels": {"alertname": "ServiceDown", "namespace": "shop", **labels}}
    )
    result = asyncio.run(Intake(cluster, OperatorConfig()).accept(alert))
    assert result["result"] == "created", result
    return cluster.created[0]["spec"].get("targets")  # type: ignore[no-any-return]


def test_a_pod_label_names_its_deployment_through_its_replicaset() -> None:
    assert opened({"pod": "web-7d9c-x1"}) == [{"kind": "Deployment", "name": "web"}]


def test_a_pod_label_names_its_statefulset() -> None:
    assert opened({"pod": "db-0"}) == [{"kind": "StatefulSet", "name": "db"}]


def test_a_service_label_names_the_workloads_its_selector_matches() -> None:
    assert opened({"service": "frontend"}) == [
        {"kind": "Deployment", "name": "web"},
        {"kind": "Deployment", "name": "web-canary"},
    ]


def test_labels_naming_the_same_workload_name_it_once_beside_the_named_ones() -> None:
    assert opened(
        {"deployment": "web", "pod": "web-7d9c-x1", "service": "frontend", "statefulset": "db"}
    ) == [
        {"kind": "Deployment", "name": "web"},
        {"kind": "StatefulSet", "name": "db"},
        {"kind": "Deployment", "name": "web-canary"},
    ]


def test_what_names_no_workload_adds_none() -> None:
    assert opened({"pod": "bare"}) is None  # no controller
    assert opened({"pod": "gone"}) is None  # no such pod
    assert opened({"service": "headless"}) is None  # a Service without a selector
    assert opened({"service": "nope", "pod": "../x"}) is None  # no such Service; not a name


def test_a_namespace_that_did_not_opt_in_gets_its_incident_without_those_targets() -> None:
    cluster = Cluster(forbidden=True)
    assert opened({"deployment": "api", "pod": "web-7d9c-x1"}, cluster) == [
        {"kind": "Deployment", "name": "api"}
    ]


def test_an_incident_opened_without_targets_it_could_not_read_says_so_in_an_event() -> None:
    cluster = Cluster(forbidden=True)
    opened({"deployment": "api", "pod": "web-7d9c-x1"}, cluster)
    [(name, type_, reason, message)] = cluster.events
    assert (type_, reason) == ("Warning", "TargetsIncomplete")
    assert name == cluster.created[0]["metadata"]["name"]
    assert "pod/service labels name not read (pod web-7d9c-x1: HTTP 403 Forbidden)" in message
    assert "spec.targets" in message


class PodsUnreadable(Cluster):
    """Pods cannot be read (a role that grants Services but not Pods); Services can."""

    async def owners(self, kind: str, namespace: str, name: str) -> list[tuple[str, str, bool]] | None:
        raise ApiException(status=403, reason="Forbidden")


def test_a_failed_pod_lookup_does_not_skip_the_service_lookup_and_each_says_why() -> None:
    cluster = PodsUnreadable()
    assert opened({"pod": "db-0", "service": "frontend"}, cluster) == [
        {"kind": "Deployment", "name": "web"},
        {"kind": "Deployment", "name": "web-canary"},
    ]
    [(_, _, reason, message)] = cluster.events
    assert reason == "TargetsIncomplete"
    assert "not read (pod db-0: HTTP 403 Forbidden)" in message
    assert "service frontend" not in message  # it was read


def test_both_lookups_failing_say_each_reason() -> None:
    cluster = Cluster(forbidden=True)
    opened({"pod": "db-0", "service": "frontend"}, cluster)
    [(_, _, _, message)] = cluster.events
    assert "pod db-0: HTTP 403 Forbidden; service frontend: HTTP 403 Forbidden" in message


def test_the_event_reason_does_not_claim_a_single_cause() -> None:
    said = REASON_DESCRIPTIONS[Reason.TARGETS_INCOMPLETE]
    assert "could not be read (e.g. the namespace has not opted in)" in said
    assert "grants the operator no reads" not in said


def test_an_incident_opened_with_more_workloads_than_targets_hold_says_how_many_are_left_out() -> None:
    cluster = Cluster()
    cluster.templates = [("Deployment", f"web-{i}", {"app": "web"}) for i in range(70)]
    targets = opened({"service": "frontend"}, cluster)
    assert targets is not None
    assert len(targets) == 64
    [(_, _, reason, message)] = cluster.events
    assert reason == "TargetsIncomplete"
    assert "6 workloads its labels name left out (at most 64 targets)" in message


def test_an_incident_with_all_its_targets_posts_no_event() -> None:
    cluster = Cluster()
    opened({"service": "frontend"}, cluster)
    assert cluster.events == []


def test_the_owner_is_the_controller_reference() -> None:
    assert alerts.owning_workload([("ReplicaSet", "x", False)], None) is None
    assert alerts.owning_workload([("ReplicaSet", "rs", True)], [("Deployment", "web", True)]) == {
        "kind": "Deployment",
        "name": "web",
    }
    assert alerts.owning_workload([("ReplicaSet", "rs", True)], [("Rollout", "web", True)]) is None


def test_the_shipped_rules_keep_a_label_that_names_what_is_down() -> None:
    import re
    from pathlib import Path

    import yaml

    rule_file = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "prometheusrule.yaml"
    rules = [r for g in yaml.safe_load(rule_file.read_text())["spec"]["groups"] for r in g["rules"]]
    for rule in rules:
        if rule["labels"].get("component") == "incident-operator":
            continue  # about the operator itself: routed to people, never opens an incident
        for kept in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
            labels = {label.strip() for label in kept.split(",")}
            assert labels & {"deployment", "statefulset", "pod", "service"}, rule["alert"]


def test_the_runtime_is_told_of_each_incident_created_and_its_failure_fails_no_delivery() -> None:
    told: list[dict[str, Any]] = []
    alert = alerts.Alert.model_validate(
        {"status": "firing", "labels": {"alertname": "ServiceDown", "namespace": "shop"}}
    )
    cluster = Cluster()
    intake = Intake(cluster, OperatorConfig())
    intake.on_created = told.append
    assert asyncio.run(intake.accept(alert))["result"] == "created"
    assert [(b["metadata"]["namespace"], b["metadata"]["uid"]) for b in told] == [("shop", "u-1")]

    def broken(body: dict[str, Any]) -> None:
        raise RuntimeError("a bug of the runtime")

    again = Intake(Cluster(), OperatorConfig())
    again.on_created = broken
    assert asyncio.run(again.accept(alert))["result"] == "created"  # the watch event starts it
