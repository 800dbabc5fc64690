"""The image's CycloneDX SBOM: what its virtual environment and its Debian base contain.

Run in the Containerfile's build stage with the base's own python3 (standard library only):
    python3 sbom.py --venv /opt/incident-operator --dpkg-status STATUS --version X.Y.Z > sbom.cdx.json
Components: every distribution installed in the virtual environment (`pkg:pypi/...`, with the
licence its metadata declares) and every Debian package installed in the run stage's base
(`pkg:deb/debian/...`). The output is deterministic (sorted; the serial number is derived from the
content), so the same inputs give the same file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

SPEC_VERSION = "1.5"
LICENSE_CLASSIFIER = "License :: "


def pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_licenses(meta: Any) -> list[dict[str, Any]]:
    """The licence a distribution's metadata declares: its SPDX expression (metadata 2.4), else a
    short License field, else its classifiers' licence names."""
    expression = meta.get("License-Expression")
    if expression:
        return [{"expression": expression.strip()}]
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 80 and text.upper() != "UNKNOWN":
        return [{"license": {"name": text}}]
    names = [
        c.rsplit(" :: ", 1)[-1]
        for c in meta.get_all("Classifier") or []
        if c.startswith(LICENSE_CLASSIFIER) and c.count(" :: ") >= 1
    ]
    return [{"license": {"name": n}} for n in sorted(set(names)) if n != "OSI Approved"]


def python_components(venv: Path) -> Iterator[dict[str, Any]]:
    site = sorted(venv.glob("lib/python3*/site-packages"))
    if not site:
        raise SystemExit(f"sbom: no site-packages under {venv}")
    for dist in metadata.distributions(path=[str(p) for p in site]):
        name, version = pypi_name(dist.metadata["Name"]), dist.version
        purl = f"pkg:pypi/{name}@{quote(version, safe='.+!')}"
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
        }
        licenses = python_licenses(dist.metadata)
        if licenses:
            component["licenses"] = licenses
        yield component


def dpkg_components(status: Path, distro: str) -> Iterator[dict[str, Any]]:
    for paragraph in status.read_text().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and not line[0].isspace()
        )
        if fields.get("Status") != "install ok installed":
            continue
        name, version, arch = fields["Package"], fields["Version"], fields.get("Architecture", "all")
        purl = f"pkg:deb/debian/{name}@{quote(version, safe='.+~')}?arch={arch}&distro={distro}"
        yield {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}


def bom(venv: Path, dpkg_status: Path | None, name: str, version: str, distro: str) -> dict[str, Any]:
    components = list(python_components(venv))
    if dpkg_status is not None:
        components += dpkg_components(dpkg_status, distro)
    components.sort(key=lambda c: c["bom-ref"])
    refs = [c["bom-ref"] for c in components]
    if len(set(refs)) != len(refs):
        raise SystemExit("sbom: a component is listed twice")
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{name}@{version}:" + "\n".join(refs))
    root = f"pkg:oci/{name}@{quote(version, safe='.')}"
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "tools": {
                "components": [{"type": "application", "name": "incident-operator hack/image/sbom.py"}]
            },
            "component": {"type": "container", "bom-ref": root, "name": name, "version": version},
        },
        "components": components,
        "dependencies": [{"ref": root, "dependsOn": refs}, *({"ref": r} for r in refs)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="the virtual environment to list")
    parser.add_argument("--dpkg-status", type=Path, help="the base's /var/lib/dpkg/status")
    parser.add_argument("--name", default="incident-operator")
    parser.add_argument("--version", required=True)
    parser.add_argument("--distro", default="debian-12", help="the purl's distro qualifier")
    args = parser.parse_args(argv)
    status = args.dpkg_status if args.dpkg_status and args.dpkg_status.is_file() else None
    json.dump(bom(args.venv, status, args.name, args.version, args.distro), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
