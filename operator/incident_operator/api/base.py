"""Types every kind shares: the base model, names and workload references. Pure."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class TargetKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"


DnsName = Annotated[str, Field(min_length=1, max_length=253)]
StepName = Annotated[str, Field(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


class ApiModel(BaseModel):
    """Base of every API model: wire names as written, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WorkloadRef(ApiModel):
    """A workload in the Incident's own namespace."""

    kind: TargetKind = Field(description="Deployment or StatefulSet.")
    name: DnsName = Field(description="Name of the workload in the Incident's namespace.")
