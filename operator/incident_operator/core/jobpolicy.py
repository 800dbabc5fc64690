"""What a Playbook's `job` step may run, and when a Job of the operator may start. Pure.

A `job` step creates a Job from a pod template the Playbook's author wrote, with the operator's
rights. `problems` holds that template to the Pod Security Standards' *restricted* profile and to
the operator's `jobs:` config (`settings.config.JobsConfig`); every problem names the field
(`job.template.spec.containers[0].securityContext.privileged: ...`). The list of checks is
documented in docs/operations/security.md ("Jobs"); keep the two in step.

`pod_template` is the template as the operator creates it (its own labels, no token mounted);
`slot` says whether a new Job may start under `maxConcurrentPerNamespace`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from incident_operator.settings.config import JobsConfig, parse_quantity

VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
"""The volume types the restricted profile allows (secret and projected only with allowSecrets)."""
SECRET_VOLUME_TYPES = frozenset({"secret", "projected"})
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
CONTAINER_KINDS = ("initContainers", "containers")
POD_FIELDS = frozenset({"metadata", "spec"})
MAX_GRACE_S = 30
"""The longest termination grace a Job's pod may ask for (Kubernetes' default)."""


def problems(template: Any, policy: JobsConfig, path: str = "job.template") -> list[str]:
    """Why the operator will not run this pod template; empty when it will. A template too
    malformed to judge (the schema keeps it free-form) is refused, never a crash."""
    try:
        return _problems(template, policy, path)
    except (AttributeError, TypeError, ValueError, ArithmeticError, KeyError, IndexError) as exc:
        return [f"{path}: malformed pod template ({type(exc).__name__}): a field has the wrong type"]


def _problems(template: Any, policy: JobsConfig, path: str) -> list[str]:
    if not isinstance(template, Mapping):
        return [f"{path}: must be a pod template (metadata, spec)"]
    found = [f"{path}.{key}: unknown field of a pod template" for key in template if key not in POD_FIELDS]
    found += _metadata(template.get("metadata"), f"{path}.metadata")
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        return [*found, f"{path}.spec: needs a pod spec"]
    return found + _spec(spec, policy, f"{path}.spec")


def _metadata(meta: Any, path: str) -> list[str]:
    if meta is None:
        return []
    if not isinstance(meta, Mapping):
        return [f"{path}: must be an object"]
    found = []
    for key, value in meta.items():
        if key == "labels":
            if value:
                found.append(f"{path}.labels: pod labels are the operator's own; a template may set none")
        elif key != "annotations":
            found.append(f"{path}.{key}: not allowed (a template's metadata may hold annotations only)")
    for key, value in dict(meta.get("annotations") or {}).items():
        if str(key).startswith(APPARMOR_ANNOTATION) and not _apparmor_annotation_ok(value):
            found.append(
                f"{path}.annotations[{key}]: AppArmor must be runtime/default or localhost/<profile>"
            )
    return found


def _apparmor_annotation_ok(value: Any) -> bool:
    return value == "runtime/default" or (isinstance(value, str) and value.startswith("localhost/"))


def _spec(spec: Mapping[str, Any], policy: JobsConfig, path: str) -> list[str]:
    found: list[str] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        found.append(f"{path}.containers: needs at least one container")
    if spec.get("restartPolicy", "Never") not in ("Never", "OnFailure"):
        found.append(f"{path}.restartPolicy: must be Never or OnFailure for a Job")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(f"{path}.{key}: host namespaces are not allowed")
    if spec.get("nodeName"):
        found.append(f"{path}.nodeName: not allowed (the scheduler places a Job's pod)")
    if spec.get("ephemeralContainers"):
        found.append(f"{path}.ephemeralContainers: not allowed")
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or grace > MAX_GRACE_S):
        found.append(
            f"{path}.terminationGracePeriodSeconds: at most {MAX_GRACE_S} (a timed-out attempt's pod "
            "must be gone soon after its deadline)"
        )
    for key in ("serviceAccountName", "serviceAccount"):
        account = spec.get(key)
        if account and account not in policy.serviceAccounts:
            allowed = ", ".join(policy.serviceAccounts) or "none"
            found.append(
                f"{path}.{key}: ServiceAccount {account!r} is not allowed by the operator's config "
                f"(jobs.serviceAccounts: {allowed})"
            )
    if spec.get("automountServiceAccountToken") is True:
        found.append(
            f"{path}.automountServiceAccountToken: must be false or absent (the operator sets false)"
        )
    if spec.get("imagePullSecrets") and not policy.allowSecrets:
        found.append(f"{path}.imagePullSecrets: Secrets are not allowed (jobs.allowSecrets)")
    pod_sc = spec.get("securityContext") or {}
    if not isinstance(pod_sc, Mapping):
        pod_sc = {}
    found += _pod_security(pod_sc, f"{path}.securityContext")
    found += _volumes(spec.get("volumes"), policy, f"{path}.volumes")
    for kind in CONTAINER_KINDS:
        listed = spec.get(kind) or []
        if not isinstance(listed, list):
            found.append(f"{path}.{kind}: must be a list")
            continue
        for i, container in enumerate(listed):
            found += _container(container, pod_sc, policy, f"{path}.{kind}[{i}]")
    return found


def _pod_security(sc: Mapping[str, Any], path: str) -> list[str]:
    found = _common_security(sc, path)
    if sc.get("sysctls"):
        found.append(f"{path}.sysctls: not allowed")
    return found


def _common_security(sc: Mapping[str, Any], path: str) -> list[str]:
    """The rules a pod's and a container's securityContext share."""
    found = []
    if sc.get("runAsNonRoot") is False:
        found.append(f"{path}.runAsNonRoot: must be true")
    if sc.get("runAsUser") == 0:
        found.append(f"{path}.runAsUser: 0 (root) is not allowed")
    seccomp = sc.get("seccompProfile")
    if seccomp is not None and not isinstance(seccomp, Mapping):
        found.append(f"{path}.seccompProfile: must be an object with a type")
    elif isinstance(seccomp, Mapping) and seccomp.get("type") not in SECCOMP_TYPES:
        found.append(f"{path}.seccompProfile.type: must be RuntimeDefault or Localhost")
    apparmor = sc.get("appArmorProfile")
    if isinstance(apparmor, Mapping) and apparmor.get("type") not in APPARMOR_TYPES:
        found.append(f"{path}.appArmorProfile.type: must be RuntimeDefault or Localhost")
    selinux = sc.get("seLinuxOptions")
    if isinstance(selinux, Mapping):
        if selinux.get("type", "") not in SELINUX_TYPES:
            found.append(
                f"{path}.seLinuxOptions.type: must be one of {', '.join(sorted(SELINUX_TYPES - {''}))}"
            )
        for key in ("user", "role"):
            if selinux.get(key):
                found.append(f"{path}.seLinuxOptions.{key}: not allowed")
    windows = sc.get("windowsOptions")
    if isinstance(windows, Mapping) and windows.get("hostProcess"):
        found.append(f"{path}.windowsOptions.hostProcess: not allowed")
    return found


def _volumes(volumes: Any, policy: JobsConfig, path: str) -> list[str]:
    if not volumes:
        return []
    if not isinstance(volumes, list):
        return [f"{path}: must be a list"]
    found = []
    for i, volume in enumerate(volumes):
        if not isinstance(volume, Mapping):
            found.append(f"{path}[{i}]: must be a volume")
            continue
        for kind in (k for k in volume if k != "name"):
            where = f"{path}[{i}].{kind}"
            if kind == "hostPath":
                found.append(f"{where}: hostPath volumes are not allowed")
            elif kind not in VOLUME_TYPES:
                found.append(f"{where}: volume type not allowed (allowed: {', '.join(sorted(VOLUME_TYPES))})")
            elif kind in SECRET_VOLUME_TYPES and not policy.allowSecrets:
                found.append(f"{where}: {kind} volumes are not allowed (jobs.allowSecrets)")
    return found


def _container(container: Any, pod_sc: Mapping[str, Any], policy: JobsConfig, path: str) -> list[str]:
    if not isinstance(container, Mapping):
        return [f"{path}: must be a container"]
    found = []
    if not container.get("name") or not container.get("image"):
        found.append(f"{path}: needs a name and an image")
    sc = container.get("securityContext") or {}
    if not isinstance(sc, Mapping):
        sc = {}
    where = f"{path}.securityContext"
    found += _common_security(sc, where)
    if sc.get("privileged"):
        found.append(f"{where}.privileged: not allowed")
    if sc.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where}.allowPrivilegeEscalation: must be false")
    caps = sc.get("capabilities") or {}
    if caps.get("add"):
        found.append(f"{where}.capabilities.add: adding capabilities is not allowed")
    if "ALL" not in (caps.get("drop") or []):
        found.append(f"{where}.capabilities.drop: must include ALL")
    if sc.get("procMount", "Default") != "Default":
        found.append(f"{where}.procMount: must be Default")
    own = sc.get("runAsNonRoot")
    if (own if own is not None else pod_sc.get("runAsNonRoot")) is not True:
        found.append(f"{where}.runAsNonRoot: must be true (here or in the pod's securityContext)")
    if sc.get("seccompProfile") is None and pod_sc.get("seccompProfile") is None:  # null is absent
        found.append(
            f"{where}.seccompProfile: must be RuntimeDefault or Localhost "
            "(here or in the pod's securityContext)"
        )
    for j, port in enumerate(container.get("ports") or []):
        if isinstance(port, Mapping) and port.get("hostPort"):
            found.append(f"{path}.ports[{j}].hostPort: host ports are not allowed")
    if not policy.allowSecrets:
        for j, env in enumerate(container.get("env") or []):
            if isinstance(env, Mapping) and (env.get("valueFrom") or {}).get("secretKeyRef"):
                found.append(
                    f"{path}.env[{j}].valueFrom.secretKeyRef: Secrets are not allowed (jobs.allowSecrets)"
                )
        for j, source in enumerate(container.get("envFrom") or []):
            if isinstance(source, Mapping) and source.get("secretRef"):
                found.append(f"{path}.envFrom[{j}].secretRef: Secrets are not allowed (jobs.allowSecrets)")
    return found + _limits(container.get("resources"), policy, f"{path}.resources.limits")


def _limits(resources: Any, policy: JobsConfig, path: str) -> list[str]:
    limits = resources.get("limits") if isinstance(resources, Mapping) else None
    limits = limits if isinstance(limits, Mapping) else {}
    found = []
    for key, cap, shown in (
        ("cpu", policy.cpu_cap, policy.maxCpu),
        ("memory", policy.memory_cap, policy.maxMemory),
    ):
        if key not in limits:
            found.append(f"{path}.{key}: required (at most {shown})")
            continue
        try:
            value = parse_quantity(limits[key])
        except ValueError as exc:
            found.append(f"{path}.{key}: {exc}")
            continue
        if value > cap:
            found.append(
                f"{path}.{key}: {limits[key]} is above the operator's cap {shown} (jobs.max{key.title()})"
            )
    return found


def pod_template(template: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """The pod template the operator creates: the author's, with the operator's labels only,
    restartPolicy Never unless given, and no ServiceAccount token unless the template said false."""
    created = copy.deepcopy(dict(template))
    meta = dict(created.get("metadata") or {})
    meta["labels"] = dict(labels)
    created["metadata"] = meta
    spec = created.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Never")
    spec["automountServiceAccountToken"] = False  # true is refused by `problems`
    return created


def finished(job: Mapping[str, Any]) -> bool:
    """A Job (as a dict) whose Complete or Failed condition is True."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def running(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The names of the Jobs not finished yet (a Job just created, without status, counts)."""
    return sorted(str((j.get("metadata") or {}).get("name")) for j in jobs if not finished(j))


def slot(jobs: Iterable[Mapping[str, Any]], name: str, cap: int) -> tuple[bool, int]:
    """May Job `name` be created now, given the operator's Jobs of the namespace? And how many
    run. Its own Job existing already (a re-run after a crash) is never queued."""
    listed = list(jobs)
    active = running(listed)
    if any((j.get("metadata") or {}).get("name") == name for j in listed):
        return True, len(active)
    return len(active) < cap, len(active)
