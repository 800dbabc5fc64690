"""bench/synthetic.py: the synthetic realistic history (unit tests, memory profiles) is what the
operator and the report would find after a real life (valid for the models, Closed, no loop, counted)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase
from incident_operator.core import openlimit, report
from incident_operator.core.attention import needs_loop

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # as bench.py has it
from synthetic import closed_incident

AT = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def test_a_history_incident_is_valid_closed_and_needs_no_loop() -> None:
    body = closed_incident("h00007", 7, AT)
    spec, status = IncidentSpec.model_validate(body["spec"]), IncidentStatus.model_validate(body["status"])
    assert spec.closed
    assert status.phase == Phase.CLOSED
    assert status.closedAt is not None
    assert status.playbook is not None
    assert len(status.playbook.steps) == 3
    assert len(status.timeline or []) >= 20  # a life, not an empty status
    assert 6_000 < len(json.dumps(body)) < 16_000
    assert not needs_loop(body["spec"], body["status"], {}, 4)
    meta = {"name": "h00007", "uid": "u7", "creationTimestamp": "2026-05-04T10:00:00Z"}
    assert openlimit.entry_of("h00007", "u7", body["spec"], meta, body["status"]) is None


def test_the_history_varies_and_the_report_counts_it() -> None:
    objects = [
        {"metadata": {"namespace": "ns", "name": f"h{i}"}, **closed_incident(f"h{i}", i, AT)}
        for i in range(8)
    ]
    assert len({o["spec"]["severity"] for o in objects}) == 4
    figures = report.build(objects, 2026, 5, AT).figures
    assert figures["total"] == 8
    assert figures["unreadable"] == 0
    assert figures["actionItems"]["done"] == 16
    assert figures["escalations"] == 8


def test_the_year_counts_a_stall_only_after_the_retention_pass_began(tmp_path: Path) -> None:
    """The operator's start listing over a year of history is not a stall of retention: the
    bench's stall clock starts when the log says a pass began, and a line already in the log
    before the restart does not count."""
    import year  # bench/ is on the path, as bench.py has it

    log = tmp_path / "operator.log"
    log.write_bytes(b"old run: " + year.RETENTION_BEGAN + b"\n")
    began = year.LogMark(log, year.RETENTION_BEGAN)
    assert not began()
    with log.open("ab") as f:
        f.write(b"listing 110000 incidents\n" + year.RETENTION_BEGAN[:10])
    assert not began()
    with log.open("ab") as f:  # the line arrives in two writes
        f.write(year.RETENTION_BEGAN[10:] + b" (closed for more than 90 days)\n")
    assert began()


def test_a_report_counts_the_slim_incidents_as_the_whole_ones_at_a_fraction_of_their_size() -> None:
    """`/reports` keeps only what `report.build` reads of each live incident of its month."""
    objects: list[dict[str, Any]] = [
        {"metadata": {"namespace": "ns", "name": f"h{i}", "uid": f"u{i}"}, **closed_incident(f"h{i}", i, AT)}
        for i in range(12)
    ]
    breached = {"type": "ResponseTargetBreached", "status": "True", "reason": "ResponseTargetBreached"}
    objects[0]["status"]["conditions"].append(
        {**breached, "lastTransitionTime": "2026-05-04T10:20:00Z", "message": "m"}
    )
    objects.append({"metadata": {"name": "broken"}, "spec": {"title": "t"}, "status": "garbage"})
    slim = [report.slim(o) for o in objects]
    whole, slimmed = report.build(objects, 2026, 5, AT).figures, report.build(slim, 2026, 5, AT).figures
    assert slimmed == whole
    assert whole["responseTargetBreaches"] == 1
    assert whole["unreadable"] == 1  # the garbage status (its spec without severity too)
    assert [s["metadata"].get("uid") for s in slim[:2]] == ["u0", "u1"]  # archive.history keys on it
    assert len(json.dumps(slim[:12])) * 3 < len(json.dumps(objects[:12]))  # the spec, times, conditions


def test_a_field_the_report_does_not_read_never_makes_an_incident_unreadable() -> None:
    """Every path (`/reports`, the plugin, delivered reports) reads through `report.slim`: an
    incident stored with a status field this version does not know (a newer operator's, rolled
    back) or a broken timeline entry is counted, as its archived entry would be."""
    body = {"metadata": {"namespace": "ns", "name": "h1", "uid": "u1"}, **closed_incident("h1", 1, AT)}
    body["status"]["addedByANewerVersion"] = {"x": 1}
    body["status"]["timeline"].append({"type": "Nonsense"})
    for objects in ([body], [report.slim(body)]):
        figures = report.build(objects, 2026, 5, AT).figures
        assert (figures["total"], figures["unreadable"]) == (1, 0)
    body["status"]["detectedAt"] = "not a time"  # what it reads, broken: unreadable on every path
    assert report.build([body], 2026, 5, AT).figures["unreadable"] == 1
