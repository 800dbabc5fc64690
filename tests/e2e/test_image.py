"""The image, built and run here, and the package and release made from the same tree.

The image is built once per run with `hack/image/build.sh` (what `make image` runs; podman with runc,
the Debian base from mmdebstrap, layers reused from an earlier build), then:
- its console scripts answer `--help`; it has no pip, has the time zone database, runs as 65532,
  carries the OCI labels and a CycloneDX SBOM that lists what is installed;
- the operator runs FROM THE IMAGE (`podman run --network host --read-only`) as the install's
  ServiceAccount (a TokenRequest token in a kubeconfig mounted read-only) against the `installed`
  local cluster until /healthz answers, and remediates an incident in an opted-in namespace;
- `make release` (the image reused, IMAGE_BUILT=1) writes the wheel, sdist, image archive, SBOM,
  install.yaml and SHA256SUMS and prints the CHANGELOG section, and refuses another version;
- `pipx install` of the released wheel gives a `kubectl incident` that lists the incident above.
Image size and start times are printed (`pytest -s`) and recorded in the README, not asserted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.e2e.conftest import Cluster, create_namespace, free_port, kubectl_as, token_kubeconfig
from tests.e2e.engine_helpers import Scenario, deploy_ref
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "operator" / "incident_operator" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)
IMAGE = f"localhost/incident-operator:{VERSION}"
CONTAINERS_CONF = ROOT / "hack" / "image" / "containers.conf"
ENV = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
SBOM_PATH = "/usr/share/doc/incident-operator/sbom.cdx.json"
NS = "incident-operator"
UID = 65532


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False, env=ENV
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def in_image(entrypoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ENTRYPOINT ARGS in the image, with no network, as the image's user."""
    return podman("run", "--rm", "--network", "none", "--entrypoint", entrypoint, IMAGE, *args, check=False)


