"""`localcluster up/down` in bad situations: clear messages and no half-running leftovers.

Each test starts its own small cluster in a temporary directory (a warm start takes seconds).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.localcluster_module import PATH, load
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

lc = load()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PATH), *args], capture_output=True, text=True, timeout=300, check=False
    )


def our_processes(data_dir: Path) -> dict[str, int]:
    state = lc.State.load(data_dir)
    return {} if state is None else lc.live_pids(state)


def port_free(port: int) -> bool:
    return not lc.port_in_use(port)


def test_up_then_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    started = run("up", "--dir", str(data_dir), "--nodes", "1")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().splitlines()[-1] == f"KUBECONFIG={data_dir / 'kubeconfig'}"
    state = lc.State.load(data_dir)
    assert set(lc.live_pids(state)) == set(lc.COMPONENTS)
    assert (data_dir / "logs" / "kube-apiserver.log").stat().st_size > 0

    again = run("up", "--dir", str(data_dir))
    assert again.returncode == 0
    assert "already running" in again.stderr

    stopped = run("down", "--dir", str(data_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert not data_dir.exists()
    assert not lc.live_pids(state)
    for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"):
        assert port_free(state.ports[name]), f"{name} port {state.ports[name]} still bound"


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("up", "--dir", str(tmp_path / "c"), "--apiserver-port", str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert our_processes(tmp_path / "c") == {}


def test_a_component_that_exits_during_start_is_reported_with_its_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    result = run("up", "--dir", str(data_dir), "--extra-arg", "kube-apiserver=--no-such-flag")
    assert result.returncode == 1
    assert "kube-apiserver exited during start" in result.stderr
    assert "unknown flag: --no-such-flag" in result.stderr  # the tail of its log
    assert "stopping every component that was started" in result.stderr
    assert our_processes(data_dir) == {}  # etcd, started first, was stopped too
    assert run("down", "--dir", str(data_dir)).returncode == 0
    assert not data_dir.exists()


def test_a_stale_data_directory_from_a_crash_is_cleared(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    assert run("up", "--dir", str(data_dir), "--nodes", "1").returncode == 0
    crashed = our_processes(data_dir)
    for pid in crashed.values():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: our_processes(data_dir) == {}, timeout=30, what="components killed")

    restarted = run("up", "--dir", str(data_dir), "--nodes", "1")
    try:
        assert restarted.returncode == 0, restarted.stderr
        assert "removing stale data directory" in restarted.stderr
        assert set(our_processes(data_dir)) == set(lc.COMPONENTS)
        assert not set(our_processes(data_dir).values()) & set(crashed.values())
    finally:
        assert run("down", "--dir", str(data_dir)).returncode == 0
