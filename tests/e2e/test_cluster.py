"""The local cluster is a real Kubernetes: nodes, Deployments, pods and rollouts behave as upstream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kubernetes import client

from tests.e2e.conftest import Cluster
from tests.e2e.engine_helpers import deployment_body
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 90


def ready_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def available(apps: client.AppsV1Api, namespace: str, name: str, replicas: int) -> bool:
    d = apps.read_namespaced_deployment(name, namespace)
    s = d.status
    return bool(
        s.observed_generation == d.metadata.generation
        and s.replicas == replicas
        and s.updated_replicas == replicas
        and s.ready_replicas == replicas
        and s.available_replicas == replicas
    )


def test_three_fake_nodes_are_ready(cluster: Cluster) -> None:
    nodes = client.CoreV1Api(cluster.api).list_node().items
    ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)]
    assert len(ready) >= 3
    assert all(n.metadata.annotations.get("kwok.x-k8s.io/node") == "fake" for n in ready)


def test_kubectl_of_the_same_release_talks_to_the_cluster(cluster: Cluster) -> None:
    out = cluster.run_kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.36.3"' in out


def test_deployment_scales_replaces_pods_and_restarts(cluster: Cluster, namespace: str) -> None:
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    apps.create_namespaced_deployment(namespace, deployment_body("web", 3))

    pods = wait_until(
        lambda: len(ready_pods(core, namespace, "web")) == 3 and ready_pods(core, namespace, "web"),
        timeout=TIMEOUT,
        what="3 Ready pods",
    )
    assert {p.spec.node_name for p in pods} <= {f"kwok-node-{i}" for i in range(3)}
    wait_until(
        lambda: available(apps, namespace, "web", 3), timeout=TIMEOUT, what="deployment available at 3"
    )

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 5}})
    wait_until(lambda: len(ready_pods(core, namespace, "web")) == 5, timeout=TIMEOUT, what="5 Ready pods")
    wait_until(
        lambda: available(apps, namespace, "web", 5), timeout=TIMEOUT, what="deployment available at 5"
    )

    victim = ready_pods(core, namespace, "web")[0].metadata.name
    core.delete_namespaced_pod(victim, namespace)

    def replaced() -> bool:
        names = {p.metadata.name for p in ready_pods(core, namespace, "web")}
        return victim not in names and len(names) == 5

    wait_until(replaced, timeout=TIMEOUT, what=f"pod {victim} replaced by a new Ready pod")

    before = {p.metadata.name for p in ready_pods(core, namespace, "web")}
    restarted_at = datetime.now(UTC).isoformat()
    patch = {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": restarted_at}}}
        }
    }
    apps.patch_namespaced_deployment("web", namespace, patch)

    def rolled_out() -> bool:
        names = {p.metadata.name for p in ready_pods(core, namespace, "web")}
        all_pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        return available(apps, namespace, "web", 5) and not (names & before) and len(all_pods) == 5

    wait_until(rolled_out, timeout=TIMEOUT, what="rollout restart replaced every pod")
    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replica_sets) == 2
    assert sorted(rs.spec.replicas for rs in replica_sets) == [0, 5]


def test_kubectl_logs_reads_what_kwok_serves(cluster: Cluster, namespace: str) -> None:
    """kwok's ClusterLogs serve a log file for every container through the API server."""
    client.AppsV1Api(cluster.api).create_namespaced_deployment(namespace, deployment_body("logs", 1))
    core = client.CoreV1Api(cluster.api)
    pod = wait_until(
        lambda: [p for p in core.list_namespaced_pod(namespace).items if p.status.phase == "Running"],
        timeout=60,
        what="a running pod",
    )[0]
    logs = cluster.run_kubectl("logs", "-n", namespace, pod.metadata.name, "--tail=1")
    assert logs.stdout == 'level=error msg="upstream unavailable" upstream=postgres:5432\n'
