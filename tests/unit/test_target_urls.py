"""An httpCheck that follows the incident's targets (issue 21 item 1, review): with a `target`, the
check runs once per workload, its URL a template over it (`{targetName}`, `{targetKind}`,
`{namespace}`); a URL naming the target without a target is refused; a template or rendering
error is a misconfiguration (Blocked), never a failed check; the rendered URL passes the egress
policy like any other (a workload name may hold dots)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from incident_operator.adapters.outbound import Outbound
from incident_operator.api.actions import URL_TARGET_FIELD, HttpCheckAction
from incident_operator.api.base import WorkloadRef
from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    PlaybookProgress,
    PlaybookSpec,
    StepStatus,
)
from incident_operator.api.reasons import Reason
from incident_operator.api.targets import TargetStatus
from incident_operator.controllers import actions
from incident_operator.controllers import targets as running
from incident_operator.core import checks, validation
from incident_operator.settings.egress import EgressPolicy

WEB = WorkloadRef.model_validate({"kind": "Deployment", "name": "web"})
API = WorkloadRef.model_validate({"kind": "Deployment", "name": "api"})
IN_CLUSTER = "http://{targetName}.{namespace}.svc/v1/upload"
FROM_INCIDENT = {"fromIncident": {"kind": "Deployment"}}
BOUNDS = {"names": ["*"]}


def check(url: str, **extra: Any) -> HttpCheckAction:
    return HttpCheckAction.model_validate({"url": url, **extra})


# ----------------------------------------------------------------------------- the API and validation


def test_a_url_naming_the_target_needs_a_target() -> None:
    for url in (IN_CLUSTER, "http://checker.shop.svc/{targetKind}"):
        with pytest.raises(ValidationError, match="give a target"):
            check(url)
        assert check(url, target=FROM_INCIDENT).target is not None
    assert check("http://web.{namespace}.svc/healthz").target is None  # the namespace needs none


def test_the_crd_refuses_a_url_naming_the_target_without_one() -> None:
    schema = HttpCheckAction.model_json_schema()
    rules = [r["message"] for r in schema["x-kubernetes-validations"]]
    assert "url names {targetName} or {targetKind}: give a target" in rules


@pytest.mark.parametrize(
    ("url", "a_field"),
    [
        ("http://{targetName}.shop.svc/", True),
        ("http://x.shop.svc/{{{targetKind}}}", True),  # a literal brace, then the field
        ("http://x.shop.svc/{{targetName}}", False),  # literal text: renders to {targetName}
        ("http://x.shop.svc/{{{{targetKind}}}}", False),
        ("http://x.shop.svc/q?{{target}}", False),
    ],
)
def test_only_a_real_field_needs_a_target_in_the_crd_and_the_model_alike(url: str, a_field: bool) -> None:
    """The CEL rule and the model read the URL as the template does: a doubled brace is literal
    (a `contains` refused a valid `{{targetName}}`). The CRD's rule is the same RE2 expression."""
    rule = next(
        r["rule"]
        for r in HttpCheckAction.model_json_schema()["x-kubernetes-validations"]
        if "target" in r["rule"]
    )
    assert rule == f"has(self.target) || !self.url.matches('{URL_TARGET_FIELD}')"
    assert bool(re.search(URL_TARGET_FIELD, url)) is a_field
    if a_field:
        with pytest.raises(ValidationError, match="give a target"):
            check(url)
    else:
        assert check(url).target is None
        assert validation.problems({"steps": [{"name": "s", "httpCheck": {"url": url}}]})[1] == []


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://{targetName}.{namespace}.svc/{path}", "unknown field {path}"),
        ("http://web.shop.svc/{", "unbalanced '{'"),
        ("http://{targetname}.shop.svc/", "unknown field {targetname}"),
    ],
)
def test_a_bad_url_template_makes_the_playbook_invalid(url: str, said: str) -> None:
    raw = {
        "allowedTargets": BOUNDS,
        "steps": [{"name": "smoke", "httpCheck": {"url": url, "target": FROM_INCIDENT}}],
    }
    spec, found = validation.problems(raw)
    assert spec is not None
    assert len(found) == 1
    assert found[0].startswith("step smoke: httpCheck.url: ")
    assert said in found[0]


