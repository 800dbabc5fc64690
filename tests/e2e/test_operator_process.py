"""`incident-operator run` starts against the real cluster, serves /healthz and /readyz, stops cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, free_port, operator_command, operator_env
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


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
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            # Its own empty namespace: never acts on other tests' incidents.
            operator_command(port, f"--namespace={namespace}"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=operator_env(crds_installed.kubeconfig),
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
            operator_command(port, f"--namespace={namespace}"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=operator_env(crds_installed.kubeconfig),
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
