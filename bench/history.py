"""Realistic incident history for `make bench`: the shape of one real incident the operator ran.

Issue 22: history created already closed has an almost empty status, and costs the operator far
less than real history (356 MB against 771 MB at 10,000 incidents). The bench therefore takes one
incident of its own run that ran a one-step playbook and resolved, closes it as a person would
(`spec.closed`, as `kubectl incident close` does), waits for the operator to write the closing
and the post-mortem, and copies that incident's spec and status (timeline, steps, conditions,
post-mortem reference, as the operator wrote them) onto every history incident, its name put in
and, for the simulated year, its times moved. The status is written by the bench's admin client
once the operator has handled the new incident (Closed), so no write of the operator's races it.
"""

from __future__ import annotations

import copy
import json
import re
import time
from datetime import datetime, timedelta
from typing import Any, cast

from kubernetes import client

GROUP, VERSION = "incident-operator.dev", "v1alpha1"
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class Template:
    """One real closed incident: its spec and status, and its name (replaced in copies)."""

    def __init__(self, name: str, spec: dict[str, Any], status: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.status = status
        self._name = re.compile(rf"\b{re.escape(name)}\b")
        closed = status.get("closedAt")
        self.closed_at = parse(str(closed)) if closed else None

    def spec_for(self, name: str) -> dict[str, Any]:
        spec = copy.deepcopy(self.spec)
        spec["title"] = name
        spec["closed"] = True
        return spec

    def status_for(self, name: str, closed_at: datetime | None = None) -> dict[str, Any]:
        """The template's status for incident `name` (generation 1: created closed), its times
        moved so that it closed at `closed_at` (unchanged when None)."""
        text = self._name.sub(name, json.dumps(self.status))
        status = cast(dict[str, Any], json.loads(text))
        if closed_at is not None and self.closed_at is not None:
            status = cast(dict[str, Any], _shift(status, closed_at - self.closed_at))
        status["observedGeneration"] = 1
        for condition in status.get("conditions") or []:
            if "observedGeneration" in condition:
                condition["observedGeneration"] = 1
        return status

    def size(self) -> int:
        """Bytes of the status as JSON (what each history incident carries)."""
        return len(json.dumps(self.status))


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _shift(value: Any, delta: timedelta) -> Any:
    if isinstance(value, dict):
        return {k: _shift(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, delta) for v in value]
    if isinstance(value, str) and _STAMP.match(value):
        moved = parse(value) + delta
        return moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if "." in value else "%Y-%m-%dT%H:%M:%SZ")
    return value


def close_as_a_person(custom: client.CustomObjectsApi, ns: str, name: str, timeout: float = 120) -> Template:
    """Close Resolved incident `ns/name` as a person does, wait until the operator has closed it
    and referenced its post-mortem, and return it as the template of history."""
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "incidents", name, {"spec": {"closed": True}})
    deadline = time.monotonic() + timeout
    last: tuple[str, float] | None = None  # (resourceVersion, since when unchanged)
    while time.monotonic() < deadline:
        obj = cast(dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, ns, "incidents", name))
        status = obj.get("status") or {}
        version = str(obj["metadata"].get("resourceVersion"))
        if last is None or last[0] != version:
            last = (version, time.monotonic())
        closed = status.get("phase") == "Closed" and status.get("closedAt") and status.get("postmortemRef")
        if closed and time.monotonic() - last[1] >= 2.0:  # and the operator's writes are over
            return Template(name, dict(obj.get("spec") or {}), dict(status))
        time.sleep(0.2)
    raise SystemExit(f"bench: {ns}/{name} not closed with a post-mortem within {timeout:.0f} s")


def create(custom: client.CustomObjectsApi, ns: str, template: Template, name: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Incident",
        "metadata": {"name": name},
        "spec": template.spec_for(name),
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "incidents", body)


def write_status(
    custom: client.CustomObjectsApi,
    ns: str,
    template: Template,
    name: str,
    closed_at: datetime | None = None,
) -> None:
    """Replace the status the operator wrote (Detected, Closed) with the template's, as the admin.
    A merge patch: `null` for every key of the template's status the object may hold otherwise is
    not needed, since the operator writes a subset of the same keys."""
    body = {"status": template.status_for(name, closed_at)}
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "incidents", name, body)
