"""Alertmanager webhook payloads (version 4) and how an alert becomes an Incident. Pure.

One Incident per alert, named from the alert's fingerprint (`alert-<fingerprint>`), in the
namespace of its `namespace` label (or the configured default). The alert's state lives in
the Incident's annotations (`alert-status`, `alert-status-changed-at`), never in its spec,
which stays human intent; the engine reads them to wait for the alert to resolve and to
reopen the incident on a re-fire.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from incident_operator.api.base import TargetKind
from incident_operator.api.keys import (
    ANNOTATION_CHANGED_AT,
    ANNOTATION_STATUS,
    API_GROUP,
    API_VERSION,
    DRILL_ALERT_LABEL,
    LABEL_ALERTNAME,
    LABEL_FINGERPRINT,
)
from incident_operator.api.targets import MAX_TARGETS
from incident_operator.api.timestamps import format_micro_time, parse_time
from incident_operator.core.planner import AlertState
from incident_operator.settings.config import AlertIntakeConfig

_FINGERPRINT = re.compile(r"^[0-9a-f]{1,40}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")  # \Z: no trailing newline
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")

AlertStatus = Literal["firing", "resolved"]

BOUND_ELSEWHERE = "NotAllowedForToken"
"""The skip reason of an alert whose namespace its token is not bound to (alertIntake.tokens)."""


class Alert(BaseModel):
    """One alert of the webhook payload; unknown extra fields are accepted."""

    model_config = ConfigDict(extra="allow")

    status: AlertStatus
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None


class WebhookPayload(BaseModel):
    """Alertmanager's webhook body, version 4."""

    model_config = ConfigDict(extra="allow")

    version: str
    groupKey: str | None = None
    truncatedAlerts: int = 0
    status: AlertStatus
    receiver: str | None = None
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str | None = None
    alerts: list[Alert] = Field(max_length=10_000)


@dataclass(frozen=True)
class Upsert:
    """Create the alert's Incident, or record the alert's state on the existing one."""

    namespace: str
    fingerprint: str
    status: AlertStatus
    spec: dict[str, Any]
    labels: dict[str, str]

    @property
    def base_name(self) -> str:
        return f"alert-{self.fingerprint}"

    def body(self, name: str, now: datetime) -> dict[str, Any]:
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "Incident",
            "metadata": {
                "name": name,
                "labels": self.labels,
                "annotations": {
                    ANNOTATION_STATUS: self.status,
                    ANNOTATION_CHANGED_AT: format_micro_time(now),
                },
            },
            "spec": self.spec,
        }


@dataclass(frozen=True)
class Skip:
    fingerprint: str
    reason: str
    code: str = "Invalid"
    """For the skipped-alerts metric: NoNamespace, InvalidNamespace, NotAllowedForToken,
    NotWatched, NotAllowed, ..."""


def fingerprint_of(alert: Alert) -> str:
    """Alertmanager's fingerprint if it is one; else a stable hash of the labels."""
    if alert.fingerprint and _FINGERPRINT.match(alert.fingerprint.lower()):
        return alert.fingerprint.lower()
    canonical = "\x00".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def label_value(value: str) -> str:
    cleaned = _LABEL_VALUE.sub("-", value)[:63].strip("-._")
    return cleaned or "unknown"


def plan_alert(
    alert: Alert,
    config: AlertIntakeConfig,
    watched: tuple[str, ...],
    own_namespace: str = "incident-operator",
    token_namespaces: frozenset[str] | None = None,
) -> Upsert | Skip:
    """What to do with one alert, given the intake settings, the watched namespaces (empty: all),
    the operator's own namespace (never a home for alert incidents) and the namespaces the
    request's token is bound to (None: a token bound to none, or the operator itself)."""
    fingerprint = fingerprint_of(alert)
    namespace = alert.labels.get("namespace") or config.defaultNamespace
    if not namespace:
        return Skip(
            fingerprint,
            "the alert has no namespace label and no defaultNamespace is configured",
            "NoNamespace",
        )
    if not _DNS_LABEL.match(namespace):
        return Skip(
            fingerprint, f"namespace label {namespace!r} is not a valid namespace name", "InvalidNamespace"
        )
    if token_namespaces is not None and namespace not in token_namespaces:
        # Before the other scopes: a bound token learns nothing of the namespaces it is not for.
        return Skip(
            fingerprint, f"namespace {namespace} is not one this token may open incidents in", BOUND_ELSEWHERE
        )
    if watched and namespace not in watched:
        return Skip(fingerprint, f"namespace {namespace} is not watched by this operator", "NotWatched")
    if config.namespaces and namespace not in config.namespaces:
        return Skip(fingerprint, f"namespace {namespace} is not in alertIntake.namespaces", "NotAllowed")
    if namespace in config.excludeNamespaces or namespace == own_namespace:
        return Skip(fingerprint, f"alerts may not open incidents in namespace {namespace}", "NotAllowed")
    alertname = alert.labels.get("alertname", "unnamed-alert")
    raw_severity = alert.labels.get("severity", "").lower()
    severity = config.severityMap.get(raw_severity, config.defaultSeverity)
    category = (
        alert.labels.get("category") or config.categoryByAlertname.get(alertname) or config.defaultCategory
    )
    if category not in ("availability", "performance", "security", "data"):
        category = config.defaultCategory
    summary = alert.annotations.get("summary") or alertname
    spec: dict[str, Any] = {
        "title": f"{alertname}: {summary}"[:256] if summary != alertname else alertname,
        "severity": str(severity),
        "category": str(category),
        "source": {
            "type": "alert",
            "alertname": alertname,
            "fingerprint": fingerprint,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
        },
    }
    if alert.startsAt is not None:
        spec["source"]["startsAt"] = format_micro_time(alert.startsAt)
    if alert.annotations.get("description"):
        spec["description"] = alert.annotations["description"]
    if alert.labels.get(DRILL_ALERT_LABEL):
        spec["drill"] = True  # a Drill fired it (fireAlert): kept out of production figures
    targets = [
        {"kind": str(kind), "name": alert.labels[key]}
        for key, kind in (("deployment", TargetKind.DEPLOYMENT), ("statefulset", TargetKind.STATEFULSET))
        if _DNS_LABEL.match(alert.labels.get(key, "") or "-")
    ]
    if targets:
        spec["targets"] = targets
    labels = {LABEL_FINGERPRINT: fingerprint, LABEL_ALERTNAME: label_value(alertname)}
    return Upsert(namespace, fingerprint, alert.status, spec, labels)


