"""Faults of the control plane in the middle of a playbook, on a local cluster of its own:
kube-apiserver and etcd are restarted (`localcluster.py restart`) while a multi-step playbook
waits at a gate. The operator reconnects by itself, every step runs exactly once, no incident is
lost, and `/readyz` is false while the API server is unreachable and true again after.

And SIGTERM with thousands of incidents, with the API server answering and with it frozen: the
operator exits within Kubernetes' default grace period, and a playbook it was in the middle of
resumes after the restart and runs every step once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.e2e.conftest import (
    CRDS,
    LOCALCLUSTER,
    LOOPBACK_FOR_EVERY_NAMESPACE,
    Cluster,
    OperatorProcess,
    bin_dir,
    start_local_cluster,
    stop_local_cluster,
)
from tests.e2e.engine_helpers import (
    GROUP,
    TIMEOUT,
    VERSION,
    Scenario,
    assert_gated_playbook_ran_once,
    start_gated_playbook,
)
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
        assert cluster.run_kubectl("apply", "-f", str(CRDS), check=False).returncode == 0
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
        {"egress": LOOPBACK_FOR_EVERY_NAMESPACE},
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


# Kubernetes' default terminationGracePeriodSeconds is 30; the goal leaves half of it.
SIGTERM_BOUND_S = 15.0
MANY = 2000  # 10,000 is measured by `make bench`; this size keeps `make test` within minutes


def create_many(cluster: Cluster, namespace: str) -> None:
    """MANY incidents: nine in ten closed history, one in ten open and paused (waiting)."""
    custom = client.CustomObjectsApi(cluster.api)

    def create(i: int) -> None:
        spec: dict[str, Any] = {"title": f"load {i}", "severity": "P4", "category": "performance"}
        spec.update({"paused": True} if i % 10 == 0 else {"closed": True})
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident", "metadata": {"name": f"load-{i:05d}"}}
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", {**body, "spec": spec})

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, range(MANY)))

    def handled() -> bool:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "incidents")["items"]
        phases = [
            (i.get("status") or {}).get("phase") for i in items if i["metadata"]["name"].startswith("load-")
        ]
        return len(phases) == MANY and None not in phases

    wait_until(handled, timeout=600, what=f"{MANY} incidents handled", interval=2)


def sigterm_exit_seconds(operator: OperatorProcess) -> float:
    assert operator.proc is not None
    started = time.monotonic()
    operator.proc.send_signal(signal.SIGTERM)
    try:
        operator.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        operator.proc.kill()
        operator.proc.wait(timeout=10)
        return float("inf")
    return time.monotonic() - started


def test_sigterm_with_thousands_of_incidents_with_and_without_the_api_server(
    fault_cluster: tuple[Cluster, Path], operator: OperatorProcess
) -> None:
    cluster, data_dir = fault_cluster
    namespace = "sigterm"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    wait_until(
        lambda: core.read_namespaced_service_account("default", namespace), timeout=60, what="namespace"
    )
    s = Scenario(cluster, operator, namespace)
    apiserver = json.loads((data_dir / "state.json").read_text())["pids"]["kube-apiserver"]
    with local_server() as http:
        http.set_status("/gate", 503)
        generation = start_gated_playbook(s, http.url("/gate"), "in-flight", replicas=2, gate_timeout=300)
        create_many(cluster, namespace)

        reachable = sigterm_exit_seconds(operator)
        assert reachable < SIGTERM_BOUND_S, f"SIGTERM took {reachable:.1f}s\n{operator.log()}"

        operator.start()
        wait_until(lambda: http.hits("/gate") >= 1, timeout=TIMEOUT, what="the gate polled again")
        os.kill(apiserver, signal.SIGSTOP)  # every request now hangs: the worst case for a shutdown
        try:
            frozen = sigterm_exit_seconds(operator)
        finally:
            os.kill(apiserver, signal.SIGCONT)
        assert frozen < SIGTERM_BOUND_S, (
            f"SIGTERM with the API server frozen took {frozen:.1f}s\n{operator.log()}"
        )

        operator.start()
        http.set_status("/gate", 200)
        assert_gated_playbook_ran_once(s, "in-flight", replicas=2, generation=generation)
    custom = client.CustomObjectsApi(cluster.api)
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "incidents")["items"]
    assert len(items) == MANY + 1  # nothing lost, nothing duplicated
