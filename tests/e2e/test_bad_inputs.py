"""A table of hostile or broken inputs, each with its expected outcome, against the real API server
and the running operator: custom resources the API server must reject, resources the operator must
mark Invalid or Stalled, alert payloads, config files, Secrets with odd values. After the table the
operator is alive and healthy, and no Secret value appears in its log, in any Event or any status.
(Huge logs cannot be produced under kwok, which serves none: evidence trimming is a unit test.)

One section runs on the installed cluster instead (the `installed` fixture: manifests/install
applied, its ValidatingAdmissionPolicies included), without an operator: what a real user, a plain
namespace editor with a TokenRequest token, sends and the install's admission policies refuse
(approvals, resolving and closing, naming others, the operator's own fields, approval gates), each
with the API server's message; and, as controls, what such an editor does get through.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from kubernetes import client

from incident_operator.settings.config import Limits
from tests.e2e.conftest import (
    ALERT_TOKEN,
    INSTALL_NS,
    STATUS_BASE_URL,
    TEAM_TOKEN,
    Cluster,
    OperatorProcess,
    create_namespace,
    kubectl_as,
    operator_command,
    operator_env,
    service_account_token,
    token_kubeconfig,
)
from tests.e2e.engine_helpers import GROUP, VERSION, Scenario
from tests.e2e.test_after_the_incident import kubectl as explain_kubectl
from tests.e2e.users import (
    ALERT_STATUS,
    FINGERPRINT,
    NEEDS_ASSIGN,
    NEEDS_GATE,
    OPERATOR_ONLY,
    admitted,
    bind_editor,
    create_as,
    merge_patch,
    patch_spec,
    refused,
)
from tests.httpserver import LocalServer, local_server
from tests.mailserver import MailServer
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

SECRET_MARK = "s3cr3t-" + uuid.uuid4().hex[:12]
TABLE_NS = "bad-inputs-" + uuid.uuid4().hex[:6]
TARGET = {"kind": "Deployment", "name": "web"}
INCIDENT = {"title": "t", "severity": "P3", "category": "availability"}


def step(name: str, **action: Any) -> dict[str, Any]:
    return {"name": name, **action}


def playbook(*steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"steps": list(steps), **spec}


@dataclass(frozen=True)
class Rejected:
    """A resource the API server refuses (422) with a message naming the problem."""

    id: str
    kind: str
    spec: dict[str, Any]
    says: str


REJECTED = [
    Rejected("incident-without-title", "incidents", {"severity": "P1", "category": "data"}, "title"),
    Rejected("severity-p5", "incidents", {**INCIDENT, "severity": "P5"}, "severity"),
    Rejected("unknown-category", "incidents", {**INCIDENT, "category": "cosmic"}, "category"),
    Rejected("title-too-long", "incidents", {**INCIDENT, "title": "x" * 300}, "title"),
    Rejected(  # longer than status.rolesTold keeps of a holder (core.paging.WHO_MAX)
        "commander-too-long", "incidents", {**INCIDENT, "commander": "x" * 257}, "spec.commander: Too long"
    ),
    Rejected(
        "tech-lead-too-long",
        "incidents",
        {**INCIDENT, "roles": {"techLead": "x" * 257}},
        "spec.roles.techLead: Too long",
    ),
    Rejected("target-a-pod", "incidents", {**INCIDENT, "targets": [{"kind": "Pod", "name": "x"}]}, "kind"),
    Rejected(  # more than a step's status can hold: the incident would never run (issue 21)
        "too-many-targets",
        "incidents",
        {**INCIDENT, "targets": [{"kind": "Deployment", "name": f"w{i}"} for i in range(65)]},
        "must have at most 64 items",
    ),
    Rejected("approval-without-by", "incidents", {**INCIDENT, "approvals": [{"step": "a"}]}, "by"),
    Rejected(
        "approval-twice",
        "incidents",
        {**INCIDENT, "approvals": [{"step": "a", "by": "x"}, {"step": "a", "by": "y"}]},
        "Duplicate value",
    ),
    Rejected(
        "approvals-too-many",
        "incidents",
        {**INCIDENT, "approvals": [{"step": f"s{i}", "by": "x"} for i in range(65)]},
        "approvals",
    ),
    Rejected("unknown-spec-field", "incidents", {**INCIDENT, "runAsRoot": True}, "runAsRoot"),
    Rejected(
        "two-actions",
        "playbooks",
        playbook(step("a", restart={"target": TARGET}, waitReady={"target": TARGET})),
        "exactly one action",
    ),
    Rejected("no-action", "playbooks", playbook(step("a")), "exactly one action"),
    Rejected(
        "from-incident-unbounded",
        "playbooks",
        playbook(step("a", restart={"target": {"fromIncident": {}}})),
        "needs spec.allowedTargets",
    ),
    Rejected(  # a URL naming the workload checked, and no workload to check
        "check-url-names-target-without-one",
        "playbooks",
        playbook(step("a", httpCheck={"url": "http://{targetName}.{namespace}.svc/healthz"})),
        "url names {targetName} or {targetKind}: give a target",
    ),
    Rejected(
        "from-incident-and-a-name",
        "playbooks",
        playbook(
            step("a", restart={"target": {"fromIncident": {}, "name": "web"}}),
            allowedTargets={"kinds": ["Deployment"]},
        ),
        "give kind and name, or fromIncident alone",
    ),
    Rejected(
        "pods-by-selector-and-target",
        "playbooks",
        playbook(step("a", deletePods={"selector": {"app": "web"}, "target": TARGET})),
        "give exactly one of selector, target",
    ),
    Rejected(
        "step-name-uppercase", "playbooks", playbook(step("Bad_Name", restart={"target": TARGET})), "name"
    ),
    Rejected(
        "timeout-huge",
        "playbooks",
        playbook({**step("a", restart={"target": TARGET}), "timeoutSeconds": 1_000_000_000_000}),
        "timeoutSeconds",
    ),
    Rejected(
        "retries-11",
        "playbooks",
        playbook({**step("a", restart={"target": TARGET}), "retries": 11}),
        "retries",
    ),
    Rejected(
        "cooldown-a-century",
        "playbooks",
        playbook(step("a", restart={"target": TARGET}), cooldownSeconds=3_153_600_000),
        "cooldownSeconds",
    ),
    Rejected(
        "stabilization-a-year",
        "playbooks",
        playbook(step("a", restart={"target": TARGET}), stabilizationSeconds=31_536_000),
        "stabilizationSeconds",
    ),
    Rejected(
        "delete-zero-pods",
        "playbooks",
        playbook(step("a", deletePods={"selector": {"a": "b"}, "max": 0})),
        "max",
    ),
    Rejected(
        "replicas-and-delta",
        "playbooks",
        playbook(step("a", scale={"target": TARGET, "replicas": 2, "delta": 1})),
        "exactly one of replicas, delta",
    ),
    Rejected(
        "replicas-huge",
        "playbooks",
        playbook(step("a", scale={"target": TARGET, "replicas": 20_000})),
        "replicas",
    ),
    Rejected(
        "webhook-and-slack",
        "playbooks",
        playbook(
            step(
                "a",
                notify={
                    "webhook": {"urlSecretRef": {"name": "s", "key": "k"}},
                    "slack": {"urlSecretRef": {"name": "s", "key": "k"}},
                    "message": "m",
                },
            )
        ),
        "exactly one of webhook, slack",
    ),
    Rejected("ftp-check", "playbooks", playbook(step("a", httpCheck={"url": "ftp://example.com/"})), "url"),
    Rejected(  # credentials in the URL: sent to whatever host follows them
        "check-url-with-userinfo",
        "playbooks",
        playbook(step("a", httpCheck={"url": "http://user:pass@web.shop.svc/healthz"})),
        "without user:password@",
    ),
    Rejected(  # a fragment would cut /api/v1/query off: a GET of any path of the server
        "prom-url-with-fragment",
        "playbooks",
        playbook(
            step(
                "a",
                promQuery={
                    "url": "http://prom.shop.svc/admin/tsdb#",
                    "query": "up",
                    "expect": {"op": ">", "value": 0},
                },
            )
        ),
        "without a #fragment",
    ),
    Rejected(
        "status-700",
        "playbooks",
        playbook(step("a", httpCheck={"url": "http://x/", "expectStatus": 700})),
        "expectStatus",
    ),
    Rejected(
        "interval-a-day",
        "playbooks",
        playbook(step("a", httpCheck={"url": "http://x/", "intervalSeconds": 86_400})),
        "intervalSeconds",
    ),
    Rejected(
        "logs-20000",
        "playbooks",
        playbook(step("a", collectEvidence={"selector": {"a": "b"}, "logLines": 20_000})),
        "logLines",
    ),
    Rejected(
        "priority-5000",
        "playbooks",
        playbook(step("a", restart={"target": TARGET}), priority=5000),
        "priority",
    ),
    Rejected("no-steps", "playbooks", playbook(), "steps"),
    Rejected(
        "51-steps",
        "playbooks",
        playbook(*[step(f"s{i}", restart={"target": TARGET}) for i in range(51)]),
        "steps",
    ),
    Rejected(
        "duplicate-step-names",
        "playbooks",
        playbook(step("a", restart={"target": TARGET}), step("a", waitReady={"target": TARGET})),
        "Duplicate value",
    ),
]


@pytest.fixture(scope="module")
def table(crds_installed: Cluster, operator: OperatorProcess) -> Iterator[Scenario]:
    core = client.CoreV1Api(crds_installed.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=TABLE_NS)))
    wait_until(
        lambda: core.read_namespaced_service_account("default", TABLE_NS), timeout=60, what="namespace"
    )
    s = Scenario(crds_installed, operator, TABLE_NS)
    s.deployment("web", 1)
    alias = client.V1ServiceSpec(type="ExternalName", external_name="localhost")  # loopback: granted here
    core.create_namespaced_service(
        TABLE_NS, client.V1Service(metadata=client.V1ObjectMeta(name="alias"), spec=alias)
    )
    headless = client.V1ServiceSpec(
        cluster_ip="None", selector={"app": "web"}, ports=[client.V1ServicePort(port=8080)]
    )
    core.create_namespaced_service(
        TABLE_NS, client.V1Service(metadata=client.V1ObjectMeta(name="webh"), spec=headless)
    )
    discovery = client.DiscoveryV1Api(crds_installed.api)
    wait_until(  # the controller's slice with web's pod and the port, not its empty placeholder
        lambda: any(
            piece.endpoints and piece.ports
            for piece in discovery.list_namespaced_endpoint_slice(
                TABLE_NS, label_selector="kubernetes.io/service-name=webh"
            ).items
        ),
        timeout=60,
        what="webh's EndpointSlice",
    )
    web = client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=8080)])
    core.create_namespaced_service(
        TABLE_NS, client.V1Service(metadata=client.V1ObjectMeta(name="web"), spec=web)
    )
    yield s
    core.delete_namespace(TABLE_NS)


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.id)
def test_the_api_server_rejects(table: Scenario, case: Rejected) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Incident" if case.kind == "incidents" else "Playbook",
        "metadata": {"name": case.id},
        "spec": case.spec,
    }
    with pytest.raises(client.exceptions.ApiException) as raised:
        table.custom.create_namespaced_custom_object(
            GROUP, VERSION, TABLE_NS, case.kind, body, field_validation="Strict"
        )
    assert raised.value.status in (400, 422), raised.value.body
    assert case.says in raised.value.body


def test_a_closed_incident_cannot_be_edited(table: Scenario) -> None:
    table.incident("closed-one", closed=True)
    table.wait_phase("closed-one", "Closed")
    with pytest.raises(client.exceptions.ApiException) as raised:
        table.patch_incident("closed-one", {"title": "rewritten history"})
    assert "a closed incident is read-only history" in raised.value.body


# ------------------------------------------- Refused by the install's admission policies, as a real user

ADMISSION_NS = "hostile-admission"  # a namespace of the installed cluster no other test uses
USERS_NS = "hostile-users"
MALLORY = f"system:serviceaccount:{USERS_NS}:mallory"
ALICE = f"system:serviceaccount:{USERS_NS}:alice"  # a responder, who approved on mallory's incident
ALERT_SOURCE = {"type": "alert", "alertname": "ServiceDown", "labels": {"team": "payments"}}
COLLECT = step("collect", collectEvidence={"selector": {"app": "web"}, "logLines": 0})
NEEDS_PUBLISH = "needs the verb publish on incidents (ClusterRole incident-operator-responder)"
WEAKENS = f"user {MALLORY} may not weaken the approval gate of playbook gated in namespace {ADMISSION_NS}"
SCALE_UP = {**step("scale-up", scale={"target": TARGET, "replicas": 3}), "requiresApproval": True}


@dataclass(frozen=True)
class Attempt:
    """What mallory, a plain editor of incidents and playbooks in ADMISSION_NS (every standard verb,
    no custom one), sends: a create (body: the object's spec and metadata), a merge patch (body: the
    patch) or a delete, of `name`: `mine` (her incident), `alerted` (the operator's alert incident),
    `gated` (the admin's Playbook with the gated step scale-up). `says`: fragments of the message."""

    id: str
    verb: Literal["create", "patch", "delete"]
    kind: Literal["Incident", "Playbook", "IncidentArchive"]
    name: str
    body: dict[str, Any] = field(default_factory=dict)
    says: tuple[str, ...] = ()


def on_mine(id_: str, spec: dict[str, Any], *says: str) -> Attempt:
    return Attempt(id_, "patch", "Incident", "mine", {"spec": spec}, says)


def created(id_: str, spec: dict[str, Any], *says: str) -> Attempt:
    return Attempt(id_, "create", "Incident", id_, {"spec": {**INCIDENT, **spec}}, says)


def gate_steps(id_: str, steps: list[dict[str, Any]]) -> Attempt:
    return Attempt(
        id_,
        "patch",
        "Playbook",
        "gated",
        {"spec": {"steps": steps}},
        (WEAKENS, ": gated step scale-up removed", NEEDS_GATE),
    )


ADMISSION_REFUSED = [
    on_mine(
        "approve-in-anothers-name",
        {"approvals": [{"step": "scale-up", "by": ALICE}]},
        f'an approval must name the requesting user: set by to "{MALLORY}"',
    ),
    on_mine(  # an approval for another run is a new approval, in the mover's name
        "move-an-approval-to-another-run",
        {"approvals": [{"step": "scale-up", "by": ALICE, "run": "r2"}]},
        f'an approval must name the requesting user: set by to "{MALLORY}"',
    ),
    on_mine(
        "approve-without-the-verb",
        {"approvals": [{"step": "scale-up", "by": MALLORY}]},
        f"user {MALLORY} may not approve steps of incidents in namespace {ADMISSION_NS}",
    ),
    on_mine(
        "set-resolution",
        {"resolution": {"summary": "fixed"}},
        f"user {MALLORY} may not resolve incidents in namespace {ADMISSION_NS}",
    ),
    on_mine(
        "set-closed", {"closed": True}, f"user {MALLORY} may not close incidents in namespace {ADMISSION_NS}"
    ),
    on_mine(
        "commander-someone-else",
        {"commander": ALICE},
        f"user {MALLORY} may not name {ALICE} as commander: {NEEDS_ASSIGN}",
        "(ClusterRole incident-operator-responder)",
    ),
    on_mine(
        "tech-lead-someone-else",
        {"roles": {"techLead": ALICE, "comms": MALLORY}},
        f"user {MALLORY} may not name {ALICE} as roles.techLead: {NEEDS_ASSIGN}",
    ),
    created(
        "create-with-commander-someone-else",
        {"commander": ALICE},
        f"user {MALLORY} may not name {ALICE} as commander: {NEEDS_ASSIGN}",
    ),
    created(
        "create-with-source-alert",
        {"source": ALERT_SOURCE},
        f"{OPERATOR_ONLY} spec.source, not user {MALLORY}",
    ),
    on_mine("set-source-alert", {"source": ALERT_SOURCE}, f"{OPERATOR_ONLY} spec.source, not user {MALLORY}"),
    on_mine("set-source-drill", {"source": {"type": "drill"}}, f"{OPERATOR_ONLY} spec.source"),
    Attempt(
        "change-alert-source-labels",
        "patch",
        "Incident",
        "alerted",
        {"spec": {"source": {"labels": {"team": "other"}}}},
        (f"{OPERATOR_ONLY} spec.source, not user {MALLORY}",),
    ),
    Attempt(
        "remove-alert-source",
        "patch",
        "Incident",
        "alerted",
        {"spec": {"source": None}},
        (f"{OPERATOR_ONLY} spec.source",),
    ),
    created("create-a-drill", {"drill": True}, f"{OPERATOR_ONLY} drill: true, not user {MALLORY}"),
    on_mine("set-drill", {"drill": True}, f"{OPERATOR_ONLY} drill: true, not user {MALLORY}"),
    Attempt(
        "alert-status-resolved",
        "patch",
        "Incident",
        "alerted",
        {"metadata": {"annotations": {ALERT_STATUS: "resolved"}}},
        (f"{OPERATOR_ONLY} annotation {ALERT_STATUS}, not user {MALLORY}",),
    ),
    Attempt(
        "alert-status-removed",
        "patch",
        "Incident",
        "alerted",
        {"metadata": {"annotations": {ALERT_STATUS: None}}},
        (f"{OPERATOR_ONLY} annotation {ALERT_STATUS}",),
    ),
    Attempt(  # the operator's record of a public Statuspage incident (it would update that one)
        "statuspage-annotation-forged",
        "patch",
        "Incident",
        "mine",
        {"metadata": {"annotations": {"incident-operator.dev/statuspage-public": "abc123"}}},
        (f"{OPERATOR_ONLY} annotation incident-operator.dev/statuspage-public, not user {MALLORY}",),
    ),
    Attempt(
        "fingerprint-label-on-hers",
        "patch",
        "Incident",
        "mine",
        {"metadata": {"labels": {FINGERPRINT: "abc"}}},
        (f"{OPERATOR_ONLY} label {FINGERPRINT}, not user {MALLORY}",),
    ),
    on_mine(
        "public-without-publish",
        {"public": True},
        f"user {MALLORY} may not make incidents public (spec.public) in namespace {ADMISSION_NS}",
        NEEDS_PUBLISH,
    ),
    created(
        "create-public-without-publish",
        {"public": True},
        f"user {MALLORY} may not make incidents public (spec.public) in namespace {ADMISSION_NS}",
    ),
    on_mine(
        "public-update-without-publish",
        {"updates": [{"time": "2026-01-01T10:00:00Z", "message": "Major outage", "public": True}]},
        f"user {MALLORY} may not post public updates to incidents in namespace {ADMISSION_NS}",
        NEEDS_PUBLISH,
    ),
    gate_steps(
        "gate-requires-approval-removed",
        [COLLECT, {k: v for k, v in SCALE_UP.items() if k != "requiresApproval"}],
    ),
    gate_steps("gate-requires-approval-false", [COLLECT, {**SCALE_UP, "requiresApproval": False}]),
    gate_steps("gate-replicas-changed", [COLLECT, {**SCALE_UP, "scale": {"target": TARGET, "replicas": 30}}]),
    gate_steps("gate-step-renamed", [COLLECT, {**SCALE_UP, "name": "scale-up-now"}]),
    gate_steps("gate-step-dropped", [COLLECT]),
    Attempt(
        "delete-gated-playbook",
        "delete",
        "Playbook",
        "gated",
        says=(
            f"user {MALLORY} may not delete playbook gated in namespace {ADMISSION_NS}",
            ": it has approval-gated steps (scale-up)",
            NEEDS_GATE,
        ),
    ),
]
ARCHIVE_ONLY_OPERATOR = (
    f"only the operator ({INSTALL_NS}/incident-operator-admission, key operators) writes incident archives, "
    f"not user {MALLORY}"
)
FORGED_ARCHIVE = {
    "month": "2026-11",
    "count": 1,
    "entries": {"forged-uid": {"name": "never-happened", "severity": "P4", "category": "data"}},
}
ADMISSION_REFUSED += [  # retention's archive: mallory may write archives by RBAC; admission refuses her
    Attempt(
        "create-an-incident-archive",
        "create",
        "IncidentArchive",
        "incidents-2026-11-2",
        {"spec": FORGED_ARCHIVE},
        (ARCHIVE_ONLY_OPERATOR,),
    ),
    Attempt(
        "rewrite-an-incident-archive",
        "patch",
        "IncidentArchive",
        "incidents-2026-11",
        {"spec": {"entries": {"forged-uid": FORGED_ARCHIVE["entries"]["forged-uid"]}, "count": 2}},
        (ARCHIVE_ONLY_OPERATOR,),
    ),
    Attempt(
        "delete-an-incident-archive",
        "delete",
        "IncidentArchive",
        "incidents-2026-11",
        says=(ARCHIVE_ONLY_OPERATOR,),
    ),
]
ADMISSION_ADMITTED = [  # the controls: a plain editor does get these through
    on_mine("commander-herself", {"commander": MALLORY}),
    on_mine(  # internal updates, and public: false, are free
        "internal-update-and-not-public",
        {"public": False, "updates": [{"time": "2026-01-01T10:00:00Z", "message": "db-7 OOM"}]},
    ),
    created("create-with-a-bare-manual-source", {"source": {"type": "manual"}}),
    Attempt(  # an ungated step edited, the gated one unchanged
        "edit-an-ungated-step",
        "patch",
        "Playbook",
        "gated",
        {
            "spec": {
                "steps": [
                    {**COLLECT, "collectEvidence": {"selector": {"app": "web"}, "logLines": 5}},
                    SCALE_UP,
                ]
            }
        },
    ),
]


@pytest.fixture(scope="module")
def mallory(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Once: mallory (a ServiceAccount of USERS_NS, bound as a plain editor in ADMISSION_NS) with an
    incident `mine`, on which alice (a responder) approved step scale-up for run r1; an alert
    incident `alerted` created as the operator's own ServiceAccount (the identity the policies'
    ConfigMap parameter lists); a Playbook `gated` by the admin. Yields mallory's kubeconfig."""
    workdir = tmp_path_factory.mktemp("hostile-admission")
    create_namespace(installed, USERS_NS, opt_in=False)
    core = client.CoreV1Api(installed.api)
    for name in ("mallory", "alice"):
        core.create_namespaced_service_account(
            USERS_NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    kubeconfig = token_kubeconfig(installed, "mallory", USERS_NS, workdir / "mallory")
    alice = token_kubeconfig(installed, "alice", USERS_NS, workdir / "alice")
    create_namespace(installed, ADMISSION_NS, opt_in=False)
    bind_editor(installed, ADMISSION_NS, "mallory", users_namespace=USERS_NS)
    installed.run_kubectl(  # RBAC lets her write archives: only the admission policy stands in the way
        "create",
        "role",
        "archive-writer",
        "-n",
        ADMISSION_NS,
        "--verb=get,list,create,update,patch,delete",
        "--resource=incidentarchives.incident-operator.dev",
    )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "mallory-writes-archives",
        "-n",
        ADMISSION_NS,
        "--role=archive-writer",
        f"--serviceaccount={USERS_NS}:mallory",
    )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "alice-responds",
        "-n",
        ADMISSION_NS,
        "--clusterrole=incident-operator-responder",
        f"--serviceaccount={USERS_NS}:alice",
    )
    admitted(create_as(installed, kubeconfig, ADMISSION_NS, "Incident", name="mine", spec=INCIDENT))
    approval = {"approvals": [{"step": "scale-up", "by": ALICE, "run": "r1"}]}
    admitted(patch_spec(installed, alice, ADMISSION_NS, "mine", approval))
    operator = token_kubeconfig(installed, "incident-operator", INSTALL_NS, workdir / "operator")
    admitted(
        create_as(
            installed,
            operator,
            ADMISSION_NS,
            "Incident",
            name="alerted",
            spec={**INCIDENT, "source": ALERT_SOURCE},
            annotations={ALERT_STATUS: "firing"},
            labels={FINGERPRINT: "f00d"},
        )
    )
    admitted(  # the operator's own archive
        create_as(
            installed,
            operator,
            ADMISSION_NS,
            "IncidentArchive",
            name="incidents-2026-11",
            spec={"month": "2026-11", "count": 0, "entries": {}},
        )
    )
    admitted(
        create_as(
            installed,
            installed.kubeconfig,
            ADMISSION_NS,
            "Playbook",
            name="gated",
            spec=playbook(COLLECT, SCALE_UP),
        )
    )
    yield kubeconfig
    core.delete_namespace(ADMISSION_NS)
    core.delete_namespace(USERS_NS)


def attempt(cluster: Cluster, kubeconfig: Path, case: Attempt) -> subprocess.CompletedProcess[str]:
    if case.verb == "create":
        meta = case.body.get("metadata", {})
        return create_as(
            cluster, kubeconfig, ADMISSION_NS, case.kind, name=case.name, spec=case.body["spec"], **meta
        )
    if case.verb == "patch":
        return merge_patch(cluster, kubeconfig, ADMISSION_NS, case.kind.lower(), case.name, body=case.body)
    return kubectl_as(cluster, kubeconfig, "delete", case.kind.lower(), case.name, "-n", ADMISSION_NS)


@pytest.mark.parametrize("case", ADMISSION_REFUSED, ids=lambda c: c.id)
def test_the_admission_policies_refuse_a_plain_editor(
    installed: Cluster, mallory: Path, case: Attempt
) -> None:
    refused(attempt(installed, mallory, case), *case.says)


@pytest.mark.parametrize("case", ADMISSION_ADMITTED, ids=lambda c: c.id)
def test_the_admission_policies_admit_a_plain_editor(
    installed: Cluster, mallory: Path, case: Attempt
) -> None:
    admitted(attempt(installed, mallory, case))


@dataclass(frozen=True)
class Stalls:
    """An incident the operator must stop on, with a condition reason and a message fragment."""

    id: str
    steps: list[dict[str, Any]] | None
    reason: str
    says: str
    secret: dict[str, str] = field(default_factory=dict)
    incident: dict[str, Any] = field(default_factory=dict)
    playbook: dict[str, Any] = field(default_factory=dict)
    """More of the Playbook's spec (e.g. allowedTargets)."""


PROM_CHECK = {"query": "up", "expect": {"op": ">", "value": 0}}
FROM_INCIDENT: dict[str, Any] = {"fromIncident": {}}


def webhook(key: str) -> dict[str, Any]:
    return {"webhook": {"urlSecretRef": {"name": "odd-values", "key": key}}, "message": "{title}"}


STALLS = [
    Stalls(
        "template-unknown-field",
        [step("a", notify={**webhook("plain"), "message": "{secret}"})],
        "InvalidPlaybook",
        "unknown field {secret}",
    ),
    Stalls(
        "replicas-over-max",
        [step("a", scale={"target": TARGET, "replicas": 5, "max": 2})],
        "InvalidPlaybook",
        "exceeds scale.max",
    ),
    Stalls(
        "playbook-missing",
        None,
        "PlaybookNotFound",
        "does not exist here",
        incident={"playbookRef": {"name": "nowhere"}},
    ),
    Stalls(
        "restart-ghost",
        [step("a", restart={"target": {"kind": "Deployment", "name": "ghost"}})],
        "StepFailed",
        "not found",
    ),
    Stalls(
        "wait-ghost-statefulset",
        [{**step("a", waitReady={"target": {"kind": "StatefulSet", "name": "ghost"}}), "timeoutSeconds": 5}],
        "StepFailed",
        "not found",
    ),
    Stalls(
        "notify-no-secret",
        [step("a", notify={"webhook": {"urlSecretRef": {"name": "absent", "key": "url"}}, "message": "m"})],
        "Misconfigured",
        "(urlSecretRef) not found",
    ),
    Stalls("notify-no-key", [step("a", notify=webhook("missing-key"))], "Misconfigured", "has no key"),
    Stalls(  # the confused deputy: a Secret its owner did not share, named by a Playbook's author
        "secret-not-shared",
        [step("a", notify={"webhook": {"urlSecretRef": {"name": "private", "key": "url"}}, "message": "m"})],
        "Misconfigured",
        "is not shared with playbooks",
    ),
    Stalls(  # shared, but for other hosts than the one the author wrote
        "secret-to-another-host",
        [step("a", httpCheck={"url": "http://localhost:9/", "headersSecretRef": {"name": "odd-values"}})],
        "Misconfigured",
        "may not be sent to localhost",
    ),
    Stalls(
        "check-url-with-space",
        [step("a", httpCheck={"url": "http://bad host/"})],
        "Misconfigured",
        "invalid URL",
    ),
    Stalls("secret-not-a-url", [step("a", notify=webhook("not-a-url"))], "Misconfigured", "has no host"),
    Stalls(
        "secret-points-at-metadata",
        [step("a", notify=webhook("metadata"))],
        "Misconfigured",
        "egress denied: 169.254.169.254",
    ),
    Stalls(  # NAME.NS.svc of an ExternalName Service may point anywhere: refused before resolving
        "externalname-service",
        [step("a", httpCheck={"url": f"http://alias.{TABLE_NS}.svc:9/"})],
        "Misconfigured",
        f"egress denied: alias.{TABLE_NS}.svc",
    ),
    Stalls(
        "externalname-prometheus",
        [step("a", promQuery={"url": f"http://alias.{TABLE_NS}.svc.cluster.local:9", **PROM_CHECK})],
        "Misconfigured",
        f"egress denied: alias.{TABLE_NS}.svc.cluster.local",
    ),
    Stalls(  # a Service name of the namespace is honoured only for a Service that exists
        "no-such-own-service",
        [step("a", httpCheck={"url": f"http://ghost.{TABLE_NS}.svc:9/"})],
        "Misconfigured",
        f"egress denied: ghost.{TABLE_NS}.svc",
    ),
    Stalls(  # the name route reaches a Service's own ports only (not a host-network pod's kubelet)
        "own-service-undeclared-port",
        [step("a", httpCheck={"url": f"http://web.{TABLE_NS}.svc:10250/pods"})],
        "Misconfigured",
        f"egress denied: web.{TABLE_NS}.svc",
    ),
    Stalls(  # the Service, its slices and host-network pods read under the real RBAC, then the
        # absolute name webh.NS.svc.cluster.local. asked, which no DNS here knows: NXDOMAIN
        "own-headless-service-not-in-dns",
        [step("a", httpCheck={"url": f"http://webh.{TABLE_NS}.svc:8080/"})],
        "Misconfigured",
        "host not found",
    ),
    Stalls(  # an IPv6 zone would hide the address from the policy's comparisons
        "url-with-ipv6-zone",
        [step("a", httpCheck={"url": "http://[fd00:ec2::254%25eth0]/latest/meta-data/"})],
        "Misconfigured",
        "invalid URL: bad host name",
    ),
    Stalls("secret-ftp", [step("a", notify=webhook("ftp"))], "Misconfigured", "invalid URL"),
    Stalls(  # a workload name (dots allowed) steering a check's rendered host: the egress policy decides
        "target-name-steers-check-host",
        [
            step(
                "a",
                httpCheck={"url": "http://{targetName}/latest/meta-data/", "target": {"fromIncident": {}}},
            )
        ],
        "Misconfigured",
        "egress denied: 169.254.169.254",
        incident={"targets": [{"kind": "Deployment", "name": "169.254.169.254"}]},
        playbook={"allowedTargets": {"names": ["*"]}},
    ),
]


@pytest.fixture(scope="module")
def hooks() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


@pytest.fixture(scope="module")
def odd_secret(table: Scenario, hooks: LocalServer) -> None:
    table.secret(
        "odd-values",
        {
            "plain": hooks.url(f"/plain?token={SECRET_MARK}"),
            "padded": f"  {hooks.url(f'/padded?token={SECRET_MARK}')}\n\n",
            "not-a-url": f"not a url {SECRET_MARK}",
            "metadata": f"http://169.254.169.254/latest?token={SECRET_MARK}",
            "ftp": f"ftp://example.com/{SECRET_MARK}",
        },
        shared_for="127.0.0.1, 169.254.169.254, example.com",  # so the egress policy is what stops them
    )
    table.secret("private", {"url": hooks.url(f"/private?token={SECRET_MARK}")})  # not shared


@pytest.mark.parametrize("case", STALLS, ids=lambda c: c.id)
def test_the_operator_stops_with_a_reason(table: Scenario, odd_secret: None, case: Stalls) -> None:
    spec: dict[str, Any] = dict(case.incident)
    if case.steps is not None:
        table.playbook(
            case.id, case.steps, match={"severities": ["P4"], "categories": ["data"]}, **case.playbook
        )
        spec = {"playbookRef": {"name": case.id}, **spec}
    table.incident(case.id, **spec)
    stalled = table.wait_condition(case.id, "Stalled", reason=case.reason)
    assert case.says in stalled["message"]
    assert SECRET_MARK not in stalled["message"]


def test_a_padded_secret_value_still_works_and_an_empty_selector_is_not_stuck(
    table: Scenario, odd_secret: None, hooks: LocalServer
) -> None:
    table.playbook(
        "odd-but-fine",
        [
            step("tell", notify=webhook("padded")),
            step("none", deletePods={"selector": {"app": "nothing"}, "max": 3}),
        ],
        match={"severities": ["P4"], "categories": ["data"]},
    )
    table.incident("fine", playbookRef={"name": "odd-but-fine"})
    table.wait_phase("fine", "Resolved")
    assert hooks.hits(f"/padded?token={SECRET_MARK}") == 1
    assert "no pod needed deleting" in table.steps("fine")["none"]["message"]


# ------------------------------------- Hostile text on its way to people (the channels of NOTIFY_NAMESPACE)


@dataclass(frozen=True)
class HostileText:
    """An incident title written to reach people as more than text: a line break that would add a
    mail header, Slack control sequences that would page a whole channel or dress up a link. The
    session operator's channels take NOTIFY_NAMESPACE's incidents: Slack (`/ok`), and for a P2
    nobody acknowledges, email 2 s later (its escalation). P3 here: P4 breaches page `/pager`."""

    id: str
    title: str
    slack_has: str  # what Slack receives instead
    slack_lacks: str


HOSTILE_TEXTS = [
    HostileText("slack-channel-mention", "db down <!channel> now", "&lt;!channel&gt;", "<!channel>"),
    HostileText(
        "slack-dressed-link",
        "see <https://evil.example/login|the runbook>",
        "&lt;https://evil.example/login|the runbook&gt;",
        "<https://evil.example",
    ),
    HostileText("slack-user-mention", "ping <@U024BE7LH> and <!here>", "&lt;@U024BE7LH&gt;", "<!here>"),
]


@pytest.mark.parametrize("case", HOSTILE_TEXTS, ids=lambda c: c.id)
def test_people_written_text_reaches_slack_as_text(
    crds_installed: Cluster,
    operator: OperatorProcess,
    notify_namespace: str,
    receivers: LocalServer,
    case: HostileText,
) -> None:
    s = Scenario(crds_installed, operator, notify_namespace)
    s.incident(case.id, severity="P3", title=case.title, playbookRef={"name": "none-here"})
    opened = wait_until(
        lambda: [r for r in receivers.received_at("/ok") if f"/{case.id})" in r["body"]["text"]],
        timeout=60,
        what="the opened notice on Slack",
    )
    text = opened[0]["body"]["text"]
    assert case.slack_has in text
    assert case.slack_lacks not in text


def test_a_line_break_in_a_title_adds_no_mail_header_and_loses_no_mail(
    crds_installed: Cluster,
    operator: OperatorProcess,
    notify_namespace: str,
    mailbox: MailServer,
) -> None:
    s = Scenario(crds_installed, operator, notify_namespace)
    title = "checkout down\r\nBcc: thief@evil.example\nX-Injected: 1"
    s.incident("crlf-title", severity="P2", title=title, playbookRef={"name": "none-here"})

    def mine() -> list[Any]:
        return [m for m in mailbox.inbox.wait() if "thief@evil.example" in str(m["Subject"])]

    [message] = wait_until(mine, timeout=60, what="the escalation mail")
    assert message["Subject"] == "[P2] checkout down Bcc: thief@evil.example X-Injected: 1: escalated"
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert not any("thief@evil.example" in str(r) for r in mailbox.inbox.recipients)
    timeline = s.status("crlf-title").get("timeline", [])
    assert not [e for e in timeline if e["type"] == "NotificationFailed" and "mail" in e["message"]]


SAFE_CONTAINER: dict[str, Any] = {
    "name": "check",
    "image": "postgres:16",
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
}
SAFE_POD: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [SAFE_CONTAINER],
}


