"""manifests/monitoring: the alert rules, the Alertmanager receiver, the Grafana dashboard and its
ConfigMap (every panel's query runs on a real Prometheus in tests/e2e/test_dashboards.py).

promtool is not built here (the Prometheus module is very large); the rules get a schema check
instead: every alert has an expression, a `severity` the intake maps, a valid `category` and a
summary. The receiver is checked by amtool in the e2e tier.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from incident_operator.adapters import metrics
from incident_operator.settings.config import AlertIntakeConfig
from tests.localcluster_module import load_hack

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"


def test_rules_cover_the_seed_alerts_with_severity_and_category() -> None:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    groups = {group["name"]: group["rules"] for group in doc["spec"]["groups"]}
    rules = [rule for group in groups.values() for rule in group]
    assert {r["alert"] for r in groups["incident-response.seed"]} == {
        "ServiceDown",
        "HighErrorRate",
        "DatabaseDown",
        "QueueBacklog",
    }
    assert {r["alert"] for r in groups["incident-operator.self"]} == {
        "IncidentOperatorDown",
        "IncidentOperatorNoLeader",
        "IncidentOperatorNotificationsFailing",
        "IncidentOperatorResponseTargetsBreached",
    }
    for rule in groups["incident-operator.self"]:  # routed to people, not back to the operator
        assert rule["labels"]["component"] == "incident-operator"
    severities = AlertIntakeConfig().severityMap
    for rule in rules:
        assert rule["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
        assert rule["labels"]["severity"] in severities, rule["alert"]
        assert rule["labels"]["category"] in ("availability", "performance", "security", "data")
        assert rule["annotations"]["summary"]


def test_receiver_points_at_the_operator_with_a_bearer_token() -> None:
    doc = yaml.safe_load((MONITORING / "alertmanager-receiver.yaml").read_text())
    hook = doc["receivers"][0]["webhook_configs"][0]
    assert hook["url"].endswith(":8080/alertmanager")
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert doc["route"]["group_by"] == ["..."]


def test_dashboard_queries_only_metrics_the_operator_exports() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = {m.name for m in REGISTRY.collect() if m.name.startswith("incident_operator_")}
    assert metrics.ACTIONS  # the module defines the metrics it exports
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):  # rows have none
            used |= set(re.findall(r"incident_operator_[a-z_]+", target["expr"]))
    base = {re.sub(r"_(sum|count|bucket|total)$", "", name) for name in used}  # family names
    assert base <= exported, base - exported
    titles = [p["title"] for p in dashboard["panels"]]
    for needed in (
        "System Health",  # the seed's panels
        "Error Rate",
        "Open incidents by severity",
        "MTTD p50 and p90 by severity",
        "MTTA p50 and p90 by severity",
        "MTTR p50 and p90 by severity",
        "Response-target breaches",
        "Escalations",
        "Actions by result",
        "Automation paused",
    ):
        assert needed in titles


def test_every_panel_has_queries_and_the_percentiles_are_p50_and_p90() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel["title"]
        if panel["title"].startswith(("MTTD", "MTTA", "MTTR")):
            quantiles = sorted(
                re.findall(r"histogram_quantile\((0\.\d+)", t["expr"])[0] for t in panel["targets"]
            )
            assert quantiles == ["0.5", "0.9"], panel["title"]
    by_title = {p["title"]: p for p in dashboard["panels"]}
    assert "up{" in by_title["System Health"]["targets"][0]["expr"]
    assert (
        'http_requests_total{namespace=~"$namespace", job=~"$job", status_code=~"5.."}'
        in (by_title["Error Rate"]["targets"][0]["expr"])
    )


def test_the_sidecar_configmap_carries_the_dashboard_unchanged() -> None:
    generator = load_hack("grafana_dashboard")
    shipped = MONITORING / "grafana-dashboard-configmap.yaml"
    assert shipped.read_text() == generator.configmap(), "run `python hack/grafana_dashboard.py`"
    configmap = yaml.safe_load(shipped.read_text())
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"  # what the sidecar watches
    dashboard = json.loads(configmap["data"]["incident-operator.json"])
    assert dashboard == json.loads((MONITORING / "grafana-dashboard.json").read_text())