def test_a_good_url_template_is_valid() -> None:
    raw = {
        "allowedTargets": BOUNDS,
        "steps": [
            {"name": "smoke", "httpCheck": {"url": IN_CLUSTER, "target": FROM_INCIDENT}},
            {"name": "other", "httpCheck": {"url": "http://web.{namespace}.svc/healthz"}},
            {"name": "literal", "httpCheck": {"url": "http://web.shop.svc/q?json={{}}"}},
        ],
    }
    assert validation.problems(raw)[1] == []


# ----------------------------------------------------------------------------- rendering


def test_the_url_is_rendered_per_target() -> None:
    smoke = check(IN_CLUSTER + "?kind={targetKind}", target=FROM_INCIDENT)
    assert checks.render_url(smoke, "shop", WEB) == "http://web.shop.svc/v1/upload?kind=Deployment"
    assert checks.render_url(smoke, "shop", API) == "http://api.shop.svc/v1/upload?kind=Deployment"
    assert checks.render_url(check("http://x.{namespace}.svc/{{a}}"), "shop", None) == "http://x.shop.svc/{a}"


@pytest.mark.parametrize(
    "name", ["evil.example/", "user@evil.example", "evil.example:80", "x#", "EVIL.example", "a b"]
)
def test_a_target_name_that_is_no_object_name_is_never_put_in_a_url(name: str) -> None:
    smoke = check("http://{targetName}.{namespace}.svc/", target=FROM_INCIDENT)
    ref = WorkloadRef.model_validate({"kind": "Deployment", "name": name})
    with pytest.raises(ValueError, match="is not a DNS subdomain"):
        checks.render_url(smoke, "shop", ref)


# ----------------------------------------------------------------------------- the action


def _outbound() -> tuple[Outbound, list[str]]:
    """An Outbound that answers 200 'stored' to anything, recording the URLs asked; names resolve
    to a public address (the policy is the default one)."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(f"http://{request.headers['host']}{request.url.raw_path.decode()}")  # sent to the IP
        return httpx.Response(200, text="stored")

    async def resolver(host: str, port: int) -> str:
        return "93.184.215.14"

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Outbound(client, EgressPolicy.build([], []), resolver), asked


def _context_on(url: str, outbound: Outbound, refs: list[WorkloadRef]) -> actions.ActionContext:
    """The context the engine gives an httpCheck on the incident's targets, `refs` resolved."""
    step = {"httpCheck": {"url": url, "target": FROM_INCIDENT, "expectBodyContains": "stored"}}
    playbook = PlaybookSpec.model_validate({"steps": [{"name": "s", **step}], "allowedTargets": BOUNDS})
    now = datetime(2026, 1, 1, tzinfo=UTC)

    async def persist() -> None:
        return None

    return actions.ActionContext(
        kube=None,  # no Secret in these steps
        outbound=outbound,
        limits=None,
        namespace="shop",
        incident="web-outage",
        incident_uid="uid",
        spec=IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "availability"}),
        status=IncidentStatus(),
        playbook=playbook,
        step=playbook.steps[0],
        step_status=StepStatus(
            name="s",
            action="httpCheck",
            attempts=1,
            startedAt=now,
            targets=[TargetStatus(kind=r.kind, name=r.name) for r in refs],
        ),
        now=lambda: now,
        persist=persist,
    )


def test_the_check_runs_once_per_target_with_its_own_url() -> None:
    outbound, asked = _outbound()
    ctx = _context_on("http://{targetName}.{namespace}.example/v1/upload", outbound, [WEB, API])
    outcome = asyncio.run(running.run_step(ctx))
    assert outcome.ok, outcome.message
    assert asked == ["http://web.shop.example/v1/upload", "http://api.shop.example/v1/upload"]
    assert [(t.name, t.state) for t in ctx.step_status.targets or []] == [
        ("web", "Succeeded"),
        ("api", "Succeeded"),
    ]


