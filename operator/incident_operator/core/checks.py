"""Judging what the checks of a playbook observed. Pure.

`httpCheck` answers (status, body text, latency), `promQuery` answers (a Prometheus instant
query's JSON, compared with `expect` and held for `forSeconds`), and the name of the Job a
`job` step runs. The effects (actions.py) fetch; this module decides, with time passed in.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from incident_operator.api.actions import CompareOp, Expectation, HttpCheckAction, request_url
from incident_operator.api.base import TargetKind, WorkloadRef
from incident_operator.settings import templates

_COMPARE: dict[CompareOp, Callable[[float, float], bool]] = {
    CompareOp.LT: operator.lt,
    CompareOp.LE: operator.le,
    CompareOp.GT: operator.gt,
    CompareOp.GE: operator.ge,
    CompareOp.EQ: operator.eq,
    CompareOp.NE: operator.ne,
}


_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""A Kubernetes object name (RFC 1123 subdomain), as a Deployment's or StatefulSet's is."""

PLACEHOLDER = WorkloadRef(kind=TargetKind.DEPLOYMENT, name="placeholder")
"""The workload an httpCheck URL is rendered with when a Playbook is validated."""


def render_url(check: HttpCheckAction, namespace: str, target: WorkloadRef | None) -> str:
    """The URL an httpCheck asks for `target` (None: a step without one) in `namespace`: its
    template rendered, then checked as any step's URL is (`request_url`: http(s), a host, no
    user:password@, no #fragment). Raises ValueError (a TemplateError, or the URL's problem): a
    misconfiguration, never a failed check. The rendered URL passes the egress policy as any
    URL does; a workload name may hold dots, so it may name another host: the policy decides."""
    values = {"namespace": namespace}
    if target is not None:
        if not _DNS_SUBDOMAIN.match(target.name):  # as every real workload's: no '/', '@', ':', '#'
            raise templates.TemplateError(
                f"target name {target.name[:63]!r} is not a DNS subdomain: it is not put in a URL"
            )
        values |= {"targetName": target.name, "targetKind": str(target.kind)}
    elif templates.fields(check.url, templates.URL_FIELDS) & templates.TARGET_FIELDS:
        raise templates.TemplateError("url names {targetName} or {targetKind}, and the step has no target")
    return request_url(templates.render(check.url, values, templates.URL_FIELDS))


def http_verdict(check: HttpCheckAction, status: int, body: str, latency_ms: float) -> tuple[bool, str]:
    """(passed, what to report) for one answer of an httpCheck."""
    said = f"HTTP {status} in {latency_ms:.0f}ms"
    if status != check.expectStatus:
        return False, f"{said} (expected {check.expectStatus})"
    if check.expectBodyContains is not None and check.expectBodyContains not in body:
        return False, f"{said}, body lacks {check.expectBodyContains!r}"
    if check.maxLatencyMs is not None and latency_ms > check.maxLatencyMs:
        return False, f"{said}, slower than {check.maxLatencyMs}ms"
    return True, said


class QueryError(Exception):
    """The answer is not a usable instant-query result (the query is wrong, or not a number)."""


def samples(answer: dict[str, Any]) -> list[float]:
    """The values of a Prometheus `/api/v1/query` answer (vector or scalar). Series labels are
    never kept: on a Prometheus shared by tenants they are other teams' data. A refusal says only
    Prometheus' error type (`bad_data`, `timeout`, ...), never its error text."""
    if answer.get("status") != "success":
        kind = str(answer.get("errorType") or "")
        raise QueryError(f"Prometheus refused the query ({kind if _ERROR_TYPE.match(kind) else 'error'})")
    data = answer.get("data") or {}
    result_type = data.get("resultType")
    result: Any = data.get("result") or []
    if result_type == "scalar":
        return [float(result[1])]
    if result_type != "vector":
        raise QueryError("the query answers neither an instant vector nor a scalar")
    return [float(s["value"][1]) for s in result]


_ERROR_TYPE = re.compile(r"^[a-z_]{1,32}$")


def query_verdict(answer: dict[str, Any], expect: Expectation) -> tuple[bool, str]:
    """(holds, what to report): every sample compared with the expectation; no data does not hold.
    What is reported is the verdict and one offending value, never a series' labels."""
    values = samples(answer)
    wanted = f"{expect.op} {expect.value:g}"
    if not values:
        return False, f"no data (expected {wanted})"
    failing = [v for v in values if math.isnan(v) or not _COMPARE[expect.op](v, expect.value)]
    if failing:
        return False, f"{len(failing)} of {len(values)} series: {failing[0]:g} (expected {wanted})"
    return True, f"{len(values)} of {len(values)} series {wanted}"


@dataclass
class Holding:
    """Since when a condition has held without a break (None: it does not hold now)."""

    since: datetime | None = None

    def observe(self, holds: bool, now: datetime) -> timedelta:
        """Record one observation; how long it has held so far."""
        if not holds:
            self.since = None
            return timedelta(0)
        if self.since is None:
            self.since = now
        return now - self.since


_NAME_CHARS = re.compile(r"[^a-z0-9-]")


def job_name(incident: str, step: str, run_id: str, attempt: int) -> str:
    """A Job name unique per incident, run, step and attempt, within 63 characters (a label
    value: the Job controller labels its pods with it)."""
    full = f"{incident}-{step}-{run_id}-{attempt}"
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    head = _NAME_CHARS.sub("-", full[: 63 - 9]).rstrip("-")
    return f"{head}-{digest}"
