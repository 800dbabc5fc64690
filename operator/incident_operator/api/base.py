"""Types every kind shares: the base model, names and workload references. Pure."""

from __future__ import annotations

import copy
from datetime import date, datetime, time, timedelta
from enum import Enum, StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field


class TargetKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"


DnsName = Annotated[str, Field(min_length=1, max_length=253)]
StepName = Annotated[str, Field(min_length=1, max_length=63, pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


class ApiModel(BaseModel):
    """Base of every API model: wire names as written, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A deep copy (`model_copy(deep=True)`, `copy.deepcopy`) that shares what cannot change:
        the planner copies the whole incident status on every plan, and Python's general deep
        copy (a memo of every object, then each leaf looked up) was most of a plan's time. Models,
        lists and dicts are copied; strings, numbers, times and enums are shared; anything else
        goes the general way. Two references to one object in the original become two copies."""
        cls = type(self)
        copied = cls.__new__(cls)
        object.__setattr__(copied, "__dict__", {k: _copied(v) for k, v in self.__dict__.items()})
        extra, private = self.__pydantic_extra__, self.__pydantic_private__
        object.__setattr__(copied, "__pydantic_extra__", None if extra is None else _copied(extra))
        object.__setattr__(copied, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        object.__setattr__(copied, "__pydantic_private__", None if private is None else _copied(private))
        return copied


_SHARED: frozenset[type] = frozenset(
    {str, int, float, bool, type(None), bytes, datetime, date, time, timedelta}
)
"""Types whose values never change: a copy shares them."""


def _copied(value: Any) -> Any:
    kind = type(value)
    if kind in _SHARED or isinstance(value, Enum):
        return value
    if kind is list:
        return [_copied(item) for item in value]
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, ApiModel):
        return value.__deepcopy__()
    return copy.deepcopy(value)


class WorkloadRef(ApiModel):
    """A workload in the Incident's own namespace."""

    kind: TargetKind = Field(description="Deployment or StatefulSet.")
    name: DnsName = Field(description="Name of the workload in the Incident's namespace.")
