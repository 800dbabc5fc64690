"""The Job policy (`core.jobpolicy`): a table of hostile pod templates, each refused with the field
named; a restricted template passes; the operator's own pod template; the concurrency slot."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.core import jobpolicy
from incident_operator.settings.config import FileConfig, JobsConfig, parse_quantity

CONTAINER: dict[str, Any] = {
    "name": "pg",
    "image": "postgres:16",
    "command": ["pg_isready"],
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
}
RESTRICTED: dict[str, Any] = {
    "spec": {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 999,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [CONTAINER],
    }
}
"""A template that meets the restricted profile and the default config (as the samples do)."""

POLICY = JobsConfig()


def changed(path: str, value: Any) -> dict[str, Any]:
    """RESTRICTED with the value at a dotted path (`spec.containers.0.x`) set (None: removed)."""
    template = copy.deepcopy(RESTRICTED)
    *parents, last = path.split(".")
    node: Any = template
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[int(last) if last.isdigit() else last] = value
    return template


C0 = "spec.containers.0"
F0 = "job.template.spec.containers[0]"

HOSTILE = [
    ("service-account", changed("spec.serviceAccountName", "admin"), "job.template.spec.serviceAccountName"),
    ("service-account-old", changed("spec.serviceAccount", "admin"), "job.template.spec.serviceAccount"),
    (
        "automount-token",
        changed("spec.automountServiceAccountToken", True),
        "job.template.spec.automountServiceAccountToken",
    ),
    (
        "secret-volume",
        changed("spec.volumes", [{"name": "s", "secret": {"secretName": "db"}}]),
        "job.template.spec.volumes[0].secret",
    ),
    (
        "projected-volume",
        changed("spec.volumes", [{"name": "p", "projected": {"sources": []}}]),
        "job.template.spec.volumes[0].projected",
    ),
    (
        "host-path",
        changed("spec.volumes", [{"name": "root", "hostPath": {"path": "/"}}]),
        "job.template.spec.volumes[0].hostPath",
    ),
    (
        "nfs-volume",
        changed("spec.volumes", [{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
        "job.template.spec.volumes[0].nfs",
    ),
    (
        "env-secret",
        changed(f"{C0}.env", [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]),
        f"{F0}.env[0].valueFrom.secretKeyRef",
    ),
    (
        "envfrom-secret",
        changed(f"{C0}.envFrom", [{"secretRef": {"name": "db"}}]),
        f"{F0}.envFrom[0].secretRef",
    ),
    (
        "image-pull-secret",
        changed("spec.imagePullSecrets", [{"name": "reg"}]),
        "job.template.spec.imagePullSecrets",
    ),
    ("host-pid", changed("spec.hostPID", True), "job.template.spec.hostPID"),
    ("host-network", changed("spec.hostNetwork", True), "job.template.spec.hostNetwork"),
    ("host-ipc", changed("spec.hostIPC", True), "job.template.spec.hostIPC"),
    ("node-name", changed("spec.nodeName", "control-plane"), "job.template.spec.nodeName"),
    (
        "ephemeral-containers",
        changed("spec.ephemeralContainers", [CONTAINER]),
        "job.template.spec.ephemeralContainers",
    ),
    ("privileged", changed(f"{C0}.securityContext.privileged", True), f"{F0}.securityContext.privileged"),
    (
        "escalation-unset",
        changed(f"{C0}.securityContext.allowPrivilegeEscalation", None),
        f"{F0}.securityContext.allowPrivilegeEscalation",
    ),
    (
        "escalation-true",
        changed(f"{C0}.securityContext.allowPrivilegeEscalation", True),
        f"{F0}.securityContext.allowPrivilegeEscalation",
    ),
    (
        "capabilities-add",
        changed(f"{C0}.securityContext.capabilities.add", ["NET_ADMIN"]),
        f"{F0}.securityContext.capabilities.add",
    ),
    (
        "capabilities-not-dropped",
        changed(f"{C0}.securityContext.capabilities.drop", ["NET_RAW"]),
        f"{F0}.securityContext.capabilities.drop",
    ),
    (
        "proc-mount",
        changed(f"{C0}.securityContext.procMount", "Unmasked"),
        f"{F0}.securityContext.procMount",
    ),
    (
        "run-as-root-allowed",
        changed("spec.securityContext.runAsNonRoot", None),
        f"{F0}.securityContext.runAsNonRoot",
    ),
    (
        "container-run-as-root",
        changed(f"{C0}.securityContext.runAsNonRoot", False),
        f"{F0}.securityContext.runAsNonRoot",
    ),
    (
        "run-as-uid-0",
        changed("spec.securityContext.runAsUser", 0),
        "job.template.spec.securityContext.runAsUser",
    ),
    ("container-uid-0", changed(f"{C0}.securityContext.runAsUser", 0), f"{F0}.securityContext.runAsUser"),
    (
        "no-seccomp",
        changed("spec.securityContext.seccompProfile", None),
        f"{F0}.securityContext.seccompProfile",
    ),
    (
        "seccomp-unconfined",
        changed(f"{C0}.securityContext.seccompProfile", {"type": "Unconfined"}),
        f"{F0}.securityContext.seccompProfile.type",
    ),
    (
        "apparmor-unconfined",
        changed("spec.securityContext.appArmorProfile", {"type": "Unconfined"}),
        "job.template.spec.securityContext.appArmorProfile.type",
    ),
    (
        "apparmor-annotation",
        changed("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/pg": "unconfined"}),
        "job.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/pg]",
    ),
    (
        "selinux-type",
        changed("spec.securityContext.seLinuxOptions", {"type": "spc_t"}),
        "job.template.spec.securityContext.seLinuxOptions.type",
    ),
    (
        "selinux-user",
        changed(f"{C0}.securityContext.seLinuxOptions", {"user": "system_u"}),
        f"{F0}.securityContext.seLinuxOptions.user",
    ),
    (
        "sysctls",
        changed("spec.securityContext.sysctls", [{"name": "kernel.shm_rmid_forced", "value": "1"}]),
        "job.template.spec.securityContext.sysctls",
    ),
    (
        "host-process",
        changed("spec.securityContext.windowsOptions", {"hostProcess": True}),
        "job.template.spec.securityContext.windowsOptions.hostProcess",
    ),
    ("host-port", changed(f"{C0}.ports", [{"containerPort": 80, "hostPort": 80}]), f"{F0}.ports[0].hostPort"),
    ("template-labels", changed("metadata.labels", {"app": "web"}), "job.template.metadata.labels"),
    ("template-name", changed("metadata.name", "x"), "job.template.metadata.name"),
    ("no-limits", changed(f"{C0}.resources", None), f"{F0}.resources.limits.cpu"),
    ("no-memory-limit", changed(f"{C0}.resources.limits.memory", None), f"{F0}.resources.limits.memory"),
    ("cpu-above-cap", changed(f"{C0}.resources.limits.cpu", "2"), f"{F0}.resources.limits.cpu"),
    ("memory-above-cap", changed(f"{C0}.resources.limits.memory", "1Gi"), f"{F0}.resources.limits.memory"),
    ("limit-not-a-quantity", changed(f"{C0}.resources.limits.cpu", "lots"), f"{F0}.resources.limits.cpu"),
    (
        "init-container-unchecked",
        changed("spec.initContainers", [{"name": "init", "image": "busybox"}]),
        "job.template.spec.initContainers[0].securityContext.allowPrivilegeEscalation",
    ),
    ("restart-always", changed("spec.restartPolicy", "Always"), "job.template.spec.restartPolicy"),
    ("no-containers", changed("spec.containers", []), "job.template.spec.containers"),
]


def test_a_restricted_template_within_the_caps_passes() -> None:
    assert jobpolicy.problems(RESTRICTED, POLICY) == []
    container_level = changed("spec.securityContext", None)
    container_level["spec"]["containers"][0]["securityContext"].update(
        {"runAsNonRoot": True, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}
    )
    assert jobpolicy.problems(container_level, POLICY) == []
    at_cap = changed(f"{C0}.resources.limits", {"cpu": "1000m", "memory": "512Mi"})
    assert jobpolicy.problems(at_cap, POLICY) == []
    fine_volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]
    assert jobpolicy.problems(changed("spec.volumes", fine_volumes), POLICY) == []
    assert jobpolicy.problems(changed("metadata.annotations", {"note": "x"}), POLICY) == []


@pytest.mark.parametrize(
    ("template", "field"), [(t, f) for _, t, f in HOSTILE], ids=[i for i, _, _ in HOSTILE]
)
def test_a_hostile_template_is_refused_with_the_field_named(template: dict[str, Any], field: str) -> None:
    found = jobpolicy.problems(template, POLICY)
    assert found, "refused"
    assert any(p.startswith(f"{field}: ") for p in found), found


def test_every_problem_names_a_field_under_the_template() -> None:
    for _, template, _ in HOSTILE:
        for problem in jobpolicy.problems(template, POLICY):
            assert problem.startswith("job.template"), problem
            assert ": " in problem, problem


def test_the_config_allows_what_it_names_and_nothing_else() -> None:
    lenient = JobsConfig(serviceAccounts=("db-check",), allowSecrets=True, maxCpu="2", maxMemory="1Gi")
    for path, value in [
        ("spec.serviceAccountName", "db-check"),
        ("spec.volumes", [{"name": "s", "secret": {"secretName": "db"}}]),
        ("spec.volumes", [{"name": "p", "projected": {"sources": []}}]),
        (f"{C0}.envFrom", [{"secretRef": {"name": "db"}}]),
        (f"{C0}.env", [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]),
        (f"{C0}.resources.limits", {"cpu": "2", "memory": "1Gi"}),
    ]:
        assert jobpolicy.problems(changed(path, value), lenient) == [], path
        assert jobpolicy.problems(changed(path, value), POLICY) != [], path
    assert jobpolicy.problems(changed("spec.serviceAccountName", "admin"), lenient) == [
        "job.template.spec.serviceAccountName: ServiceAccount 'admin' is not allowed by the operator's "
        "config (jobs.serviceAccounts: db-check)"
    ]
    # allowSecrets never allows what the restricted profile refuses
    assert jobpolicy.problems(changed("spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}]), lenient)


def test_not_a_template_is_refused() -> None:
    assert jobpolicy.problems("x", POLICY) == ["job.template: must be a pod template (metadata, spec)"]
    assert jobpolicy.problems({"spec": {**RESTRICTED["spec"]}, "kind": "Pod"}, POLICY) == [
        "job.template.kind: unknown field of a pod template"
    ]


def test_the_operators_pod_carries_its_own_labels_and_no_token() -> None:
    template = changed("metadata.annotations", {"note": "kept"})
    created = jobpolicy.pod_template(template, {"incident-operator.dev/incident": "db-1"})
    assert created["metadata"] == {
        "annotations": {"note": "kept"},
        "labels": {"incident-operator.dev/incident": "db-1"},
    }
    assert created["spec"]["automountServiceAccountToken"] is False
    assert created["spec"]["restartPolicy"] == "Never"
    assert "metadata" not in RESTRICTED  # the Playbook's template is not changed
    assert jobpolicy.pod_template(changed("spec.restartPolicy", "OnFailure"), {})["spec"][
        "restartPolicy"
    ] == ("OnFailure")


def job(name: str, state: str | None = None) -> dict[str, Any]:
    conditions = [{"type": state, "status": "True"}] if state else []
    return {"metadata": {"name": name}, "status": {"conditions": conditions}}


def test_a_job_waits_for_a_slot_when_the_namespace_runs_its_cap() -> None:
    three = [job("a"), job("b"), {"metadata": {"name": "c"}}]  # c: just created, no status yet
    assert jobpolicy.slot(three, "d", 3) == (False, 3)
    assert jobpolicy.slot([*three[:2], job("c", "Complete")], "d", 3) == (True, 2)
    assert jobpolicy.slot([*three[:2], job("c", "Failed")], "d", 3) == (True, 2)
    assert jobpolicy.slot([], "d", 1) == (True, 0)
    # its own Job exists already (a re-run after a crash): never queued behind itself
    assert jobpolicy.slot([*three, job("d")], "d", 3) == (True, 4)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        ("512Mi", Decimal(512 * 1024**2)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("2E", Decimal(2 * 10**18)),
        ("100k", Decimal(100_000)),
    ],
)
def test_quantities_parse_as_kubernetes_reads_them(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1", "1.5.2", "1Mb", "Mi"])
def test_what_is_not_a_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a resource quantity"):
        parse_quantity(text)


def test_the_jobs_config_has_safe_defaults_and_refuses_bad_values() -> None:
    jobs = FileConfig().jobs
    assert (jobs.serviceAccounts, jobs.allowSecrets, jobs.maxConcurrentPerNamespace) == ((), False, 3)
    assert (jobs.cpu_cap, jobs.memory_cap) == (Decimal(1), Decimal(512 * 1024**2))
    for bad in (
        {"maxCpu": "lots"},
        {"maxMemory": "0"},
        {"maxConcurrentPerNamespace": 0},
        {"serviceAccounts": ["A_"]},
    ):
        with pytest.raises(ValidationError):
            FileConfig.model_validate({"jobs": bad})


def _with(template: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`changed`, but a None value is kept as an explicit null (what a YAML `~` sends)."""
    template = copy.deepcopy(template)
    *parents, last = path.split(".")
    node: Any = template
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(last) if last.isdigit() else last] = value
    return template


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (_with(RESTRICTED, "spec.securityContext.seccompProfile", None), "seccompProfile: must be"),
        (
            _with(RESTRICTED, "spec.securityContext.seccompProfile", "RuntimeDefault"),
            "seccompProfile: must be",
        ),
        (_with(RESTRICTED, "spec.securityContext.runAsNonRoot", "yes"), "runAsNonRoot: must be true"),
        (_with(RESTRICTED, f"{C0}.securityContext.capabilities", ["NET_ADMIN"]), "malformed pod template"),
        (_with(RESTRICTED, f"{C0}.env", [{"name": "X", "valueFrom": "x"}]), "malformed pod template"),
        (_with(RESTRICTED, f"{C0}.resources.limits.memory", "1e999999999999"), "resources.limits.memory"),
        (
            _with(RESTRICTED, "spec.terminationGracePeriodSeconds", 86400),
            "terminationGracePeriodSeconds: at most 30",
        ),
    ],
    ids=[
        "seccomp-null",
        "seccomp-not-an-object",
        "run-as-non-root-a-string",
        "caps-a-list",
        "env-from-a-string",
        "huge-quantity",
        "long-grace",
    ],
)
def test_a_malformed_or_null_field_is_refused_never_a_crash(template: dict[str, Any], says: str) -> None:
    found = jobpolicy.problems(template, POLICY)
    assert found, "refused"
    assert any(says in problem for problem in found), found
