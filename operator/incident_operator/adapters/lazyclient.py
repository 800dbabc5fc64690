"""Load `kubernetes_asyncio`'s API classes and models on first use, not all at import.

The package's `__init__` modules import every one of its ~770 models and ~60 API classes (about
38 MiB of code in the process; the operator uses a few dozen), and kopf imports the package
whenever it is installed. `install()`, called before the package's first import, puts lazy
stand-ins for `kubernetes_asyncio`, `kubernetes_asyncio.client`, `.client.api` and
`.client.models` in `sys.modules`: each is a package with the real directory as its path (so its
submodules import as usual) whose attributes are looked up in the names its own `__init__` would
have imported (read from that file's `from X import Name` lines, never executed) and imported on
first access. The client's deserializer (`getattr(kubernetes_asyncio.client.models, "V1Pod")`),
`from kubernetes_asyncio.client import V1Pod` and `client.CoreV1Api` all work unchanged.
Nothing here decides anything; if the package is already imported, `install()` does nothing.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
import types
from pathlib import Path

PACKAGE = "kubernetes_asyncio"
LAZY_PACKAGES = (PACKAGE, f"{PACKAGE}.client", f"{PACKAGE}.client.api", f"{PACKAGE}.client.models")
_FROM_IMPORT = re.compile(r"^from\s+([\w.]+)\s+import\s+(\w+)\s*$", re.MULTILINE)
_IMPORT_AS = re.compile(r"^import\s+([\w.]+)\s+as\s+(\w+)\s*$", re.MULTILINE)
_VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.MULTILINE)


class LazyPackage(types.ModuleType):
    """A package whose names are imported from their modules when first read."""

    def __init__(self, name: str, directory: Path, index: dict[str, str]) -> None:
        super().__init__(name)
        self.__path__ = [str(directory)]
        self.__file__ = str(directory / "__init__.py")
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
        self.__spec__ = spec
        self.__package__ = name
        self._lazy_index = index
        self.__all__ = sorted(index)

    def __getattr__(self, attribute: str) -> object:
        module = self.__dict__.get("_lazy_index", {}).get(attribute)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attribute!r}")
        found = importlib.import_module(module)
        value = found if module == f"{self.__name__}.{attribute}" else getattr(found, attribute)
        setattr(self, attribute, value)  # the next read is a plain attribute
        return value


def _index(init: Path) -> dict[str, str]:
    """Name -> module of every `from MODULE import Name` and `import MODULE as Name` of `init`."""
    text = init.read_text()
    index = {name: module for module, name in _FROM_IMPORT.findall(text) if not module.startswith("__")}
    for module, name in _IMPORT_AS.findall(text):
        index[name] = module
    return index


def install() -> bool:
    """Put the lazy packages in `sys.modules`; False (and nothing done) if the client is already
    imported or not installed."""
    if any(name in sys.modules for name in LAZY_PACKAGES):
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return False
    root = Path(spec.origin).parent
    modules: dict[str, LazyPackage] = {}
    for name in LAZY_PACKAGES:
        init = root.joinpath(*name.split(".")[1:], "__init__.py")
        package = LazyPackage(name, init.parent, _index(init))
        version = _VERSION.search(init.read_text())
        if version:
            setattr(package, "__version__", version.group(1))  # noqa: B010 - a module attribute
        modules[name] = package
    for name, package in modules.items():
        sys.modules[name] = package
        parent, _, child = name.rpartition(".")
        if parent in modules:
            setattr(modules[parent], child, package)
    return True
