"""What a step acts on: a fixed workload or the incident's own targets, within the Playbook's bounds.

`StepTarget` is the `target` of the steps that act on a workload (scale, restart, waitReady,
rollback; collectEvidence and deletePods instead of a selector): either `{kind, name}` or
`{fromIncident: {}}` / `{fromIncident: {kind: Deployment}}`.
`AllowedTargets` is the Playbook's `spec.allowedTargets`, the bounds a `fromIncident` target must
keep; a Playbook with a `fromIncident` step and no bounds is refused (CEL on the Playbook and
`PlaybookSpec`'s validator alike). `TargetStatus` is one resolved target's own exactly-once state
inside a step's status. Pure models only; resolving is `core.targets`'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from incident_operator.api.base import ApiModel, DnsName, TargetKind, WorkloadRef


class FromIncident(ApiModel):
    """The incident's own targets (`spec.targets`), all of them or those of one kind."""

    kind: TargetKind | None = Field(default=None, description="Only the incident's targets of this kind.")


class StepTarget(ApiModel):
    """A fixed workload (`kind` and `name`), or `fromIncident`: the incident's own targets,
    within the Playbook's `allowedTargets`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.fromIncident) ? !has(self.kind) && !has(self.name) "
                    ": has(self.kind) && has(self.name)",
                    "message": "give kind and name, or fromIncident alone",
                }
            ]
        }
    )

    kind: TargetKind | None = Field(default=None, description="Deployment or StatefulSet.")
    name: DnsName | None = Field(default=None, description="Name of the workload in the namespace.")
    fromIncident: FromIncident | None = Field(
        default=None,
        description="Act on the incident's own targets (of `kind`, if given) that the Playbook's "
        "allowedTargets admit; none: the step waits (NoTarget); one outside: it waits (OutOfBounds).",
    )

    @model_validator(mode="after")
    def _one_form(self) -> StepTarget:
        fixed = self.kind is not None and self.name is not None
        alone = self.kind is None and self.name is None
        if not (fixed if self.fromIncident is None else alone):
            raise ValueError("give kind and name, or fromIncident alone")
        return self

    @property
    def fixed(self) -> WorkloadRef | None:
        """The workload named here, or None for `fromIncident`."""
        if self.kind is None or self.name is None:
            return None
        return WorkloadRef(kind=self.kind, name=self.name)

    @property
    def kinds(self) -> tuple[TargetKind, ...]:
        """The kinds it may act on (for access reviews before it resolves)."""
        if self.kind is not None:
            return (self.kind,)
        if self.fromIncident is not None and self.fromIncident.kind is not None:
            return (self.fromIncident.kind,)
        return tuple(TargetKind)

    def describe(self) -> str:
        fixed = self.fixed
        if fixed is not None:
            return f"{fixed.kind}/{fixed.name}"
        kind = self.fromIncident.kind if self.fromIncident is not None else None
        return f"the incident's {kind or 'workload'} targets"


class LabelSelector(ApiModel):
    matchLabels: dict[str, str] = Field(
        min_length=1, description="Labels the workload (its metadata.labels) must carry."
    )


class AllowedTargets(ApiModel):
    """Bounds of the steps that act on the incident's own targets: every part given must admit a
    target, else the step acts on nothing and waits (`OutOfBounds`)."""

    kinds: list[TargetKind] | None = Field(default=None, description="Workload kinds admitted.")
    names: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Names admitted, as globs (`web-*`, `api`; `*`, `?` and `[...]` as in a shell).",
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 253}},
    )
    selector: LabelSelector | None = Field(
        default=None, description="Workloads whose labels match (read when the step starts)."
    )


MAX_TARGETS = 64
"""The most workloads an incident names (`spec.targets`) and a step acts on (its status' `targets`):
more would make the step's status too large for the API server to accept."""

TargetState = Literal["Pending", "Running", "Succeeded", "Failed"]


class TargetStatus(ApiModel):
    """One resolved target of a step, with its own exactly-once state: a target done is never
    acted on again, after a crash or a retry of the step."""

    kind: TargetKind
    name: str
    state: TargetState = Field(default="Pending", description="Pending, Running, Succeeded or Failed.")
    startedAt: datetime | None = None
    finishedAt: datetime | None = None
    message: str | None = None
    replicasBefore: int | None = None
    replicasAfter: int | None = None
    reverted: bool | None = None
    revision: int | None = None
    revisionFrom: int | None = None
    revisionName: str | None = None
    pods: list[str] | None = Field(
        default=None,
        description="deletePods: the pods chosen for this target (recorded before any is deleted).",
    )

    @property
    def ref(self) -> WorkloadRef:
        return WorkloadRef(kind=self.kind, name=self.name)