POD_LABEL = "pod"
SERVICE_LABEL = "service"
"""Labels alerts carry (prometheus-operator's scrape labels) that name a workload only indirectly:
the intake resolves them in the API (`lookups`, `owning_workload`, `selected_workloads`)."""


def lookups(labels: dict[str, str]) -> tuple[str | None, str | None]:
    """The pod and the Service an alert names (valid names only), to resolve to workloads."""
    pod, service = labels.get(POD_LABEL, ""), labels.get(SERVICE_LABEL, "")
    return (
        pod if _DNS_LABEL.match(pod or "-") else None,
        service if _DNS_LABEL.match(service or "-") else None,
    )


Owner = tuple[str, str, bool]
"""An owner reference as (kind, name, controller)."""


def owning_workload(pod_owners: list[Owner], replicaset_owners: list[Owner] | None) -> dict[str, str] | None:
    """The Deployment or StatefulSet a pod belongs to, from its controller (a StatefulSet, or a
    ReplicaSet whose controller is a Deployment: `replicaset_owners`), or None."""
    controller = next(((k, n) for k, n, c in pod_owners if c), None)
    if controller is None:
        return None
    kind, name = controller
    if kind == str(TargetKind.STATEFULSET):
        return {"kind": kind, "name": name}
    if kind == "ReplicaSet":
        owner = next(((k, n) for k, n, c in replicaset_owners or [] if c), None)
        if owner is not None and owner[0] == str(TargetKind.DEPLOYMENT):
            return {"kind": owner[0], "name": owner[1]}
    return None


def selected_workloads(
    selector: dict[str, str] | None, workloads: list[tuple[str, str, dict[str, str]]]
) -> list[dict[str, str]]:
    """The workloads (kind, name, pod-template labels) whose pods a Service's selector matches;
    none for a Service without a selector."""
    if not selector:
        return []
    return [
        {"kind": kind, "name": name}
        for kind, name, labels in workloads
        if all(labels.get(k) == v for k, v in selector.items())
    ]


def with_targets(spec: dict[str, Any], found: list[dict[str, str]]) -> tuple[dict[str, Any], int]:
    """`spec` with `found` added to its targets (each once, in order), at most `MAX_TARGETS` of
    them (what the API server admits), and how many were left out."""
    merged: list[dict[str, str]] = []
    for ref in [*(spec.get("targets") or []), *found]:
        if ref not in merged:
            merged.append(ref)
    left_out = max(0, len(merged) - MAX_TARGETS)
    merged = merged[:MAX_TARGETS]
    return ({**spec, "targets": merged} if merged else spec), left_out


def next_name(base: str, existing: set[str]) -> str:
    """`base`, or `base-2`, `base-3`, ... the first not taken (a new incident after a closed one)."""
    if base not in existing:
        return base
    n = 2
    while f"{base}-{n}" in existing:
        n += 1
    return f"{base}-{n}"


def alert_state(annotations: dict[str, str] | None) -> AlertState | None:
    annotations = annotations or {}
    status = annotations.get(ANNOTATION_STATUS)
    changed = annotations.get(ANNOTATION_CHANGED_AT)
    if status not in ("firing", "resolved") or not changed:
        return None
    try:
        moment = parse_time(changed)
    except ValueError:
        return None
    return AlertState("firing" if status == "firing" else "resolved", moment)
