"""`kubectl incident oncall`: who is on call now (or `--at TIME`) and next, per OnCallSchedule,
computed from each schedule's spec with the operator's own function (`core.oncall`), not only read
from status; and `oncall override SCHEDULE --person P --for 2h`, which adds an override by
server-side apply under the field manager FIELD_MANAGER, so overrides merge by key (person, start)
with those GitOps applies and the API server's admission checks the verb `override`.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from incident_operator.api.keys import API_GROUP, API_VERSION
from incident_operator.api.timestamps import format_time, parse_time, utc_now
from incident_operator.cli.kubectl.client import Api, Failed, table
from incident_operator.core import oncall

PLURAL = "oncallschedules"
APPLY_ATTEMPTS = 5
"""An override is applied again this often when the schedule changed since it was read."""
FIELD_MANAGER = "incident-operator-oncall"
"""The field manager of the plugin's overrides (server-side apply): it owns the overrides it added."""
MAX_OVERRIDE = timedelta(days=90)
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")


def parse_moment(text: str) -> datetime:
    """`now`, or an RFC 3339 time (2026-12-24T17:00:00+01:00, ...Z); raises Failed."""
    if text.strip().lower() == "now":
        return utc_now().replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Failed(f"{text!r} is not a time: give RFC 3339 (2026-12-24T17:00:00+01:00) or now") from None
    if moment.tzinfo is None:
        raise Failed(f"{text!r} has no offset: add Z or +HH:MM")
    return moment.astimezone(UTC)


def parse_length(text: str) -> timedelta:
    """`2h`, `30m`, `1d`, `1h30m`, or an ISO 8601 duration (PT2H); raises Failed."""
    value = text.strip()
    try:
        length = oncall.parse_rotation(value) if value.upper().startswith("P") else None
    except ValueError:
        length = None
    if length is None:
        match = _DURATION.fullmatch(value.lower())
        if match is None or not any(match.groups()):
            raise Failed(f"--for {text!r}: give a length such as 2h, 30m, 1d, 1h30m or PT2H")
        days, hours, minutes = (int(g) if g else 0 for g in match.groups())
        length = timedelta(days=days, hours=hours, minutes=minutes)
    if length <= timedelta(0):
        raise Failed(f"--for {text!r}: the override must last a while")
    if length > MAX_OVERRIDE:
        raise Failed(f"--for {text!r}: at most {MAX_OVERRIDE.days} days at once")
    return length


def describe(schedule: dict[str, Any], at: datetime) -> dict[str, Any]:
    """Who is on call at `at` and next, from the schedule's spec (the problems, if it has any)."""
    metadata = schedule.get("metadata") or {}
    found: dict[str, Any] = {
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "at": format_time(at),
        "current": None,
        "next": None,
        "problems": [],
    }
    spec, problems = oncall.check(schedule.get("spec") or {})
    if spec is None or problems:
        found["problems"] = problems
        return found
    now = oncall.on_call(spec, at)
    following = oncall.next_shift(spec, at)
    if now is not None:
        found["current"] = {
            "person": now.person,
            "layer": now.layer,
            "since": format_time(now.start),
            "until": None if oncall.open_ended(now, at) else format_time(now.end),
        }
    if following is not None:
        found["next"] = {
            "person": following.person,
            "layer": following.layer,
            "from": format_time(following.start),
        }
    return found


def cmd_oncall(api: Api, args: argparse.Namespace) -> None:
    words = list(args.words or [])
    if words and words[0] == "override":
        if len(words) != 2:
            raise Failed(
                "usage: kubectl incident oncall override SCHEDULE --person NAME --for 2h [--start TIME]"
            )
        override(api, words[1], args)
        return
    if len(words) > 1:
        raise Failed("usage: kubectl incident oncall [SCHEDULE] [--at TIME] [-A] [-o json]")
    if args.person or args.length or args.start:
        raise Failed("--person, --for and --start belong to `oncall override SCHEDULE`")
    at = parse_moment(args.at) if args.at else utc_now()
    if words:
        schedules = [api.objects.get(PLURAL, api.namespace, words[0])]
    else:
        schedules = api.objects.list(PLURAL, None if args.all_namespaces else api.namespace)
    found = [describe(s, at) for s in sorted(schedules, key=_key)]
    if args.output == "json":
        print(json.dumps(found, indent=2))
        return
    if not found:
        where = "any namespace" if args.all_namespaces else f"namespace {api.namespace}"
        raise Failed(f"no OnCallSchedules in {where}")
    print(render(found, args.all_namespaces))


