"""Time as the API writes it: RFC 3339 in UTC with a Z suffix. Pure; the only clock is `utc_now`.

Every module that formats, parses or reads the current time does it through here, so a status,
an annotation and a Lease agree on the format.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, aware, in UTC (what controllers pass to the pure core as `now`)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision and a Z suffix, as the API server writes times.

    A naive datetime is taken to be UTC already.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds (metav1.MicroTime: Leases, alert-status timestamps)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 time as written by `format_time` or the API server (aware, UTC)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
