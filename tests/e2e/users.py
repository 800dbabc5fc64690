"""Real users of the installed cluster (ServiceAccounts with TokenRequest tokens) and what they send:
the helpers and the API server's message fragments shared by `test_safety.py` and the admission rows
of `test_bad_inputs.py` (manifests/install/admission.yaml says what each policy refuses)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.conftest import INSTALL_NS, Cluster, kubectl_as

ALERT_STATUS = "incident-operator.dev/alert-status"  # api/keys.py ANNOTATION_STATUS
FINGERPRINT = "incident-operator.dev/fingerprint"  # a label only the alert intake sets
OPERATOR_ONLY = f"only the operator ({INSTALL_NS}/incident-operator-admission, key operators) sets"
NEEDS_ASSIGN = "naming someone other than yourself needs the verb assign on incidents"
NEEDS_GATE = "needs the verb gate on playbooks (ClusterRole incident-operator-playbook-gatekeeper)"


def bind_editor(cluster: Cluster, namespace: str, *users: str, users_namespace: str = "people") -> None:
    """A plain namespace editor of incidents and playbooks: every standard verb, no custom one.
    `users` are ServiceAccounts of `users_namespace`."""
    cluster.run_kubectl(
        "create",
        "role",
        "editor",
        "-n",
        namespace,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=incidents.incident-operator.dev,playbooks.incident-operator.dev",
    )
    for user in users:
        cluster.run_kubectl(
            "create",
            "rolebinding",
            f"{user}-edits",
            "-n",
            namespace,
            "--role=editor",
            f"--serviceaccount={users_namespace}:{user}",
        )


def create_as(
    cluster: Cluster,
    kubeconfig: Path,
    namespace: str,
    kind: str,
    *,
    name: str,
    spec: dict[str, Any],
    **meta: Any,
) -> subprocess.CompletedProcess[str]:
    """`kubectl create` of an Incident or Playbook as the user of `kubeconfig`; `meta` goes into
    metadata (labels, annotations)."""
    body = {
        "apiVersion": "incident-operator.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "spec": spec,
    }
    return subprocess.run(
        [str(cluster.kubectl), f"--kubeconfig={kubeconfig}", "create", "-n", namespace, "-f", "-"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def merge_patch(
    cluster: Cluster, kubeconfig: Path, namespace: str, resource: str, name: str, *, body: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """`kubectl patch --type=merge` as the user of `kubeconfig`."""
    return kubectl_as(
        cluster, kubeconfig, "patch", resource, name, "-n", namespace, "--type=merge", "-p", json.dumps(body)
    )


def patch_spec(
    cluster: Cluster, kubeconfig: Path, namespace: str, name: str, spec: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """A merge patch of an Incident's spec as the user of `kubeconfig`."""
    return merge_patch(cluster, kubeconfig, namespace, "incident", name, body={"spec": spec})


def refused(done: subprocess.CompletedProcess[str], *says: str) -> None:
    assert done.returncode != 0, done.stdout
    for text in says:
        assert text in done.stderr, done.stderr


def admitted(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
