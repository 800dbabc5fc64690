"""The Alertmanager receiver example is a configuration Alertmanager itself accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import LOCALCLUSTER, ROOT

pytestmark = pytest.mark.e2e


def test_amtool_accepts_the_receiver_example(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, str(LOCALCLUSTER), "build-alertmanager"], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    amtool = Path(built.stdout.strip().splitlines()[-1]) / "amtool"
    checked = subprocess.run(
        [str(amtool), "check-config", str(ROOT / "manifests" / "monitoring" / "alertmanager-receiver.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
