"""The operator's asynchronous API client against real HTTP servers on 127.0.0.1: in-cluster
construction (the cluster's CA, the projected token read again after the kubelet rotates it), the
user agent, bounded retries on 429 after Retry-After, and a close that does not wait for a frozen
API server. Also: the operator's process never imports the synchronous client."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.config import incluster_config

from incident_operator import __version__
from incident_operator.adapters import kube as kube_module
from incident_operator.adapters.kube import (
    KUBE_CONNECTIONS,
    RETRIES_ON_429,
    RETRY_AFTER_MAX_S,
    ApiException,
    Kube,
    RequestTimeout,
    TransportError,
    api_client,
    load_configuration,
    retry_after,
)
from tests.polling import until

CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}}


class Seen:
    """What the server received: each request's headers, and the answers it still has to give."""

    def __init__(self, answers: list[Callable[[], web.Response]]) -> None:
        self.answers = answers
        self.headers: list[dict[str, str]] = []
        self.times: list[float] = []


def ok() -> web.Response:
    return web.json_response(CONFIGMAP)


def too_many(after: str | None) -> Callable[[], web.Response]:
    def answer() -> web.Response:
        headers = {"Retry-After": after} if after is not None else {}
        body = {"kind": "Status", "code": 429, "reason": "TooManyRequests"}
        return web.json_response(body, status=429, headers=headers)

    return answer


@asynccontextmanager
async def api_server(seen: Seen, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.Response:
        seen.headers.append(dict(request.headers))
        seen.times.append(time.monotonic())
        return seen.answers.pop(0)() if seen.answers else ok()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def plain_kube(port: int) -> Kube:
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    return Kube(api_client(configuration))


def test_a_429_is_sent_again_after_its_retry_after_and_then_succeeds() -> None:
    async def scenario() -> tuple[Any, Seen]:
        seen = Seen([too_many("1"), ok])
        async with api_server(seen) as port:
            kube = plain_kube(port)
            try:
                found = await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
            finally:
                await kube.close()
        return found, seen

    found, seen = asyncio.run(scenario())
    assert isinstance(found, client.V1ConfigMap)
    assert found.metadata.name == "cm"
    assert len(seen.headers) == 2
    assert seen.times[1] - seen.times[0] >= 0.9  # it waited for Retry-After: 1
    assert {h["User-Agent"] for h in seen.headers} == {f"incident-operator/{__version__}"}


def test_the_client_keeps_no_raw_answer_after_a_call() -> None:
    """kubernetes_asyncio keeps the last raw response on its ApiClient; a listing's page (megabytes
    at a realistic history) would stay alive until the next call replaced it."""

    async def scenario() -> tuple[Any, Any]:
        async with api_server(Seen([])) as port:
            kube = plain_kube(port)
            try:
                found = await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
                return found, kube.api.last_response
            finally:
                await kube.close()

    found, kept = asyncio.run(scenario())
    assert found.metadata.name == "cm"
    assert kept is None


def test_retries_on_429_are_bounded_and_the_last_refusal_reaches_the_caller() -> None:
    async def scenario() -> tuple[ApiException, Seen]:
        seen = Seen([too_many("0")] * 10)
        async with api_server(seen) as port:
            kube = plain_kube(port)
            try:
                with pytest.raises(ApiException) as raised:
                    await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
            finally:
                await kube.close()
        return raised.value, seen

    error, seen = asyncio.run(scenario())
    assert error.status == 429
    assert len(seen.headers) == 1 + RETRIES_ON_429


def test_other_errors_are_not_retried() -> None:
    async def scenario() -> Seen:
        seen = Seen([lambda: web.json_response({"kind": "Status", "code": 409}, status=409), ok])
        async with api_server(seen) as port:
            kube = plain_kube(port)
            try:
                with pytest.raises(ApiException):
                    await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
            finally:
                await kube.close()
        return seen

    assert len(asyncio.run(scenario()).headers) == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("600", RETRY_AFTER_MAX_S),
        ("-4", 0.0),
        ("soon", 1.0),
        (None, 1.0),
        ("nan", 1.0),
    ],
)
def test_retry_after_is_read_in_seconds_and_bounded(header: str | None, seconds: float) -> None:
    exc = ApiException(status=429, reason="TooManyRequests")
    exc.headers = {"Retry-After": header} if header is not None else {}  # type: ignore[assignment]
    assert retry_after(exc) == seconds