def test_a_target_name_steering_the_host_stays_under_the_egress_policy() -> None:
    """A workload may be called 169.254.169.254 (dots are allowed): a URL that puts the name at
    the end of the host asks that host, and the egress policy refuses it like any URL of it
    (Blocked, Misconfigured: no request is made, no failure branch fires)."""
    outbound, asked = _outbound()
    metadata = WorkloadRef.model_validate({"kind": "Deployment", "name": "169.254.169.254"})
    ctx = _context_on("http://{targetName}/latest/meta-data/", outbound, [metadata])
    outcome = asyncio.run(running.run_step(ctx))
    assert (outcome.ok, outcome.blocked) == (False, Reason.MISCONFIGURED)
    assert "egress denied: 169.254.169.254" in outcome.message
    assert asked == []


def test_a_rendering_error_is_a_misconfiguration_not_a_failed_check() -> None:
    outbound, asked = _outbound()
    odd = WorkloadRef.model_validate({"kind": "Deployment", "name": "evil.example/x?"})
    ctx = _context_on("http://{targetName}.{namespace}.svc/", outbound, [odd])
    outcome = asyncio.run(running.run_step(ctx))
    assert (outcome.ok, outcome.blocked) == (False, Reason.MISCONFIGURED)
    assert "httpCheck.url" in outcome.message
    assert asked == []


def test_health_asks_the_check_once_per_target_the_step_resolved() -> None:
    outbound, asked = _outbound()
    playbook = PlaybookSpec.model_validate(
        {
            "allowedTargets": BOUNDS,
            "steps": [
                {
                    "name": "smoke",
                    "httpCheck": {"url": "http://{targetName}.{namespace}.example/", "target": FROM_INCIDENT},
                }
            ],
        }
    )
    spec = IncidentSpec.model_validate(
        {"title": "t", "severity": "P1", "category": "availability", "targets": [API.model_dump()]}
    )
    progress = PlaybookProgress(
        name="pb",
        steps=[
            StepStatus(name="smoke", action="httpCheck", targets=[TargetStatus(kind=WEB.kind, name="web")])
        ],
    )

    class Ready:
        async def readiness(self, kind: str, name: str, namespace: str) -> Any:
            return type("R", (), {"rolled_out": True, "describe": lambda self: "ready"})()

    outcome = asyncio.run(actions.verify_health(Ready(), outbound, "shop", spec, playbook, progress=progress))
    assert outcome.ok, outcome.message
    assert asked == ["http://web.shop.example/"]  # the target the step checked, not the one named now


def test_health_passes_past_a_skipped_check_on_the_targets_under_a_selector_bound() -> None:
    """The service-outage pattern: a smoke test on the incident's targets that runs only if an
    earlier step failed (`when: stepFailed`), skipped since it did not, under a selector bound.
    It never resolved targets, so it is no health check of the run: health asks the workloads
    (ready) and passes. (Resolving it again without the workloads' labels refused under the
    selector: 'labels could not be read', and health failed until the incident stalled.)"""
    outbound, asked = _outbound()
    playbook = PlaybookSpec.model_validate(
        {
            "allowedTargets": {"selector": {"matchLabels": {"tier": "web"}}},
            "steps": [
                {"name": "restart", "restart": {"target": FROM_INCIDENT}},
                {
                    "name": "smoke",
                    "when": {"stepFailed": "restart"},
                    "httpCheck": {"url": "http://{targetName}.{namespace}.example/", "target": FROM_INCIDENT},
                },
            ],
        }
    )
    spec = IncidentSpec.model_validate(
        {"title": "t", "severity": "P1", "category": "availability", "targets": [WEB.model_dump()]}
    )
    progress = PlaybookProgress(
        name="pb",
        targets=[WEB],
        steps=[
            StepStatus(
                name="restart",
                action="restart",
                state="Succeeded",
                targets=[TargetStatus(kind=WEB.kind, name="web", state="Succeeded")],
            ),
            StepStatus(name="smoke", action="httpCheck", state="Skipped"),
        ],
    )
    seen: list[str] = []

    class Ready:
        async def readiness(self, kind: str, name: str, namespace: str) -> Any:
            seen.append(f"{kind}/{name}")
            return type("R", (), {"rolled_out": True, "describe": lambda self: "ready"})()

    outcome = asyncio.run(actions.verify_health(Ready(), outbound, "shop", spec, playbook, progress=progress))
    assert outcome.ok, outcome.message
    assert seen == ["Deployment/web"]
    assert asked == []  # the skipped check is not asked
