"""Checks of a Playbook that the API server's schema and CEL rules cannot express. Pure.

Returns the problems as human-readable strings; the handler turns them into the Playbook's
`Invalid` condition and an Event. An empty list means the Playbook is Ready.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from incident_operator.api.models import PlaybookSpec
from incident_operator.core import checks, jobpolicy
from incident_operator.settings import templates
from incident_operator.settings.config import JobsConfig

DEFAULT_JOBS = JobsConfig()


def problems(
    raw_spec: dict[str, Any], jobs: JobsConfig = DEFAULT_JOBS
) -> tuple[PlaybookSpec | None, list[str]]:
    """The Playbook as the engine uses it, and why it is invalid. `jobs` is the operator's
    `jobs:` config: what a Job step's pod template may do (`core.jobpolicy`)."""
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
            found.extend(f"step {step.name}: {p}" for p in jobpolicy.problems(step.job.template, jobs))
        if step.notify is not None:
            try:
                templates.check(step.notify.message)
            except templates.TemplateError as exc:
                found.append(f"step {step.name}: notify.message: {exc}")
        if step.httpCheck is not None:
            try:  # the URL's shape, rendered with placeholder values (the CRD checks the template's)
                placeholder = checks.PLACEHOLDER if step.httpCheck.target is not None else None
                checks.render_url(step.httpCheck, "namespace", placeholder)
            except ValueError as exc:
                found.append(f"step {step.name}: httpCheck.url: {exc}")
        scale = step.scale
        if scale is not None and scale.max is not None and (scale.replicas or 0) > scale.max:
            found.append(f"step {step.name}: scale.replicas {scale.replicas} exceeds scale.max {scale.max}")
    return spec, found


def advice(spec: PlaybookSpec) -> list[str]:
    """Things that are valid but unwise; reported in the Ready condition's message."""
    notes = []
    for step in spec.steps:
        if step.isolate is not None and not step.requiresApproval:
            notes.append(f"step {step.name}: isolate without requiresApproval cuts pods off unattended")
    return notes
