"""The pure core imports neither kopf nor a Kubernetes client."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = [
    "incident_operator.config",
    "incident_operator.models",
    "incident_operator.crdgen",
    "incident_operator.conditions",
    "incident_operator.phases",
    "incident_operator.matching",
    "incident_operator.planner",
    "incident_operator.templates",
    "incident_operator.validation",
    "incident_operator.alerts",
    "incident_operator.access",
    "incident_operator.attention",
    "incident_operator.leadership",
    "incident_operator.postmortem",
    "incident_operator.report",
    "incident_operator.repeats",
    "incident_operator.statuspage",
    "incident_operator.drills",
    "incident_operator.notifications",
]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_framework(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes', 'aiohttp'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