@dataclass(frozen=True)
class HostileJob:
    """A Job step's pod template the operator refuses: the Playbook is Invalid, naming the field."""

    id: str
    pod: dict[str, Any] = field(default_factory=dict)
    container: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def template(self) -> dict[str, Any]:
        container = {**SAFE_CONTAINER, **self.container}
        template: dict[str, Any] = {"spec": {**SAFE_POD, **self.pod, "containers": [container]}}
        if self.labels:
            template["metadata"] = {"labels": self.labels}
        return template


C0 = "job.template.spec.containers[0]"
SAFE_SC = SAFE_CONTAINER["securityContext"]


def test_hostile_text_reaches_the_terminal_escaped_in_kubectl_incident_explain(
    crds_installed: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    """A Playbook's match label value is any string: an escape sequence and a forged line in it
    reach `kubectl incident explain` escaped (the operator's explanation names why it did not match)."""
    s = Scenario(crds_installed, operator, namespace)
    hostile = "\x1b[2J\x1b[31mpwned\nNext: nothing to see"
    s.playbook(
        "lure",
        [{"name": "c", "collectEvidence": {"selector": {"app": "x"}}}],
        match={"labels": {"t": hostile}},
    )
    s.incident("explained")
    wait_until(
        lambda: (s.status("explained").get("explanation") or {}).get("candidates"),
        timeout=60,
        what="the explanation naming the Playbook",
        describe=s.describer("explained"),
    )
    shown = explain_kubectl(s, "explain", "explained", "-n", s.namespace).stdout
    assert "\x1b" not in shown
    assert "wants \\x1b[2J\\x1b[31mpwned\\nNext: nothing to see)" in shown
    assert [line for line in shown.splitlines() if line.startswith("Next:")] == [
        "Next: no playbook runs: a Playbook created or changed to fit is considered at once"
    ]


HOSTILE_JOBS = [
    HostileJob(
        "job-service-account",
        pod={"serviceAccountName": "admin"},
        path="job.template.spec.serviceAccountName",
    ),
    HostileJob(
        "job-secret-volume",
        pod={"volumes": [{"name": "s", "secret": {"secretName": "odd-values"}}]},
        path="job.template.spec.volumes[0].secret",
    ),
    HostileJob(
        "job-env-secret",
        container={
            "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "odd-values", "key": "plain"}}}]
        },
        path=f"{C0}.env[0].valueFrom.secretKeyRef",
    ),
    HostileJob(
        "job-envfrom-secret",
        container={"envFrom": [{"secretRef": {"name": "odd-values"}}]},
        path=f"{C0}.envFrom[0].secretRef",
    ),
    HostileJob("job-host-pid", pod={"hostPID": True}, path="job.template.spec.hostPID"),
    HostileJob("job-host-network", pod={"hostNetwork": True}, path="job.template.spec.hostNetwork"),
    HostileJob(
        "job-host-path",
        pod={"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        path="job.template.spec.volumes[0].hostPath",
    ),
    HostileJob(
        "job-privileged",
        container={"securityContext": {**SAFE_SC, "privileged": True}},
        path=f"{C0}.securityContext.privileged",
    ),
    HostileJob(
        "job-capabilities-add",
        container={"securityContext": {**SAFE_SC, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}},
        path=f"{C0}.securityContext.capabilities.add",
    ),
    HostileJob("job-node-name", pod={"nodeName": "kwok-node-0"}, path="job.template.spec.nodeName"),
    HostileJob("job-template-labels", labels={"app": "web"}, path="job.template.metadata.labels"),
    HostileJob("job-no-limits", container={"resources": {}}, path=f"{C0}.resources.limits.cpu"),
    HostileJob(
        "job-limits-above-cap",
        container={"resources": {"limits": {"cpu": "100m", "memory": "64Gi"}}},
        path=f"{C0}.resources.limits.memory",
    ),
    HostileJob(
        "job-automount-token",
        pod={"automountServiceAccountToken": True},
        path="job.template.spec.automountServiceAccountToken",
    ),
]


def test_a_restricted_job_template_is_ready(table: Scenario) -> None:
    table.playbook("job-restricted", [step("a", job={"template": {"spec": SAFE_POD}})])
    ready = table.wait_condition("job-restricted", "Ready", kind="playbooks")
    assert ready["reason"] == "Valid"


@pytest.mark.parametrize("case", HOSTILE_JOBS, ids=lambda c: c.id)
def test_a_hostile_job_template_makes_the_playbook_invalid_naming_the_field(
    table: Scenario, case: HostileJob
) -> None:
    table.playbook(case.id, [step("a", job={"template": case.template()})])
    invalid = table.wait_condition(case.id, "Invalid", reason="InvalidSpec", kind="playbooks")
    assert f"step a: {case.path}: " in invalid["message"], invalid["message"]
    assert table.condition(case.id, "Ready", kind="playbooks")["status"] == "False"


@dataclass(frozen=True)
class BadDelivery:
    id: str
    body: bytes
    token: str | None
    status: int
    says: str


def alert_payload(**labels: str) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "alerts": [
                {"status": "firing", "labels": labels, "annotations": {}, "fingerprint": uuid.uuid4().hex}
            ],
        }
    ).encode()