def test_in_cluster_the_client_trusts_the_cluster_ca_and_reads_the_rotated_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client reads the token file again once its last read is older than the refresh period
    # (a minute); a period of zero makes every request look for a rotated token.
    monkeypatch.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    token, ca_file = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("first-token")
    ca_file.write_bytes(ca.cert_pem.bytes())

    async def scenario() -> tuple[Seen, client.Configuration]:
        seen = Seen([])
        async with api_server(seen, server_context) as port:
            environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}
            configuration = await load_configuration(
                token_file=str(token), cert_file=str(ca_file), environ=environ
            )
            kube = Kube(api_client(configuration))
            try:
                await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
                token.write_text("second-token")  # the kubelet rotated the projected token
                await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
            finally:
                await kube.close()
        return seen, configuration

    seen, configuration = asyncio.run(scenario())
    assert configuration.host.startswith("https://127.0.0.1:")
    assert [h["Authorization"] for h in seen.headers] == ["Bearer first-token", "Bearer second-token"]
    assert configuration.connection_pool_maxsize == KUBE_CONNECTIONS


def test_in_cluster_an_api_server_the_cluster_ca_did_not_sign_is_refused(tmp_path: Path) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    token, ca_file = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t")
    ca_file.write_bytes(trustme.CA().cert_pem.bytes())  # another CA

    async def scenario() -> Seen:
        seen = Seen([])
        async with api_server(seen, server_context) as port:
            environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}
            configuration = await load_configuration(
                token_file=str(token), cert_file=str(ca_file), environ=environ
            )
            kube = Kube(api_client(configuration))
            try:
                with pytest.raises(Exception, match="certificate verify failed"):
                    await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
            finally:
                await kube.close()
        return seen

    assert asyncio.run(scenario()).headers == []  # the token never left the client


class CountingExecutor(ThreadPoolExecutor):
    """The event loop's default executor, counting what is handed to a thread."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_a_call_never_waits_for_a_thread() -> None:
    """aiohttp trusting the environment looks up ~/.netrc and the proxy variables in a worker thread
    on every request: under load each hop waits for the event loop's next turn (the latency of the
    hot path). The client's requests hand nothing to a thread."""

    async def scenario() -> tuple[int, Seen]:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        seen = Seen([])
        async with api_server(seen) as port:
            kube = plain_kube(port)
            try:
                for _ in range(3):
                    await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
                    await kube.call(kube.objects.patch, "incidents", "ns", "cm", {"spec": {}})
            finally:
                await kube.close()
        return executor.submitted, seen

    submitted, seen = asyncio.run(scenario())
    assert len(seen.headers) == 6
    assert submitted == 0


@asynccontextmanager
async def forward_proxy(heads: list[str]) -> AsyncIterator[int]:
    """An HTTP proxy on 127.0.0.1, as a corporate proxy in front of an API server: it tunnels a
    CONNECT to the address asked, and answers a plain request (absolute-form) itself, as if from
    the API server (a ConfigMap); it records each request head it reads (never what goes through
    a tunnel)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                heads.append(head)
                method, target = head.split()[:2]
                if method == "CONNECT":
                    host, port = target.rsplit(":", 1)
                    upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
                    return
                body = json.dumps(CONFIGMAP).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("scheme", ["https", "http"])
@pytest.mark.parametrize("how", ["environment", "no_proxy", "configured"])
def test_the_proxy_for_the_api_server_is_used_as_when_the_client_read_the_environment_per_request(
    monkeypatch: pytest.MonkeyPatch, scheme: str, how: str
) -> None:
    """Looked up once when the client is made, not per request: HTTPS_PROXY for an https API
    server, HTTP_PROXY for an http one, each with its credentials (sent to the proxy alone: in the
    CONNECT for https, never through the tunnel to the API server); NO_PROXY bypasses it; a proxy
    the configuration names wins over the environment's."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def scenario() -> tuple[list[str], Seen]:
        heads: list[str] = []
        seen = Seen([])
        tls = server_context if scheme == "https" else None
        async with api_server(seen, tls) as port, forward_proxy(heads) as proxy_port:
            ours = f"http://someone:pw@127.0.0.1:{proxy_port}"
            with socket.socket() as unused:  # a port nothing listens on: that proxy would refuse
                unused.bind(("127.0.0.1", 0))
                nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"
            monkeypatch.setenv(f"{scheme.upper()}_PROXY", nowhere if how == "configured" else ours)
            if how == "no_proxy":
                monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            configuration = client.Configuration(host=f"{scheme}://127.0.0.1:{port}")
            if how == "configured":
                configuration.proxy = ours
            with tempfile.NamedTemporaryFile(suffix=".pem") as ca_file:
                ca_file.write(ca.cert_pem.bytes())
                ca_file.flush()
                configuration.ssl_ca_cert = ca_file.name
                kube = Kube(api_client(configuration))
            try:
                for _ in range(2):
                    await kube.call(kube.core.read_namespaced_config_map, "cm", "ns", _request_timeout=10)
            finally:
                await kube.close()
        return heads, seen

    heads, seen = asyncio.run(scenario())
    assert all("Proxy-Authorization" not in h for h in seen.headers)
    if how == "no_proxy":
        assert (heads, len(seen.headers)) == ([], 2)
    elif scheme == "https":
        assert len(seen.headers) == 2  # through the tunnel
        assert len(heads) == 1  # one tunnel, kept alive for the second request
        assert heads[0].startswith("CONNECT 127.0.0.1:")
        assert "Proxy-Authorization: Basic c29tZW9uZTpwdw==" in heads[0]  # someone:pw
    elif how == "environment":  # plain http: each request goes to the proxy, credentials on each
        assert (len(heads), len(seen.headers)) == (2, 0)
        assert all(h.startswith("GET http://127.0.0.1:") for h in heads)
        assert all("Proxy-Authorization: Basic c29tZW9uZTpwdw==" in h for h in heads)
    else:
        assert (len(heads), len(seen.headers)) == (2, 0)  # the configuration's proxy