def _key(schedule: dict[str, Any]) -> tuple[str, str]:
    metadata = schedule.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def render(found: list[dict[str, Any]], all_namespaces: bool) -> str:
    header = ["SCHEDULE", "ON CALL", "LAYER", "UNTIL", "NEXT", "FROM"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + header]
    notes = []
    for item in found:
        current, following = item["current"] or {}, item["next"] or {}
        if item["problems"]:
            notes.append(f"{item['name']}: invalid: " + "; ".join(item["problems"]))
        row = [
            str(item["name"]),
            "(invalid)" if item["problems"] else current.get("person") or "-",
            current.get("layer") or "-",
            current.get("until") or "-",
            following.get("person") or "-",
            following.get("from") or "-",
        ]
        rows.append(([str(item["namespace"])] if all_namespaces else []) + row)
    return "\n".join([table(rows), *notes])


def override(api: Api, name: str, args: argparse.Namespace) -> None:
    """Add an override: `person` on call from `start` (default now) for `length`, applied under the
    plugin's field manager with the overrides it already owns (so none of them is dropped), the
    expired ones left out."""
    if not args.person or not args.length:
        raise Failed("oncall override needs --person NAME and --for LENGTH (e.g. 2h)")
    if args.at:
        raise Failed("--at belongs to `oncall [SCHEDULE]`; an override starts at --start")
    start = parse_moment(args.start) if args.start else utc_now().replace(microsecond=0)
    end = start + parse_length(args.length)
    for _ in range(APPLY_ATTEMPTS):
        schedule = api.objects.get(PLURAL, api.namespace, name)
        overrides = _overrides(schedule, name, args.person, start, end)
        # The overrides the plugin owns are read, then applied again with the new one: guarded by
        # the resourceVersion read, so a concurrent `oncall override` (same field manager) is not
        # dropped by this apply; on a conflict, read again and retry.
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "OnCallSchedule",
            "metadata": {
                "name": name,
                "namespace": api.namespace,
                "resourceVersion": schedule["metadata"]["resourceVersion"],
            },
            "spec": {"overrides": overrides},
        }
        try:
            api.objects.apply(PLURAL, api.namespace, name, body, field_manager=FIELD_MANAGER)
            break
        except ApiException as exc:
            if not _modified_meanwhile(exc):
                raise
    else:
        raise Failed(f"oncallschedule {name} kept changing; try again")
    entry = overrides[-1]
    print(
        f"oncallschedule.{API_GROUP}/{name}: {args.person} on call from {entry['start']} until {entry['end']}"
    )


def _overrides(
    schedule: dict[str, Any], name: str, person: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The overrides the plugin applies: those it owns still running, then the new one (last)."""
    spec, problems = oncall.check(schedule.get("spec") or {})
    if spec is None:
        raise Failed(f"oncallschedule {name} cannot be read: " + "; ".join(problems))
    if oncall.person(spec, person) is None:
        known = ", ".join(p.name for p in spec.people)
        raise Failed(f"{person} is not one of the people of oncallschedule {name} ({known})")
    now = utc_now()
    kept = [
        o
        for o in owned_overrides(schedule, FIELD_MANAGER)
        if _end(o) > now and (o.get("person"), o.get("start")) != (person, format_time(start))
    ]
    return [*kept, {"person": person, "start": format_time(start), "end": format_time(end)}]


def _modified_meanwhile(exc: ApiException) -> bool:
    """A 409 because the object changed since it was read (not a field conflict of the apply,
    which trying again would not solve)."""
    return exc.status == 409 and "has been modified" in str(exc.body or "")


def _end(entry: dict[str, Any]) -> datetime:
    try:
        return parse_time(str(entry.get("end")))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)


def owned_overrides(schedule: dict[str, Any], manager: str) -> list[dict[str, Any]]:
    """The overrides of the schedule that `manager` applied (its managedFields name their keys), as
    they are now: what it must apply again so as not to drop them."""
    keys: set[tuple[str, str]] = set()
    for entry in (schedule.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {}).get("f:overrides") or {}
        for item in fields:
            if not item.startswith("k:"):
                continue
            try:
                key = json.loads(item[2:])
            except ValueError:
                continue
            keys.add((str(key.get("person")), str(key.get("start"))))
    overrides = (schedule.get("spec") or {}).get("overrides") or []
    return [
        {"person": o["person"], "start": o["start"], "end": o["end"]}
        for o in overrides
        if (str(o.get("person")), str(o.get("start"))) in keys
    ]
