"""Session fixtures of the e2e tier: one real local Kubernetes cluster for the whole run.

The cluster is started with `localcluster/localcluster.py up` in a temporary directory and
stopped at the end of the session. Set KUBECONFIG to a cluster whose API server listens on
loopback (for example the one `make cluster` prints) to reuse it instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client, config

from tests.httpserver import LocalServer, local_server
from tests.mailserver import MailServer, mail_server
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN_NAMESPACE, TOKEN_SECRET = "incident-operator-system", "alert-token"
ALERT_TOKEN = "e2e-" + uuid.uuid4().hex
TEAM_TOKEN, TEAM_TOKEN_KEY = "e2e-team-" + uuid.uuid4().hex, "team-token"
"""A token of alertIntake.tokens (a key of the single token's Secret), bound to TEAM_NAMESPACE."""
TEAM_NAMESPACE = "intake-team-e2e"
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
    """The KUBECONFIG to reuse, if it names a readable config of a cluster on loopback.

    Anything else (unset, missing file, a remote cluster) is ignored: the tests then start a
    local cluster of their own and never touch a cluster that might matter.
    """
    value = os.environ.get("KUBECONFIG")
    if not value:
        return None
    path = Path(value.split(os.pathsep)[0])
    try:
        doc = yaml.safe_load(path.read_text())
        server = urlparse(doc["clusters"][0]["cluster"]["server"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        print(f"e2e: ignoring KUBECONFIG={value} ({exc}); starting a local cluster", file=sys.stderr)
        return None
    if server.hostname not in ("127.0.0.1", "localhost", "::1"):
        print(f"e2e: ignoring KUBECONFIG={value} (server {server.hostname} is not local)", file=sys.stderr)
        return None
    return path


def _localcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCALCLUSTER), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubectl = bin_dir() / "kubectl"
    kubeconfig = _loopback_kubeconfig()
    data_dir: Path | None = None
    if kubeconfig is None:
        data_dir = tmp_path_factory.mktemp("cluster") / "data"
        kubeconfig = start_local_cluster(data_dir)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(kubeconfig=kubeconfig, kubectl=kubectl, api=api)
    finally:
        api.close()
        if data_dir is not None:
            stop_local_cluster(data_dir)


def start_local_cluster(data_dir: Path) -> Path:
    """Start a local cluster of its own in `data_dir`; returns its admin kubeconfig."""
    started = _localcluster("up", "--dir", str(data_dir))
    if started.returncode != 0:
        _localcluster("down", "--dir", str(data_dir))
        pytest.fail(f"the local cluster did not start:\n{started.stderr[-5000:]}")
    last = started.stdout.strip().splitlines()[-1]
    assert last.startswith("KUBECONFIG="), started.stdout
    return Path(last.removeprefix("KUBECONFIG="))


def stop_local_cluster(data_dir: Path) -> None:
    stopped = _localcluster("down", "--dir", str(data_dir))
    assert stopped.returncode == 0, stopped.stderr


def alertmanager_bin() -> Path:
    """Where the cached alertmanager and amtool are (built on first use)."""
    built = _localcluster("build-alertmanager")
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


def helm_bin() -> Path:
    """Where the cached helm is (built on first use)."""
    built = _localcluster("build-helm")
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


def bin_dir() -> Path:
    """Where the cached kube-local, kubectl and kwok binaries are."""
    return Path(_localcluster("bin-dir").stdout.strip())


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> Cluster:
    applied = cluster.run_kubectl("apply", "-f", str(CRDS), check=False)  # what users type
    assert applied.returncode == 0, applied.stderr
    ext = client.ApiextensionsV1Api(cluster.api)
    for path in sorted(CRDS.glob("incident-operator.dev_*.yaml")):
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


class OperatorProcess:
    """`incident-operator run` as a child process, with its log kept for failure messages."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        settings: dict[str, Any],
        options: tuple[str, ...] = (
            f"--alert-token-secret={TOKEN_NAMESPACE}/{TOKEN_SECRET}",
            "--allow-egress=127.0.0.0/8",  # the tests' HTTP servers listen on loopback
        ),
        name: str = "operator",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.name = name
        self.config = workdir / f"{name}-config.yaml"
        self.config.write_text(yaml.safe_dump({"automation": SUITE_AUTOMATION, **settings}))
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.port = free_port()  # kept across restarts: Alertmanager is configured with it
        self.status_port = free_port()  # the public status page's own listener
        self.reader_token: str | None = None
        """A token that may read /metrics and every report (`reader_token`), set by the fixture."""

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        port = self.port
        ensure_breaker_namespace(self.kubeconfig)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                operator_command(
                    port, f"--config={self.config}", *self.options, status_port=self.status_port
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**operator_env(self.kubeconfig), "POD_NAME": self.name},
            )

        def ready() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, self.log()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_until(ready, timeout=60, what=f"{self.name} /readyz")

    def get(
        self, path: str, token: str | None = None, *, status_page: bool = False, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        """GET `path` of the HTTP port (or of the status port), with a bearer token if given:
        (status, headers, body), whatever the status."""
        return http_get(
            f"http://127.0.0.1:{self.status_port if status_page else self.port}{path}", token, **headers
        )

    def scrape(self) -> str:
        """/metrics as a scraper bound to the metrics-reader role reads it."""
        status, _, text = self.get("/metrics", self.reader_token)
        assert status == 200, text
        return text

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final status patch, as in a node crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def full_log(self) -> str:
        return "\n".join(
            (self.workdir / f"{self.name}-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
        )

    def log(self) -> str:
        return "\n".join(
            (self.workdir / f"{self.name}-{i}.log").read_text(errors="replace")[-4000:]
            for i in range(1, self.starts + 1)
        )


SUITE_AUTOMATION: dict[str, Any] = {
    "maxMutatingActions": {"perNamespace": 3000, "clusterWide": 3000, "windowSeconds": 10},
    "maxConcurrentRunsPerPlaybook": 1000,
}
"""The circuit breaker and the storm guard of the suite's operators unless a test sets its own
(tests/e2e/test_breaker.py does): limits far above what any test does (the crash storm, the
floods), so that no other test waits for them."""


def ensure_breaker_namespace(kubeconfig: Path) -> None:
    """The operator keeps its breaker's state in its own namespace (`incident-operator` when run
    outside a pod), which the session's cluster has no other reason to have: created if missing
    and allowed (an installed cluster has it; its ServiceAccount may not create namespaces)."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=INSTALL_NS)))
    except client.exceptions.ApiException as exc:
        if exc.status not in (403, 409):
            raise
    finally:
        api.close()


def operator_command(port: int, *options: str, status_port: int | None = None) -> list[str]:
    """`incident-operator run` serving on 127.0.0.1:PORT, and the status page on STATUS_PORT (a
    free one unless given), as the tests start it."""
    return [
        sys.executable,
        "-m",
        "incident_operator",
        "run",
        "--http-host=127.0.0.1",
        f"--http-port={port}",
        f"--status-port={status_port or free_port()}",
        *options,
    ]


def http_get(url: str, token: str | None = None, **headers: str) -> tuple[int, dict[str, str], str]:
    """GET `url` (loopback), with a bearer token if given: (status, headers, body), whatever the status."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - loopback
            return int(resp.status), dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), exc.read().decode(errors="replace")


READERS_NS = "default"  # exists in every cluster the tests use
METRICS_READER_ROLE = "incident-operator-metrics-reader"


def service_account_token(cluster: Cluster, name: str, namespace: str = READERS_NS) -> str:
    """A TokenRequest token (2 h) of ServiceAccount namespace/name, created if missing: a real
    identity the API server authenticates, with only what the tests bind to it."""
    core = client.CoreV1Api(cluster.api)
    with contextlib.suppress(client.exceptions.ApiException):
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)
    )
    return str(core.create_namespaced_service_account_token(name, namespace, request).status.token)


def shipped_cluster_role(name: str) -> dict[str, Any]:
    """A ClusterRole as manifests/install/rbac.yaml ships it."""
    docs = yaml.safe_load_all((ROOT / "manifests" / "install" / "rbac.yaml").read_text())
    (role,) = [d for d in docs if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == name]
    return dict(role)


def bind_cluster_role(cluster: Cluster, role: str, account: str, namespace: str = READERS_NS) -> None:
    """A ClusterRoleBinding `<role>-<account>` of `role` to ServiceAccount namespace/account."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    body = {
        "metadata": {"name": f"{role}-{account}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    with contextlib.suppress(client.exceptions.ApiException):  # 409: bound already
        rbac.create_cluster_role_binding(body)


def reader_token(cluster: Cluster) -> str:
    """A token of ServiceAccount default/e2e-reader, bound to the shipped metrics-reader
    ClusterRole and to `list incidents` at cluster scope: it reads /metrics and every report."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    with contextlib.suppress(client.exceptions.ApiException):  # 409: the install has it already
        rbac.create_cluster_role(shipped_cluster_role(METRICS_READER_ROLE))
    with contextlib.suppress(client.exceptions.ApiException):
        rbac.create_cluster_role(
            {
                "metadata": {"name": "e2e-incident-lister"},
                "rules": [
                    {"apiGroups": ["incident-operator.dev"], "resources": ["incidents"], "verbs": ["list"]}
                ],
            }
        )
    bind_cluster_role(cluster, METRICS_READER_ROLE, "e2e-reader")
    bind_cluster_role(cluster, "e2e-incident-lister", "e2e-reader")
    return service_account_token(cluster, "e2e-reader")


def operator_env(kubeconfig: Path) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(kubeconfig)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LOOPBACK_FOR_EVERY_NAMESPACE = {"namespaces": [{"namespaces": ["*"], "allow": ["127.0.0.0/8"]}]}
"""`egress:` of the tests' operators: Playbooks of every namespace may reach the loopback servers."""

NOTIFY_NAMESPACE = "notify-e2e"
SEVERITY_NAMESPACE = "severity-e2e"
STATUS_NAMESPACE = "status-e2e"  # the status page tests' (statusPage.namespaces lists it)
STATUS_BASE_URL = "https://status.e2e.example"  # statusPage.baseURL: where the feed's links point


@pytest.fixture(scope="session")
def receivers() -> Iterator[LocalServer]:
    """Real local HTTP receivers for the operator's notification channels (see `operator_settings`)."""
    with local_server() as server:
        yield server


@pytest.fixture(scope="session")
def mailbox() -> Iterator[MailServer]:
    """A real SMTP server on loopback for the operator's email channel."""
    with mail_server() as server:
        yield server


def operator_settings(receivers: LocalServer, mailbox: MailServer | None = None) -> dict[str, Any]:
    def channel(name: str, type_: str, **extra: Any) -> dict[str, Any]:
        ref = {"namespace": TOKEN_NAMESPACE, "name": NOTIFY_SECRET, "key": name}
        return {"name": name, "type": type_, "urlSecretRef": ref, "namespaces": [NOTIFY_NAMESPACE], **extra}

    def paging(name: str, type_: str, url: str) -> dict[str, Any]:
        ref = {"namespace": TOKEN_NAMESPACE, "name": NOTIFY_SECRET, "key": f"{name}-key"}
        link = "https://console.example/{namespace}/{name}"
        return {
            "name": name,
            "type": type_,
            "keySecretRef": ref,
            "url": url,
            "linkTemplate": link,
            "namespaces": [NOTIFY_NAMESPACE],
        }

    paging_channels = [
        paging("pd", "pagerduty", receivers.url("/pd")),
        paging("og", "opsgenie", receivers.url("/og")),
        {
            "name": "sp",
            "type": "statuspage",
            "mode": "statuspageio",
            "pageId": "PAGE1",
            "keySecretRef": {"namespace": TOKEN_NAMESPACE, "name": NOTIFY_SECRET, "key": "sp-key"},
            "url": receivers.url("/sp"),
            "events": ["opened", "phase", "resolved"],
            "severities": ["P3"],
            "namespaces": [NOTIFY_NAMESPACE],
        },
    ]
    if mailbox is not None:
        paging_channels.append(
            {
                "name": "mail",
                "type": "email",
                "smtp": {
                    "host": "127.0.0.1",
                    "port": mailbox.port,
                    "security": "none",
                    "from": "incidents@example.com",
                },
                "to": ["oncall@example.com"],
                "cc": ["lead@example.com"],
                "events": [],  # only when its escalation level names it
                "namespaces": [NOTIFY_NAMESPACE],
            }
        )

    return {
        "alertIntake": {
            "tokens": [
                {
                    "secretRef": {"namespace": TOKEN_NAMESPACE, "name": TOKEN_SECRET, "key": TEAM_TOKEN_KEY},
                    "namespaces": [TEAM_NAMESPACE],
                }
            ]
        },
        # Short response targets for P1/P4 so that a breach is observable in a test (P1: long
        # enough for a one-step playbook to resolve an incident before it).
        "responseTargets": {"P1": "PT10S", "P3": "PT1H", "P4": "PT3S"},
        # Only in its own namespace: a P2 nobody mitigates in 3 s is treated as a P1.
        "severityEscalation": [
            {"from": "P2", "to": "P1", "notMitigatedWithinSeconds": 3, "namespaces": [SEVERITY_NAMESPACE]}
        ],
        # Only listed namespaces publish (nothing by default); incidents there need spec.public.
        "statusPage": {"namespaces": [NOTIFY_NAMESPACE, STATUS_NAMESPACE], "baseURL": STATUS_BASE_URL},
        # The tests' HTTP servers listen on loopback: private, so every test namespace's Playbook
        # requests need the grant too (with --allow-egress, which lifts the global guard).
        "egress": LOOPBACK_FOR_EVERY_NAMESPACE,
        "notifications": {
            "channels": [
                channel("ok", "slack"),
                channel("status", "statuspage", events=["opened", "phase", "resolved"]),
                channel("flaky", "webhook", events=["opened"]),
                channel("broken", "webhook", events=["resolved"], maxAttempts=2),
                channel("slow", "webhook", events=["resolved"], timeoutSeconds=0.5, maxAttempts=2),
                channel("pager", "slack", events=[], template="PAGE {severity} {name}: {event}"),
                {
                    **channel("sev-pager", "slack", events=[], template="PAGE {severity} {name}: {event}"),
                    "namespaces": [SEVERITY_NAMESPACE],
                },
                *paging_channels,
            ],
            "escalation": {
                "P1": ["pager", "sev-pager"],  # each takes its own namespace's incidents
                "P4": ["pager"],
                # P2: PagerDuty at once, then Opsgenie and email 2 s later while nobody acknowledges.
                "P2": {
                    "levels": [
                        {"afterSeconds": 0, "channels": ["pd"]},
                        {"afterSeconds": 2, "channels": ["og", "mail"] if mailbox else ["og"]},
                    ]
                },
            },
        },
    }


NOTIFY_SECRET = "notification-urls"


@pytest.fixture(scope="session")
def operator(
    crds_installed: Cluster,
    receivers: LocalServer,
    mailbox: MailServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    core = client.CoreV1Api(crds_installed.api)
    if not any(ns.metadata.name == TOKEN_NAMESPACE for ns in core.list_namespace().items):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=TOKEN_NAMESPACE)))
    wait_until(
        lambda: core.read_namespaced_service_account("default", TOKEN_NAMESPACE),
        timeout=60,
        what="token namespace",
    )
    ensure_secret(
        crds_installed, TOKEN_NAMESPACE, TOKEN_SECRET, {"token": ALERT_TOKEN, TEAM_TOKEN_KEY: TEAM_TOKEN}
    )
    names = ("ok", "status", "flaky", "broken", "slow", "pager", "sev-pager")
    urls = {name: receivers.url(f"/{name}") for name in names}
    keys = {"pd-key": "R0UTING-KEY", "og-key": "GENIE-KEY", "sp-key": "SP-KEY"}
    ensure_secret(crds_installed, TOKEN_NAMESPACE, NOTIFY_SECRET, {**urls, **keys})
    process = OperatorProcess(
        crds_installed.kubeconfig, tmp_path_factory.mktemp("operator"), operator_settings(receivers, mailbox)
    )
    process.reader_token = reader_token(crds_installed)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def ensure_secret(cluster: Cluster, namespace: str, name: str, data: dict[str, str]) -> None:
    """Create the Secret, or replace its data if it exists."""
    core = client.CoreV1Api(cluster.api)
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
    try:
        core.create_namespaced_secret(namespace, body)
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def kubectl_as(cluster: Cluster, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl as the user of `kubeconfig` (see `token_kubeconfig`)."""
    return subprocess.run(
        [str(cluster.kubectl), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class Alertmanager:
    """A real Alertmanager (built from its Go module) delivering to the operator, and amtool."""

    def __init__(self, bin_dir: Path, workdir: Path, operator_port: int, token: str) -> None:
        self.bin_dir, self.workdir = bin_dir, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "route": {
                "receiver": "incident-operator",
                "group_by": ["..."],  # every alert is its own group: one Incident per alert
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "5s",  # re-sends often, which the operator must absorb
            },
            "receivers": [
                {
                    "name": "incident-operator",
                    "webhook_configs": [
                        {
                            "url": f"http://127.0.0.1:{operator_port}/alertmanager",
                            "send_resolved": True,
                            "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                        }
                    ],
                }
            ],
        }
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "alertmanager.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(bin_dir / "alertmanager"),
                    f"--config.file={workdir / 'alertmanager.yml'}",
                    f"--storage.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)

        wait_until(ready, timeout=60, what="Alertmanager ready")

    def amtool(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.bin_dir / "amtool"), f"--alertmanager.url={self.url}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def fire(self, alertname: str, labels: dict[str, str], summary: str) -> None:
        self.amtool(
            "alert",
            "add",
            alertname,
            *[f"{k}={v}" for k, v in labels.items()],
            f'--annotation=summary="{summary}"',
        )

    def resolve(self, alertname: str, labels: dict[str, str], summary: str) -> None:
        from datetime import UTC, datetime, timedelta

        ended = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.amtool(
            "alert",
            "add",
            alertname,
            *[f"{k}={v}" for k, v in labels.items()],
            f'--annotation=summary="{summary}"',
            f"--end={ended}",
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def alertmanager(
    operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Alertmanager]:
    manager = Alertmanager(
        alertmanager_bin(),
        tmp_path_factory.mktemp("alertmanager"),
        operator.port,
        ALERT_TOKEN,
    )
    try:
        yield manager
    finally:
        manager.stop()


# --------------------------------------------------------------------------- the installed cluster

INSTALL_NS = "incident-operator"


def deployment_available(cluster: Cluster) -> bool:
    deployment = client.AppsV1Api(cluster.api).read_namespaced_deployment("incident-operator", INSTALL_NS)
    conditions = {c.type: c.status for c in deployment.status.conditions or []}
    return conditions.get("Available") == "True" and deployment.status.ready_replicas == 2


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A local cluster of its own with `kubectl apply --server-side -k manifests/install` applied.

    Of its own, because the session's operator runs cluster-wide as the admin and would act on
    these incidents too; the tests using it run their operators one module at a time.
    """
    data_dir = tmp_path_factory.mktemp("installed-cluster") / "data"
    kubeconfig = start_local_cluster(data_dir)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        cluster = Cluster(kubeconfig=kubeconfig, kubectl=bin_dir() / "kubectl", api=api)
        applied = cluster.run_kubectl(
            "apply", "--server-side", "-k", str(ROOT / "manifests" / "install"), check=False
        )
        assert applied.returncode == 0, applied.stderr
        wait_until(lambda: deployment_available(cluster), timeout=120, what="Deployment Available")
        yield cluster
    finally:
        api.close()
        stop_local_cluster(data_dir)


def token_kubeconfig(cluster: Cluster, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig at `path` holding a TokenRequest token of ServiceAccount namespace/account:
    a real, authenticated user of the API server (not an impersonation of the admin)."""
    token = cluster.run_kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = admin["clusters"][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [entry],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": account, "context": {"cluster": entry["name"], "user": account}}],
                "current-context": account,
            }
        )
    )
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def named_namespace(cluster: Cluster, name: str) -> Iterator[str]:
    """A namespace with a fixed name (config refers to it), after an earlier run's is gone;
    deleted afterwards (not awaited)."""
    core = client.CoreV1Api(cluster.api)
    wait_until(
        lambda: name not in {n.metadata.name for n in core.list_namespace().items},
        timeout=120,
        what=f"namespace {name} from an earlier run deleted",
    )
    create_namespace(cluster, name, opt_in=False)
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def notify_namespace(crds_installed: Cluster, operator: OperatorProcess) -> Iterator[str]:
    """The one namespace the test operator's channels are limited to (so other tests stay quiet),
    shared by the modules that watch what the channels receive."""
    with named_namespace(crds_installed, NOTIFY_NAMESPACE) as name:
        yield name


def create_namespace(cluster: Cluster, name: str, *, opt_in: bool, jobs: bool = False) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(lambda: core.read_namespaced_service_account("default", name), timeout=60, what="default SA")
    if opt_in:
        opt_in_namespace(cluster, name)
    if jobs:
        opt_in_namespace(cluster, name, "incident-operator-jobs")


def opt_in_namespace(cluster: Cluster, name: str, binding: str = "incident-operator-remediator") -> None:
    """Exactly the one-liner of docs/operations/install.md (and `make opt-in`); with binding
    `incident-operator-jobs`, the second opt-in, for Job steps (`make opt-in-jobs`)."""
    cluster.run_kubectl(
        "create",
        "rolebinding",
        binding,
        "-n",
        name,
        f"--clusterrole={binding}",
        f"--serviceaccount={INSTALL_NS}:incident-operator",
    )
