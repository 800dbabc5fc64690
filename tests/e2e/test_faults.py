"""Faults of the control plane in the middle of a playbook, on a local cluster of its own:
kube-apiserver and etcd are restarted (`localcluster.py restart`) while a multi-step playbook
waits at a gate. The operator reconnects by itself, every step runs exactly once, no incident is
lost, and `/readyz` is false while the API server is unreachable and true again after.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.e2e.conftest import (
    CRDS,
    LOCALCLUSTER,
    Cluster,
    OperatorProcess,
    bin_dir,
    start_local_cluster,
    stop_local_cluster,
)
from tests.e2e.engine_helpers import TIMEOUT, Scenario, assert_gated_playbook_ran_once, start_gated_playbook
from tests.httpserver import LocalServer, local_server
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    data_dir = tmp_path_factory.mktemp("fault-cluster") / "data"
    kubeconfig = start_local_cluster(data_dir)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        cluster = Cluster(kubeconfig=kubeconfig, kubectl=bin_dir() / "kubectl", api=api)
        assert cluster.run_kubectl("apply", "-k", str(CRDS), check=False).returncode == 0
        yield cluster, data_dir
    finally:
        api.close()
        stop_local_cluster(data_dir)


@pytest.fixture(scope="module")
def operator(
    fault_cluster: tuple[Cluster, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    cluster, _ = fault_cluster
    process = OperatorProcess(
        cluster.kubeconfig,
        tmp_path_factory.mktemp("fault-op"),
        {},
        ("--allow-egress=127.0.0.0/8",),
        name="faulty",
    )
    wait_until(
        lambda: client.CustomObjectsApi(cluster.api).list_cluster_custom_object(
            "incident-operator.dev", "v1alpha1", "incidents"
        ),
        timeout=60,
        what="the CRDs served",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def ready(operator: OperatorProcess) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def restart_while_watching(data_dir: Path, component: str, operator: OperatorProcess) -> list[bool]:
    """Restart `component`; meanwhile sample the operator's /readyz. Returns the samples."""
    samples: list[bool] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(ready(operator))
            done.wait(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        restarted = subprocess.run(
            [sys.executable, str(LOCALCLUSTER), "restart", component, "--dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert restarted.returncode == 0, restarted.stderr
        wait_until(lambda: ready(operator), timeout=TIMEOUT, what="/readyz true again")
    finally:
        done.set()
        sampler.join()
    return samples


def run_through_a_restart(
    cluster: Cluster,
    *,
    data_dir: Path,
    operator: OperatorProcess,
    http: LocalServer,
    namespace: str,
    component: str,
) -> list[bool]:
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    wait_until(
        lambda: core.read_namespaced_service_account("default", namespace), timeout=60, what="namespace"
    )
    s = Scenario(cluster, operator, namespace)
    http.set_status("/gate", 503)
    generation = start_gated_playbook(s, http.url("/gate"), "survivor", replicas=2, gate_timeout=240)
    wait_until(lambda: http.hits("/gate") >= 1, timeout=TIMEOUT, what="the gate polled")

    samples = restart_while_watching(data_dir, component, operator)
    http.set_status("/gate", 200)

    assert_gated_playbook_ran_once(s, "survivor", replicas=2, generation=generation)
    assert operator.proc is not None
    assert operator.proc.poll() is None  # reconnected by itself
    return samples


def test_a_kube_apiserver_restart_mid_playbook(
    fault_cluster: tuple[Cluster, Path], operator: OperatorProcess
) -> None:
    cluster, data_dir = fault_cluster
    with local_server() as http:
        samples = run_through_a_restart(
            cluster,
            data_dir=data_dir,
            operator=operator,
            http=http,
            namespace="apiserver-fault",
            component="kube-apiserver",
        )
    assert False in samples, "/readyz never reported the API server unreachable"
    assert ready(operator)


def test_an_etcd_restart_mid_playbook(fault_cluster: tuple[Cluster, Path], operator: OperatorProcess) -> None:
    cluster, data_dir = fault_cluster
    with local_server() as http:
        run_through_a_restart(
            cluster, data_dir=data_dir, operator=operator, http=http, namespace="etcd-fault", component="etcd"
        )
    assert ready(operator)
