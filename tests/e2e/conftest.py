"""Session fixtures of the e2e tier: one real local Kubernetes cluster for the whole run.

The cluster is started with `localcluster/localcluster.py up` in a temporary directory and
stopped at the end of the session. Set KUBECONFIG to a cluster whose API server listens on
loopback (for example the one `make cluster` prints) to reuse it instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client, config

from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
LOCALCLUSTER = ROOT / "localcluster" / "localcluster.py"
CRDS = ROOT / "crds"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl: Path
    api: client.ApiClient

    def run_kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


def _loopback_kubeconfig() -> Path | None:
    value = os.environ.get("KUBECONFIG")
    if not value:
        return None
    path = Path(value.split(os.pathsep)[0])
    doc = yaml.safe_load(path.read_text())
    server = urlparse(doc["clusters"][0]["cluster"]["server"])
    if server.hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.exit(
            f"KUBECONFIG points at {server.hostname}, not a local cluster; refusing to run e2e tests there"
        )
    return path


def _localcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCALCLUSTER), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bin_dir = Path(_localcluster("bin-dir").stdout.strip())
    kubeconfig = _loopback_kubeconfig()
    data_dir: Path | None = None
    if kubeconfig is None:
        data_dir = tmp_path_factory.mktemp("cluster") / "data"
        started = _localcluster("up", "--dir", str(data_dir))
        if started.returncode != 0:
            _localcluster("down", "--dir", str(data_dir))
            pytest.fail(f"the local cluster did not start:\n{started.stderr[-5000:]}")
        last = started.stdout.strip().splitlines()[-1]
        assert last.startswith("KUBECONFIG="), started.stdout
        kubeconfig = Path(last.removeprefix("KUBECONFIG="))
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(kubeconfig=kubeconfig, kubectl=bin_dir / "kubectl", api=api)
    finally:
        api.close()
        if data_dir is not None:
            stopped = _localcluster("down", "--dir", str(data_dir))
            assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> Cluster:
    applied = cluster.run_kubectl("apply", "-f", str(CRDS), check=False)
    assert applied.returncode == 0, applied.stderr
    ext = client.ApiextensionsV1Api(cluster.api)
    for path in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]

        def established(name: str = name) -> bool:
            crd = ext.read_custom_resource_definition(name)
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

        wait_until(established, timeout=60, what=f"CRD {name} Established")
    return cluster


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (deletion is not awaited)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=60,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name)