DELIVERIES = [
    BadDelivery("not-json", b"{nope", ALERT_TOKEN, 400, "not an Alertmanager webhook payload"),
    BadDelivery(
        "version-3",
        json.dumps({"version": "3", "status": "firing", "alerts": []}).encode(),
        ALERT_TOKEN,
        400,
        "unsupported payload version",
    ),
    BadDelivery("no-alerts-field", json.dumps({"version": "4"}).encode(), ALERT_TOKEN, 400, "alerts"),
    BadDelivery(
        "alerts-not-a-list", json.dumps({"version": "4", "alerts": "x"}).encode(), ALERT_TOKEN, 400, "alerts"
    ),
    BadDelivery(
        "wrong-token", alert_payload(alertname="A", namespace=TABLE_NS), "wrong", 401, "bearer token"
    ),
    BadDelivery("no-token", alert_payload(alertname="A", namespace=TABLE_NS), None, 401, "bearer token"),
    BadDelivery("two-megabytes", b"[" + b" " * 2_000_000 + b"]", ALERT_TOKEN, 413, ""),
    BadDelivery(
        "namespace-invalid",
        alert_payload(alertname="A", namespace="Bad_NS"),
        ALERT_TOKEN,
        200,
        "InvalidNamespace",
    ),
    BadDelivery(  # `$` in a pattern matches before a trailing newline: not a namespace name
        "namespace-trailing-newline",
        alert_payload(alertname="A", namespace=f"{TABLE_NS}\n"),
        ALERT_TOKEN,
        200,
        "InvalidNamespace",
    ),
    BadDelivery("namespace-missing", alert_payload(alertname="A"), ALERT_TOKEN, 200, "NoNamespace"),
    BadDelivery(
        "namespace-kube-system",
        alert_payload(alertname="A", namespace="kube-system"),
        ALERT_TOKEN,
        200,
        "NotAllowed",
    ),
    BadDelivery(  # a tenant's token, bound to its namespace, naming another (alertIntake.tokens)
        "token-bound-to-another-namespace",
        alert_payload(alertname="A", namespace=TABLE_NS),
        TEAM_TOKEN,
        200,
        '"code": "NotAllowedForToken"',
    ),
    BadDelivery(
        "namespace-absent",
        alert_payload(alertname="A", namespace="no-such-ns-x1"),
        ALERT_TOKEN,
        200,
        "NamespaceNotFound",
    ),
]


