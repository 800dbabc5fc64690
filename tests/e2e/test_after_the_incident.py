"""After the incident, through the real `kubectl` with the `kubectl-incident` plugin on PATH (never
by calling Python functions): open, acknowledge, pause, approve, resolve with a root cause, action
items, the post-mortem ConfigMap, close; and the monthly report from incidents with known times,
the same from the plugin and from the operator's `/reports/YYYY-MM`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    READERS_NS,
    STATUS_NAMESPACE,
    Cluster,
    OperatorProcess,
    bin_dir,
    named_namespace,
    service_account_token,
)
from tests.e2e.engine_helpers import GROUP, TIMEOUT, VERSION, Scenario, deploy_ref
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, namespace)


@pytest.fixture
def public(crds_installed: Cluster, operator: OperatorProcess) -> Iterator[Scenario]:
    """In the namespace the test operator's statusPage.namespaces lists (only there is anything public)."""
    with named_namespace(crds_installed, STATUS_NAMESPACE) as name:
        yield Scenario(crds_installed, operator, name)


def kubectl(s: Scenario, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """`kubectl incident ...` as a person runs it: kubectl finds the plugin on PATH."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(s.cluster.kubeconfig),
    }
    done = subprocess.run(
        [str(bin_dir() / "kubectl"), "incident", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def configmap(s: Scenario, name: str) -> str:
    return str((s.core.read_namespaced_config_map(name, s.namespace).data or {}).get("postmortem.md", ""))


def test_an_incident_from_open_to_closed_with_kubectl_incident(s: Scenario) -> None:
    ns = ("-n", s.namespace)
    s.deployment("web", 1)
    s.playbook("scale-web", [{"name": "scale-up", "scale": {"target": deploy_ref("web"), "replicas": 2}}])
    opened = kubectl(
        s, "open", "web-down", *ns, "--title", "web is down", "--severity", "P2", "--target", "Deployment/web"
    )
    assert opened.stdout.strip() == "incident.incident-operator.dev/web-down created"

    status = s.wait_phase("web-down", "Resolved")  # automation resolved it ...
    assert "acknowledgedAt" not in status  # ... but nobody has acknowledged it
    assert status["postmortemRef"] == "web-down-postmortem"
    listed = kubectl(s, "list", *ns).stdout
    assert "web-down" in listed
    assert "Resolved" in listed

    who = kubectl(s, "ack", "web-down", *ns).stdout.split(": ")[-1].split(" is the")[0]
    assert who
    assert s.get("incidents", "web-down")["spec"]["commander"] == who
    s.wait_condition("web-down", "Acknowledged", reason="CommanderAssigned")

    kubectl(
        s,
        "action",
        "add",
        "web-down",
        *ns,
        "--id",
        "pool-alert",
        "--title",
        "alert on the pool",
        "--owner",
        "bob",
        "--due",
        "2026-12-31",
    )
    kubectl(s, "action", "add", "web-down", *ns, "--id", "runbook", "--title", "update the runbook")
    kubectl(s, "action", "done", "web-down", "runbook", *ns)
    duplicate = kubectl(s, "action", "add", "web-down", *ns, "--id", "runbook", "--title", "again", expect=1)
    assert "already has action item 'runbook'" in duplicate.stderr
    kubectl(s, "resolve", "web-down", *ns, "--summary", "scaled web to 2", "--root-cause", "a bad deploy")

    # The operator regenerates the post-mortem from the people's words in the spec.
    wait_until(
        lambda: "a bad deploy" in (text := configmap(s, "web-down-postmortem")) and "[x] `runbook`" in text,
        timeout=TIMEOUT,
        what="the post-mortem with the root cause and the action items",
        describe=lambda: configmap(s, "web-down-postmortem"),
    )
    printed = kubectl(s, "postmortem", "web-down", *ns).stdout
    for expected in (
        "# Post-mortem: web is down",
        "- **Severity**: P2 (High)",
        "| PlaybookStarted |",
        "| StepSucceeded |",
        f"| Acknowledged | {who} |",
        "### Why It Happened\na bad deploy",
        "- [ ] `pool-alert`: alert on the pool (bob, due 2026-12-31)",
    ):
        assert expected in printed, expected
    timeline = kubectl(s, "timeline", "web-down", *ns).stdout.splitlines()
    assert timeline[0].split() == ["TIME", "AGO", "EVENT", "BY", "MESSAGE"]
    assert any(" Detected " in line for line in timeline)
    assert s.status("web-down")["actionItems"] == {"open": 1, "overdue": 0}

    closed = kubectl(s, "close", "web-down", *ns)
    assert "closed with 1 open action item: pool-alert" in closed.stderr
    s.wait_phase("web-down", "Closed")
    wait_until(
        lambda: "Closed with 1 action item open: pool-alert" in configmap(s, "web-down-postmortem"),
        timeout=TIMEOUT,
        what="the final post-mortem",
    )
    refused = kubectl(s, "ack", "web-down", *ns, "--commander", "carol", expect=1)
    assert "closed" in refused.stderr


def test_pause_plan_approve_and_resume_with_kubectl_incident(s: Scenario) -> None:
    ns = ("-n", s.namespace)
    s.deployment("api", 1)
    s.playbook(
        "needs-ok",
        [{"name": "scale-up", "scale": {"target": deploy_ref("api"), "delta": 2}, "requiresApproval": True}],
    )
    kubectl(
        s, "open", "gated", *ns, "--title", "api slow", "--category", "performance", "--playbook", "needs-ok"
    )
    s.wait_step("gated", "scale-up", "AwaitingApproval")

    plan = kubectl(s, "plan", "gated", *ns).stdout
    assert "scale Deployment/api 1 -> 3" in plan
    assert "the API server admits it (dry run)" in plan
    assert "(needs approval)" in plan
    assert s.apps.read_namespaced_deployment("api", s.namespace).spec.replicas == 1  # a dry run only

    kubectl(s, "pause", "gated", *ns)
    s.wait_condition("gated", "Reconciling", "False", reason="Paused")
    approved = kubectl(s, "approve", "gated", "scale-up", *ns).stdout
    who, _, run = approved.rsplit(" by ", 1)[-1].strip().partition(" for run ")
    assert run == s.status("gated")["playbook"]["runId"]  # the run in flight, named
    assert s.get("incidents", "gated")["spec"]["approvals"] == [{"step": "scale-up", "by": who, "run": run}]
    assert s.steps("gated")["scale-up"]["state"] == "AwaitingApproval"  # paused: nothing runs
    kubectl(s, "resume", "gated", *ns)
    s.wait_step("gated", "scale-up", "Succeeded")
    assert s.apps.read_namespaced_deployment("api", s.namespace).spec.replicas == 3

    wrong = kubectl(s, "approve", "gated", "no-such-step", *ns, expect=1)
    assert "has no step 'no-such-step'" in wrong.stderr
    missing = kubectl(s, "ack", "nope", *ns, expect=1)
    assert missing.stderr.startswith("Error from server (NotFound):")
    assert kubectl(s, "bogus", expect=2).stderr
    assert "month must be YYYY-MM" in kubectl(s, "report", "--month", "2026-13", *ns, expect=1).stderr


def _known(
    name: str, spec: dict[str, Any], status: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return name, {"title": name, "closed": True, **spec}, {"phase": "Closed", **status}


def breach(at: str) -> list[dict[str, str]]:
    return [
        {
            "type": "ResponseTargetBreached",
            "status": "True",
            "reason": "AckDeadlinePassed",
            "message": "late",
            "lastTransitionTime": at,
        }
    ]


KNOWN = [
    _known(
        "i1",
        {
            "severity": "P1",
            "category": "availability",
            "targets": [deploy_ref("web")],
            "source": {"type": "alert", "alertname": "ServiceDown", "startsAt": "2026-09-02T09:58:00Z"},
        },
        {
            "detectedAt": "2026-09-02T10:00:00Z",
            "acknowledgedAt": "2026-09-02T10:05:00Z",
            "mitigatedAt": "2026-09-02T10:10:00Z",
            "resolvedAt": "2026-09-02T10:30:00Z",
        },
    ),
    _known(
        "i2",
        {"severity": "P2", "category": "performance"},
        {
            "detectedAt": "2026-09-10T12:00:00Z",
            "acknowledgedAt": "2026-09-10T12:01:00Z",
            "resolvedAt": "2026-09-10T13:00:00Z",
            "repeatOf": "i1",
            "escalations": 1,
            "conditions": breach("2026-09-10T12:15:00Z"),
        },
    ),
    _known(
        "i3",
        {
            "severity": "P2",
            "category": "performance",
            "actionItems": [
                {"id": "done-one", "title": "x", "done": True},
                {"id": "late-one", "title": "y", "due": "2026-09-30"},
            ],
        },
        {
            "detectedAt": "2026-09-20T08:00:00Z",
            "acknowledgedAt": "2026-09-20T08:15:00Z",
            "resolvedAt": "2026-09-20T10:00:00Z",
        },
    ),
    _known(
        "drill",
        {"severity": "P1", "category": "availability", "drill": True},
        {"detectedAt": "2026-09-21T08:00:00Z"},
    ),
    _known("october", {"severity": "P3", "category": "data"}, {"detectedAt": "2026-10-01T00:00:01Z"}),
]


def test_the_monthly_report_from_incidents_with_known_times(s: Scenario) -> None:
    for name, spec, _ in KNOWN:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Incident",
            "metadata": {"name": name},
            "spec": spec,
        }
        s.custom.create_namespaced_custom_object(GROUP, VERSION, s.namespace, "incidents", body)
    for name, _, status in KNOWN:
        s.wait_phase(name, "Closed")  # the operator is done with them; then their history is set
        s.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, s.namespace, "incidents", name, {"status": status}
        )

    plugin = json.loads(
        kubectl(s, "report", "--month", "2026-09", "-n", s.namespace, "--format", "json").stdout
    )
    assert plugin["month"] == "2026-09"
    assert plugin["total"] == 3
    assert plugin["bySeverity"] == {"P1": 1, "P2": 2, "P3": 0, "P4": 0}
    assert plugin["byCategory"] == {"availability": 1, "performance": 2, "security": 0, "data": 0}
    assert plugin["drills"] == 1
    assert plugin["timeToDetectSeconds"] == {"count": 1, "mean": 120.0, "p50": 120.0, "p90": 120.0}
    assert plugin["timeToAcknowledgeSeconds"] == {"count": 3, "mean": 420.0, "p50": 300.0, "p90": 900.0}
    assert plugin["timeToMitigateSeconds"] == {"count": 1, "mean": 600.0, "p50": 600.0, "p90": 600.0}
    assert plugin["timeToResolveSeconds"] == {"count": 3, "mean": 4200.0, "p50": 3600.0, "p90": 7200.0}
    assert (plugin["responseTargetBreaches"], plugin["repeatIncidents"], plugin["escalations"]) == (1, 1, 1)
    assert plugin["actionItems"] == {"total": 2, "done": 1, "open": 1, "overdue": 1, "completionRate": 0.5}
    assert plugin["topTargets"] == [{"target": "Deployment/web", "incidents": 1}]

    # /reports as a person who may list incidents here (a TokenRequest token: TokenReview + SAR)
    reader = f"report-reader-{s.namespace}"
    s.cluster.run_kubectl(
        "create",
        "role",
        "incident-lister",
        "-n",
        s.namespace,
        "--verb=list",
        "--resource=incidents.incident-operator.dev",
    )
    s.cluster.run_kubectl(
        "create",
        "rolebinding",
        "incident-listers",
        "-n",
        s.namespace,
        "--role=incident-lister",
        f"--serviceaccount={READERS_NS}:{reader}",
    )
    token = service_account_token(s.cluster, reader)
    base = f"/reports/2026-09?namespace={s.namespace}"

    def served() -> str | None:
        code, _, text = s.operator.get(f"{base}&format=json", token)
        return text if code == 200 else None

    # the new RoleBinding reaches the API server's authorizer within moments
    text = wait_until(served, timeout=TIMEOUT, what="the report for a reader of the namespace")
    assert json.loads(text) == plugin  # the same figures: both come from the API, not from memory
    code, _, markdown = s.operator.get(f"{base}&format=md", token)
    assert code == 200, markdown
    assert "- Total Incidents: 3" in markdown
    assert "- P2 (High): 2" in markdown
    assert "1. Performance Issues: 67%" in markdown
    code, headers, html = s.operator.get(f"{base}&format=html", token)
    assert headers["Content-Type"].startswith("text/html")
    assert "data:image/png;base64," in html
    code, _, text = s.operator.get(f"{base}&format=pdf", token)
    assert (code, "format must be one of" in text) == (400, True)
    assert s.operator.get(base)[0] == 401  # no token
    assert s.operator.get("/reports/2026-09?format=json", token)[0] == 403  # not cluster-wide


def test_the_status_page_shows_what_the_communications_lead_writes_and_nothing_internal(
    public: Scenario,
) -> None:
    s = public
    ns = ("-n", s.namespace)
    s.deployment("shop", 1)
    s.playbook(
        "scale-shop", [{"name": "scale-shop-up", "scale": {"target": deploy_ref("shop"), "replicas": 2}}]
    )
    kubectl(
        s,
        "open",
        "checkout",
        *ns,
        "--title",
        "Checkout is failing",
        "--severity",
        "P3",
        "--target",
        "Deployment/shop",
    )
    s.wait_phase("checkout", "Resolved")
    base = f"http://127.0.0.1:{s.operator.status_port}"  # the status page's own port

    def page() -> dict[str, Any]:
        with urllib.request.urlopen(f"{base}/status.json", timeout=10) as resp:  # noqa: S310 - loopback
            return dict(json.loads(resp.read()))

    assert "Checkout is failing" not in json.dumps(page())  # not public: P3 and no spec.public
    kubectl(s, "update", "checkout", "db-7 ran out of memory", *ns)  # internal: never shown
    message = "Checkout failed for some customers between 14:00 and 14:20; it works again."
    kubectl(s, "update", "checkout", message, *ns, "--public")
    shown = wait_until(
        lambda: [i for i in page()["history"] + page()["incidents"] if i["title"] == "Checkout is failing"],
        timeout=TIMEOUT,
        what="the incident on the status page",
    )[0]
    assert shown["status"] == "Resolved"
    assert shown["services"] == ["shop"]
    assert [u["message"] for u in shown["updates"]] == [message]
    with urllib.request.urlopen(f"{base}/status", timeout=10) as resp:  # noqa: S310
        html = resp.read().decode()
    assert message in html
    for internal in ("scale-shop-up", "scale-shop", "PlaybookStarted", "-postmortem", "db-7"):
        assert internal not in html, internal
    with urllib.request.urlopen(f"{base}/status/feed.atom", timeout=10) as resp:  # noqa: S310
        assert resp.headers["Content-Type"].startswith("application/atom+xml")
        assert "Checkout is failing" in resp.read().decode()
