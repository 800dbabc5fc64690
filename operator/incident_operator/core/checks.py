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

from incident_operator.api.actions import CompareOp, Expectation, HttpCheckAction

_COMPARE: dict[CompareOp, Callable[[float, float], bool]] = {
    CompareOp.LT: operator.lt,
    CompareOp.LE: operator.le,
    CompareOp.GT: operator.gt,
    CompareOp.GE: operator.ge,
    CompareOp.EQ: operator.eq,
    CompareOp.NE: operator.ne,
}


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


def _series_name(metric: dict[str, str]) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{metric.get('__name__', '')}{{{labels}}}"


def samples(answer: dict[str, Any]) -> list[tuple[str, float]]:
    """(series, value) of a Prometheus `/api/v1/query` answer (vector or scalar)."""
    if answer.get("status") != "success":
        raise QueryError(f"{answer.get('errorType', 'error')}: {answer.get('error', 'query failed')}")
    data = answer.get("data") or {}
    kind = data.get("resultType")
    result: Any = data.get("result") or []
    if kind == "scalar":
        return [("scalar", float(result[1]))]
    if kind != "vector":
        raise QueryError(f"the query answers a {kind}; use an instant vector or scalar")
    return [(_series_name(s.get("metric") or {}), float(s["value"][1])) for s in result]


def query_verdict(answer: dict[str, Any], expect: Expectation) -> tuple[bool, str]:
    """(holds, what to report): every sample compared with the expectation; no data does not hold."""
    values = samples(answer)
    wanted = f"{expect.op} {expect.value:g}"
    if not values:
        return False, f"no data (expected {wanted})"
    failing = [(name, v) for name, v in values if math.isnan(v) or not _COMPARE[expect.op](v, expect.value)]
    shown = ", ".join(f"{name}={v:g}" for name, v in (failing or values)[:3])
    more = f" and {len(failing or values) - 3} more" if len(failing or values) > 3 else ""
    if failing:
        return False, f"{shown}{more} (expected {wanted})"
    return True, f"{shown}{more} {wanted}"


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
