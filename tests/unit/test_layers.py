"""Every API call the operator makes is an adapter's method: the loops never reach the client's API
groups through `Kube`'s attributes (the import contract in `.importlinter` cannot see attribute
access, so this test does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "incident_operator"
RAW = re.compile(r"\bkube\.(core|apps|batch|custom|networking|authn|authz|api)\b")


@pytest.mark.parametrize("layer", ["controllers", "runtime", "core", "settings", "api"])
def test_no_layer_above_the_adapters_touches_the_clients_api_groups(layer: str) -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if RAW.search(line)
    ]
    assert found == []
