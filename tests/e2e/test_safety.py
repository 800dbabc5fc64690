"""Safe in a shared cluster, on the installed cluster (manifests/install applied, admission policy
included), with the operator running as its ServiceAccount:

- approvals carry who approved, and the API server admits only the requesting user, who needs the
  verb `approve` (resolving and closing need `resolve`): two real users, by TokenRequest tokens;
- naming someone else as commander or in a role needs the verb `assign`; only the operator's own
  identity sets spec.source, drill: true and the alert-state annotations;
- weakening an approval gate of a Playbook (or deleting a gated Playbook) needs the verb `gate`;
- two incidents that want the same playbook on the same target at once: exactly one runs;
- alert intake is scoped (namespaces, a per-request bound, a ResourceQuota);
- /metrics answers the shipped scraper identity (manifests/monitoring) and no other token;
- a flood of incidents in one namespace: beyond `limits.maxOpenIncidentsPerNamespace` they are
  recorded and their automation waits, then runs as older ones resolve;
- an Invalid playbook never runs; a step whose action raises fails with a reason, the loop lives;
- outgoing requests pass the egress policy: loopback and metadata denied by default, loopback
  allowed by `--allow-egress 127.0.0.0/8`, the API server never (also not through a host name);
  a Playbook's requests to a private address (loopback here) only from a namespace the config
  grants it to, and never through an ExternalName Service of its namespace.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    INSTALL_NS,
    ROOT,
    Cluster,
    OperatorProcess,
    create_namespace,
    ensure_secret,
    kubectl_as,
    reader_token,
    service_account_token,
    token_kubeconfig,
)
from tests.e2e.engine_helpers import TIMEOUT, Scenario
from tests.e2e.users import (
    ALERT_STATUS,
    NEEDS_ASSIGN,
    NEEDS_GATE,
    OPERATOR_ONLY,
    admitted,
    bind_editor,
    create_as,
    patch_spec,
    refused,
)
from tests.httpserver import local_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ALERT_TOKEN = "safety-e2e-token"
EGRESS_GRANTED = "egress-granted"
MAX_ALERTS = 5


@pytest.fixture(scope="module")
def operator(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator as the ServiceAccount, with the default egress policy (nothing allowed extra)."""
    ensure_secret(installed, INSTALL_NS, "alert-token", {"token": ALERT_TOKEN})
    workdir = tmp_path_factory.mktemp("safety")
    kubeconfig = token_kubeconfig(installed, "incident-operator", INSTALL_NS, workdir / "sa.kubeconfig")
    settings = {
        "alertIntake": {"maxAlertsPerRequest": MAX_ALERTS},
        "access": {"recheckSeconds": 2},
        # Two open incidents per namespace run automation (every other test here opens at most two).
        "limits": {"maxReplicas": 3, "maxPodDeletionsPerIncident": 1, "maxOpenIncidentsPerNamespace": 2},
        # Playbook requests to private addresses: only this namespace's, and only once the
        # egress test lets loopback out globally (--allow-egress)
        "egress": {"namespaces": [{"namespaces": [EGRESS_GRANTED], "allow": ["127.0.0.0/8"]}]},
    }
    process = OperatorProcess(
        kubeconfig, workdir, settings, (f"--alert-token-secret={INSTALL_NS}/alert-token",), name="safety"
    )
    process.reader_token = reader_token(installed)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def scenario(cluster: Cluster, operator: OperatorProcess, namespace: str) -> Scenario:
    create_namespace(cluster, namespace, opt_in=True)
    return Scenario(cluster, operator, namespace)


def deploy_ref(name: str) -> dict[str, str]:
    return {"kind": "Deployment", "name": name}


# --------------------------------------------------------------------------- approvals


