"""Which incidents keep a loop: open ones, Resolved ones until settled, and those a person or an
alert wakes again; never Closed ones."""

from __future__ import annotations

import pytest

from incident_operator.api.keys import ANNOTATION_CHANGED_AT, ANNOTATION_STATUS
from incident_operator.core.attention import needs_loop

SETTLED = {"phase": "Resolved", "settled": True}


def alert(status: str, at: str) -> dict[str, str]:
    return {ANNOTATION_STATUS: status, ANNOTATION_CHANGED_AT: at}


@pytest.mark.parametrize(
    "phase", [None, "Detected", "Acknowledged", "Investigating", "Mitigating", "Monitoring"]
)
def test_open_incidents_always_need_their_loop(phase: str | None) -> None:
    assert needs_loop({}, {"phase": phase} if phase else {}, {})


def test_closed_incidents_never_do() -> None:
    assert not needs_loop(
        {"closed": True}, {"phase": "Closed"}, alert("firing", "2026-11-27T12:00:00.000000Z")
    )


def test_resolved_incidents_until_settled() -> None:
    assert needs_loop({}, {"phase": "Resolved"}, {})  # reverting, delivering notices
    assert not needs_loop({}, SETTLED, {})


def test_a_person_closing_a_settled_incident_wakes_it() -> None:
    assert needs_loop({"closed": True}, SETTLED, {})


def test_the_alert_firing_again_wakes_it_but_an_old_firing_does_not() -> None:
    status = {**SETTLED, "alertResolvedAt": "2026-11-27T12:00:00Z"}
    assert needs_loop({}, status, alert("firing", "2026-11-27T12:05:00.000000Z"))
    assert not needs_loop({}, status, alert("firing", "2026-11-27T11:55:00.000000Z"))
    assert not needs_loop({}, status, alert("resolved", "2026-11-27T12:00:00.000000Z"))


def test_an_alert_resolving_after_a_human_resolution_is_recorded() -> None:
    assert needs_loop({}, SETTLED, alert("resolved", "2026-11-27T12:00:00.000000Z"))
    assert not needs_loop({}, SETTLED, alert("firing", "2026-11-27T12:00:00.000000Z"))


def test_a_spec_change_after_settling_wakes_it_until_acted_on() -> None:
    acted = {**SETTLED, "observedGeneration": 3}
    assert not needs_loop({}, acted, {}, generation=3)
    assert needs_loop({"resolution": {"summary": "x", "rootCause": "y"}}, acted, {}, generation=4)
    assert not needs_loop({}, {"phase": "Closed", "observedGeneration": 3}, {}, generation=4)
