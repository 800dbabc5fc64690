"""The API of incident-operator as pydantic models: the single source of the CRD schemas.

Pure: imports neither kopf nor a Kubernetes client. Field names are the wire names (camelCase)
of group `incident-operator.dev`, version `v1alpha1` (see DESIGN.md). `crdgen` turns these
models into `crds/*.yaml`; a unit test fails when the committed CRDs drift from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class Category(StrEnum):
    AVAILABILITY = "availability"
    PERFORMANCE = "performance"
    SECURITY = "security"
    DATA = "data"


class Phase(StrEnum):
    DETECTED = "Detected"
    ACKNOWLEDGED = "Acknowledged"
    INVESTIGATING = "Investigating"
    MITIGATING = "Mitigating"
    MONITORING = "Monitoring"
    RESOLVED = "Resolved"
    CLOSED = "Closed"


class SourceType(StrEnum):
    MANUAL = "manual"
    ALERT = "alert"
    DRILL = "drill"


class TargetKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"


DnsName = Annotated[str, Field(min_length=1, max_length=253)]


class ApiModel(BaseModel):
    """Base of every API model: wire names as written, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WorkloadRef(ApiModel):
    """A workload in the Incident's own namespace."""

    kind: TargetKind = Field(description="Deployment or StatefulSet.")
    name: DnsName = Field(description="Name of the workload in the Incident's namespace.")


class PlaybookRef(ApiModel):
    name: DnsName = Field(description="Name of a Playbook in the Incident's namespace.")


class Source(ApiModel):
    """Where the incident came from: a person, an Alertmanager alert, or a response drill."""

    type: SourceType = Field(default=SourceType.MANUAL, description="manual, alert or drill.")
    alertname: str | None = Field(default=None, description="Alert name (alert incidents).")
    fingerprint: str | None = Field(default=None, description="Alertmanager fingerprint (alert incidents).")
    labels: dict[str, str] | None = Field(default=None, description="Alert labels.")
    annotations: dict[str, str] | None = Field(default=None, description="Alert annotations.")
    startsAt: datetime | None = Field(default=None, description="When the alert started firing.")


class Resolution(ApiModel):
    summary: str = Field(min_length=1, description="What was done; declares the incident resolved.")
    rootCause: str | None = Field(default=None, description="Root cause, if known.")


class IncidentSpec(ApiModel):
    """Human intent. The operator never rewrites spec."""

    title: str = Field(min_length=1, max_length=256, description="One-line summary of the incident.")
    description: str | None = Field(default=None, description="Details: impact, symptoms, links.")
    severity: Severity = Field(description="P1 (critical) to P4 (low); sets the response target.")
    category: Category = Field(description="availability, performance, security or data.")
    targets: list[WorkloadRef] | None = Field(default=None, description="Affected workloads.")
    playbookRef: PlaybookRef | None = Field(
        default=None, description="Playbook to run; without it the highest-priority match is used."
    )
    source: Source | None = Field(default=None, description="Where the incident came from.")
    commander: str | None = Field(default=None, description="Incident Commander; setting it acknowledges.")
    approvals: list[str] | None = Field(default=None, description="Names of steps a human approved.")
    paused: bool | None = Field(default=None, description="Stop all automation on this incident.")
    resolution: Resolution | None = Field(default=None, description="A human declares it resolved.")
    closed: bool | None = Field(default=None, description="Post-incident review done; read-only history.")
    drill: bool | None = Field(default=None, description="A response drill, kept out of production MTTx.")


class Condition(ApiModel):
    """metav1.Condition."""

    type: str = Field(min_length=1, max_length=316)
    status: str = Field(pattern="^(True|False|Unknown)$")
    observedGeneration: int | None = Field(default=None, ge=0)
    lastTransitionTime: datetime
    reason: str = Field(min_length=1, max_length=1024)
    message: str = Field(default="", max_length=32768)


class IncidentStatus(ApiModel):
    """Observations, written only by the operator through the status subresource."""

    phase: Phase | None = None
    conditions: list[Condition] | None = None
    detectedAt: datetime | None = None
    acknowledgedAt: datetime | None = None
    acknowledgeBy: datetime | None = None
    mitigatedAt: datetime | None = None
    resolvedAt: datetime | None = None
    closedAt: datetime | None = None
