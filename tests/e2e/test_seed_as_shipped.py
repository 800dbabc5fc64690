"""The service-outage sample exactly as shipped, under the install's own config and identity.

Its smoke test points at loopback (what `make demo` runs), which the shipped egress policy denies.
That is a misconfiguration of the sample for this cluster, not an outage of the service: the
smoke test must wait `Blocked` (`Stalled`/`Misconfigured`), and the rollback that follows a failed
smoke test must never run against a service that is healthy (issue 21, item 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import INSTALL_NS, Cluster, OperatorProcess, create_namespace, token_kubeconfig
from tests.e2e.engine_helpers import TIMEOUT, Scenario
from tests.e2e.test_seed_playbooks import create, sample
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

NS = "outage-as-shipped"


def revision(s: Scenario, name: str) -> str:
    annotations = s.apps.read_namespaced_deployment(name, s.namespace).metadata.annotations or {}
    return str(annotations.get("deployment.kubernetes.io/revision"))


def test_the_outage_sample_as_shipped_never_rolls_back_a_healthy_service(
    installed: Cluster, tmp_path: Path
) -> None:
    core = client.CoreV1Api(installed.api)
    shipped: dict[str, Any] = yaml.safe_load(
        core.read_namespaced_config_map("incident-operator-config", INSTALL_NS).data["config.yaml"]
    )
    kubeconfig = token_kubeconfig(installed, "incident-operator", INSTALL_NS, tmp_path / "sa.kubeconfig")
    settings = {**shipped, "access": {"recheckSeconds": 2}}  # the shipped egress, as it is
    operator = OperatorProcess(kubeconfig, tmp_path, settings, (), name="as-shipped")  # no --allow-egress
    operator.start()
    try:
        create_namespace(installed, NS, opt_in=True)
        s = Scenario(installed, operator, NS)
        s.deployment("web", 2)
        s.apps.patch_namespaced_deployment(  # the sample's bounds: Deployments opted in by label
            "web", NS, {"metadata": {"labels": {"incident-operator.dev/remediate": "true"}}}
        )
        before = revision(s, "web")
        create(s, sample("playbook-service-outage.yaml"))  # unchanged
        incident = create(s, sample("incident-service-outage.yaml"))  # unchanged
        s.patch_incident(incident, {"commander": "alice"})

        s.wait_step(incident, "smoke-test", "Blocked")
        stalled = wait_until(
            lambda: s.condition(incident, "Stalled"),
            timeout=TIMEOUT,
            what="Stalled",
            describe=s.describer(incident),
        )
        assert (stalled["status"], stalled["reason"]) == ("True", "Misconfigured")
        assert "egress denied: 127.0.0.1" in stalled["message"]
        steps = s.steps(incident)
        assert steps["restart"]["state"] == "Succeeded"
        assert steps["smoke-test"].get("attempts", 0) == 0  # a denial uses no attempt
        for never in ("roll-back", "wait-rolled-back"):  # never fired: the smoke test did not fail
            assert steps.get(never, {}).get("state", "Pending") == "Pending", steps.get(never)
        restarted = revision(s, "web")
        assert int(restarted) == int(before) + 1  # the restart's new revision, and nothing more
        rollout = s.apps.read_namespaced_deployment("web", NS).spec.template.metadata.annotations or {}
        assert "kubectl.kubernetes.io/restartedAt" in rollout  # the restarted template, not rolled back
    finally:
        operator.stop()
