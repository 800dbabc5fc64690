"""The Helm chart installed with real Helm on a local cluster of its own: a wrong value refused by
`helm install` (nothing of the release created); `helm install` (the Deployment available, as far
as kwok simulates pods); the operator process from the working tree running as the chart's
ServiceAccount (a TokenRequest token, never the admin's) remediates in a namespace the values opt
in, through the chart's RBAC, and stalls Forbidden in one they do not; `helm upgrade` with changed
values changes the objects (replicas, the config file and the pods' checksum, a new opt-in that a
stalled incident then proceeds on); `helm uninstall` keeps the CRDs and the Incidents.

A cluster of its own: the chart's cluster-scoped objects have the same fixed names as those of
`kubectl apply -k manifests/install` (tests/e2e/test_install.py's cluster). The tests run in order.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import (
    LOOPBACK_FOR_EVERY_NAMESPACE,
    ROOT,
    Cluster,
    OperatorProcess,
    bin_dir,
    create_namespace,
    ensure_secret,
    helm_bin,
    kubectl_as,
    start_local_cluster,
    stop_local_cluster,
    token_kubeconfig,
)
from tests.e2e.engine_helpers import Scenario, deploy_ref
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

CHART = ROOT / "charts" / "incident-operator"
NS = "incident-operator"
RELEASE = "incident-operator"
SA_USER = f"system:serviceaccount:{NS}:incident-operator"
OPTED = "helm-shop"  # opted in to remediation by the install's values
CLOSED = "helm-closed"  # never opted in
LATER = "helm-later"  # opted in by the upgrade
GROUP, VERSION = "incident-operator.dev", "v1alpha1"
PLURALS = tuple(  # every kind crds/ holds, read from the file names crdgen writes
    sorted(p.name.removeprefix(f"{GROUP}_").removesuffix(".yaml") for p in (ROOT / "crds").glob("*.yaml"))
)


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(helm_bin() / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=400,
    )
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def deployment(cluster: Cluster) -> client.V1Deployment:
    return client.AppsV1Api(cluster.api).read_namespaced_deployment("incident-operator", NS)


def available(cluster: Cluster, replicas: int) -> bool:
    got = deployment(cluster)
    conditions = {c.type: c.status for c in got.status.conditions or []}
    return conditions.get("Available") == "True" and got.status.ready_replicas == replicas


def shipped_config(cluster: Cluster) -> dict[str, Any]:
    cm = client.CoreV1Api(cluster.api).read_namespaced_config_map("incident-operator-config", NS)
    loaded: dict[str, Any] = yaml.safe_load(cm.data["config.yaml"])
    return loaded


@pytest.fixture(scope="module")
def helm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("helm-cluster") / "data"
    kubeconfig = start_local_cluster(data_dir)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(kubeconfig=kubeconfig, kubectl=bin_dir() / "kubectl", api=api)
    finally:
        api.close()
        stop_local_cluster(data_dir)


def test_a_wrong_value_fails_helm_install_and_installs_nothing(helm_cluster: Cluster) -> None:
    done = helm(
        helm_cluster,
        *("install", RELEASE, str(CHART), "-n", NS, "--create-namespace"),
        *("--set", "image.pullPolicy=Sometimes"),
        check=False,
    )
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert "pullPolicy" in done.stderr
    assert helm(helm_cluster, "list", "-A", "-q").stdout.strip() == ""
    namespaces = {n.metadata.name for n in client.CoreV1Api(helm_cluster.api).list_namespace().items}
    assert NS not in namespaces  # nothing of the release was created, not even its namespace
    roles = client.RbacAuthorizationV1Api(helm_cluster.api).list_cluster_role().items
    assert not [r for r in roles if r.metadata.name.startswith("incident-operator")]
    # Helm installs the chart's crds/ before it checks the values (pkg/action/install.go), so the
    # CRDs may be there already: harmless, and what docs/operations/install.md says.
    crds = client.ApiextensionsV1Api(helm_cluster.api).list_custom_resource_definition().items
    assert {c.metadata.name for c in crds if c.spec.group == GROUP} <= {f"{p}.{GROUP}" for p in PLURALS}


@pytest.fixture(scope="module")
def release(helm_cluster: Cluster) -> Cluster:
    """`helm install` as docs/operations/install.md says, opting OPTED in. The namespaces an opt-in
    names exist first (its RoleBinding lives there)."""
    for namespace in (OPTED, CLOSED, LATER):
        create_namespace(helm_cluster, namespace, opt_in=False)
    installed = helm(
        helm_cluster,
        *("install", RELEASE, str(CHART), "-n", NS, "--create-namespace"),
        *("--set", f"optIn.remediation={{{OPTED}}}", "--wait", "--timeout", "180s"),
    )
    # NOTES.txt: what to do next, with this release's facts.
    assert f"is installed in namespace {NS} (2 replica(s), leader election on)" in installed.stdout
    assert "create secret generic alert-token" in installed.stdout
    assert f"Namespaces that opted in to remediation: {OPTED}." in installed.stdout
    return helm_cluster


def test_helm_install_makes_the_deployment_available_and_kubectl_apply_f_crds_works(release: Cluster) -> None:
    wait_until(lambda: available(release, 2), timeout=120, what="the chart's Deployment Available, 2 ready")
    got = deployment(release)
    assert got.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    assert got.spec.template.spec.service_account_name == "incident-operator"
    status = helm(release, "status", RELEASE, "-n", NS, "-o", "json").stdout
    assert '"status":"deployed"' in status.replace(" ", "")
    ext = client.ApiextensionsV1Api(release.api)
    for plural in PLURALS:
        crd = ext.read_custom_resource_definition(f"{plural}.{GROUP}")
        assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    # crds/ holds only CRDs: the habit `kubectl apply -f crds/` works (and -k still does).
    for flag in ("-f", "-k"):
        applied = release.run_kubectl("apply", flag, str(ROOT / "crds"), "--dry-run=server", "-o", "name")
        assert sorted(applied.stdout.split()) == sorted(
            f"customresourcedefinition.apiextensions.k8s.io/{p}.{GROUP}" for p in PLURALS
        ), applied.stderr


@pytest.fixture(scope="module")
def operator(release: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator from the working tree as the chart's ServiceAccount, with the chart's config."""
    kubeconfig = token_kubeconfig(
        release, "incident-operator", NS, tmp_path_factory.mktemp("sa") / "kubeconfig"
    )
    ensure_secret(release, NS, "alert-token", {"token": "helm-e2e-token"})
    shipped = shipped_config(release)
    settings = {
        **shipped,
        "leaderElection": {**shipped["leaderElection"], "namespace": NS},
        "access": {"recheckSeconds": 2},
        "egress": LOOPBACK_FOR_EVERY_NAMESPACE,
    }
    options = (f"--alert-token-secret={NS}/alert-token", "--leader-elect", "--allow-egress=127.0.0.0/8")
    process = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("helm-operator"), settings, options)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def scale_scenario(cluster: Cluster, operator: OperatorProcess, namespace: str, incident: str) -> Scenario:
    s = Scenario(cluster, operator, namespace)
    s.deployment("web", 1)
    s.playbook("scale-web", [{"name": "scale", "scale": {"target": deploy_ref("web"), "replicas": 2}}])
    s.incident(incident, playbookRef={"name": "scale-web"}, targets=[deploy_ref("web")])
    return s


