"""manifests/monitoring: the seed's alert rules, the Alertmanager receiver, the Grafana dashboard.

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

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"


def test_rules_cover_the_seed_alerts_with_severity_and_category() -> None:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    rules = [rule for group in doc["spec"]["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} == {"ServiceDown", "HighErrorRate", "DatabaseDown", "QueueBacklog"}
    severities = AlertIntakeConfig().severityMap
    for rule in rules:
        assert rule["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", rule["for"])
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
        for target in panel["targets"]:
            used |= set(re.findall(r"incident_operator_[a-z_]+", target["expr"]))
    base = {re.sub(r"_(sum|count|bucket|total)$", "", name) for name in used}  # family names
    assert base <= exported, base - exported
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for needed in ("Open incidents", "MTTA", "MTTR", "breaches", "Actions"):
        assert needed in titles