def test_closing_the_client_does_not_wait_for_a_frozen_api_server() -> None:
    """A server that accepts and never answers (the bench SIGSTOPs the API server): a call in
    flight must not hold the close, which ends well within the 15 s SIGTERM goal."""

    async def scenario() -> tuple[float, BaseException | None]:
        accepted: list[asyncio.StreamWriter] = []

        async def frozen(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # never answers

        server = await asyncio.start_server(frozen, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        kube = plain_kube(port)
        calling = asyncio.create_task(kube.call(kube.core.read_namespaced_config_map, "cm", "ns"))
        await until(lambda: bool(accepted), timeout=5, what="the request reached the frozen server")
        started = time.monotonic()
        await kube.close()
        took = time.monotonic() - started
        calling.cancel()
        outcome = await asyncio.gather(calling, return_exceptions=True)
        for writer in accepted:
            writer.close()
        server.close()
        return took, outcome[0] if isinstance(outcome[0], BaseException) else None

    took, outcome = asyncio.run(scenario())
    assert took < kube_module.CLOSE_TIMEOUT_S + 1
    assert outcome is not None  # the call in flight ended (cancelled or failed), it did not answer


def test_a_close_that_hangs_is_abandoned_after_the_close_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_module, "CLOSE_TIMEOUT_S", 0.2)

    class HangingApi:
        async def close(self) -> None:
            await asyncio.Event().wait()

    kube = Kube.__new__(Kube)
    kube.api = HangingApi()  # type: ignore[assignment]
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(kube.close(), 5))  # bounded here too: a hang fails, never blocks
    assert time.monotonic() - started < 2