@pytest.fixture(scope="module")
def people(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """Real users (ServiceAccount tokens): alice the responder, mallory who may only edit, gary the
    gatekeeper (what each may do is bound per namespace by the tests)."""
    create_namespace(installed, "people", opt_in=False)
    core = client.CoreV1Api(installed.api)
    workdir = tmp_path_factory.mktemp("people")
    found = {}
    for name in ("alice", "mallory", "gary"):
        core.create_namespaced_service_account(
            "people", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
        found[name] = (
            f"system:serviceaccount:people:{name}",
            token_kubeconfig(installed, name, "people", workdir / name),
        )
    return found


def test_approvals_name_the_requesting_user_who_needs_the_approve_verb(
    installed: Cluster, operator: OperatorProcess, people: dict[str, tuple[str, Path]]
) -> None:
    s = scenario(installed, operator, "approvals")
    installed.run_kubectl(
        "create",
        "role",
        "incident-editor",
        "-n",
        "approvals",
        "--verb=get,list,watch,patch",
        "--resource=incidents.incident-operator.dev",
    )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "mallory-edits",
        "-n",
        "approvals",
        "--role=incident-editor",
        "--serviceaccount=people:mallory",
    )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "alice-responds",
        "-n",
        "approvals",
        "--clusterrole=incident-operator-responder",
        "--serviceaccount=people:alice",
    )
    alice, alice_cfg = people["alice"]
    mallory, mallory_cfg = people["mallory"]
    s.deployment("api", 2)
    s.playbook(
        "security",
        [
            {"name": "collect", "collectEvidence": {"selector": {"app": "api"}, "logLines": 0}},
            {"name": "isolate-api", "isolate": {"selector": {"app": "api"}}, "requiresApproval": True},
        ],
    )
    s.incident("breach", severity="P1", category="security")
    s.wait_step("breach", "isolate-api", "AwaitingApproval")

    refused = patch_spec(
        installed, mallory_cfg, "approvals", "breach", {"approvals": [{"step": "isolate-api", "by": mallory}]}
    )
    assert refused.returncode != 0
    assert f"user {mallory} may not approve steps of incidents in namespace approvals" in refused.stderr
    forged = patch_spec(
        installed, mallory_cfg, "approvals", "breach", {"approvals": [{"step": "isolate-api", "by": alice}]}
    )
    assert forged.returncode != 0
    assert f'an approval must name the requesting user: set by to "{mallory}"' in forged.stderr
    impersonating = patch_spec(
        installed, alice_cfg, "approvals", "breach", {"approvals": [{"step": "isolate-api", "by": mallory}]}
    )
    assert impersonating.returncode != 0
    assert "must name the requesting user" in impersonating.stderr
    assert s.steps("breach")["isolate-api"]["state"] == "AwaitingApproval"
    assert s.networking.list_namespaced_network_policy("approvals").items == []

    approved = patch_spec(
        installed, alice_cfg, "approvals", "breach", {"approvals": [{"step": "isolate-api", "by": alice}]}
    )
    assert approved.returncode == 0, approved.stderr
    s.wait_phase("breach", "Resolved")
    assert s.networking.read_namespaced_network_policy("breach-isolate", "approvals")
    entry = next(e for e in s.status("breach")["timeline"] if e["type"] == "Approved")
    run = s.status("breach")["playbook"]["runId"]
    assert (entry["actor"], entry["message"]) == (
        alice,
        f"step isolate-api approved by {alice} for run {run}",
    )
    # in an Event of its own, or folded into the one of the status write that recorded it
    s.wait_events(
        "breach",
        lambda found: any(entry["message"] in (e.message or "") for e in found),
        "the Approved Event",
    )

    # Closing needs the verb `resolve`: mallory may edit, but not close.
    denied = patch_spec(installed, mallory_cfg, "approvals", "breach", {"closed": True})
    assert denied.returncode != 0
    assert f"user {mallory} may not close incidents in namespace approvals" in denied.stderr
    s.incident("second", severity="P3", category="availability")
    not_resolving = patch_spec(
        installed, mallory_cfg, "approvals", "second", {"resolution": {"summary": "fixed"}}
    )
    assert "may not resolve incidents" in not_resolving.stderr
    # An approval given for another run is a new approval: mallory cannot move alice's to run r2.
    moved = patch_spec(
        installed,
        mallory_cfg,
        "approvals",
        "breach",
        {"approvals": [{"step": "isolate-api", "by": alice, "run": "r2"}]},
    )
    assert moved.returncode != 0
    assert f'an approval must name the requesting user: set by to "{mallory}"' in moved.stderr
    assert patch_spec(installed, alice_cfg, "approvals", "breach", {"closed": True}).returncode == 0
    s.wait_phase("breach", "Closed")


# --------------------------------------------------------------------------- identities

INCIDENT_SPEC = {"title": "t", "severity": "P3", "category": "availability"}


