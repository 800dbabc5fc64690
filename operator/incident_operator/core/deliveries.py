"""Monthly reports delivered (config `reports.deliver`): which are due, and the record of what was sent.

Pure.

A month's report is due on the first day of the next month (UTC), or on a later day up to
`reports.catchUpDays` when the operator was not running on the first. Each delivery sends one report
per namespace it names (or one for every namespace: `all: true`) to each of its channels: one
*item*, keyed `delivery/channel/namespace` (`*` for all), sent at most once per month.

The record (one JSON document in a ConfigMap of the operator's namespace, written with the
resourceVersion it was read at) holds, per item, the month and a state:

- `sending`: claimed before sending (the write that claims it succeeds for one writer only; a
  leader that took over meanwhile reads it and leaves it alone);
- `sent`: done;
- `failed`: the channel refused it after its own retries; tried again at the next pass, at most
  MAX_ATTEMPTS times in the month.

At most once: an item is claimed before it is sent, so an operator that dies between the claim and
the send leaves it `sending`, and it is not sent again (a missed report is one a person can fetch
from `/reports` or `kubectl incident report`; a duplicate monthly mail is noise that trains people
to ignore it, and an at-least-once scheme cannot tell "sent, then died" from "died before").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from incident_operator.api.timestamps import format_time
from incident_operator.settings.config import ReportDelivery

DATA_KEY = "deliveries.json"
MAX_ATTEMPTS = 3
"""Tries of one item in its month when its channel refuses it."""
ALL = "*"

State = Literal["sending", "sent", "failed"]


@dataclass(frozen=True)
class Item:
    """One report to one channel."""

    delivery: str
    channel: str
    namespace: str | None
    """None: every namespace the operator watches."""
    month: str
    """YYYY-MM: the month the report covers (the one before `now`'s)."""

    @property
    def key(self) -> str:
        return f"{self.delivery}/{self.channel}/{self.namespace or ALL}"


def report_month(now: datetime) -> str:
    """The month a delivery at `now` reports on: the previous one."""
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def due(
    now: datetime,
    deliveries: Sequence[ReportDelivery],
    record: Mapping[str, Mapping[str, Any]],
    catch_up_days: int,
) -> list[Item]:
    """The items to send at `now`: within the first `catch_up_days` days of the month, every
    item not yet sent for the previous month, neither claimed (`sending`) nor given up (failed
    MAX_ATTEMPTS times)."""
    if now.day > catch_up_days:
        return []
    month = report_month(now)
    found = []
    for delivery in deliveries:
        scopes: tuple[str | None, ...] = (None,) if delivery.all else delivery.namespaces
        for channel in delivery.channels:
            for namespace in scopes:
                item = Item(delivery.name, channel, namespace, month)
                entry = record.get(item.key) or {}
                retry = entry.get("state") == "failed" and int(entry.get("attempts") or 0) < MAX_ATTEMPTS
                if entry.get("month") != month or retry:
                    found.append(item)
    return found


def claimed(record: Mapping[str, Mapping[str, Any]], item: Item, now: datetime) -> dict[str, dict[str, Any]]:
    """`record` with `item` claimed (`sending`), its attempts counted."""
    before = record.get(item.key) or {}
    attempts = int(before.get("attempts") or 0) if before.get("month") == item.month else 0
    entry = {"month": item.month, "state": "sending", "at": format_time(now), "attempts": attempts + 1}
    return {**{k: dict(v) for k, v in record.items()}, item.key: entry}


def finished(
    record: Mapping[str, Mapping[str, Any]], item: Item, now: datetime, error: str | None
) -> dict[str, dict[str, Any]]:
    """`record` with `item` sent, or failed with `error`."""
    before = dict(record.get(item.key) or {})
    entry: dict[str, Any] = {**before, "month": item.month, "at": format_time(now)}
    entry["state"] = "sent" if error is None else "failed"
    if error is None:
        entry.pop("error", None)
    else:
        entry["error"] = error[:300]
    return {**{k: dict(v) for k, v in record.items()}, item.key: entry}


def decode(raw: str | None) -> dict[str, dict[str, Any]]:
    """The record from its ConfigMap value (unreadable or absent: empty, so nothing is lost but
    a duplicate is possible; the controller logs it)."""
    try:
        found = json.loads(raw or "{}")
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): dict(v) for k, v in found.items() if isinstance(v, dict)}


def encode(record: Mapping[str, Mapping[str, Any]]) -> str:
    return json.dumps(record, sort_keys=True, indent=1)


def subject(item: Item) -> str:
    scope = f"namespace {item.namespace}" if item.namespace else "all namespaces"
    return f"Monthly incident report {item.month} ({scope})"