def test_the_operators_process_never_imports_the_synchronous_client() -> None:
    """Its model code would sit in memory next to kubernetes_asyncio's: kopf imports the official
    client whenever it is installed, unless the entry point made it unimportable first. Neither
    does it load httpx's command line (rich, pygments: 4 MB)."""
    probe = (
        "import sys, json\n"
        "from incident_operator.cli import main\n"
        "main.without_the_sync_client()\n"
        "from incident_operator.runtime import runner, handlers\n"
        "import kopf\n"
        "registry = kopf.get_default_registry()\n"
        "logins = [str(h.id) for h in registry._activities.get_all_handlers()"
        " if h.activity.value == 'authentication']\n"
        "loaded = sorted(m for m, v in sys.modules.items() if v is not None"
        " and (m == 'kubernetes' or m.startswith('kubernetes.')))\n"
        "import httpx\n"
        "print(json.dumps({'loaded': loaded, 'logins': logins,"
        " 'async': 'kubernetes_asyncio.client' in sys.modules,"
        " 'cli': [m for m in ('rich', 'pygments') if m in sys.modules]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # nor httpx's command line with rich and pygments (installed here for the dev tools)
    assert seen == {"loaded": [], "logins": ["login_via_async_client"], "async": True, "cli": []}


def test_a_patch_of_our_own_kinds_is_a_json_merge_patch_and_of_a_workload_a_strategic_one() -> None:
    async def scenario() -> Seen:
        seen = Seen([lambda: web.json_response({"metadata": {"name": "x"}})] * 2)
        async with api_server(seen) as port:
            kube = plain_kube(port)
            try:
                await kube.patch_incident_status("ns", "x", {"phase": "Resolved"})
                await kube.patch_object("incidents", "ns", "x", {"metadata": {"labels": {"a": "b"}}})
                await kube.patch_workload("Deployment", "web", "ns", {"spec": {"replicas": 2}})
            finally:
                await kube.close()
        return seen

    seen = asyncio.run(scenario())
    assert [h["Content-Type"] for h in seen.headers] == [
        "application/merge-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ]


def test_a_request_the_api_server_does_not_answer_ends_at_its_timeout_as_a_transport_error() -> None:
    async def scenario() -> tuple[BaseException, float]:
        accepted: list[asyncio.StreamWriter] = []

        async def frozen(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        server = await asyncio.start_server(frozen, "127.0.0.1", 0)
        kube = plain_kube(server.sockets[0].getsockname()[1])
        started = time.monotonic()
        try:
            with pytest.raises(TransportError) as raised:
                await kube.call(kube.core.read_namespaced_config_map, "cm", "ns", _request_timeout=0.5)
        finally:
            await kube.close()
            for writer in accepted:
                writer.close()
            server.close()
        return raised.value, time.monotonic() - started

    error, took = asyncio.run(scenario())
    assert isinstance(error, RequestTimeout)
    assert not isinstance(error, TimeoutError)  # never mistaken for a caller's own deadline
    assert took < 5


def test_the_clients_models_load_on_first_use_and_deserialize_as_before() -> None:
    """`adapters.lazyclient`: importing the operator's runtime loads a handful of the client's ~770
    model modules, not all; a list read from the API still becomes the client's nested models."""
    probe = (
        "import asyncio, json, sys\n"
        "from incident_operator.cli import main\n"
        "main.without_the_sync_client()\n"
        "from incident_operator.runtime import runner, handlers\n"
        "import kopf\n"
        "kopf.get_default_registry()\n"
        "def models():\n"
        "    return sum(m.startswith('kubernetes_asyncio.client.models.') for m in sys.modules)\n"
        "at_start = models()\n"
        "from kubernetes_asyncio import client\n"
        "from kubernetes_asyncio.client import V1Pod\n"
        "async def read():\n"
        "    api = client.ApiClient()\n"
        "    body = {'items': [{'metadata': {'name': 'p', 'ownerReferences': [{'apiVersion': 'v1',"
        " 'kind': 'ReplicaSet', 'name': 'r', 'uid': 'u'}]}, 'status': {'conditions': [{'type': 'Ready',"
        " 'status': 'True'}]}}]}\n"
        "    pods = api._ApiClient__deserialize(body, 'V1PodList')\n"
        "    await api.close()\n"
        "    return pods\n"
        "pods = asyncio.run(read())\n"
        "pod = pods.items[0]\n"
        "print(json.dumps({'at_start': at_start, 'after': models(), 'pod': isinstance(pod, V1Pod),"
        " 'owner': pod.metadata.owner_references[0].kind, 'ready': pod.status.conditions[0].status,"
        " 'api': client.CoreV1Api.__name__}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["at_start"] <= 10  # of ~770 (eagerly, every one: about 38 MiB of code)
    assert seen["after"] <= seen["at_start"] + 10
    assert (seen["pod"], seen["owner"], seen["ready"], seen["api"]) == (
        True,
        "ReplicaSet",
        "True",
        "CoreV1Api",
    )


def test_timestamps_read_into_models_fast_and_as_before() -> None:
    """The models' timestamps come from `datetime.fromisoformat` (dateutil's parser was three
    quarters of a Deployment's decoding); a form it refuses still goes to the client's parser."""
    body = {
        "metadata": {"name": "web", "creationTimestamp": "2026-12-01T09:00:00Z"},
        "status": {
            "conditions": [
                {"type": "Available", "status": "True", "lastTransitionTime": "2026-12-01T09:00:01.250000Z"},
                {
                    "type": "Progressing",
                    "status": "True",
                    "lastTransitionTime": "Tue, 01 Dec 2026 09:00:02 GMT",
                },
            ]
        },
    }

    async def scenario() -> Any:
        seen = Seen([lambda: web.json_response(body)])
        async with api_server(seen) as port:
            kube = plain_kube(port)
            try:
                return await kube.read_workload("Deployment", "web", "ns")
            finally:
                await kube.close()

    workload = asyncio.run(scenario())
    created = workload.metadata.creation_timestamp
    fast, general = (c.last_transition_time for c in workload.status.conditions)
    assert created == datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)
    assert created.tzinfo is datetime.UTC  # read by fromisoformat (dateutil gives its own tzutc)
    assert fast == datetime.datetime(2026, 12, 1, 9, 0, 1, 250000, tzinfo=datetime.UTC)
    assert general == datetime.datetime(2026, 12, 1, 9, 0, 2, tzinfo=datetime.UTC)


def test_a_separate_client_is_not_queued_behind_the_main_pool_and_closes_on_its_own() -> None:
    """`Kube.separate` (the watches' client, the loops' short checks): with every connection of the
    main pool busy and more calls queued for it, a call on the separate client is answered; closing
    it leaves the main client working."""

    async def scenario() -> tuple[bool, bool, int]:
        release = asyncio.Event()
        answered: list[str] = []
        arrived: list[str] = []

        async def handle(request: web.Request) -> web.Response:
            arrived.append(request.path.rsplit("/", 1)[-1])
            if request.path.endswith("/hang"):
                await release.wait()
            answered.append(request.path.rsplit("/", 1)[-1])
            return ok()

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        configuration = client.Configuration(host=f"http://127.0.0.1:{runner.addresses[0][1]}")
        configuration.connection_pool_maxsize = 1
        main = Kube(api_client(configuration))
        separate = main.separate(1)
        try:
            hanging = asyncio.create_task(main.call(main.core.read_namespaced_config_map, "hang", "ns"))
            queued = asyncio.create_task(main.call(main.core.read_namespaced_config_map, "queued", "ns"))
            await until(lambda: "hang" in arrived, timeout=5, what="the hanging call at the server")
            separate_call = separate.call(separate.core.read_namespaced_config_map, "separate", "ns")
            await asyncio.wait_for(separate_call, 5)  # on the main pool it would wait for the hang
            queued_meanwhile = queued.done()
            await separate.close()
            release.set()
            await asyncio.gather(hanging, queued)
            after_close = await main.call(main.core.read_namespaced_config_map, "after", "ns")
            return queued_meanwhile, after_close.metadata.name == "cm", len(answered)
        finally:
            release.set()
            await main.close()
            await runner.cleanup()

    queued_meanwhile, main_still_works, answered = asyncio.run(scenario())
    assert not queued_meanwhile  # the main pool's queue was still waiting for its one connection
    assert main_still_works
    assert answered == 4


def test_tls_connections_read_through_a_small_buffer_and_a_large_answer_arrives_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio gives every TLS connection a 256 KiB read buffer, resident for as long as the
    connection lives (one per watch): the operator lowers it before its first connection. A
    ConfigMap of 1 MiB still arrives whole, read in pieces of at most the smaller buffer."""
    from asyncio import sslproto

    from incident_operator.runtime import runner

    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", sslproto.SSLProtocol.max_size)  # restored after
    sizes: list[int] = []
    get_buffer = sslproto.SSLProtocol.get_buffer

    def recorded(self: Any, n: int) -> Any:
        view = get_buffer(self, n)
        sizes.append(len(view))
        return view

    monkeypatch.setattr(sslproto.SSLProtocol, "get_buffer", recorded)
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem.bytes())
    large = {**CONFIGMAP, "data": {"blob": "x" * (1 << 20)}}

    async def scenario() -> Any:
        runner._smaller_tls_buffers()
        async with api_server(Seen([lambda: web.json_response(large)]), server_context) as port:
            configuration = client.Configuration(host=f"https://127.0.0.1:{port}")
            configuration.ssl_ca_cert = str(ca_file)
            kube = Kube(api_client(configuration))
            try:
                return await kube.call(kube.core.read_namespaced_config_map, "cm", "ns")
            finally:
                await kube.close()

    found = asyncio.run(scenario())
    assert len(found.data["blob"]) == 1 << 20
    assert sizes
    assert max(sizes) == runner.TLS_READ_BUFFER < 256 * 1024
