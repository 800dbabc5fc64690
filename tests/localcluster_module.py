"""Loads `localcluster/localcluster.py` (a stdlib-only script, not a package) for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PATH = Path(__file__).resolve().parents[1] / "localcluster" / "localcluster.py"
PROMSTACK = PATH.with_name("promstack.py")


def load() -> ModuleType:
    return _load("localcluster_script", PATH)


def load_promstack() -> ModuleType:
    """`localcluster/promstack.py`: the local Prometheus (rules, configuration, process)."""
    return _load("promstack_script", PROMSTACK)


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_hack(name: str) -> ModuleType:
    """A stdlib-only script of hack/ by its stem (`luahealth`, `validate_manifests`)."""
    return _load(f"hack_{name}", PATH.parents[1] / "hack" / f"{name}.py")