@pytest.mark.parametrize("case", DELIVERIES, ids=lambda c: c.id)
def test_bad_alert_deliveries_get_a_clear_answer(operator: OperatorProcess, case: BadDelivery) -> None:
    headers = {"Content-Type": "application/json"}
    if case.token is not None:
        headers["Authorization"] = f"Bearer {case.token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{operator.port}/alertmanager", data=case.body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            status, text = int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = int(exc.code), exc.read().decode(errors="replace")
    assert status == case.status, text
    assert case.says in text


CAP = Limits().maxOpenIncidentsPerNamespace  # the session operator's: its config sets no limits


@dataclass(frozen=True)
class Flood:
    """More incidents at once in one namespace than `limits.maxOpenIncidentsPerNamespace`, opened
    by people or by alerts: every one is recorded; the playbooks of the first CAP run (each sends
    one webhook, then waits for an approval, open); the others wait, `OpenIncidentLimit`."""

    id: str
    source: Literal["manual", "alerts"]
    extra: int = 2


FLOODS = [Flood("incidents-in-one-namespace", "manual"), Flood("alerts-for-one-namespace", "alerts")]


@pytest.mark.parametrize("case", FLOODS, ids=lambda c: c.id)
def test_a_flood_of_incidents_runs_the_playbooks_of_the_first_only(
    crds_installed: Cluster, operator: OperatorProcess, hooks: LocalServer, case: Flood
) -> None:
    namespace = f"flood-{uuid.uuid4().hex[:6]}"
    create_namespace(crds_installed, namespace, opt_in=False)
    s = Scenario(crds_installed, operator, namespace)
    try:
        s.secret("hook", {"url": hooks.url(f"/{namespace}")}, shared_for="127.0.0.1")
        s.playbook(
            "tell-then-hold",
            [
                step(
                    "tell",
                    notify={"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}, "message": "m"},
                ),
                {**step("hold", waitReady={"target": TARGET}), "requiresApproval": True},
            ],
            match={"severities": ["P3"]},
        )
        total = CAP + case.extra
        if case.source == "manual":
            for i in range(total):
                s.incident(f"flood-{i:03d}", severity="P3")
        else:
            alerts = [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "Flood",
                        "namespace": namespace,
                        "severity": "warning",
                        "n": str(i),
                    },
                    "annotations": {},
                    "fingerprint": f"{namespace}-{i:03d}",
                }
                for i in range(total)
            ]
            body = json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{operator.port}/alertmanager",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {ALERT_TOKEN}"},
            )
            with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
                assert [r["result"] for r in json.loads(resp.read())["results"]] == ["created"] * total

        def states() -> dict[str, str]:
            items = s.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "incidents")["items"]
            found = {}
            for item in items:
                conditions = {c["type"]: c for c in (item.get("status") or {}).get("conditions") or []}
                paused = conditions.get("AutomationPaused") or {}
                steps = ((item.get("status") or {}).get("playbook") or {}).get("steps") or []
                if paused.get("status") == "True":
                    found[item["metadata"]["name"]] = str(paused.get("reason"))
                elif steps and steps[-1].get("state") == "AwaitingApproval":
                    found[item["metadata"]["name"]] = "acted"
            return found

        settled = wait_until(
            lambda: states() if len(states()) == total and hooks.hits(f"/{namespace}") == CAP else None,
            timeout=120,
            what=f"{CAP} playbooks run, {case.extra} waiting",
            describe=lambda: f"{len(states())} settled, {hooks.hits(f'/{namespace}')} webhooks",
        )
        assert sorted(settled.values()).count("acted") == CAP
        assert sorted(settled.values()).count("OpenIncidentLimit") == case.extra
        assert hooks.hits(f"/{namespace}") == CAP  # the waiting ones sent nothing
    finally:
        s.core.delete_namespace(namespace)


