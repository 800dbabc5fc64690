"""The Helm chart (charts/incident-operator), checked offline with real Helm (`localcluster.py
build-helm`): `helm lint --strict`; with default values it renders the same objects as
manifests/install.yaml (so the two cannot drift); its CRDs and monitoring files are copies of
crds/ and manifests/monitoring/; values.schema.json and the chart's own checks refuse wrong values
with a message naming them; a render with every optional part on lints and holds what it should.

No cluster: these run in a second or two. tests/e2e/test_helm.py installs the chart on one.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from incident_operator import __version__
from tests.e2e.conftest import ROOT, helm_bin

pytestmark = pytest.mark.e2e

CHART = ROOT / "charts" / "incident-operator"
NS = "incident-operator"
HELM_ONLY_LABELS = frozenset(
    {
        "helm.sh/chart",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
    }
)
"""The labels Helm charts carry and kustomize's install does not: the only labels allowed to differ."""

Key = tuple[str, str, str, str]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin() / "helm"), *args], capture_output=True, text=True, check=False)


def render(*args: str, namespace: str = NS) -> list[dict[str, Any]]:
    """`helm template` (with the CRDs, as `helm install` creates them) parsed into objects."""
    done = helm("template", "incident-operator", str(CHART), "-n", namespace, "--include-crds", *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def refused(*args: str) -> str:
    """stderr of a `helm template` that must fail."""
    done = helm("template", "incident-operator", str(CHART), "-n", NS, *args)
    assert done.returncode != 0, f"helm template {' '.join(args)} rendered:\n{done.stdout[:2000]}"
    return done.stderr


def key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    keyed = {key(o): o for o in objects}
    assert len(keyed) == len(objects), "two objects with the same apiVersion, kind, namespace and name"
    return keyed


def install_yaml() -> dict[Key, dict[str, Any]]:
    text = (ROOT / "manifests" / "install.yaml").read_text()
    return by_key([doc for doc in yaml.safe_load_all(text) if doc])


def _single_newlines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _single_newlines(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_single_newlines(v) for v in value]
    return re.sub(r"\n\n+", "\n", value) if isinstance(value, str) else value


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with exactly the differences the chart is allowed, taken out:
    - the Helm-only labels (HELM_ONLY_LABELS) on an object's own metadata;
    - on CRDs, the label app.kubernetes.io/part-of: kustomize adds it, Helm never templates crds/
      (the chart's CRDs are byte copies of crds/, checked below);
    - the Deployment's pod annotation checksum/config (restarts the pods when the config changes);
    - the config file in ConfigMap incident-operator-config compared as YAML, not as text (the
      chart renders values.config; the install's file has comments);
    - in ValidatingAdmissionPolicies, runs of blank lines inside CEL strings: kustomize's
      re-serialisation of a folded scalar adds a blank line before a more-indented line, which CEL
      reads as the same whitespace.
    Nothing else may differ."""
    obj = copy.deepcopy(obj)
    labels = obj["metadata"].get("labels", {})
    for label in HELM_ONLY_LABELS:
        labels.pop(label, None)
    if obj["kind"] == "CustomResourceDefinition":
        labels.pop("app.kubernetes.io/part-of", None)
    if not labels:
        obj["metadata"].pop("labels", None)
    if obj["kind"] == "Deployment":
        pod_meta = obj["spec"]["template"]["metadata"]
        pod_meta.get("annotations", {}).pop("checksum/config", None)
        if not pod_meta.get("annotations", True):
            del pod_meta["annotations"]
    if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "incident-operator-config":
        obj["data"]["config.yaml"] = yaml.safe_load(obj["data"]["config.yaml"])
    if obj["kind"] == "ValidatingAdmissionPolicy":
        obj["spec"] = _single_newlines(obj["spec"])
    return obj


def test_the_chart_lints_strictly_and_carries_the_project_version() -> None:
    linted = helm("lint", "--strict", str(CHART))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (__version__, __version__)


def test_default_values_render_the_objects_of_install_yaml() -> None:
    chart = by_key(render())
    install = install_yaml()
    namespace = ("v1", "Namespace", "", NS)
    # The one object the chart does not render: Helm creates the release namespace
    # (`helm install -n incident-operator --create-namespace`) and never deletes it.
    assert set(chart) == set(install) - {namespace}
    for k in sorted(chart):
        assert comparable(chart[k]) == comparable(install[k]), f"{k} differs from manifests/install.yaml"
    # The allowed differences are what they say: Helm's labels with their values, a checksum.
    for obj in chart.values():
        labels = obj["metadata"].get("labels", {})
        if obj["kind"] != "CustomResourceDefinition":
            assert labels["helm.sh/chart"] == f"incident-operator-{__version__}"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/instance"] == "incident-operator"
            assert labels["app.kubernetes.io/version"] == __version__
    pod = chart[("apps/v1", "Deployment", NS, "incident-operator")]["spec"]["template"]["metadata"]
    assert re.fullmatch(r"[0-9a-f]{64}", pod["annotations"]["checksum/config"])


def test_optional_parts_are_off_by_default() -> None:
    objects = render()
    assert not {o["kind"] for o in objects} & {"Ingress", "ServiceMonitor", "PrometheusRule"}
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("ConfigMap", "incident-operator-dashboard") not in names
    assert ("ClusterRoleBinding", "incident-operator-metrics-reader") not in names
    # No namespace opts in unless the values name it.
    assert not {n for n in names if n[0] == "RoleBinding"} - {
        ("RoleBinding", "incident-operator"),
        ("RoleBinding", "incident-operator-apiserver-endpoints"),
    }


def test_the_charts_crds_and_monitoring_files_are_copies_of_the_shipped_ones() -> None:
    """Helm installs crds/ of the chart (never templated): byte copies of the generated crds/.
    `make chart-files` refreshes them after `make crds` or a change to manifests/monitoring/."""
    shipped = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    in_chart = {p.name: p.read_text() for p in (CHART / "crds").iterdir()}
    assert in_chart == shipped, "charts/incident-operator/crds/ differs from crds/: run `make chart-files`"
    for name in ("prometheusrule.yaml", "grafana-dashboard.json"):
        copy_ = (CHART / "files" / name).read_text()
        assert copy_ == (ROOT / "manifests" / "monitoring" / name).read_text(), (
            f"charts/incident-operator/files/{name} differs from manifests/monitoring/: `make chart-files`"
        )


def test_the_release_namespace_is_the_operators_everywhere() -> None:
    objects = render(namespace="ops")
    placed = {(o["kind"], o["metadata"]["name"]): o["metadata"].get("namespace") for o in objects}
    assert placed[("Role", "incident-operator-apiserver-endpoints")] == "default"  # the API server's
    assert placed[("RoleBinding", "incident-operator-apiserver-endpoints")] == "default"
    for (kind, name), namespace in placed.items():
        if namespace is not None and name != "incident-operator-apiserver-endpoints":
            assert namespace == "ops", (kind, name)
    for obj in objects:
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == "ops", obj["metadata"]["name"]
    text = json.dumps(objects)
    assert "system:serviceaccount:ops:incident-operator" in text  # the admission policies' parameter
    assert "--alert-token-secret=ops/alert-token" in text
    assert '"incident-operator"' not in json.dumps([o["metadata"].get("namespace") for o in objects])


FULL_VALUES: dict[str, Any] = {
    "replicaCount": 3,
    "image": {
        "repository": "registry.example/incident-operator",
        "digest": "sha256:" + "ab" * 32,
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    "alertTokenSecret": "am-token",
    "optIn": {"remediation": ["shop", "checkout"], "jobs": ["shop"]},
    "statusPage": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "status.example.com",
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            "tls": [{"hosts": ["status.example.com"], "secretName": "status-tls"}],
        }
    },
    "networkPolicy": {
        "monitoringNamespace": "observability",
        "extraEgress": [{"ports": [{"port": 9090, "protocol": "TCP"}]}],
    },
    "podDisruptionBudget": {"minAvailable": 2},
    "monitoring": {
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "prometheusServiceAccount": {"name": "kps-prometheus", "namespace": "observability"},
        },
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {
            "enabled": True,
            "namespace": "observability",
            "annotations": {"grafana_folder": "SRE"},
        },
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
    "podAnnotations": {"example.com/team": "sre"},
    "extraArgs": ["--allow-egress=10.0.0.0/8"],
    "config": {
        "access": {"recheckSeconds": 10},
        "leaderElection": {"leaseName": "io-leader"},
        "notifications": {
            "channels": [
                {
                    "name": "oncall",
                    "type": "slack",
                    "urlSecretRef": {"namespace": NS, "name": "slack-urls", "key": "oncall"},
                },
                {
                    "name": "mail",
                    "type": "email",
                    "to": ["oncall@example.com"],
                    "smtp": {
                        "host": "smtp.example.com",
                        "from": "incidents@example.com",
                        "usernameSecretRef": {"namespace": NS, "name": "smtp-login", "key": "username"},
                        "passwordSecretRef": {"namespace": NS, "name": "smtp-login", "key": "password"},
                        "caSecretRef": {"namespace": "elsewhere", "name": "smtp-ca", "key": "ca.crt"},
                    },
                },
            ]
        },
        "statusPage": {"namespaces": ["shop"], "baseURL": "https://status.example.com"},
    },
}


@pytest.fixture(scope="module")
def full_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "full.yaml"
    path.write_text(yaml.safe_dump(FULL_VALUES))
    return path


def test_every_optional_part_on_lints_and_renders_what_the_values_say(full_values: Path) -> None:
    linted = helm("lint", "--strict", str(CHART), "-f", str(full_values))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    objects = by_key(render("-f", str(full_values)))

    def get(kind: str, name: str, namespace: str = NS, api: str = "") -> dict[str, Any]:
        found = [o for k, o in objects.items() if k[1:] == (kind, namespace, name) and api in k[0]]
        assert len(found) == 1, (kind, namespace, name)
        return found[0]

    deployment = get("Deployment", "incident-operator")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/incident-operator@sha256:" + "ab" * 32
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == FULL_VALUES["resources"]
    assert "--alert-token-secret=incident-operator/am-token" in container["args"]
    assert container["args"][-1] == "--allow-egress=10.0.0.0/8"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert deployment["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "sre"

    config = yaml.safe_load(get("ConfigMap", "incident-operator-config")["data"]["config.yaml"])
    assert config["access"] == {"recheckSeconds": 10}  # given values replace, the rest stays
    assert config["responseTargets"]["P1"] == "PT15M"
    role = get("Role", "incident-operator")
    secrets = next(r for r in role["rules"] if r["resources"] == ["secrets"])
    # every Secret a channel names in the release namespace (not one of another namespace)
    assert secrets["resourceNames"] == ["am-token", "notification-urls", "slack-urls", "smtp-login"]
    lease = next(r for r in role["rules"] if r["resources"] == ["leases"] and r.get("resourceNames"))
    assert lease["resourceNames"] == ["io-leader"]

    for namespace in ("shop", "checkout"):
        binding = get("RoleBinding", "incident-operator-remediator", namespace)
        assert binding["roleRef"]["name"] == "incident-operator-remediator"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "incident-operator", "namespace": NS}
        ]
    assert get("RoleBinding", "incident-operator-jobs", "shop")["roleRef"]["name"] == "incident-operator-jobs"
    assert not [k for k in objects if k[1:] == ("RoleBinding", "checkout", "incident-operator-jobs")]

    ingress = get("Ingress", "incident-operator-status")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "status.example.com"
    assert {p["backend"]["service"]["port"]["name"] for p in rule["http"]["paths"]} == {"status"}
    assert ingress["spec"]["tls"] == FULL_VALUES["statusPage"]["ingress"]["tls"]

    policy = get("NetworkPolicy", "incident-operator")
    assert policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }
    assert policy["spec"]["egress"][-1] == {"ports": [{"port": 9090, "protocol": "TCP"}]}
    assert get("PodDisruptionBudget", "incident-operator")["spec"]["minAvailable"] == 2

    monitoring = ROOT / "manifests" / "monitoring"
    monitor = get("ServiceMonitor", "incident-operator")
    shipped_monitor = yaml.safe_load((monitoring / "servicemonitor.yaml").read_text())
    assert monitor["spec"] == shipped_monitor["spec"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    reader = get("ClusterRoleBinding", "incident-operator-metrics-reader", "")
    assert reader["subjects"] == [
        {"kind": "ServiceAccount", "name": "kps-prometheus", "namespace": "observability"}
    ]
    shipped_rule = yaml.safe_load((monitoring / "prometheusrule.yaml").read_text())
    rule_obj = get("PrometheusRule", shipped_rule["metadata"]["name"])
    assert rule_obj["spec"] == shipped_rule["spec"]  # $labels templates untouched by Helm
    dashboard = get("ConfigMap", "incident-operator-dashboard", "observability")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "SRE"}
    assert json.loads(dashboard["data"]["incident-operator.json"]) == json.loads(
        (monitoring / "grafana-dashboard.json").read_text()
    )


def test_admission_policies_can_be_turned_off() -> None:
    kinds = [o["kind"] for o in render("--set", "admissionPolicies.enabled=false")]
    assert "ValidatingAdmissionPolicy" not in kinds
    assert "ValidatingAdmissionPolicyBinding" not in kinds
    assert "incident-operator-admission" not in {
        o["metadata"]["name"] for o in render("--set", "admissionPolicies.enabled=false")
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--set", "replicaCount=two"), "replicaCount"),
        (("--set", "replicaCount=0"), "replicaCount"),
        (("--set", "image.pullPolicy=Sometimes"), "pullPolicy"),
        (("--set", "image.digest=latest"), "digest"),
        (("--set", "replicas=3"), "replicas"),  # a typo of replicaCount: unknown keys are refused
        (("--set", "optIn.remediation={Shop_NS}"), "remediation"),
        (("--set", "monitoring.serviceMonitor.interval=soon"), "interval"),
        (("--set", "resources.limits.memory=lots"), "memory"),
        # values.config: the operator's config model's own schema (hack/chart_schema.py)
        (("--set", "config.access.recheckSecs=3"), "recheckSecs"),
        (("--set", "config.access.recheckSeconds=0"), "/config/access/recheckSeconds"),
        (("--set", "config.responseTargets.P1=15"), "/config/responseTargets/P1"),
        (("--set", "config.leaderElection.leaseDurationSeconds=soon"), "leaseDurationSeconds"),
    ],
)
def test_the_schema_refuses_a_wrong_value_naming_it(args: tuple[str, ...], says: str) -> None:
    message = refused(*args)
    assert "values don't meet the specifications of the schema" in message, message
    assert says in message, message


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("--set", "leaderElection.enabled=false"),
            "replicaCount is 2 but leaderElection.enabled is false",
        ),
        (
            ("--set", "optIn.jobs={shop}"),
            'optIn.jobs lists namespace "shop", which optIn.remediation does not',
        ),
        (
            ("--set", "podDisruptionBudget.minAvailable=2"),
            "podDisruptionBudget.minAvailable (2) must be below",
        ),
    ],
)
def test_values_that_contradict_each_other_are_refused_with_what_to_change(
    args: tuple[str, ...], says: str
) -> None:
    assert says in refused(*args)


def test_one_replica_without_leader_election_is_allowed() -> None:
    one = ("--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    assert "no node could ever be drained" in refused(*one)  # the default PDB would block drains
    objects = render(*one, "--set", "podDisruptionBudget.enabled=false")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert "--leader-elect" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
