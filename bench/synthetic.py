"""A synthetic realistic closed incident, built without a cluster (unit tests of the indexes,
memory profiles of a start on 10,000 incidents). `make bench` takes its history from a real
incident of its own run instead (`bench/history.py`).

An incident of the history ran a playbook (three steps: collect evidence, scale up, wait until
ready), was resolved, and was closed by a person after the review: its spec has the roles,
updates, a resolution and action items; its status has what the operator writes over such a
life (conditions, the pinned playbook and its steps with their targets, the timeline, the
escalation, the severity history, the explanation). The bench creates the object with `spec`,
then writes `status` through the status subresource as the admin: the operator sees it Closed
and never runs a loop for it, as it would after a real life.

Interface (kept small, other bench code imports it):

    closed_incident(name, index, at) -> {"spec": {...}, "status": {...}}

`index` varies the facts (severity, category, target, alert) so the history is not one object
repeated; `at` is when it was detected (timezone-aware; the other times follow it). The body
is valid for the CRD's schema and for `api.models` (a unit test checks it). About 11 KB of JSON.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

SEVERITIES = ("P1", "P2", "P3", "P4")
CATEGORIES = ("availability", "performance", "security", "data")
WORKLOADS = ("checkout", "payments", "search", "catalog", "cart", "auth", "orders", "ledger")
PEOPLE = ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com")


def _t(at: datetime, seconds: float) -> str:
    return (at + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: str, reason: str, message: str, at: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "observedGeneration": 4,
        "lastTransitionTime": at,
        "reason": reason,
        "message": message,
    }


def closed_incident(name: str, index: int, at: datetime) -> dict[str, Any]:
    """The spec and status of incident `name` (the `index`th of the history), detected at `at`,
    after a playbook run, a resolution and its closing by a person."""
    severity = SEVERITIES[index % len(SEVERITIES)]
    category = CATEGORIES[(index // 4) % len(CATEGORIES)]
    workload = WORKLOADS[index % len(WORKLOADS)]
    commander = PEOPLE[index % len(PEOPLE)]
    lead = PEOPLE[(index + 1) % len(PEOPLE)]
    alertname = f"{workload.capitalize()}HighLatency"
    target = {"kind": "Deployment", "name": workload}
    spec: dict[str, Any] = {
        "title": f"{workload}: p99 latency above 2 s ({name})",
        "description": (
            f"Alert {alertname} fired for {workload}: p99 latency above 2 s for 10 minutes, error rate "
            "3%. Customers see slow checkouts; support has two tickets. Dashboard: "
            f"https://grafana.example.com/d/{workload}-latency"
        ),
        "severity": severity,
        "category": category,
        "targets": [target],
        "playbookRef": {"name": "latency-scale-up"},
        "source": {
            "type": "alert",
            "alertname": alertname,
            "fingerprint": f"{index:016x}",
            "labels": {
                "alertname": alertname,
                "namespace": "shop",
                "service": workload,
                "severity": "page",
                "team": "storefront",
            },
            "annotations": {
                "summary": f"{workload} p99 latency above 2 s",
                "runbook_url": f"https://runbooks.example.com/{workload}/latency",
            },
            "startsAt": _t(at, -60),
        },
        "commander": commander,
        "roles": {"techLead": lead, "comms": PEOPLE[(index + 2) % len(PEOPLE)]},
        "resolution": {
            "summary": f"Scaled {workload} from 3 to 6 replicas; latency back under 300 ms.",
            "rootCause": "A batch job's traffic doubled the request rate; the pool was sized for half.",
        },
        "closed": True,
        "updates": [
            {"time": _t(at, 120), "message": "Investigating high latency on the storefront.", "public": True},
            {"time": _t(at, 600), "message": "Mitigation applied; watching latency recover.", "public": True},
            {"time": _t(at, 1500), "message": "Resolved: latency normal for 15 minutes.", "public": True},
        ],
        "actionItems": [
            {
                "id": "pool-alert",
                "title": f"Alert on {workload} pool saturation before latency",
                "owner": lead,
                "due": (at + timedelta(days=14)).strftime("%Y-%m-%d"),
                "done": True,
            },
            {
                "id": "batch-limit",
                "title": "Rate-limit the nightly batch job's calls",
                "owner": commander,
                "due": (at + timedelta(days=30)).strftime("%Y-%m-%d"),
                "done": True,
            },
        ],
    }
    steps_pinned = [
        {"name": "evidence", "collectEvidence": {"target": target}, "timeoutSeconds": 300},
        {"name": "scale-up", "scale": {"target": target, "replicas": 6}, "timeoutSeconds": 300},
        {"name": "wait", "waitReady": {"target": target}, "timeoutSeconds": 600},
    ]
    steps = [
        {
            "name": "evidence",
            "action": "collectEvidence",
            "state": "Succeeded",
            "attempts": 1,
            "startedAt": _t(at, 5),
            "finishedAt": _t(at, 8),
            "message": f"evidence in ConfigMap {name}-evidence (3 pods, 40 events)",
            "targets": [{**target, "state": "Succeeded", "startedAt": _t(at, 5), "finishedAt": _t(at, 8)}],
        },
        {
            "name": "scale-up",
            "action": "scale",
            "state": "Succeeded",
            "attempts": 1,
            "startedAt": _t(at, 8),
            "finishedAt": _t(at, 9),
            "message": f"Deployment {workload}: 3 -> 6 replicas",
            "replicasBefore": 3,
            "replicasAfter": 6,
            "targets": [
                {
                    **target,
                    "state": "Succeeded",
                    "startedAt": _t(at, 8),
                    "finishedAt": _t(at, 9),
                    "replicasBefore": 3,
                    "replicasAfter": 6,
                }
            ],
        },
        {
            "name": "wait",
            "action": "waitReady",
            "state": "Succeeded",
            "attempts": 1,
            "startedAt": _t(at, 9),
            "finishedAt": _t(at, 75),
            "message": f"Deployment {workload}: 6/6 ready",
            "targets": [{**target, "state": "Succeeded", "startedAt": _t(at, 9), "finishedAt": _t(at, 75)}],
        },
    ]
    timeline = [
        {
            "time": _t(at, 0),
            "type": "Detected",
            "message": f"alert {alertname} fired",
            "actor": "alertmanager",
        },
        {"time": _t(at, 1), "type": "PlaybookSelected", "message": "latency-scale-up (priority 10, matched)"},
        {"time": _t(at, 2), "type": "PlaybookStarted", "message": "run r1 of latency-scale-up generation 3"},
        {"time": _t(at, 5), "type": "StepStarted", "message": "step evidence (collectEvidence)"},
        {"time": _t(at, 8), "type": "StepSucceeded", "message": steps[0]["message"]},
        {"time": _t(at, 8), "type": "StepStarted", "message": "step scale-up (scale)"},
        {"time": _t(at, 9), "type": "StepSucceeded", "message": steps[1]["message"]},
        {"time": _t(at, 9), "type": "Mitigated", "message": "first mutating step succeeded"},
        {"time": _t(at, 9), "type": "StepStarted", "message": "step wait (waitReady)"},
        {"time": _t(at, 75), "type": "StepSucceeded", "message": steps[2]["message"]},
        {"time": _t(at, 75), "type": "Monitoring", "message": "stabilization window of 900 s"},
        {
            "time": _t(at, 110),
            "type": "Acknowledged",
            "message": f"commander {commander}",
            "actor": commander,
        },
        {"time": _t(at, 115), "type": "RolesChanged", "message": f"techLead {lead}", "actor": commander},
        {"time": _t(at, 120), "type": "Update", "message": spec["updates"][0]["message"], "actor": commander},
        {"time": _t(at, 600), "type": "Update", "message": spec["updates"][1]["message"], "actor": commander},
        {"time": _t(at, 975), "type": "Resolved", "message": "health held for the stabilization window"},
        {
            "time": _t(at, 1500),
            "type": "Update",
            "message": spec["updates"][2]["message"],
            "actor": commander,
        },
        {"time": _t(at, 1510), "type": "PostmortemWritten", "message": f"ConfigMap {name}-postmortem"},
        {"time": _t(at, 86400 * 3), "type": "ActionItemDone", "message": "pool-alert", "actor": lead},
        {"time": _t(at, 86400 * 5), "type": "ActionItemDone", "message": "batch-limit", "actor": commander},
        {"time": _t(at, 86400 * 5 + 60), "type": "Closed", "message": "review done", "actor": commander},
    ]
    status: dict[str, Any] = {
        "observedGeneration": 4,
        "phase": "Closed",
        "conditions": [
            _condition(
                "Acknowledged", "True", "PlaybookStarted", "playbook latency-scale-up started", _t(at, 2)
            ),
            _condition("Mitigated", "True", "MitigationApplied", "step scale-up succeeded", _t(at, 9)),
            _condition("Resolved", "True", "Stabilized", "health held for 900 s", _t(at, 975)),
            _condition("ResponseTargetBreached", "False", "WithinTarget", "acknowledged in time", _t(at, 2)),
            _condition("Reconciling", "False", "Closed", "closed: read-only history", _t(at, 86400 * 5 + 60)),
            _condition("Stalled", "False", "Progressing", "", _t(at, 2)),
            _condition("ActionItemsOpen", "False", "AllDone", "2 of 2 action items done", _t(at, 86400 * 5)),
        ],
        "detectedAt": _t(at, 0),
        "acknowledgedAt": _t(at, 2),
        "acknowledgeBy": _t(at, 900),
        "mitigatedAt": _t(at, 9),
        "resolvedAt": _t(at, 975),
        "closedAt": _t(at, 86400 * 5 + 60),
        "monitoringSince": _t(at, 75),
        "alertResolvedAt": _t(at, 400),
        "playbook": {
            "name": "latency-scale-up",
            "runId": "r1",
            "generation": 3,
            "digest": f"{index * 2654435761 % 2**64:064x}",
            "snapshot": {"steps": steps_pinned, "stabilizationSeconds": 900, "cooldownSeconds": 600},
            "targets": [target],
            "steps": steps,
        },
        "timeline": timeline,
        "evidenceRef": f"{name}-evidence",
        "postmortemRef": f"{name}-postmortem",
        "runs": 1,
        "settled": True,
        "escalations": 1,
        "escalation": {
            "level": 1,
            "history": [{"level": 1, "at": _t(at, 300), "channels": ["oncall-pager"]}],
        },
        "actionItems": {"open": 0, "overdue": 0},
        "roles": {"techLead": lead, "comms": PEOPLE[(index + 2) % len(PEOPLE)]},
        "effectiveSeverity": severity,
        "declaredSeverity": severity,
        "severityHistory": [
            {
                "previous": "P4",
                "severity": severity,
                "at": _t(at, 1),
                "reason": f"alert label severity=page on {workload}",
                "by": "rule",
                "direction": "raised",
            }
        ],
        "explanation": {
            "at": _t(at, 86400 * 5 + 60),
            "selection": "spec.playbookRef names latency-scale-up",
            "candidates": [
                {
                    "name": "latency-scale-up",
                    "verdict": "Chosen",
                    "priority": 10,
                    "why": "named by playbookRef",
                },
            ],
            "playbook": "latency-scale-up",
            "runId": "r1",
            "generation": 3,
            "run": "run r1 succeeded: 3 of 3 steps",
            "steps": [
                {"name": s["name"], "action": s["action"], "state": "Succeeded", "verdict": "Ran"}
                for s in steps
            ],
            "next": "nothing: the incident is closed",
        },
    }
    return {"spec": spec, "status": status}