def test_the_operator_as_the_charts_service_account_remediates_only_where_the_values_opt_in(
    release: Cluster, operator: OperatorProcess
) -> None:
    whoami = kubectl_as(
        release, operator.kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
    )
    assert whoami.stdout == SA_USER  # really the chart's ServiceAccount, not the admin

    opted = scale_scenario(release, operator, OPTED, "helm-opted")
    closed = scale_scenario(release, operator, CLOSED, "helm-closed")
    opted.wait_phase("helm-opted", "Resolved")
    assert opted.steps("helm-opted")["scale"]["state"] == "Succeeded"
    assert opted.apps.read_namespaced_deployment("web", OPTED).spec.replicas == 2

    stalled = closed.wait_condition("helm-closed", "Stalled", reason="Forbidden")
    assert "RoleBinding incident-operator-remediator is missing" in stalled["message"]
    assert SA_USER in stalled["message"]
    assert "playbook" not in closed.status("helm-closed")  # nothing attempted
    assert closed.apps.read_namespaced_deployment("web", CLOSED).spec.replicas == 1


def test_helm_upgrade_with_changed_values_changes_the_objects(
    release: Cluster, operator: OperatorProcess
) -> None:
    later = scale_scenario(release, operator, LATER, "helm-later")
    later.wait_condition("helm-later", "Stalled", reason="Forbidden")
    before = deployment(release).spec.template.metadata.annotations["checksum/config"]
    assert shipped_config(release)["access"]["recheckSeconds"] == 30

    # The documented upgrade: CRDs first (Helm never upgrades crds/), then the release.
    crds = release.run_kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"), check=False
    )
    assert crds.returncode == 0, crds.stderr
    helm(
        release,
        *("upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values"),
        *("--set", "replicaCount=3", "--set", "config.access.recheckSeconds=45"),
        *("--set", f"optIn.remediation={{{OPTED},{LATER}}}", "--wait", "--timeout", "180s"),
    )
    assert deployment(release).spec.replicas == 3
    wait_until(lambda: available(release, 3), timeout=120, what="3 ready replicas after the upgrade")
    config_after = shipped_config(release)
    assert config_after["access"]["recheckSeconds"] == 45
    assert config_after["responseTargets"]["P1"] == "PT15M"  # the rest of the config kept
    assert deployment(release).spec.template.metadata.annotations["checksum/config"] != before
    binding = client.RbacAuthorizationV1Api(release.api).read_namespaced_role_binding(
        "incident-operator-remediator", LATER
    )
    assert binding.subjects[0].namespace == NS
    # The new opt-in takes effect with no restart: the stalled incident proceeds.
    later.wait_phase("helm-later", "Resolved")
    assert later.apps.read_namespaced_deployment("web", LATER).spec.replicas == 2
    history = helm(release, "history", RELEASE, "-n", NS, "-o", "yaml").stdout
    assert [r["revision"] for r in yaml.safe_load(history)] == [1, 2]


