"""The Helm chart's values.schema.json: its `config` part is generated from the operator's config
model (hack/chart_schema.py, run by `make chart-files`) and must not drift from it; the chart's
default config is the install's (manifests/install/config.yaml). Helm itself applies the schema
(and refuses wrong values) in tests/e2e/test_chart.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from incident_operator.settings.config import FileConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "incident-operator"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_schema", ROOT / "hack" / "chart_schema.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def test_the_config_schema_is_generated_from_the_config_model() -> None:
    committed = (CHART / "values.schema.json").read_text()
    gen = generator()
    assert gen.text(gen.rendered(json.loads(committed))) == committed, (
        "values.schema.json drifted from the config model: run `make chart-files`"
    )


def test_the_default_config_is_the_installs() -> None:
    shipped = yaml.safe_load((ROOT / "manifests" / "install" / "config.yaml").read_text())
    install_config = yaml.safe_load(shipped["data"]["config.yaml"])
    assert values()["config"] == install_config
    assert FileConfig.model_validate(values()["config"]) == FileConfig.model_validate(install_config)
