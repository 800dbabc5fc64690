"""What the image and the release are built from: requirements.lock pins every runtime dependency of
pyproject.toml with hashes, and hack/image/sbom.py writes a CycloneDX document the schema accepts.

The image itself is built and run by tests/e2e/test_image.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements.lock."""
    found: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for raw in LOCK.read_text().splitlines():
        line = raw.strip()
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match[1])
            assert current not in found, f"{current} pinned twice"
            found[current] = (match[2], [])
        elif line.startswith("--hash=") and current is not None:
            found[current][1].append(line.removeprefix("--hash=").rstrip(" \\"))
        elif line and not line.startswith("#"):
            assert not line.startswith("-"), f"an option in requirements.lock: {line}"  # no index/find-links
    return found


def test_the_lock_pins_every_runtime_dependency_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = pins()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is a runtime dependency but not in requirements.lock: run `make lock`"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement.specifier}: run `make lock`"
        )
    for pinned, (version, hashes) in locked.items():
        assert hashes, f"{pinned}=={version} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), (pinned, hashes)
    dev = {canonicalize_name(Requirement(s).name) for s in project["optional-dependencies"]["dev"]}
    assert not dev & set(locked) - {
        canonicalize_name(Requirement(s).name) for s in project["dependencies"]
    }, "a dev-only tool is in the image's lock"


def fake_venv(root: Path) -> Path:
    site = root / "venv" / "lib" / "python3.11" / "site-packages"
    for name, version, licence in (
        ("Demo_Pkg", "1.2.3", "License-Expression: MIT OR Apache-2.0"),
        ("other", "2.0", "Classifier: License :: OSI Approved :: BSD License"),
        ("plain", "0.1", "License: Some licence"),
    ):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n{licence}\n"
        )
    return root / "venv"


def test_the_sbom_lists_the_venv_and_the_base_and_is_valid_cyclonedx(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Package: python3.11\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 3.11.2-6+deb12u6\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 1:2025b-0+deb12u1\n"
        "Description: time zones\n multi-line: text\n"
    )
    command = [sys.executable, str(ROOT / "hack" / "image" / "sbom.py"), "--venv", str(fake_venv(tmp_path))]
    command += ["--dpkg-status", str(status), "--version", "9.8.7"]
    first = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert (
        subprocess.run(command, capture_output=True, text=True, check=True).stdout == first
    )  # deterministic
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(first)
    assert error is None, error
    doc = json.loads(first)
    assert doc["metadata"]["component"]["version"] == "9.8.7"
    by_purl = {c["purl"]: c for c in doc["components"]}
    assert set(by_purl) == {
        "pkg:pypi/demo-pkg@1.2.3",
        "pkg:pypi/other@2.0",
        "pkg:pypi/plain@0.1",
        "pkg:deb/debian/python3.11@3.11.2-6+deb12u6?arch=amd64&distro=debian-12",
        "pkg:deb/debian/tzdata@1%3A2025b-0+deb12u1?arch=all&distro=debian-12",
    }
    assert by_purl["pkg:pypi/demo-pkg@1.2.3"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert by_purl["pkg:pypi/other@2.0"]["licenses"] == [{"license": {"name": "BSD License"}}]
    assert by_purl["pkg:pypi/plain@0.1"]["licenses"] == [{"license": {"name": "Some licence"}}]


def test_the_sbom_refuses_a_directory_without_a_virtual_environment(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "image" / "sbom.py"), "--venv", str(tmp_path), "--version", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "no site-packages" in done.stderr
