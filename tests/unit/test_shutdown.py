"""SIGTERM with an API server that does not answer: nothing on the way out waits for it.

Issue 22: `make bench` measured 31 s from SIGTERM to exit with the API server frozen (SIGSTOP),
15 s being the goal. The cleanup itself was done in 5 s; the rest was the interpreter joining the
client's pool threads, one of them in a request the frozen server never answered (a PATCH: 30 s,
not retried). The asynchronous client has no such threads; the test stays, so no thread or
connection left open holds the exit again. And a loop cancelled while it gives back its workload
locks awaited the API again.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from incident_operator.controllers.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]

# `incident-operator run` whose operator ends (as after SIGTERM, its cleanup done) while one of
# its Kube calls is still in a request to an API server that accepts the connection and never
# answers (a listening socket nobody reads: what a SIGSTOPped kube-apiserver looks like from the
# client).
FROZEN_CALL = textwrap.dedent(
    """
    import asyncio, socket
    from kubernetes_asyncio import client
    from incident_operator.adapters.kube import Kube
    from incident_operator.cli import main as cli_main
    from incident_operator.runtime import runner

    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(16)

    async def operate(config) -> None:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{frozen.getsockname()[1]}"
        kube = Kube(client.ApiClient(configuration))
        call = asyncio.ensure_future(kube.call(kube.core.patch_namespace, "x", {}, _request_timeout=3600))
        await asyncio.sleep(0.5)
        assert not call.done()
        call.cancel()
        await kube.close()
        print("operator stopped", flush=True)

    runner.run = operate
    raise SystemExit(cli_main.main(["run", "--http-port=18999", "--status-port=18998"]))
    """
)


def test_the_process_exits_while_a_client_call_still_waits_for_a_frozen_api_server() -> None:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", FROZEN_CALL],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: the interpreter waits for the call's pool thread")
    assert (done.returncode, done.stdout.strip()) == (0, "operator stopped"), done.stderr
    assert time.monotonic() - started < 15


class GivesBackOnTheWayOut:
    """A loop in a step that never ends, whose `finally` gives back its locks through an API call
    that never returns (the frozen API server)."""

    namespace = "ns"
    finished = False

    def __init__(self, never: Callable[[], asyncio.Future[None]]) -> None:
        self.never = never

    def concerned_by(self, playbook: str) -> bool:
        return False

    async def run(
        self, stopped: Callable[[], bool], wake: asyncio.Event, planned: Callable[[], None] = lambda: None
    ) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await self.never()  # the release's call: no answer ever


def test_stopping_the_loops_does_not_wait_for_a_lock_release_the_api_never_answers() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []

        def never() -> asyncio.Future[None]:
            pending.append(loop.create_future())
            return pending[-1]

        supervisor = Supervisor(lambda uid, live: GivesBackOnTheWayOut(never), lambda obj, problem: None)
        metadata = {"uid": "u1", "name": "inc", "namespace": "ns"}
        body = {"metadata": metadata, "spec": {"title": "t"}, "status": {}}
        supervisor.observe("ADDED", body)
        for _ in range(5):
            await asyncio.sleep(0)
        started = loop.time()
        await asyncio.wait_for(supervisor.stop(timeout=0.2), timeout=10)
        assert pending, "the loop's release was under way"
        return loop.time() - started

    assert asyncio.run(scenario()) < 3


def test_the_frozen_socket_of_the_first_test_is_what_a_stopped_server_looks_like() -> None:
    """The premise of the first test: a connection to a listening socket nobody reads is
    accepted, and a request on it gets no answer."""
    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(1)
    with socket.create_connection(frozen.getsockname(), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.recv(1)
    frozen.close()
