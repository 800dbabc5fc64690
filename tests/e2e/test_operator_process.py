"""`incident-operator run` starts against the real cluster, serves /healthz and /readyz, stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - http to loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def operator_process(
    crds_installed: Cluster, namespace: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log_path = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(crds_installed.kubeconfig)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "incident_operator",
                "run",
                "--http-host=127.0.0.1",
                f"--http-port={port}",
                f"--namespace={namespace}",  # its own empty namespace: never acts on other tests' incidents
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield proc, port, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_operator_serves_health_and_readiness_and_stops_on_sigterm(
    operator_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log_path = operator_process
    base = f"http://127.0.0.1:{port}"

    def alive_and(status_ok: bool) -> bool:
        assert proc.poll() is None, log_path.read_text()
        return status_ok

    wait_until(lambda: alive_and(http_status(f"{base}/healthz") == 200), timeout=60, what="/healthz 200")
    wait_until(lambda: alive_and(http_status(f"{base}/readyz") == 200), timeout=60, what="/readyz 200")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log_path.read_text()


def test_operator_reports_a_port_in_use(crds_installed: Cluster, namespace: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "incident_operator",
                "run",
                "--http-host=127.0.0.1",
                f"--http-port={port}",
                f"--namespace={namespace}",  # its own empty namespace: never acts on other tests' incidents
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "KUBECONFIG": str(crds_installed.kubeconfig)},
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
