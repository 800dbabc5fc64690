#!/usr/bin/env python3
"""Build, start and stop a real, single-machine Kubernetes control plane without Docker.

This module owns the local cluster that incident-operator's tests and demo run against:
etcd, kube-apiserver, kube-controller-manager and kube-scheduler from one multi-call binary
(``kube-local``, built from the Kubernetes Go modules in this directory) and kwok as the
simulated kubelet for a pool of fake nodes. It uses only the Python standard library so that
``make cluster`` works before any virtual environment exists. It must not import the operator.

Commands:
  build   build (or reuse) the binaries, cached by a key over the pinned versions
  up      start a cluster in a data directory; the last line printed is ``KUBECONFIG=<path>``
  down    stop every process the cluster started (by PID, verified) and remove its data
  status  say whether a cluster runs in the data directory
  build-alertmanager, build-prometheus, build-helm
          build (or reuse) those tools, cached beside the binaries; print their directory
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KUBERNETES_VERSION = "v1.36.3"
KWOK_VERSION = "v0.8.0"
ALERTMANAGER_VERSION = "v0.35.0"
PROMETHEUS_VERSION = "v3.16.0"
"""Prometheus release; its Go module tags v3.x.y as v0.3xx.y (v3.16.0 is v0.316.0)."""
HELM_VERSION = "v3.22.0"
"""Helm 3 (the major most clusters' tooling runs; the chart is apiVersion v2, which Helm 4 installs too)."""
MIN_GO = (1, 26)
# kwok's own stage definitions (shipped in its module) that make nodes Ready with leases,
# and pods Running/Ready, completed and deleted quickly.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_ANNOTATION = "kwok.x-k8s.io/node"
ADMIN_USER = "local-admin"


class ClusterError(Exception):
    """A problem the user can act on; printed without a traceback."""


def log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- build


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "incident-operator" / "localcluster"


def go_version() -> tuple[int, int]:
    go = shutil.which("go")
    if go is None:
        need = ".".join(map(str, MIN_GO))
        raise ClusterError(
            f"Go is not installed or not on PATH. Install Go >= {need} (https://go.dev/doc/install) "
            "and run again."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or match is None:
        raise ClusterError(f"could not read the Go version from `go env GOVERSION`: {out.stderr.strip()}")
    found = (int(match.group(1)), int(match.group(2)))
    if found < MIN_GO:
        have, need = ".".join(map(str, found)), ".".join(map(str, MIN_GO))
        raise ClusterError(
            f"Go {have} is too old: Kubernetes {KUBERNETES_VERSION} needs Go >= {need}. "
            "Install a newer Go and run again."
        )
    return found


def build_key() -> str:
    """Key of the binary cache: pinned versions, our Go sources and module files, Go's minor."""
    digest = hashlib.sha256()
    digest.update(f"k8s={KUBERNETES_VERSION};kwok={KWOK_VERSION};stages={KWOK_STAGE_FILES}".encode())
    for path in sorted([HERE / "go.mod", HERE / "go.sum", *(HERE / "cmd").rglob("*.go")]):
        digest.update(path.relative_to(HERE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def bin_dir() -> Path:
    return cache_root() / f"bin-{KUBERNETES_VERSION}-{KWOK_VERSION}-{build_key()}"


def ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    pkgs = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    values = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    flags = ["-s", "-w"]
    for pkg in pkgs:
        flags += [f"-X {pkg}.{name}={value}" for name, value in values.items()]
    return " ".join(flags)


def go_build_with_progress(args: list[str], cwd: Path, env: dict[str, str], what: str, total: int) -> None:
    """Run `go build -v ...`, turning its package lines into a progress report."""
    cmd = ["go", *args[:1], "-v", *args[1:]]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None  # noqa: S101 - Popen with PIPE always has stdout
    done = 0
    tail: list[str] = []
    last_report = 0.0
    started = time.monotonic()
    for raw_line in proc.stdout:
        line = raw_line.rstrip()
        tail = [*tail, line][-40:]
        if line and not line.startswith(("go: ", "#")) and " " not in line:
            done += 1
            now = time.monotonic()
            if now - last_report > 15:
                last_report = now
                pct = min(99, 100 * done // max(total, 1))
                log(f"building {what}: {done}/~{total} packages ({pct}%), {now - started:.0f}s, at {line}")
    if proc.wait() != 0:
        raise ClusterError(f"building {what} failed:\n" + "\n".join(tail))
    log(f"built {what} in {time.monotonic() - started:.0f}s")


def count_packages(pkg: str, cwd: Path, env: dict[str, str]) -> int:
    out = subprocess.run(
        ["go", "list", "-deps", pkg], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise ClusterError(f"`go list -deps {pkg}` failed:\n{out.stderr[-3000:]}")
    return len(out.stdout.split())


def build(force: bool = False) -> Path:
    """Return the directory holding kube-local, kubectl, kwok and kwok-stages.yaml, building it once."""
    target = bin_dir()
    if (target / ".complete").exists() and not force:
        return target
    go_version()
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    log(
        f"cold build of Kubernetes {KUBERNETES_VERSION} control plane and kwok {KWOK_VERSION} "
        f"into {target} (takes many minutes on 2 cores; cached afterwards)"
    )
    log("downloading Go modules (Go module proxy)...")
    dl = subprocess.run(
        ["go", "mod", "download"], cwd=HERE, env=env, capture_output=True, text=True, check=False
    )
    if dl.returncode != 0:
        raise ClusterError(f"`go mod download` failed:\n{dl.stderr[-3000:]}")
    total = count_packages("./cmd/kube-local", HERE, env)
    go_build_with_progress(
        ["build", "-trimpath", "-ldflags", ldflags(), "-o", str(tmp / "kube-local"), "./cmd/kube-local"],
        HERE,
        env,
        f"kube-local {KUBERNETES_VERSION} (etcd, apiserver, controller-manager, scheduler, kubectl)",
        total,
    )
    (tmp / "kubectl").symlink_to("kube-local")
    kwok_env = {**env, "GOBIN": str(tmp)}
    kwok_pkg = f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"
    go_build_with_progress(
        ["install", "-trimpath", "-ldflags", "-s -w", kwok_pkg], HERE, kwok_env, f"kwok {KWOK_VERSION}", 700
    )
    write_kwok_stages(tmp / "kwok-stages.yaml", env)
    (tmp / ".complete").write_text(json.dumps({"seconds": round(time.monotonic() - started)}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log(f"build complete in {time.monotonic() - started:.0f}s")
    return target


def fresh_build_dir(target: Path) -> Path:
    """An empty `<target>.tmp` to build into (Go checked first); `complete_build` moves it."""
    go_version()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def complete_build(tmp: Path, target: Path, started: float, what: str) -> Path:
    """Mark the build in `tmp` complete and put it in place of `target` (never half a build)."""
    (tmp / ".complete").write_text(json.dumps({"seconds": round(time.monotonic() - started)}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log(f"built {what} in {time.monotonic() - started:.0f}s")
    return target


def build_alertmanager(force: bool = False) -> Path:
    """Return the directory holding alertmanager and amtool, building them once.

    The module as served by the proxy lacks the web UI's built assets (`ui/app/dist`, which its
    `go:embed` needs), so it is built from a copy with a one-page placeholder UI; the API that
    tests and the demo use is unaffected.
    """
    target = cache_root() / f"alertmanager-{ALERTMANAGER_VERSION}"
    if (target / ".complete").exists() and not force:
        return target
    tmp = fresh_build_dir(target)
    started = time.monotonic()
    module = f"github.com/prometheus/alertmanager@{ALERTMANAGER_VERSION}"
    log(f"building Alertmanager {ALERTMANAGER_VERSION} (alertmanager, amtool) into {target}")
    env = {**os.environ, "CGO_ENABLED": "0"}
    source = tmp / "src"
    shutil.copytree(module_dir(module, env), source)
    for path in [source, *source.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the module cache is read-only
    dist = source / "ui" / "app" / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "index.html").write_text(
        "<html><body>Alertmanager (UI not built; the API is at /api/v2)</body></html>\n"
    )
    go_build_with_progress(
        [
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(tmp) + "/",
            "./cmd/alertmanager",
            "./cmd/amtool",
        ],
        source,
        env,
        f"alertmanager {ALERTMANAGER_VERSION}",
        600,
    )
    shutil.rmtree(source)
    return complete_build(tmp, target, started, "Alertmanager")


def prometheus_module_version(release: str = PROMETHEUS_VERSION) -> str:
    """The Go module version of a Prometheus release: v3.16.0 is tagged v0.316.0 in its module."""
    major, minor, patch = release.lstrip("v").split(".")
    return f"v0.{int(major) * 100 + int(minor)}.{patch}"


def build_prometheus(force: bool = False) -> Path:
    """Return the directory holding prometheus and promtool, building them once.

    Built with `remove_all_sd` (only static, file and HTTP service discovery: the local stack
    scrapes fixed loopback targets), which keeps the cloud SDKs out of a cold build, and without
    `builtinassets` (no web UI assets in the module; the HTTP API is unaffected).
    """
    target = cache_root() / f"prometheus-{PROMETHEUS_VERSION}"
    if (target / ".complete").exists() and not force:
        return target
    tmp = fresh_build_dir(target)
    started = time.monotonic()
    version = prometheus_module_version()
    log(f"building Prometheus {PROMETHEUS_VERSION} (module {version}: prometheus, promtool) into {target}")
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(tmp)}
    go_build_with_progress(
        [
            "install",
            "-trimpath",
            "-tags",
            "remove_all_sd",
            "-ldflags",
            f"-s -w -X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION.lstrip('v')}"
            f" -X github.com/prometheus/common/version.Branch=module-{version}",
            f"github.com/prometheus/prometheus/cmd/prometheus@{version}",
            f"github.com/prometheus/prometheus/cmd/promtool@{version}",
        ],
        HERE,
        env,
        f"prometheus {PROMETHEUS_VERSION}",
        1260,  # packages of prometheus and promtool together, as counted in a cold build
    )
    return complete_build(tmp, target, started, "Prometheus")


def build_helm(force: bool = False) -> Path:
    """Return the directory holding helm, building it once from its Go module.

    The version is stamped with `-X` as Helm's own release builds do; without it `helm version`
    prints only the major and minor.
    """
    target = cache_root() / f"helm-{HELM_VERSION}"
    if (target / ".complete").exists() and not force:
        return target
    tmp = fresh_build_dir(target)
    started = time.monotonic()
    log(f"building Helm {HELM_VERSION} into {target}")
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(tmp)}
    go_build_with_progress(
        [
            "install",
            "-trimpath",
            "-ldflags",
            f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
        ],
        HERE,
        env,
        f"helm {HELM_VERSION}",
        900,  # packages of helm, as counted in a cold build
    )
    return complete_build(tmp, target, started, "Helm")


def module_dir(module: str, env: dict[str, str]) -> Path:
    """Download `module` (path@version) through the Go module proxy; return its source directory."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise ClusterError(f"could not download {module}:\n{out.stderr[-2000:]}")
    return Path(json.loads(out.stdout)["Dir"])


KWOK_LOG_LINES = (
    'level=info msg="starting" component=app (a kwok-simulated container: logs from localcluster)',
    'level=info msg="listening" address=0.0.0.0:8080',
    'level=warn msg="slow request" path=/v1/upload duration=2.4s',
    'level=error msg="upstream unavailable" upstream=postgres:5432',
)


def write_kwok_logs(directory: Path) -> Path:
    """A kwok ClusterLogs configuration that serves every container the same log file, so that
    `kubectl logs` (and the operator's evidence and Job logs) read real content from kwok's pods."""
    directory.mkdir(parents=True, exist_ok=True)
    log_file = directory / "container.log"
    # The CRI log format kubelets read: time, stream, F(ull line) or P(artial), content.
    log_file.write_text(
        "".join(
            f"2026-01-01T00:00:0{i}.000000000Z stdout F {line}\n" for i, line in enumerate(KWOK_LOG_LINES)
        )
    )
    config = directory / "logs.yaml"
    document = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": "every-container"},
        "spec": {"logs": [{"logsFile": str(log_file), "follow": False}]},
    }
    config.write_text(json.dumps(document, indent=2) + "\n")  # JSON is valid YAML for kwok
    return config


def write_kwok_stages(dest: Path, env: dict[str, str]) -> None:
    """Concatenate kwok's own stage definitions, taken from its module in the module cache."""
    source = module_dir(f"sigs.k8s.io/kwok@{KWOK_VERSION}", env)
    docs = [(source / rel).read_text().strip() for rel in KWOK_STAGE_FILES]
    dest.write_text("\n---\n".join(docs) + "\n")


# --------------------------------------------------------------------------- state


@dataclass
class State:
    """What `up` wrote into the data directory; `down` and `status` read it back."""

    data_dir: str
    bin_dir: str
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    token: str = ""
    argvs: dict[str, list[str]] = field(default_factory=dict)
    """Each component's command line (without extra args), so that `restart` can start it again."""

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return Path(self.data_dir) / "kubeconfig"

    def save(self) -> None:
        path = Path(self.data_dir) / "state.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, data_dir: Path) -> State | None:
        path = data_dir / "state.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def pid_is_ours(pid: int, binary_dir: str) -> bool:
    """True if `pid` is alive and runs one of our binaries (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not cmdline or not cmdline[0]:
        return False
    return cmdline[0].decode(errors="replace").startswith(binary_dir)


def live_pids(state: State) -> dict[str, int]:
    return {name: pid for name, pid in state.pids.items() if pid_is_ours(pid, state.bin_dir)}


def stop_processes(state: State, timeout: float = 20.0) -> None:
    """SIGTERM every live component (kwok first, etcd last), then SIGKILL what remains."""
    order = [c for c in reversed(COMPONENTS) if c in state.pids]
    for name in order:
        pid = state.pids[name]
        if pid_is_ours(pid, state.bin_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_gone(pid, state.bin_dir, timeout / 2)
    for name, pid in live_pids(state).items():
        log(f"{name} (pid {pid}) ignored SIGTERM; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, state.bin_dir, timeout / 2)


def wait_gone(pid: int, binary_dir: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_is_ours(pid, binary_dir):
            return
        time.sleep(0.1)


# --------------------------------------------------------------------------- up


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


class Launcher:
    """Starts components as detached processes, recording their PIDs as it goes."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.logs = Path(state.data_dir) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> None:
        self.state.argvs[name] = list(argv)
        argv = [*argv, *self.state.extra_args.get(name, [])]
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.state.data_dir,
            )
        self.procs[name] = proc
        self.state.pids[name] = proc.pid
        self.state.save()

    def ensure_running(self, name: str) -> None:
        # Ask the child itself (we are its parent): right after fork and before exec its
        # /proc cmdline is still ours, so a cmdline check would report it gone.
        if self.procs[name].poll() is not None:
            raise ClusterError(
                f"{name} exited during start; last lines of {self.logs / (name + '.log')}:\n"
                + log_tail(self.logs / f"{name}.log")
            )


def wait_for(what: str, check: Any, timeout: float, launcher: Launcher, watch: tuple[str, ...]) -> Any:
    """Poll `check()` until it returns a truthy value; fail early if a watched component dies."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        for name in watch:
            launcher.ensure_running(name)
        try:
            result = check()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            result, last_error = None, str(exc)
        if result:
            return result
        time.sleep(0.25)
    raise ClusterError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last_error}" if last_error else "")
    )


class Api:
    """A minimal Kubernetes REST client (stdlib only) for bootstrapping the cluster."""

    def __init__(self, server: str, token: str, ca_file: Path | None) -> None:
        self.server = server
        self.token = token
        if ca_file is None:
            self.ctx = ssl._create_unverified_context()  # noqa: S323 - only until the CA exists
        else:
            self.ctx = ssl.create_default_context(cafile=str(ca_file))

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310 - https only
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:  # noqa: S310 - https to loopback
            raw = resp.read()
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()

    def get_text(self, path: str) -> str:
        try:
            return str(self.request("GET", path))
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"


def http_ok(url: str) -> bool:
    ctx = ssl._create_unverified_context()  # noqa: S323 - component health endpoints, self-signed
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


def node_manifest(name: str) -> dict[str, Any]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def nodes_ready(api: Api, count: int) -> bool:
    items = api.request("GET", "/api/v1/nodes")["items"]
    ready = [
        n
        for n in items
        if any(
            c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", [])
        )
    ]
    return len(ready) >= count


def write_kubeconfig(state: State, ca_file: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": state.server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": state.token}}],
        "contexts": [
            {"name": "local", "context": {"cluster": "local", "user": ADMIN_USER, "namespace": "default"}}
        ],
        "current-context": "local",
    }
    state.kubeconfig.write_text(json.dumps(config, indent=2))  # JSON is valid YAML for kubeconfig
    state.kubeconfig.chmod(0o600)


def prepare_data_dir(data_dir: Path) -> State | None:
    """Return the running cluster's state, or None after clearing what a crashed run left."""
    state = State.load(data_dir)
    if state is not None:
        alive = live_pids(state)
        if alive and set(alive) == set(COMPONENTS) and state.kubeconfig.exists():
            return state
        if alive:
            log(f"data directory {data_dir} holds a partly running cluster ({', '.join(alive)}); stopping it")
            stop_processes(state)
        else:
            log(f"removing stale data directory {data_dir} left by a run that did not stop cleanly")
    elif data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / "logs").exists() and not (data_dir / "etcd").exists():
            raise ClusterError(
                f"{data_dir} exists and does not look like a local-cluster data directory; "
                "choose another --dir or remove it yourself"
            )
        log(f"removing stale data directory {data_dir} left by a run that did not stop cleanly")
    shutil.rmtree(data_dir, ignore_errors=True)
    return None


def parse_extra_args(values: list[str]) -> dict[str, list[str]]:
    """Turn repeated `COMPONENT=--flag=value` options into per-component argument lists."""
    extra: dict[str, list[str]] = {}
    for value in values:
        name, sep, flag = value.partition("=")
        if not sep or name not in COMPONENTS or not flag.startswith("-"):
            raise ClusterError(
                f"--extra-arg {value!r}: expected COMPONENT=--flag[=value] with COMPONENT one of "
                + ", ".join(COMPONENTS)
            )
        extra.setdefault(name, []).append(flag)
    return extra


def up(
    data_dir: Path,
    nodes: int,
    apiserver_port: int | None,
    timeout: float,
    extra_args: dict[str, list[str]] | None = None,
) -> State:
    binaries = build()
    data_dir = data_dir.resolve()
    running = prepare_data_dir(data_dir)
    if running is not None:
        log(f"a cluster is already running in {data_dir}")
        return running
    if apiserver_port is not None and port_in_use(apiserver_port):
        raise ClusterError(
            f"port {apiserver_port} on 127.0.0.1 is already in use; choose another with --apiserver-port "
            "(or leave it out to use a free port)"
        )
    pki = data_dir / "pki"
    pki.mkdir(parents=True)
    data_dir.chmod(0o700)
    state = State(
        data_dir=str(data_dir),
        bin_dir=str(binaries),
        extra_args=extra_args or {},
        token=secrets.token_hex(24),
    )
    state.ports = {
        "etcd": free_port(),
        "etcd-peer": free_port(),
        "apiserver": apiserver_port or free_port(),
        "controller-manager": free_port(),
        "scheduler": free_port(),
        "kwok": free_port(),
    }
    state.save()
    launcher = Launcher(state)
    started = time.monotonic()
    try:
        _start_all(state, launcher, binaries, pki, nodes, timeout)
    except BaseException:
        log("start failed; stopping every component that was started")
        stop_processes(state)
        raise
    log(f"cluster ready in {time.monotonic() - started:.1f}s: {nodes} nodes Ready, API at {state.server}")
    return state


def _start_all(  # noqa: PLR0917 - one internal call site
    state: State, launcher: Launcher, binaries: Path, pki: Path, nodes: int, timeout: float
) -> None:
    kube = str(binaries / "kube-local")
    data_dir = Path(state.data_dir)
    (pki / "tokens.csv").write_text(f'{state.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    sa_key = pki / "sa.key"
    subprocess.run([kube, "sa-key", str(sa_key)], check=True)

    log("starting etcd")
    etcd_url = f"http://127.0.0.1:{state.ports['etcd']}"
    launcher.start(
        "etcd",
        [
            kube,
            "etcd",
            f"--data-dir={data_dir / 'etcd'}",
            f"--listen-client-url={etcd_url}",
            f"--listen-peer-url=http://127.0.0.1:{state.ports['etcd-peer']}",
            "--unsafe-no-fsync",
        ],
    )
    wait_for("etcd health", lambda: http_ok(etcd_url + "/health"), timeout, launcher, ("etcd",))

    log("starting kube-apiserver")
    launcher.start(
        "kube-apiserver",
        [
            kube,
            "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={state.ports['apiserver']}",
            f"--cert-dir={pki}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--profiling=false",
            "--endpoint-reconciler-type=none",
            # kwok's nodes are reached on their InternalIP (127.0.0.1): logs through the API server
            "--kubelet-preferred-address-types=InternalIP",
        ],
    )
    bootstrap = Api(state.server, state.token, None)
    wait_for(
        "kube-apiserver /readyz",
        lambda: bootstrap.get_text("/readyz") == "ok",
        timeout,
        launcher,
        ("etcd", "kube-apiserver"),
    )
    ca_file = pki / "apiserver.crt"
    api = Api(state.server, state.token, ca_file)
    api.get_text("/readyz")  # proves the kubeconfig's CA verifies the serving certificate
    write_kubeconfig(state, ca_file)
    (data_dir / "kubectl").symlink_to(binaries / "kubectl")  # kubectl of the same release

    kubeconfig = str(state.kubeconfig)
    log("starting kube-controller-manager, kube-scheduler and kwok")
    launcher.start(
        "kube-controller-manager",
        [
            kube,
            "kube-controller-manager",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['controller-manager']}",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={ca_file}",
            "--use-service-account-credentials=false",
            "--profiling=false",
        ],
    )
    launcher.start(
        "kube-scheduler",
        [
            kube,
            "kube-scheduler",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['scheduler']}",
            "--profiling=false",
        ],
    )
    launcher.start(
        "kwok",
        [
            str(binaries / "kwok"),
            f"--kubeconfig={kubeconfig}",
            f"--config={binaries / 'kwok-stages.yaml'}",
            f"--config={write_kwok_logs(data_dir / 'kwok')}",
            f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            # The simulated kubelets' server: its port is each node's kubelet endpoint, so the API
            # server's pods/log requests reach it (HTTPS; the API server does not verify kubelet
            # certificates here, so the API server's own self-signed pair serves).
            f"--server-address=127.0.0.1:{state.ports['kwok']}",
            f"--node-port={state.ports['kwok']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
        ],
    )
    all_components = COMPONENTS
    for name, port in (("kube-controller-manager", "controller-manager"), ("kube-scheduler", "scheduler")):
        url = f"https://127.0.0.1:{state.ports[port]}/healthz"
        wait_for(f"{name} /healthz", lambda url=url: http_ok(url), timeout, launcher, all_components)

    log(f"creating {nodes} kwok nodes")
    for i in range(nodes):
        api.request("POST", "/api/v1/nodes", node_manifest(f"kwok-node-{i}"))
    wait_for(f"{nodes} nodes Ready", lambda: nodes_ready(api, nodes), timeout, launcher, all_components)
    wait_for(
        "the default ServiceAccount",
        lambda: api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default"),
        timeout,
        launcher,
        all_components,
    )


# --------------------------------------------------------------------------- down / status


def down(data_dir: Path) -> None:
    data_dir = data_dir.resolve()
    state = State.load(data_dir)
    if state is None:
        if data_dir.exists():
            log(f"no cluster state in {data_dir}; removing the directory")
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            log(f"no cluster in {data_dir}; nothing to stop")
        return
    stop_processes(state)
    left = live_pids(state)
    if left:
        raise ClusterError(f"could not stop {left}; data kept in {data_dir}")
    shutil.rmtree(data_dir, ignore_errors=True)
    log(f"stopped {', '.join(state.pids) or 'nothing'} and removed {data_dir}")


def restart(data_dir: Path, component: str, timeout: float = 60.0) -> None:
    """Stop one component (SIGTERM, then SIGKILL) and start it again with the same command line;
    return once it serves again. For fault tests: the rest of the cluster keeps running."""
    state = State.load(data_dir.resolve())
    if state is None:
        raise ClusterError(f"no cluster in {data_dir}")
    if component not in state.argvs:
        known = ", ".join(sorted(state.argvs)) or "none (a cluster started by an older version)"
        raise ClusterError(f"cannot restart {component!r}: known components: {known}")
    pid = state.pids.get(component)
    if pid is not None and pid_is_ours(pid, state.bin_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_gone(pid, state.bin_dir, timeout / 2)
        if pid_is_ours(pid, state.bin_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, state.bin_dir, timeout / 2)
    launcher = Launcher(state)
    launcher.start(component, state.argvs[component])
    if component == "etcd":
        url = f"http://127.0.0.1:{state.ports['etcd']}/health"
        wait_for("etcd health", lambda: http_ok(url), timeout, launcher, (component,))
    elif component == "kube-apiserver":
        api = Api(state.server, state.token, Path(state.data_dir) / "pki" / "apiserver.crt")
        wait_for(
            "kube-apiserver /readyz", lambda: api.get_text("/readyz") == "ok", timeout, launcher, (component,)
        )
    log(f"restarted {component} (pid {launcher.procs[component].pid})")


def status(data_dir: Path) -> int:
    state = State.load(data_dir.resolve())
    if state is None:
        print(f"no cluster in {data_dir}")
        return 1
    alive = live_pids(state)
    for name in COMPONENTS:
        pid = state.pids.get(name)
        print(f"{name:24} {'running' if name in alive else 'stopped'}" + (f" (pid {pid})" if pid else ""))
    print(f"KUBECONFIG={state.kubeconfig}")
    return 0 if set(alive) == set(COMPONENTS) else 1


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so a killed `up` still cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localcluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build (or reuse) the cached binaries")
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("bin-dir", help="print the directory of the cached binaries")
    sub.add_parser(
        "build-alertmanager", help="build (or reuse) alertmanager and amtool; print their directory"
    )
    sub.add_parser("build-prometheus", help="build (or reuse) prometheus and promtool; print their directory")
    sub.add_parser("build-helm", help="build (or reuse) helm; print its directory")
    for name in ("up", "down", "status", "restart"):
        p = sub.add_parser(name)
        if name == "restart":
            p.add_argument("component", choices=COMPONENTS, help="the component to stop and start again")
        p.add_argument(
            "--dir", type=Path, default=Path(".localcluster"), help="data directory (default .localcluster)"
        )
        if name == "up":
            p.add_argument("--nodes", type=int, default=3, help="number of kwok nodes (default 3)")
            p.add_argument(
                "--apiserver-port", type=int, default=None, help="fixed API server port (default: a free one)"
            )
            p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each start step")
            p.add_argument(
                "--extra-arg",
                action="append",
                default=[],
                metavar="COMPONENT=--FLAG",
                help="extra flag for one component, e.g. kube-apiserver=--v=4 (repeatable)",
            )
    args = parser.parse_args(argv)
    try:
        with interrupts_as_exceptions():
            if args.command == "build":
                print(build(force=args.force))
            elif args.command == "bin-dir":
                print(bin_dir())
            elif args.command == "build-alertmanager":
                print(build_alertmanager())
            elif args.command == "build-prometheus":
                print(build_prometheus())
            elif args.command == "build-helm":
                print(build_helm())
            elif args.command == "up":
                extra = parse_extra_args(args.extra_arg)
                state = up(args.dir, args.nodes, args.apiserver_port, args.timeout, extra)
                print(f"KUBECONFIG={state.kubeconfig}", flush=True)
            elif args.command == "down":
                down(args.dir)
            elif args.command == "restart":
                restart(args.dir, args.component)
            else:
                return status(args.dir)
    except ClusterError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