@dataclass(frozen=True)
class BadConfig:
    id: str
    content: str
    says: str
    options: tuple[str, ...] = ()


CONFIGS = [
    BadConfig("not-yaml", "responseTargets: [unclosed", "not valid YAML"),
    BadConfig("retention-zero-days", "retention: {closedForDays: 0}\n", "retention.closedForDays"),
    BadConfig(
        "retention-days-not-a-number", "retention: {closedForDays: ninety}\n", "retention.closedForDays"
    ),
    BadConfig(
        "retention-no-pace",
        "retention: {closedForDays: 90, deletesPerSecond: 0}\n",
        "retention.deletesPerSecond",
    ),
    BadConfig("retention-unknown-key", "retention: {closedAfterDays: 90}\n", "closedAfterDays"),
    BadConfig("unknown-key", "respnseTargets: {}\n", "Extra inputs are not permitted"),
    BadConfig("target-not-a-duration", "responseTargets: {P1: soon}\n", "P1"),
    BadConfig(
        "lease-timings-inverted",
        "leaderElection: {leaseDurationSeconds: 5, renewDeadlineSeconds: 10, retryPeriodSeconds: 2}\n",
        "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
    ),
    BadConfig("egress-wildcard", "egress: {allow: ['*.example.com']}\n", "neither a CIDR nor a host name"),
    BadConfig(
        "egress-cluster-network-not-a-cidr", "egress: {clusterNetworks: ['10.0.0.0/33']}\n", "not a CIDR"
    ),
    BadConfig(
        "channel-unknown-type",
        "notifications: {channels: [{name: a, type: fax, urlSecretRef: {namespace: n, name: s}}]}\n",
        "type",
    ),
    BadConfig(
        "escalation-unknown-channel",
        "notifications: {escalation: {P1: [nobody]}}\n",
        "unknown channels: nobody",
    ),
    BadConfig("allow-egress-url", "{}\n", "neither a CIDR nor a host name", ("--allow-egress=http://x/",)),
    BadConfig(  # a grant to every namespace is spelt alone, never mixed into a list of names
        "egress-grant-star-among-names",
        "egress: {namespaces: [{namespaces: ['*', shop], allow: ['10.0.0.0/8']}]}\n",
        '"*" (every namespace) stands alone in its entry',
    ),
    BadConfig(
        "egress-grant-url",
        "egress: {namespaces: [{namespaces: [shop], allow: ['http://db.internal/']}]}\n",
        "neither a CIDR nor a host name",
    ),
    BadConfig(
        "egress-grant-nothing",
        "egress: {namespaces: [{namespaces: [shop], allow: []}]}\n",
        "allow",
    ),
    BadConfig(  # a namespace limit no namespace could reach: refused, not silently capped
        "breaker-namespace-above-cluster",
        "automation: {maxMutatingActions: {perNamespace: 50, clusterWide: 10}}\n",
        "automation.maxMutatingActions.perNamespace (50) is above clusterWide (10)",
    ),
    BadConfig(
        "breaker-window-zero",
        "automation: {maxMutatingActions: {windowSeconds: 0}}\n",
        "windowSeconds",
    ),
    BadConfig(  # more entries than one ConfigMap holds
        "breaker-cluster-limit-too-high",
        "automation: {maxMutatingActions: {clusterWide: 100000}}\n",
        "clusterWide",
    ),
    BadConfig(  # mail to people: domain names only, never a pattern that could match anything
        "oncall-domain-wildcard",
        "oncall: {allowedEmailDomains: ['*.example.com']}\n",
        "allowedEmailDomains",
    ),
    BadConfig(  # handoffs and roles reach people only by mail or Slack
        "oncall-channel-not-email-or-slack",
        "notifications: {channels: [{name: hook, type: webhook, urlSecretRef: {namespace: n, name: s}}]}\n"
        "oncall: {channels: [hook]}\n",
        "only email and slack",
    ),
    BadConfig(
        "escalation-schedule-not-a-name",
        "notifications: {channels: [{name: a, type: slack, urlSecretRef: {namespace: n, name: s}}], "
        "escalation: {P1: {levels: [{channels: [a], schedule: 'a/b/c'}]}}}\n",
        "schedule",
    ),
    BadConfig(  # just above the cap that keeps the state well inside one ConfigMap
        "breaker-cluster-limit-above-3000",
        "automation: {maxMutatingActions: {perNamespace: 20, clusterWide: 3001}}\n",
        "clusterWide",
    ),
]