@pytest.fixture(scope="module")
def image() -> str:
    started = time.monotonic()
    built = subprocess.run(
        ["sh", "hack/image/build.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
        env={**ENV, "IMAGE": IMAGE, "VERSION": VERSION, "PYTHON": sys.executable},
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-4000:]
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\nimage: {IMAGE} built in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


def test_the_console_scripts_answer_in_the_image(image: str) -> None:
    started = time.monotonic()
    helped = podman("run", "--rm", "--network", "none", image, "--help")  # the entrypoint: `run`
    print(f"\nimage: `podman run IMAGE --help` in {time.monotonic() - started:.2f} s")
    assert "--leader-elect" in helped.stdout
    for script, words in (("incident-operator", "run"), ("kubectl-incident", "acknowledge")):
        done = in_image(script, "--help")
        assert done.returncode == 0, done.stderr
        assert words in done.stdout, done.stdout


def test_no_pip_a_time_zone_database_a_numeric_user_and_the_labels(image: str) -> None:
    probe = """
import importlib.util, os, sys, zoneinfo
from datetime import datetime
berlin = zoneinfo.ZoneInfo("Europe/Berlin")
summer, winter = datetime(2026, 7, 1, 12, tzinfo=berlin), datetime(2026, 1, 1, 12, tzinfo=berlin)
print(summer.utcoffset(), winter.utcoffset())
print(importlib.util.find_spec("pip"), importlib.util.find_spec("ensurepip"))
found = [os.path.join(d, f) for d in os.environ["PATH"].split(":") if os.path.isdir(d) for f in os.listdir(d)
         if f.startswith("pip")]
found += [p for p in ("/usr/share/python-wheels",) if os.path.exists(p)]
print(found, os.getuid(), os.getgid())
"""
    for python in ("/opt/incident-operator/bin/python", "/usr/bin/python3"):
        done = in_image(python, "-c", probe)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["2:00:00 1:00:00", "None None", f"[] {UID} {UID}"], done.stdout
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/opt/incident-operator/bin/incident-operator", "run"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    if head.returncode == 0:  # a source archive without .git says "unknown"
        assert labels["org.opencontainers.image.revision"] == head.stdout.strip()


def test_the_sbom_in_the_image_lists_what_is_installed(image: str) -> None:
    text = in_image("/bin/cat", SBOM_PATH).stdout
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert error is None, error
    doc = json.loads(text)
    assert doc["metadata"]["component"]["version"] == VERSION
    pypi = {c["name"]: c["version"] for c in doc["components"] if c["purl"].startswith("pkg:pypi/")}
    listed = in_image(
        "/opt/incident-operator/bin/python",
        "-c",
        "from importlib import metadata as m; import re; "
        "print('\\n'.join(sorted(re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() + ' ' + d.version "
        "for d in m.distributions())))",
    ).stdout.split("\n")
    installed = dict(line.split(" ") for line in listed if line)
    assert pypi == installed
    assert pypi["incident-operator"] == VERSION
    assert "pip" not in pypi
    debs = {c["name"] for c in doc["components"] if c["purl"].startswith("pkg:deb/debian/")}
    assert {"python3.11-minimal", "tzdata", "ca-certificates"} <= debs
    assert "python3-pip-whl" not in debs


class ImageOperator:
    """`incident-operator run` from the image in a container, its log from `podman logs`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def log(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def operator_from_image(
    image: str, installed: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ImageOperator, int, Path]]:
    kubeconfig = token_kubeconfig(
        installed, "incident-operator", NS, tmp_path_factory.mktemp("image-sa") / "kubeconfig"
    )
    # Self-contained: the CA inline (the admin's kubeconfig names a file the container does not have).
    config = json.loads(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    kubeconfig.write_text(json.dumps(config))
    os.chown(kubeconfig, UID, UID)  # readable by the image's user only
    kubeconfig.chmod(0o400)
    port, status_port = free_port(), free_port()
    name = f"incident-operator-e2e-{port}"
    started = time.monotonic()
    # As the Deployment runs it: read-only root file system, the ServiceAccount's token, no shell.
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--volume",
        f"{kubeconfig}:/var/run/incident-operator/kubeconfig:ro",
        "--env",
        "KUBECONFIG=/var/run/incident-operator/kubeconfig",
        "--env",
        f"POD_NAME={name}",
        "--env",
        f"POD_NAMESPACE={NS}",
        image,
        "--http-host=127.0.0.1",
        f"--http-port={port}",
        f"--status-port={status_port}",
    )
    operator = ImageOperator(name)
    try:

        def healthy() -> bool:
            running = podman("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
            if running != "true":  # exited: fail now (pytest.fail is not an Exception wait_until retries)
                pytest.fail(f"the operator in the image exited:\n{operator.log()[-4000:]}")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_until(healthy, timeout=90, what="/healthz of the operator in the image")
        print(f"\nimage: `podman run` to /healthz 200 in {time.monotonic() - started:.1f} s")
        yield operator, port, kubeconfig
    finally:
        podman("rm", "--force", "--time", "10", name, check=False)


def test_the_operator_from_the_image_remediates_as_its_service_account(
    installed: Cluster, operator_from_image: tuple[ImageOperator, int, Path]
) -> None:
    operator, port, kubeconfig = operator_from_image
    # The container's only credential: the install's ServiceAccount, not the admin.
    whoami = kubectl_as(installed, kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == f"system:serviceaccount:{NS}:incident-operator", whoami.stderr
    create_namespace(installed, "image-shop", opt_in=True)
    s = Scenario(installed, operator, "image-shop")  # an ImageOperator has .log()
    s.deployment("web", 1)
    s.playbook("scale-web", [{"name": "scale", "scale": {"target": deploy_ref("web"), "replicas": 2}}])
    s.incident("from-image", targets=[deploy_ref("web")])
    s.wait_step("from-image", "scale", "Succeeded")
    s.wait_phase("from-image", "Resolved")
    assert s.apps.read_namespaced_deployment("web", "image-shop").spec.replicas == 2
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
        assert resp.status == 200


# --------------------------------------------------------------------------- the release and the package


def make_release(tmp: Path, version: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        # The venv is the one running this test (-o: not rebuilt), the image the one built above.
        [
            "make",
            "--no-print-directory",
            "-o",
            f"{bin_dir}/.installed",
            "release",
            f"VERSION={version}",
            f"BIN={bin_dir}",
            f"IMAGE={IMAGE}",
            "IMAGE_BUILT=1",
            f"DIST_DIR={tmp}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=ENV,
    )


@pytest.fixture(scope="module")
def released(image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    done = make_release(out, VERSION)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"\nrelease: make release (image reused) in {time.monotonic() - started:.0f} s")
    return out, done.stdout


def test_make_release_writes_every_artefact_with_checksums_and_prints_the_changelog(
    released: tuple[Path, str],
) -> None:
    out, printed = released
    name = f"incident-operator-{VERSION}"
    expected = {
        f"incident_operator-{VERSION}-py3-none-any.whl",
        f"incident_operator-{VERSION}.tar.gz",
        f"{name}.oci.tar",
        f"{name}.sbom.cdx.json",
        "install.yaml",
    }
    if (ROOT / "charts" / "incident-operator").is_dir():
        expected.add(f"{name}.tgz")
    sums = {
        file: digest
        for digest, file in (line.split("  ", 1) for line in (out / "SHA256SUMS").read_text().splitlines())
    }
    assert set(sums) == expected
    for file, digest in sums.items():
        assert hashlib.sha256((out / file).read_bytes()).hexdigest() == digest, file
    assert (out / "install.yaml").read_text() == (ROOT / "manifests" / "install.yaml").read_text()
    # The archive is the image: an OCI layout whose index names the version.
    listing = subprocess.run(
        ["tar", "-tf", str(out / f"{name}.oci.tar")], capture_output=True, text=True, check=True
    )
    assert {"oci-layout", "index.json"} <= set(listing.stdout.split())
    sbom = json.loads((out / f"{name}.sbom.cdx.json").read_text())
    assert sbom["metadata"]["component"]["version"] == VERSION
    assert sbom == json.loads(in_image("/bin/cat", SBOM_PATH).stdout)  # the copy inside the image
    # twine check passed (its output), and the CHANGELOG's section for this version was printed.
    assert "PASSED" in printed
    assert f"## [{VERSION}]" in printed
    assert "## [Unreleased]" not in printed


def test_make_release_refuses_a_version_that_is_not_the_package_s(tmp_path: Path) -> None:
    done = make_release(tmp_path, "99.0.0")
    assert done.returncode != 0
    assert f"VERSION=99.0.0, but the package is {VERSION}" in done.stderr
    assert not list(tmp_path.iterdir())


def test_pipx_install_of_the_wheel_gives_a_working_kubectl_incident(
    released: tuple[Path, str], installed: Cluster, tmp_path: Path, operator_from_image: object
) -> None:
    out, _ = released
    home, bin_dir = tmp_path / "pipx", tmp_path / "bin"
    env = {
        **os.environ,
        "PIPX_HOME": str(home),
        "PIPX_BIN_DIR": str(bin_dir),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
        "PYTHONPATH": "",  # the installed package, not the working tree
    }
    wheel = out / f"incident_operator-{VERSION}-py3-none-any.whl"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipx", "install", "--python", sys.executable, str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    print(f"\npackage: pipx install of the wheel in {time.monotonic() - started:.0f} s")
    assert (bin_dir / "kubectl-incident").exists()
    # kubectl finds the plugin on PATH: `kubectl incident`.
    env["PATH"] = f"{bin_dir}{os.pathsep}{installed.kubectl.parent}{os.pathsep}/usr/bin:/bin"
    env["KUBECONFIG"] = str(installed.kubeconfig)

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args], capture_output=True, text=True, timeout=120, check=False, env=env
        )

    plugins = kubectl("plugin", "list")
    assert str(bin_dir / "kubectl-incident") in plugins.stdout, plugins.stdout + plugins.stderr
    helped = kubectl("incident", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "usage: kubectl incident" in helped.stdout
    listed = kubectl("incident", "list", "-A")
    assert listed.returncode == 0, listed.stderr
    assert "from-image" in listed.stdout, listed.stdout  # the incident the image's operator resolved
    located = subprocess.run(
        [
            str(home / "venvs" / "incident-operator" / "bin" / "python"),
            "-c",
            "import incident_operator; print(incident_operator.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    assert located.stdout.startswith(str(home)), located.stdout
    shutil.rmtree(home)