def test_naming_others_needs_assign_and_only_the_operator_sets_alert_fields(
    installed: Cluster, people: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    ns = "identities"
    create_namespace(installed, ns, opt_in=False)
    bind_editor(installed, ns, "mallory")
    installed.run_kubectl(
        "create",
        "rolebinding",
        "alice-responds",
        "-n",
        ns,
        "--clusterrole=incident-operator-responder",
        "--serviceaccount=people:alice",
    )
    alice, alice_cfg = people["alice"]
    mallory, mallory_cfg = people["mallory"]
    operator_cfg = token_kubeconfig(installed, "incident-operator", INSTALL_NS, tmp_path / "operator")
    admitted(create_as(installed, mallory_cfg, ns, "Incident", name="mine", spec=INCIDENT_SPEC))

    # Commander and roles: yourself, yes; someone else, only with the verb assign.
    admitted(patch_spec(installed, mallory_cfg, ns, "mine", {"commander": mallory}))
    refused(
        patch_spec(installed, mallory_cfg, ns, "mine", {"commander": alice}),
        f"user {mallory} may not name {alice} as commander: {NEEDS_ASSIGN}",
        "(ClusterRole incident-operator-responder)",
    )
    refused(
        patch_spec(installed, mallory_cfg, ns, "mine", {"roles": {"techLead": alice, "comms": mallory}}),
        f"user {mallory} may not name {alice} as roles.techLead: {NEEDS_ASSIGN}",
    )
    admitted(patch_spec(installed, mallory_cfg, ns, "mine", {"roles": {"comms": mallory}}))
    refused(
        create_as(
            installed, mallory_cfg, ns, "Incident", name="theirs", spec={**INCIDENT_SPEC, "commander": alice}
        ),
        f"may not name {alice} as commander",
    )
    plugin = subprocess.run(
        [
            sys.executable,
            "-m",
            "incident_operator.cli.kubectl",
            f"--kubeconfig={mallory_cfg}",
            "-n",
            ns,
            "assign",
            "mine",
            "tech-lead",
            alice,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    refused(plugin, f"error: you may not name {alice} as techLead of incident mine", NEEDS_ASSIGN)
    admitted(
        patch_spec(installed, alice_cfg, ns, "mine", {"commander": mallory, "roles": {"techLead": mallory}})
    )
    admitted(patch_spec(installed, mallory_cfg, ns, "mine", {"title": "renamed"}))  # names carried along
    admitted(patch_spec(installed, mallory_cfg, ns, "mine", {"commander": None}))  # clearing is free
    spec = installed.run_kubectl("get", "incident", "mine", "-n", ns, "-o", "json").stdout
    assert json.loads(spec)["spec"]["roles"] == {"techLead": mallory, "comms": mallory}

    # What only the operator sets: source (beyond {type: manual}), drill: true, the alert state.
    alert_source = {"type": "alert", "alertname": "ServiceDown", "labels": {"team": "payments"}}
    refused(
        patch_spec(installed, mallory_cfg, ns, "mine", {"source": alert_source}),
        f"{OPERATOR_ONLY} spec.source, not user {mallory}",
    )
    refused(
        create_as(
            installed,
            mallory_cfg,
            ns,
            "Incident",
            name="fake-alert",
            spec={**INCIDENT_SPEC, "source": alert_source},
        ),
        f"{OPERATOR_ONLY} spec.source",
    )
    admitted(
        create_as(
            installed,
            mallory_cfg,
            ns,
            "Incident",
            name="by-hand",
            spec={**INCIDENT_SPEC, "source": {"type": "manual"}},
        )
    )
    refused(
        patch_spec(installed, mallory_cfg, ns, "by-hand", {"source": {"type": "drill"}}),
        f"{OPERATOR_ONLY} spec.source",
    )
    refused(
        patch_spec(installed, mallory_cfg, ns, "mine", {"drill": True}),
        f"{OPERATOR_ONLY} drill: true, not user {mallory}",
    )
    refused(
        create_as(
            installed, mallory_cfg, ns, "Incident", name="fake-drill", spec={**INCIDENT_SPEC, "drill": True}
        ),
        f"{OPERATOR_ONLY} drill: true",
    )
    refused(
        kubectl_as(
            installed, mallory_cfg, "annotate", "incident", "mine", "-n", ns, f"{ALERT_STATUS}=resolved"
        ),
        f"{OPERATOR_ONLY} annotation {ALERT_STATUS}, not user {mallory}",
    )
    refused(
        kubectl_as(
            installed,
            mallory_cfg,
            "label",
            "incident",
            "mine",
            "-n",
            ns,
            "incident-operator.dev/fingerprint=abc",
        ),
        f"{OPERATOR_ONLY} label incident-operator.dev/fingerprint",
    )
    mine = json.loads(installed.run_kubectl("get", "incident", "mine", "-n", ns, "-o", "json").stdout)
    assert "source" not in mine["spec"]
    assert "drill" not in mine["spec"]
    assert ALERT_STATUS not in (mine["metadata"].get("annotations") or {})

    # The operator's own identity (the alert intake, the drill controller) sets them all.
    admitted(
        create_as(
            installed,
            operator_cfg,
            ns,
            "Incident",
            name="alerted",
            spec={**INCIDENT_SPEC, "source": alert_source, "drill": True},
            annotations={ALERT_STATUS: "firing"},
        )
    )
    admitted(
        kubectl_as(
            installed,
            operator_cfg,
            "annotate",
            "--overwrite",
            "incident",
            "alerted",
            "-n",
            ns,
            f"{ALERT_STATUS}=resolved",
        )
    )
    # A responder's edit carries them along unchanged (kubectl edit: get, change, replace) ...
    alerted = json.loads(
        kubectl_as(installed, mallory_cfg, "get", "incident", "alerted", "-n", ns, "-o", "json").stdout
    )
    alerted["spec"]["title"] = "edited by a responder"
    replaced = subprocess.run(
        [str(installed.kubectl), f"--kubeconfig={mallory_cfg}", "replace", "-f", "-"],
        input=json.dumps(alerted),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    admitted(replaced)
    # ... but may not change the alert state, the source or clear it.
    refused(
        kubectl_as(
            installed,
            mallory_cfg,
            "annotate",
            "--overwrite",
            "incident",
            "alerted",
            "-n",
            ns,
            f"{ALERT_STATUS}=firing",
        ),
        f"{OPERATOR_ONLY} annotation {ALERT_STATUS}",
    )
    refused(
        kubectl_as(installed, mallory_cfg, "annotate", "incident", "alerted", "-n", ns, f"{ALERT_STATUS}-"),
        f"{OPERATOR_ONLY} annotation {ALERT_STATUS}",
    )
    refused(
        patch_spec(installed, mallory_cfg, ns, "alerted", {"source": {"labels": {"team": "other"}}}),
        f"{OPERATOR_ONLY} spec.source",
    )
    refused(
        patch_spec(installed, mallory_cfg, ns, "alerted", {"source": None}), f"{OPERATOR_ONLY} spec.source"
    )


# --------------------------------------------------------------------------- the approval gate


def test_weakening_an_approval_gate_needs_the_gate_verb(
    installed: Cluster, people: dict[str, tuple[str, Path]]
) -> None:
    ns = "gates"
    create_namespace(installed, ns, opt_in=False)
    bind_editor(installed, ns, "mallory", "gary")
    installed.run_kubectl(
        "create",
        "rolebinding",
        "gary-gates",
        "-n",
        ns,
        "--clusterrole=incident-operator-playbook-gatekeeper",
        "--serviceaccount=people:gary",
    )
    mallory, mallory_cfg = people["mallory"]
    gary_cfg = people["gary"][1]
    collect = {"name": "collect", "collectEvidence": {"selector": {"app": "api"}, "logLines": 0}}
    isolate = {"name": "isolate", "isolate": {"selector": {"app": "api"}}, "requiresApproval": True}
    admitted(
        create_as(installed, mallory_cfg, ns, "Playbook", name="guarded", spec={"steps": [collect, isolate]})
    )
    admitted(create_as(installed, mallory_cfg, ns, "Playbook", name="open", spec={"steps": [collect]}))

    def set_steps(kubeconfig: Path, steps: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        patch = json.dumps({"spec": {"steps": steps}})
        return kubectl_as(
            installed, kubeconfig, "patch", "playbook", "guarded", "-n", ns, "--type=merge", "-p", patch
        )

    # Ungated steps are anyone's to edit; gated ones are not, in any way.
    admitted(
        set_steps(
            mallory_cfg,
            [{**collect, "collectEvidence": {"selector": {"app": "api"}, "logLines": 5}}, isolate],
        )
    )
    says = f"user {mallory} may not weaken the approval gate of playbook guarded in namespace {ns}"
    for weaker in (
        {**isolate, "requiresApproval": False},
        {**isolate, "isolate": {"selector": {"app": "everything"}}},
        {**isolate, "name": "isolate-now"},
    ):
        refused(set_steps(mallory_cfg, [collect, weaker]), says, ": gated step isolate removed", NEEDS_GATE)
    refused(set_steps(mallory_cfg, [collect]), says, ": gated step isolate removed")
    refused(
        kubectl_as(installed, mallory_cfg, "delete", "playbook", "guarded", "-n", ns),
        f"user {mallory} may not delete playbook guarded in namespace {ns}",
        ": it has approval-gated steps (isolate)",
        NEEDS_GATE,
    )
    steps = json.loads(installed.run_kubectl("get", "playbook", "guarded", "-n", ns, "-o", "json").stdout)[
        "spec"
    ]["steps"]
    assert steps[1] == {**isolate, **{k: v for k, v in steps[1].items() if k not in isolate}}  # unchanged
    admitted(set_steps(mallory_cfg, [isolate, collect]))  # reordered, the gated step unchanged
    admitted(kubectl_as(installed, mallory_cfg, "delete", "playbook", "open", "-n", ns))  # no gate in it

    # The gatekeeper (the GitOps identity) may.
    admitted(
        set_steps(gary_cfg, [collect, {**isolate, "isolate": {"selector": {"app": "api", "tier": "web"}}}])
    )
    admitted(kubectl_as(installed, gary_cfg, "delete", "playbook", "guarded", "-n", ns))

    # A namespace being deleted takes its gated Playbooks with it.
    admitted(
        create_as(installed, mallory_cfg, ns, "Playbook", name="guarded-again", spec={"steps": [isolate]})
    )
    core = client.CoreV1Api(installed.api)
    core.delete_namespace(ns)
    wait_until(
        lambda: ns not in {n.metadata.name for n in core.list_namespace().items},
        timeout=TIMEOUT,
        what=f"namespace {ns} with a gated Playbook deleted",
    )


# --------------------------------------------------------------------------- cooldown race


def test_two_incidents_at_once_on_one_target_run_the_playbook_once(
    installed: Cluster, operator: OperatorProcess
) -> None:
    s = scenario(installed, operator, "race")
    s.deployment("web", 2)
    s.playbook(
        "cool",
        [
            {"name": "wait", "waitReady": {"target": deploy_ref("web")}, "timeoutSeconds": 60},
            {"name": "grow", "scale": {"target": deploy_ref("web"), "delta": 1}},
        ],
        cooldownSeconds=600,
    )
    threads = [
        threading.Thread(target=s.incident, args=(name,), kwargs={"targets": [deploy_ref("web")]})
        for name in ("first", "second")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def settled() -> tuple[str, str] | None:
        phases = {name: s.status(name).get("phase") for name in ("first", "second")}
        cooling = [
            n for n in phases if (s.condition(n, "Reconciling") or {}).get("reason") == "CooldownActive"
        ]
        resolved = [n for n, phase in phases.items() if phase == "Resolved"]
        return (resolved[0], cooling[0]) if len(resolved) == 1 and len(cooling) == 1 else None

    winner, waiting = wait_until(settled, timeout=TIMEOUT, what="one run, one cooldown")
    message = s.condition(waiting, "Reconciling")["message"]
    assert f"(incident {winner})" in message
    assert "playbook" not in s.status(waiting)  # never started: no step, no attempt
    assert s.apps.read_namespaced_deployment("web", "race").spec.replicas == 3  # scaled once
    pb = s.get("playbooks", "cool")["status"]
    assert pb["runs"] == 1
    assert pb["lastRunBy"] == {"Deployment/web": f"{winner}/r1"}
    assert s.status(winner)["playbook"]["runId"] == "r1"


# --------------------------------------------------------------------------- alert intake


def post_alerts(operator: OperatorProcess, alerts: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(
        {"version": "4", "status": "firing", "receiver": "r", "groupKey": "g", "alerts": alerts}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{operator.port}/alertmanager",
        data=body,
        headers={"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def alert(name: str, namespace: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": name, "namespace": namespace, "severity": "warning"},
        "annotations": {"summary": name},
        "startsAt": "2026-11-27T00:00:00Z",
        "fingerprint": f"fp-{name}-{namespace}",
    }


def skipped_metric(operator: OperatorProcess, reason: str) -> float:
    for line in operator.scrape().splitlines():  # the operator, as its ServiceAccount, reviews the token
        if line.startswith(f'incident_operator_alerts_skipped_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_the_shipped_scraper_identity_reads_metrics_and_nothing_else_does(
    installed: Cluster, operator: OperatorProcess
) -> None:
    """manifests/monitoring/metrics-reader-binding.yaml as shipped binds Prometheus's own
    ServiceAccount (monitoring/prometheus-k8s), whose mounted token the ServiceMonitor sends: such a
    token reads /metrics from the operator running as its ServiceAccount (which asks TokenReview and
    SubjectAccessReview with the install's RBAC); a token without the role, and the scraper's token
    on /reports, are refused."""
    core = client.CoreV1Api(installed.api)
    with contextlib.suppress(client.exceptions.ApiException):  # kube-prometheus's namespace
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="monitoring")))
    applied = installed.run_kubectl(
        "apply", "-f", str(ROOT / "manifests" / "monitoring" / "metrics-reader-binding.yaml"), check=False
    )
    assert applied.returncode == 0, applied.stderr
    scraper = wait_until(
        lambda: service_account_token(installed, "prometheus-k8s", "monitoring"),
        timeout=60,
        what="a token of Prometheus's ServiceAccount",
    )

    def scrapes() -> str | None:
        status, _, text = operator.get("/metrics", scraper)
        return text if status == 200 else None

    assert "incident_operator_" in wait_until(scrapes, timeout=30, what="the scraper reads /metrics")
    assert operator.get("/reports/2026-11", scraper)[0] == 403  # get /metrics is all it may
    unbound = service_account_token(installed, "not-a-scraper", INSTALL_NS)
    status, _, text = operator.get("/metrics", unbound)
    assert (status, text) == (403, "forbidden: this needs get on /metrics\n")
    assert operator.get("/metrics")[0] == 401


def test_alert_intake_is_scoped_bounded_and_honours_quotas(
    installed: Cluster, operator: OperatorProcess
) -> None:
    status, body = post_alerts(operator, [alert("A", "kube-system"), alert("B", INSTALL_NS)])
    assert status == 200
    assert [(r["result"], r["code"]) for r in body["results"]] == [("skipped", "NotAllowed")] * 2
    assert skipped_metric(operator, "NotAllowed") >= 2

    status, body = post_alerts(operator, [alert(f"X{i}", "default") for i in range(MAX_ALERTS + 1)])
    assert status == 413
    assert f"at most {MAX_ALERTS} (alertIntake.maxAlertsPerRequest)" in body["error"]

    create_namespace(installed, "quota", opt_in=True)
    core = client.CoreV1Api(installed.api)
    attempts = iter(range(100))

    def quota_counted() -> bool:
        # The quota controller counts a custom resource only once it has discovered it (every
        # 30 s); a quota made before that waits for its 5-minute resync, so make a new one.
        n = next(attempts)
        if n:
            core.delete_namespaced_resource_quota(f"incidents-{n - 1}", "quota")
        core.create_namespaced_resource_quota(
            "quota",
            client.V1ResourceQuota(
                metadata=client.V1ObjectMeta(name=f"incidents-{n}"),
                spec=client.V1ResourceQuotaSpec(hard={"count/incidents.incident-operator.dev": "1"}),
            ),
        )

        def used() -> bool:
            quota = core.read_namespaced_resource_quota(f"incidents-{n}", "quota")
            return "count/incidents.incident-operator.dev" in (
                (quota.status.used if quota.status else None) or {}
            )

        try:
            return wait_until(used, timeout=10, what="quota usage")
        except AssertionError:
            return False

    wait_until(quota_counted, timeout=TIMEOUT, what="the quota observed")
    status, body = post_alerts(operator, [alert("Q1", "quota"), alert("Q2", "quota")])
    assert status == 200  # not 5xx: Alertmanager must not retry what a quota refuses
    assert [r["result"] for r in body["results"]] == ["created", "skipped"]
    assert body["results"][1]["code"] == "QuotaExceeded"
    assert skipped_metric(operator, "QuotaExceeded") >= 1
    items = client.CustomObjectsApi(installed.api).list_namespaced_custom_object(
        "incident-operator.dev", "v1alpha1", "quota", "incidents"
    )["items"]
    assert len(items) == 1
    system = client.CustomObjectsApi(installed.api).list_namespaced_custom_object(
        "incident-operator.dev", "v1alpha1", "kube-system", "incidents"
    )["items"]
    assert system == []


def test_operator_limits_cap_every_playbook(installed: Cluster, operator: OperatorProcess) -> None:
    s = scenario(installed, operator, "limits")
    s.deployment("web", 2)
    s.playbook(
        "greedy",
        [
            {"name": "grow", "scale": {"target": deploy_ref("web"), "replicas": 50}},
            {"name": "wait", "waitReady": {"target": deploy_ref("web")}, "timeoutSeconds": 60},
            {"name": "cull", "deletePods": {"selector": {"app": "web"}, "max": 5}},
        ],
    )  # no guardrails in the Playbook: the operator's limits (maxReplicas 3, 1 pod) still hold
    s.incident("greedy-one", targets=[deploy_ref("web")])
    s.wait_phase("greedy-one", "Resolved")
    steps = s.steps("greedy-one")
    assert steps["grow"]["replicasAfter"] == 3
    assert "capped" in steps["grow"]["message"]
    assert len(steps["cull"]["pods"]) == 1
    assert s.apps.read_namespaced_deployment("web", "limits").spec.replicas == 3


def test_a_flood_of_incidents_in_one_namespace_waits_beyond_the_cap_and_nothing_is_lost(
    installed: Cluster, operator: OperatorProcess
) -> None:
    """The cap is 2 here: two incidents act (scale their Deployment, then wait for an approval,
    open), the third is recorded and told (acknowledged by its commander) but scales nothing
    until one of the first two resolves; then its playbook runs by itself."""
    s = scenario(installed, operator, "flood")
    names = ("first", "second", "third")
    for name in names:
        target = deploy_ref(f"web-{name}")
        s.deployment(target["name"], 1)
        s.playbook(
            name,
            [
                {"name": "grow", "scale": {"target": target, "replicas": 2}},
                {"name": "hold", "requiresApproval": True, "waitReady": {"target": target}},
            ],
        )

    def replicas(name: str) -> int:
        return int(s.apps.read_namespaced_deployment(f"web-{name}", "flood").spec.replicas)

    for name in names[:2]:
        s.incident(name, playbookRef={"name": name})
        s.wait_step(name, "hold", "AwaitingApproval")
    s.incident("third", playbookRef={"name": "third"})
    paused = s.wait_condition("third", "AutomationPaused", reason="OpenIncidentLimit")
    assert "namespace flood has 3 open incidents" in paused["message"]
    assert "limits.maxOpenIncidentsPerNamespace (2)" in paused["message"]
    assert (s.condition("third", "Reconciling") or {}).get("reason") == "OpenIncidentLimit"
    s.patch_incident("third", {"commander": "alice"})  # people's actions work while it waits
    s.wait_condition("third", "Acknowledged", reason="CommanderAssigned")
    third = s.status("third")
    assert third["detectedAt"]
    assert "playbook" not in third  # no run, no step, no attempt
    assert [replicas(n) for n in names] == [2, 2, 1]
    told = [e for e in s.events("third") if e.reason == "OpenIncidentLimit"]
    assert len(told) == 1  # once, not on every reconcile
    assert told[0].type == "Warning"
    assert [e["type"] for e in third["timeline"]].count("OpenIncidentLimit") == 1

    s.patch_incident("first", {"resolution": {"summary": "fixed by hand"}})
    s.wait_step("third", "hold", "AwaitingApproval")  # started by itself: no kick needed
    assert [replicas(n) for n in names] == [2, 2, 2]
    resumed = s.wait_condition("third", "AutomationPaused", status="False", reason="AutomationResumed")
    assert "free" in resumed["message"]
    # said once: in the Event of the status write that resumed it (the run's start folds it in)
    told = s.wait_events(
        "third",
        lambda found: any(resumed["message"] in (e.message or "") for e in found),
        "AutomationResumed",
    )
    assert [resumed["message"] in (e.message or "") for e in told].count(True) == 1


# --------------------------------------------------------------------------- never stuck


def test_an_invalid_playbook_never_runs_and_the_incident_says_why(
    installed: Cluster, operator: OperatorProcess
) -> None:
    s = scenario(installed, operator, "invalid")
    s.deployment("web", 1)
    s.playbook(
        "bad",
        [
            {"name": "grow", "scale": {"target": deploy_ref("web"), "replicas": 3}},
            {
                "name": "tell",
                "notify": {"slack": {"urlSecretRef": {"name": "s", "key": "url"}}, "message": "{nope}"},
            },
        ],
    )
    s.wait_condition("bad", "Invalid", reason="InvalidSpec", kind="playbooks")
    s.incident("pinned", playbookRef={"name": "bad"})
    s.incident("matched")
    stalled = s.wait_condition("pinned", "Stalled", reason="InvalidPlaybook")
    assert "playbook bad is Invalid and never runs" in stalled["message"]
    assert "{nope}" in stalled["message"]
    unmatched = s.wait_condition("matched", "Stalled", reason="NoMatchingPlaybook")
    assert "Invalid, not considered: bad" in unmatched["message"]
    assert s.ready_replicas("web") == 1
    assert "playbook" not in s.status("pinned")


def test_a_step_that_cannot_run_fails_with_a_reason_and_the_loop_lives(
    installed: Cluster, operator: OperatorProcess
) -> None:
    s = scenario(installed, operator, "broken")
    s.deployment("web", 1)
    s.playbook(
        "odd-url",
        [{"name": "probe", "httpCheck": {"url": "http://no such host/x"}}],
        match={"severities": ["P3"]},
    )
    s.playbook(
        "fine",
        [{"name": "grow", "scale": {"target": deploy_ref("web"), "replicas": 2}}],
        match={"severities": ["P2"]},
    )
    s.incident("odd", severity="P3")
    failed = s.wait_condition("odd", "Stalled", reason="Misconfigured")  # a typo is no outage
    assert "invalid URL" in failed["message"]
    assert "no such host" not in failed["message"]  # the reason, never the URL
    s.incident("after", severity="P2")
    s.wait_phase("after", "Resolved")
    assert operator.proc is not None
    assert operator.proc.poll() is None


# ------------------------------------------------------ egress (last: it restarts the operator)


def test_egress_is_denied_by_default_allowed_by_cidr_and_never_to_the_api_server(
    installed: Cluster, operator: OperatorProcess
) -> None:
    s = scenario(installed, operator, "egress")
    api_server = installed.api.configuration.host.rsplit(":", 1)[-1]
    with local_server() as http:
        http.set_status("/ok", 200)
        steps = [
            {"name": "loopback", "httpCheck": {"url": http.url("/ok")}, "continueOnFailure": True},
            {
                "name": "by-name",
                "httpCheck": {"url": http.url("/ok").replace("127.0.0.1", "localhost")},
                "continueOnFailure": True,
            },
            {
                "name": "metadata",
                "httpCheck": {"url": "http://169.254.169.254/latest/meta-data/"},
                "continueOnFailure": True,
            },
        ]
        s.playbook("probe-default", steps, stabilizationSeconds=0)
        s.incident("default-policy", playbookRef={"name": "probe-default"})
        s.wait_step("default-policy", "metadata", "Blocked")  # Misconfigured: a person must act
        found = s.steps("default-policy")
        assert found["loopback"]["message"] == "egress denied: 127.0.0.1"
        assert found["by-name"]["message"] == "egress denied: localhost"  # resolved, then refused
        assert found["metadata"]["message"] == "egress denied: 169.254.169.254"
        assert http.hits("/ok") == 0  # nothing left the operator

        operator.stop()
        operator.options = (*operator.options, "--allow-egress=127.0.0.0/8")
        operator.start()
        granted = scenario(installed, operator, EGRESS_GRANTED)
        # An ExternalName Service of the namespace: alias.NS.svc would resolve wherever it points
        # (here localhost, which the namespace's grant covers): refused before it is resolved.
        granted.core.create_namespaced_service(
            EGRESS_GRANTED,
            client.V1Service(
                metadata=client.V1ObjectMeta(name="alias"),
                spec=client.V1ServiceSpec(type="ExternalName", external_name="localhost"),
            ),
        )
        allowed = [
            {
                "name": "externalname",
                "httpCheck": {"url": http.url("/alias").replace("127.0.0.1", f"alias.{EGRESS_GRANTED}.svc")},
                "continueOnFailure": True,
            },
            {"name": "loopback", "httpCheck": {"url": http.url("/ok")}},
            {
                "name": "apiserver",  # a host name that resolves to the API server's address
                "httpCheck": {"url": f"https://localhost:{api_server}/readyz"},
                "continueOnFailure": True,
            },
        ]
        granted.playbook("probe-allowed", allowed, stabilizationSeconds=0)
        granted.incident("allowed-policy", playbookRef={"name": "probe-allowed"})
        granted.wait_step("allowed-policy", "apiserver", "Blocked")
        found = granted.steps("allowed-policy")
        assert found["externalname"]["state"] == "Blocked"
        assert found["externalname"]["message"] == f"egress denied: alias.{EGRESS_GRANTED}.svc"
        assert http.hits("/alias") == 0
        assert found["loopback"]["state"] == "Succeeded"
        assert http.hits("/ok") >= 1
        assert found["apiserver"]["message"] == "egress denied: localhost"

        # The same loopback server from a namespace without the grant: private, so refused,
        # although the global policy (--allow-egress) lets loopback out.
        http.set_status("/ungranted", 200)
        s.playbook("probe-ungranted", [{"name": "loopback", "httpCheck": {"url": http.url("/ungranted")}}])
        s.incident("ungranted", playbookRef={"name": "probe-ungranted"})
        stalled = s.wait_condition("ungranted", "Stalled", reason="Misconfigured")
        assert "egress denied: 127.0.0.1" in stalled["message"]
        assert s.steps("ungranted")["loopback"]["state"] == "Blocked"
        assert http.hits("/ungranted") == 0
