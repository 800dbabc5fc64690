"""Loads `localcluster/localcluster.py` (a stdlib-only script, not a package) for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PATH = Path(__file__).resolve().parents[1] / "localcluster" / "localcluster.py"


def load() -> ModuleType:
    if "localcluster_script" in sys.modules:
        return sys.modules["localcluster_script"]
    spec = importlib.util.spec_from_file_location("localcluster_script", PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster_script"] = module
    spec.loader.exec_module(module)
    return module
