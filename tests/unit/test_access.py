"""What a playbook needs in a namespace, and the message that says how to opt the namespace in."""

from __future__ import annotations

from incident_operator.api.actions import LOCK_RBAC, OPT_IN
from incident_operator.api.models import IncidentSpec, PlaybookSpec
from incident_operator.api.rbac import Permission
from incident_operator.core.access import forbidden_message, required

TARGET = {"kind": "Deployment", "name": "web"}


def test_each_action_asks_for_exactly_what_it_uses() -> None:
    spec = IncidentSpec.model_validate(
        {"title": "t", "severity": "P1", "category": "availability", "targets": [TARGET]}
    )
    playbook = PlaybookSpec.model_validate(
        {
            "steps": [
                {"name": "scale", "scale": {"target": {"kind": "StatefulSet", "name": "db"}, "delta": 1}},
                {"name": "restart", "restart": {"target": TARGET}},
                {
                    "name": "evidence",
                    "collectEvidence": {"selector": {"app": "web"}, "logLines": 0, "rolloutHistory": False},
                },
                {"name": "kill", "deletePods": {"selector": {"app": "web"}, "max": 1}},
                {"name": "cut", "isolate": {"selector": {"app": "web"}}},
                {"name": "probe", "httpCheck": {"url": "http://web/healthz"}},
            ]
        }
    )
    assert set(required(spec, playbook)) == {
        OPT_IN,
        Permission("get", "deployments", "apps"),
        Permission("patch", "deployments", "apps"),
        Permission("get", "statefulsets", "apps"),
        Permission("patch", "statefulsets", "apps", "scale"),
        *LOCK_RBAC,  # the per-workload lock (a Lease) of scale and restart
        Permission("list", "pods"),
        Permission("delete", "pods"),
        Permission("create", "configmaps"),
        Permission("update", "configmaps"),
        Permission("list", "events"),
        Permission("create", "networkpolicies", "networking.k8s.io"),
    }  # no pods/log (logLines: 0), no secrets (no notify), nothing for httpCheck


def test_rollback_job_and_checks_with_headers_ask_for_what_they_use() -> None:
    spec = IncidentSpec.model_validate(
        {"title": "t", "severity": "P1", "category": "availability", "targets": [TARGET]}
    )
    playbook = PlaybookSpec.model_validate(
        {
            "steps": [
                {"name": "undo", "rollback": {"target": {"kind": "StatefulSet", "name": "db"}}},
                {
                    "name": "check",
                    "job": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
                },
                {"name": "smoke", "httpCheck": {"url": "http://web/", "headersSecretRef": {"name": "h"}}},
                {
                    "name": "evidence",
                    "collectEvidence": {"selector": {"app": "web"}, "logLines": 0, "events": False},
                },
            ]
        }
    )
    assert set(required(spec, playbook)) == {
        OPT_IN,
        Permission("get", "deployments", "apps"),  # the target's health, after the steps
        Permission("list", "replicasets", "apps"),  # the target's rollout history (evidence)
        *LOCK_RBAC,  # the rollback's lock on its workload
        Permission("get", "statefulsets", "apps"),
        Permission("patch", "statefulsets", "apps"),
        Permission("list", "controllerrevisions", "apps"),
        Permission("create", "jobs", "batch"),
        Permission("get", "jobs", "batch"),
        Permission("list", "jobs", "batch"),  # counts the operator's Jobs running (the cap)
        Permission("list", "pods"),
        Permission("get", "pods", subresource="log"),  # the Job's log (logLines 50 by default)
        Permission("get", "secrets"),
        Permission("create", "configmaps"),
        Permission("update", "configmaps"),
    }


def test_the_message_names_the_missing_rolebinding_and_the_command_for_a_service_account() -> None:
    message = forbidden_message(
        "shop",
        [Permission("patch", "deployments", "apps", "scale")],
        "system:serviceaccount:incident-operator:incident-operator",
    )
    assert "may not patch deployments/scale.apps in namespace shop" in message
    assert "RoleBinding incident-operator-remediator is missing" in message
    assert message.endswith(
        "kubectl create rolebinding incident-operator-remediator -n shop "
        "--clusterrole=incident-operator-remediator "
        "--serviceaccount=incident-operator:incident-operator"
    )


def test_the_message_for_a_user_names_the_user() -> None:
    assert "--user=alice" in forbidden_message("shop", [Permission("delete", "pods")], "alice")


def test_a_missing_jobs_opt_in_names_its_own_rolebinding() -> None:
    account = "system:serviceaccount:incident-operator:incident-operator"
    message = forbidden_message(
        "shop", [Permission("create", "jobs", "batch"), Permission("list", "jobs", "batch")], account
    )
    assert "may not create jobs.batch, list jobs.batch in namespace shop" in message
    assert "has not opted in to Job steps (RoleBinding incident-operator-jobs is missing)" in message
    assert "incident-operator-remediator" not in message
    assert message.endswith(
        "kubectl create rolebinding incident-operator-jobs -n shop --clusterrole=incident-operator-jobs "
        "--serviceaccount=incident-operator:incident-operator"
    )
    denied = [Permission("create", "jobs", "batch"), Permission("delete", "pods")]
    both = forbidden_message("shop", denied, account)
    assert "RoleBinding incident-operator-remediator is missing" in both
    assert "RoleBinding incident-operator-jobs is missing" in both
    assert both.index("may not delete pods") < both.index("may not create jobs.batch")
