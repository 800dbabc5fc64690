"""Run-time settings of the operator: what the command line and the --config file may set.

Pure: no kopf, no Kubernetes client, no I/O except `load_config_file`, which only reads a file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Port = Annotated[int, Field(ge=1, le=65535)]


class ResponseTargets(BaseModel):
    """Time to acknowledge, per severity (seed section 1.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    P1: timedelta = timedelta(minutes=15)
    P2: timedelta = timedelta(hours=1)
    P3: timedelta = timedelta(hours=4)
    P4: timedelta = timedelta(hours=24)


class FileConfig(BaseModel):
    """The part of the settings that lives in the --config YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    responseTargets: ResponseTargets = ResponseTargets()


class OperatorConfig(BaseModel):
    """Everything `incident-operator run` needs to know; built once at startup, then read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all namespaces (cluster-wide)."""
    http_host: str = "0.0.0.0"  # noqa: S104 - the operator serves inside its pod
    http_port: Port = 8080
    standalone: bool = True
    """Run without peering (one replica). HA with peering comes with the deployable manifests."""
    file: FileConfig = FileConfig()

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


class ConfigError(Exception):
    """The --config file is missing, unreadable or invalid; the message says which and why."""


def load_config_file(path: Path) -> FileConfig:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    try:
        return FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config file {path} is invalid:\n{exc}") from exc