@pytest.mark.parametrize("case", CONFIGS, ids=lambda c: c.id)
def test_bad_configuration_stops_the_operator_at_start_with_the_reason(
    crds_installed: Cluster, tmp_path: Path, case: BadConfig
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(case.content)
    done = subprocess.run(
        operator_command(1, f"--config={path}", *case.options),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=operator_env(crds_installed.kubeconfig),
    )
    assert done.returncode == 2, done.stderr
    assert case.says in done.stderr
    assert "Traceback" not in done.stderr


@dataclass(frozen=True)
class EndpointRequest:
    """A request to the operator's endpoints: /metrics and /reports need a Kubernetes token whose
    identity may read them (TokenReview + SubjectAccessReview); the status page is alone on its port,
    its links from statusPage.baseURL whatever the Host header says."""

    id: str
    path: str
    token: Literal["none", "forged", "nobody", "tenant", "reader"]
    status: int
    says: str
    status_page: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    never: tuple[str, ...] = ()


TENANT_NS = TABLE_NS + "-tenant"
"""A namespace whose ServiceAccount `tenant` may list incidents there and nowhere else."""
NOT_A_TOKEN = "eyJhbGciOiJSUzI1NiJ9.forged.signature"
EXCEPTION_WORDS = ("Traceback", "Exception", "Error:", "ApiException", "HTTPConnection")

ENDPOINT_REQUESTS = [
    EndpointRequest("metrics-without-a-token", "/metrics", "none", 401, "bearer token"),
    EndpointRequest("metrics-forged-token", "/metrics", "forged", 401, "does not accept this token"),
    EndpointRequest("metrics-without-the-role", "/metrics", "nobody", 403, "needs get on /metrics"),
    EndpointRequest("metrics-by-a-tenant", "/metrics", "tenant", 403, "needs get on /metrics"),
    EndpointRequest("metrics-reader", "/metrics", "reader", 200, "incident_operator_"),  # the control
    EndpointRequest(
        "report-of-another-tenant",
        f"/reports/2026-11?namespace={TABLE_NS}&format=json",
        "tenant",
        403,
        f"list incidents.incident-operator.dev in namespace {TABLE_NS}",
    ),
    EndpointRequest(
        "report-cluster-wide-by-a-tenant", "/reports/2026-11?format=json", "tenant", 403, "at cluster scope"
    ),
    EndpointRequest(  # the control: a tenant reads its own namespace's report
        "report-of-the-own-namespace",
        f"/reports/2026-11?namespace={TENANT_NS}&format=json",
        "tenant",
        200,
        '"total"',
    ),
    EndpointRequest(
        "report-without-a-token", f"/reports/2026-11?namespace={TENANT_NS}", "none", 401, "bearer"
    ),
    EndpointRequest("report-forged-token", "/reports/2026-11", "forged", 401, "does not accept this token"),
    EndpointRequest("report-month-9999-12", "/reports/9999-12", "reader", 400, "month must be between"),
    EndpointRequest("report-month-0000-01", "/reports/0000-01", "reader", 400, "month must be YYYY-MM"),
    EndpointRequest("report-month-not-begun", "/reports/9998-12", "reader", 400, "has not begun"),
    EndpointRequest("report-month-before-2000", "/reports/1970-01", "reader", 400, "2000-01 or later"),
    EndpointRequest(  # who asks is checked before what is asked
        "report-bad-month-forged-token",
        "/reports/2026-13?format=pdf",
        "forged",
        401,
        "does not accept this token",
    ),
    EndpointRequest(
        "report-format-pdf", "/reports/2026-11?format=pdf", "reader", 400, "format must be one of"
    ),
    EndpointRequest(
        "report-namespace-not-a-name", "/reports/2026-11?namespace=..%2Fsecrets", "reader", 400, "namespace"
    ),
    EndpointRequest(
        "report-namespace-with-a-newline", "/reports/2026-11?namespace=shop%0A", "reader", 400, "namespace"
    ),
    EndpointRequest(
        "report-namespace-twice",
        f"/reports/2026-11?namespace={TENANT_NS}&namespace={TABLE_NS}",
        "tenant",
        400,
        "given once each",
    ),
    EndpointRequest("oncall-feed-without-a-token", f"/oncall/{TABLE_NS}/primary.ics", "none", 401, "bearer"),
    EndpointRequest(
        "oncall-feed-forged-token",
        f"/oncall/{TABLE_NS}/primary.ics",
        "forged",
        401,
        "does not accept this token",
    ),
    EndpointRequest(
        "oncall-feed-of-another-tenant",
        f"/oncall/{TABLE_NS}/primary.ics",
        "tenant",
        403,
        f"get oncallschedules.incident-operator.dev primary in namespace {TABLE_NS}",
    ),
    EndpointRequest(  # who asks is checked before what is asked
        "oncall-feed-bad-weeks-forged-token",
        f"/oncall/{TABLE_NS}/primary.ics?weeks=99",
        "forged",
        401,
        "does not accept this token",
    ),
    EndpointRequest(
        "oncall-feed-calendar-token-of-no-schedule",
        f"/oncall/{TABLE_NS}/nothing.ics?token=guess",
        "none",
        403,
        "the calendar token does not match (or no such schedule takes one)",
    ),
    EndpointRequest("oncall-feed-path-not-a-name", "/oncall/..%2Fkube-system/x.ics", "reader", 404, ""),
    EndpointRequest("status-on-the-http-port", "/status", "none", 404, ""),
    EndpointRequest("status-json-on-the-http-port", "/status.json", "reader", 404, ""),
    EndpointRequest("metrics-on-the-status-port", "/metrics", "reader", 404, "", status_page=True),
    EndpointRequest("reports-on-the-status-port", "/reports/2026-11", "reader", 404, "", status_page=True),
    EndpointRequest("alertmanager-on-the-status-port", "/alertmanager", "none", 404, "", status_page=True),
    EndpointRequest(
        "feed-with-a-forged-host",
        "/status/feed.atom",
        "none",
        200,
        f"<link rel='self' href='{STATUS_BASE_URL}/status/feed.atom'/>",
        status_page=True,
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
        never=("evil.example",),
    ),
    EndpointRequest(
        "page-with-a-forged-host",
        "/status",
        "none",
        200,
        f"href='{STATUS_BASE_URL}/status/feed.atom'",
        status_page=True,
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
        never=("evil.example",),
    ),
]


@pytest.fixture(scope="module")
def endpoint_tokens(table: Scenario) -> Iterator[dict[str, str | None]]:
    """Tokens of real identities: `tenant` may list incidents in TENANT_NS only, `nobody` may do
    nothing, `reader` reads /metrics and every report (conftest `reader_token`)."""
    cluster = table.cluster
    create_namespace(cluster, TENANT_NS, opt_in=False)
    cluster.run_kubectl(
        "create",
        "role",
        "lister",
        "-n",
        TENANT_NS,
        "--verb=list",
        "--resource=incidents.incident-operator.dev",
    )
    cluster.run_kubectl(
        "create",
        "rolebinding",
        "tenant-lists",
        "-n",
        TENANT_NS,
        "--role=lister",
        f"--serviceaccount={TENANT_NS}:tenant",
    )
    tokens = {
        "none": None,
        "forged": NOT_A_TOKEN,
        "nobody": service_account_token(cluster, "nobody", TENANT_NS),
        "tenant": service_account_token(cluster, "tenant", TENANT_NS),
        "reader": table.operator.reader_token,
    }
    own = f"/reports/2026-11?namespace={TENANT_NS}"
    wait_until(  # the new RoleBinding reaches the authorizer within moments (refusals are kept 5 s)
        lambda: table.operator.get(own, tokens["tenant"])[0] == 200,
        timeout=30,
        what="the tenant's own report",
    )
    yield tokens
    client.CoreV1Api(cluster.api).delete_namespace(TENANT_NS)


@pytest.mark.parametrize("case", ENDPOINT_REQUESTS, ids=lambda c: c.id)
def test_the_endpoints_answer_only_whom_they_may_and_say_nothing_internal(
    table: Scenario, endpoint_tokens: dict[str, str | None], case: EndpointRequest
) -> None:
    status, headers, body = table.operator.get(
        case.path, endpoint_tokens[case.token], status_page=case.status_page, **case.headers
    )
    assert status == case.status, body
    assert case.says in body
    for text in (*case.never, *EXCEPTION_WORDS):
        assert text not in body, text
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")
    if not case.status_page:
        assert headers.get("Cache-Control") == "no-store", headers  # nothing private in a shared cache
    else:
        assert "evil.example" not in json.dumps(headers)


def test_after_the_table_the_operator_is_alive_and_no_secret_leaked(
    table: Scenario, operator: OperatorProcess
) -> None:
    assert operator.proc is not None
    assert operator.proc.poll() is None
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/healthz", timeout=5) as resp:
        assert resp.status == 200
    assert (
        len(REJECTED)
        + len(ADMISSION_REFUSED)
        + len(STALLS)
        + len(HOSTILE_JOBS)
        + len(DELIVERIES)
        + len(FLOODS)
        + len(CONFIGS)
        + len(HOSTILE_TEXTS)
        + len(ENDPOINT_REQUESTS)
        + 3
        >= 50
    )
    assert SECRET_MARK not in operator.full_log()
    for event in table.core.list_namespaced_event(TABLE_NS).items:
        assert SECRET_MARK not in (event.message or ""), event.reason
    incidents = table.custom.list_namespaced_custom_object(GROUP, VERSION, TABLE_NS, "incidents")["items"]
    assert incidents
    for incident in incidents:
        assert SECRET_MARK not in json.dumps(incident.get("status") or {}), incident["metadata"]["name"]
