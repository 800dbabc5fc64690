"""manifests/install.yaml (rendered from manifests/install/): least privilege, a hardened two-replica
Deployment, and names that agree with each other, the config and the Alertmanager receiver.

The rendered file is checked here; tests/e2e/test_install.py checks that it does not drift from
`kubectl kustomize manifests/install` and that both install on the real API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from incident_operator.api import keys
from incident_operator.api.models import Roles
from incident_operator.api.rbac import (
    ENDPOINT_REVIEWS,
    METRICS_PATH,
    METRICS_READER_ROLE,
    METRICS_VERB,
    REPORT_READ,
)
from incident_operator.settings.config import FileConfig

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "manifests" / "install.yaml"
NS = "incident-operator"
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate"}


def objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(INSTALL.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def rules_of(kind: str, name: str) -> list[dict[str, Any]]:
    return list(find(kind, name)["rules"])


def container() -> dict[str, Any]:
    pod = find("Deployment", "incident-operator")["spec"]["template"]["spec"]
    return dict(pod["containers"][0])


def arg(name: str) -> str:
    values = [a.split("=", 1)[1] for a in container()["args"] if a.startswith(f"--{name}=")]
    assert len(values) == 1, container()["args"]
    return str(values[0])


def operator_config() -> FileConfig:
    raw = find("ConfigMap", "incident-operator-config")["data"]["config.yaml"]
    return FileConfig.model_validate(yaml.safe_load(raw))


def test_no_wildcards_and_no_privilege_escalation_verbs_anywhere() -> None:
    roles = [o for o in objects() if o["kind"] in ("Role", "ClusterRole")]
    assert {r["metadata"]["name"] for r in roles} == {
        "incident-operator",
        "incident-operator-remediator",
        "incident-operator-responder",
        "incident-operator-jobs",
        "incident-operator-playbook-gatekeeper",
        "incident-operator-apiserver-endpoints",
        "incident-operator-automation-resumer",
        "incident-operator-automation-viewer",
        "incident-operator-archive-reader",
        METRICS_READER_ROLE,
    }
    for role in roles:
        for rule in role["rules"]:
            where = f"{role['kind']}/{role['metadata']['name']} {rule}"
            assert not FORBIDDEN_VERBS & set(rule["verbs"]), where
            assert "*" not in rule.get("apiGroups", []), where
            assert not any("*" in r for r in rule.get("resources", [])), where
            assert not any("*" in u for u in rule.get("nonResourceURLs", [])), where
            if role["metadata"]["name"] != METRICS_READER_ROLE:
                assert "nonResourceURLs" not in rule, where
            assert not {"roles", "clusterroles", "rolebindings", "clusterrolebindings"} & set(
                rule.get("resources", [])
            ), where


def test_no_cluster_wide_secrets_and_no_workloads_in_the_cluster_wide_role() -> None:
    bound_cluster_wide = {o["roleRef"]["name"] for o in objects() if o["kind"] == "ClusterRoleBinding"}
    assert bound_cluster_wide == {"incident-operator"}  # the remediator is granted per namespace only
    for rule in rules_of("ClusterRole", "incident-operator"):
        assert "secrets" not in rule["resources"]
        assert "apps" not in rule["apiGroups"]
        assert not {"pods", "configmaps", "networkpolicies"} & set(rule["resources"])
    secrets = [r for r in rules_of("Role", "incident-operator") if "secrets" in r["resources"]]
    assert secrets
    assert all(r.get("resourceNames") and r["verbs"] == ["get"] for r in secrets)


def test_the_remediator_grants_what_the_actions_do_and_nothing_destructive_to_workloads() -> None:
    grants = {
        (group, resource, verb)
        for rule in rules_of("ClusterRole", "incident-operator-remediator")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert ("apps", "deployments/scale", "patch") in grants
    assert ("apps", "deployments", "patch") in grants
    assert ("", "pods", "delete") in grants
    assert ("", "pods/log", "get") in grants
    assert ("", "secrets", "get") in grants
    assert ("networking.k8s.io", "networkpolicies", "create") in grants
    assert not {g for g in grants if g[1] in ("deployments", "statefulsets") and g[2] in ("delete", "create")}


def test_the_api_servers_endpointslices_are_listed_in_default_only() -> None:
    role = find("Role", "incident-operator-apiserver-endpoints")
    assert role["metadata"]["namespace"] == "default"
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}
    ]
    binding = find("RoleBinding", "incident-operator-apiserver-endpoints")
    assert binding["metadata"]["namespace"] == "default"
    assert binding["roleRef"]["name"] == "incident-operator-apiserver-endpoints"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "incident-operator", "namespace": NS}]


def test_jobs_are_a_separate_opt_in_and_the_shipped_config_keeps_the_safe_job_defaults() -> None:
    (rule,) = rules_of("ClusterRole", "incident-operator-jobs")
    assert (rule["apiGroups"], rule["resources"], sorted(rule["verbs"])) == (
        ["batch"],
        ["jobs"],
        ["create", "get", "list"],
    )
    for rule in rules_of("ClusterRole", "incident-operator-remediator"):
        assert "jobs" not in rule["resources"], rule
    assert operator_config().jobs == FileConfig().jobs  # the file shows the defaults


def test_the_deployment_runs_two_hardened_replicas_with_one_leader() -> None:
    deployment = find("Deployment", "incident-operator")
    assert deployment["metadata"]["namespace"] == NS
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "incident-operator"
    assert pod["automountServiceAccountToken"] is True
    assert find("ServiceAccount", "incident-operator")["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    c = container()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}
    assert "--leader-elect" in c["args"]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert {"name": "status", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
    assert (arg("http-port"), arg("status-port")) == ("8080", "8081")
    assert find("PodDisruptionBudget", "incident-operator")["spec"]["minAvailable"] == 1


def test_the_service_and_the_alertmanager_receiver_agree() -> None:
    service = find("Service", "incident-operator")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {"name": "status", "port": 8081, "targetPort": "status", "protocol": "TCP"},
    ]
    receiver = yaml.safe_load((ROOT / "manifests" / "monitoring" / "alertmanager-receiver.yaml").read_text())
    url = urlparse(receiver["receivers"][0]["webhook_configs"][0]["url"])
    assert (url.hostname, url.port, url.path) == (f"incident-operator.{NS}.svc", 8080, "/alertmanager")
    monitor = yaml.safe_load((ROOT / "manifests" / "monitoring" / "servicemonitor.yaml").read_text())
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_the_operator_may_review_tokens_and_readers_get_exactly_what_the_endpoints_ask() -> None:
    operator = grants("ClusterRole", "incident-operator")
    assert {(p.group, p.resource, p.verb) for p in ENDPOINT_REVIEWS} <= operator
    assert rules_of("ClusterRole", METRICS_READER_ROLE) == [
        {"nonResourceURLs": [METRICS_PATH], "verbs": [METRICS_VERB]}
    ]
    assert (REPORT_READ.group, REPORT_READ.resource, REPORT_READ.verb) in grants(
        "ClusterRole", "incident-operator-responder"
    )  # report readers of a namespace: its responders


def test_the_service_monitor_scrapes_with_prometheus_own_rotated_token_bound_to_the_metrics_reader() -> None:
    monitoring = ROOT / "manifests" / "monitoring"
    (endpoint,) = yaml.safe_load((monitoring / "servicemonitor.yaml").read_text())["spec"]["endpoints"]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert "authorization" not in endpoint
    (binding,) = yaml.safe_load_all((monitoring / "metrics-reader-binding.yaml").read_text())
    assert (binding["kind"], binding["metadata"]["name"]) == ("ClusterRoleBinding", METRICS_READER_ROLE)
    assert binding["roleRef"]["name"] == METRICS_READER_ROLE
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
    ]
    for path in monitoring.glob("*.yaml"):  # no never-expiring token is shipped
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                assert doc.get("type") != "kubernetes.io/service-account-token", path.name


def test_the_network_policy_admits_the_status_page_from_anywhere_and_the_rest_from_monitoring() -> None:
    policy = find("NetworkPolicy", "incident-operator")
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": 8081, "protocol": "TCP"}]},
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        },
    ]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443}


def test_secret_and_lease_names_agree_with_the_config_and_the_role() -> None:
    config = operator_config()
    token_ns, token_name = arg("alert-token-secret").split("/")
    assert token_ns == NS
    assert not [o for o in objects() if o["kind"] == "Secret"]  # created by the admin, with a value
    readable = {
        name
        for rule in rules_of("Role", "incident-operator")
        if "secrets" in rule["resources"]
        for name in rule["resourceNames"]
    }
    assert token_name in readable
    assert {c.urlSecretRef.name for c in config.notifications.channels} <= readable
    leases = [
        r
        for r in rules_of("Role", "incident-operator")
        if r.get("resourceNames") and "leases" in r["resources"]
    ]
    assert leases[0]["resourceNames"] == [config.leaderElection.leaseName]
    mount = container()["volumeMounts"][0]["mountPath"]
    assert arg("config") == f"{mount}/config.yaml"


@pytest.mark.parametrize(
    "crd", sorted((ROOT / "crds").glob("incident-operator.dev_*.yaml")), ids=lambda p: p.name
)
def test_the_crds_are_the_generated_ones(crd: Path) -> None:
    generated = yaml.safe_load(crd.read_text())
    installed = find("CustomResourceDefinition", generated["metadata"]["name"])
    installed["metadata"]["labels"].pop("app.kubernetes.io/part-of")
    if not installed["metadata"]["labels"]:
        del installed["metadata"]["labels"]
    assert installed == generated


def test_the_admission_policy_guards_approvals_resolution_and_closing() -> None:
    policy = find("ValidatingAdmissionPolicy", "incident-operator-approvals")
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [
        {
            "apiGroups": ["incident-operator.dev"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["incidents"],  # not incidents/status: the operator's own writes pass
        }
    ]
    assert policy["spec"]["failurePolicy"] == "Fail"
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "request.userInfo.username" in expressions
    assert "check('approve')" in expressions
    assert expressions.count("check('resolve')") == 2  # resolution and closing
    added = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "added")
    assert "o.step == a.step && o.by == a.by && o.?run" in added  # another run: a new approval
    binding = find("ValidatingAdmissionPolicyBinding", "incident-operator-approvals")
    assert binding["spec"] == {"policyName": "incident-operator-approvals", "validationActions": ["Deny"]}
    assert expressions.count("check('publish')") == 2  # spec.public and public updates
    publishing = variables(policy)
    assert "oldObject.spec.?updates.orValue([]).exists(o, o == u)" in publishing["publicUpdates"]
    responder = {v for r in rules_of("ClusterRole", "incident-operator-responder") for v in r["verbs"]}
    assert {"approve", "resolve", "publish"} <= responder
    operator = {v for r in rules_of("ClusterRole", "incident-operator") for v in r["verbs"]}
    assert "publish" not in operator  # the operator never makes anything public


def grants(kind: str, name: str) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules_of(kind, name)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def variables(policy: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


def test_the_identities_policy_takes_the_operators_username_from_its_parameter() -> None:
    policy = find("ValidatingAdmissionPolicy", "incident-operator-identities")
    assert policy["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["incidents"]
    binding = find("ValidatingAdmissionPolicyBinding", "incident-operator-identities")
    assert binding["spec"]["validationActions"] == ["Deny"]
    ref = binding["spec"]["paramRef"]
    assert ref["parameterNotFoundAction"] == "Deny"  # no parameter: every incident write refused
    param = find("ConfigMap", ref["name"])
    assert param["metadata"]["namespace"] == ref["namespace"] == NS
    pod = find("Deployment", "incident-operator")["spec"]["template"]["spec"]
    operator = f"system:serviceaccount:{NS}:{pod['serviceAccountName']}"
    assert [u.strip() for u in param["data"]["operators"].split(",")] == [operator]


def test_the_identities_policy_guards_every_operator_owned_key_and_role() -> None:
    found = variables(find("ValidatingAdmissionPolicy", "incident-operator-identities"))
    for key in (keys.ANNOTATION_STATUS, keys.ANNOTATION_CHANGED_AT):
        assert f"'{key}'" in found["touched"]
    for key in (keys.LABEL_FINGERPRINT, keys.LABEL_ALERTNAME, keys.DRILL_LABEL):
        assert f"'{key}'" in found["touched"]
    for role in Roles.model_fields:
        assert f"['roles.{role}', string(object.spec.?roles.?{role}.orValue(''))" in found["named"]
    assert "check('assign')" in " ".join(
        v["expression"]
        for v in find("ValidatingAdmissionPolicy", "incident-operator-identities")["spec"]["validations"]
    )
    assert ("incident-operator.dev", "incidents", "assign") in grants(
        "ClusterRole", "incident-operator-responder"
    )


def test_the_playbook_gate_needs_the_gate_verb_which_only_the_gatekeeper_role_grants() -> None:
    policy = find("ValidatingAdmissionPolicy", "incident-operator-playbook-gate")
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["incident-operator.dev"],
            "apiVersions": ["v1alpha1"],
            "operations": ["UPDATE", "DELETE"],
            "resources": ["playbooks"],  # not playbooks/status: the operator's own writes pass
        }
    ]
    assert "check('gate')" in variables(policy)["mayGate"]
    binding = find("ValidatingAdmissionPolicyBinding", "incident-operator-playbook-gate")
    assert binding["spec"] == {"policyName": "incident-operator-playbook-gate", "validationActions": ["Deny"]}
    assert grants("ClusterRole", "incident-operator-playbook-gatekeeper") == {
        ("incident-operator.dev", "playbooks", "gate")
    }
    holders = {
        o["metadata"]["name"]
        for o in objects()
        if o["kind"] in ("Role", "ClusterRole") and any("gate" in r["verbs"] for r in o["rules"])
    }
    assert holders == {"incident-operator-playbook-gatekeeper"}  # not the operator, not responders


def test_the_breaker_state_is_one_configmap_the_operator_and_the_resumers_may_update() -> None:
    """The operator creates and updates its breaker's ConfigMap (the name the config defaults to)
    and the record of the monthly reports delivered, and nothing else of the kind in its
    namespace; `automation resume` needs get and update on that one ConfigMap, which the resumer
    Role grants and nothing more."""
    name = FileConfig().automation.stateConfigMap
    configmaps = [r for r in rules_of("Role", "incident-operator") if "configmaps" in r["resources"]]
    assert {(tuple(r.get("resourceNames") or ()), tuple(r["verbs"])) for r in configmaps} == {
        ((), ("create",)),
        ((name,), ("get", "update")),
        ((FileConfig().reports.recordConfigMap,), ("get", "update")),
    }
    resumer = find("Role", "incident-operator-automation-resumer")
    assert resumer["metadata"]["namespace"] == NS
    assert resumer["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get", "update"]}
    ]
    viewer = find("Role", "incident-operator-automation-viewer")  # `automation status`, read only
    assert viewer["metadata"]["namespace"] == NS
    assert viewer["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get"]}
    ]


def test_only_the_operator_writes_incident_archives_and_their_readers_only_read() -> None:
    policy = find("ValidatingAdmissionPolicy", "incident-operator-archive")
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules[0]["operations"] == ["CREATE", "UPDATE", "DELETE"]
    assert set(rules[0]["resources"]) == {"incidentarchives", "incidentarchives/status"}
    assert policy["spec"]["failurePolicy"] == "Fail"
    binding = find("ValidatingAdmissionPolicyBinding", "incident-operator-archive")
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["paramRef"]["name"] == "incident-operator-admission"  # the operator's identities
    reader = find("ClusterRole", "incident-operator-archive-reader")
    assert reader["rules"] == [
        {
            "apiGroups": ["incident-operator.dev"],
            "resources": ["incidentarchives"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert not [
        k for k in reader["metadata"]["labels"] if k.startswith("rbac.authorization.k8s.io/aggregate")
    ]
    writers = [
        role["metadata"]["name"]
        for role in objects()
        if role["kind"] in ("Role", "ClusterRole")
        for rule in role["rules"]
        if "incidentarchives" in rule.get("resources", []) and set(rule["verbs"]) - {"get", "list", "watch"}
    ]
    assert writers == ["incident-operator"]
