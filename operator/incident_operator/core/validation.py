"""Checks of a Playbook that the API server's schema and CEL rules cannot express. Pure.

Returns the problems as human-readable strings; the handler turns them into the Playbook's
`Invalid` condition and an Event. An empty list means the Playbook is Ready.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from incident_operator.api.models import PlaybookSpec
from incident_operator.settings import templates


def problems(raw_spec: dict[str, Any]) -> tuple[PlaybookSpec | None, list[str]]:
    try:
        spec = PlaybookSpec.model_validate(raw_spec)
    except ValidationError as exc:
        return None, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    found: list[str] = []
    earlier: set[str] = set()
    for step in spec.steps:
        if step.when is not None and step.when.step not in earlier:
            found.append(f"step {step.name}: when names {step.when.step!r}, which is not an earlier step")
        earlier.add(step.name)
        if step.job is not None:
            found.extend(
                f"step {step.name}: job.template: {p}" for p in job_template_problems(step.job.template)
            )
        if step.notify is not None:
            try:
                templates.check(step.notify.message)
            except templates.TemplateError as exc:
                found.append(f"step {step.name}: notify.message: {exc}")
        scale = step.scale
        if scale is not None and scale.max is not None and (scale.replicas or 0) > scale.max:
            found.append(f"step {step.name}: scale.replicas {scale.replicas} exceeds scale.max {scale.max}")
    return spec, found


def job_template_problems(template: dict[str, Any]) -> list[str]:
    """What keeps a Job's pod template from being created (the API server would say it later)."""
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return ["needs spec (a pod spec)"]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return ["spec.containers needs at least one container"]
    found = [
        f"spec.containers[{i}] needs a name and an image"
        for i, c in enumerate(containers)
        if not isinstance(c, dict) or not c.get("name") or not c.get("image")
    ]
    if spec.get("restartPolicy", "Never") not in ("Never", "OnFailure"):
        found.append("spec.restartPolicy must be Never or OnFailure for a Job")
    return found


def advice(spec: PlaybookSpec) -> list[str]:
    """Things that are valid but unwise; reported in the Ready condition's message."""
    notes = []
    for step in spec.steps:
        if step.isolate is not None and not step.requiresApproval:
            notes.append(f"step {step.name}: isolate without requiresApproval cuts pods off unattended")
    return notes