def test_helm_uninstall_keeps_the_crds_and_the_incidents(release: Cluster, operator: OperatorProcess) -> None:
    operator.stop()  # its RBAC goes with the release
    helm(release, "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "120s")

    def gone(read: Any, *args: str) -> bool:
        try:
            read(*args)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    apps, rbac = client.AppsV1Api(release.api), client.RbacAuthorizationV1Api(release.api)
    assert gone(apps.read_namespaced_deployment, "incident-operator", NS)
    assert gone(rbac.read_cluster_role, "incident-operator")
    assert gone(rbac.read_namespaced_role_binding, "incident-operator-remediator", OPTED)
    assert gone(
        client.AdmissionregistrationV1Api(release.api).read_validating_admission_policy,
        "incident-operator-approvals",
    )
    ext = client.ApiextensionsV1Api(release.api)
    for plural in PLURALS:
        assert ext.read_custom_resource_definition(f"{plural}.{GROUP}").metadata.deletion_timestamp is None
    custom = client.CustomObjectsApi(release.api)
    for namespace, name in ((OPTED, "helm-opted"), (CLOSED, "helm-closed"), (LATER, "helm-later")):
        kept = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", name)
        assert kept["metadata"].get("deletionTimestamp") is None
    assert (
        custom.get_namespaced_custom_object(GROUP, VERSION, OPTED, "incidents", "helm-opted")["status"][
            "phase"
        ]
        == "Resolved"
    )
    assert helm(release, "list", "-A", "-q").stdout.strip() == ""
    assert Path(CHART / "crds").is_dir()
