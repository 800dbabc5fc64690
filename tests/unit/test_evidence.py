"""Evidence stays under its size limit whatever the logs hold, and says what was cut."""

from __future__ import annotations

from incident_operator.controllers.actions import _fit


def test_huge_logs_are_cut_to_the_limit_and_the_cut_is_recorded() -> None:
    data = {
        "pods.yaml": "- name: a\n",
        "events.yaml": "[]\n",
        "logs-a.txt": "x" * 600_000,
        "logs-b.txt": "y" * 600_000,
        "logs-unavailable.txt": "c: HTTP 404\n",
    }
    _fit(data, 900_000)
    assert sum(len(v.encode()) for v in data.values()) <= 900_000
    assert data["logs-a.txt"] == "x" * 600_000  # only as much is cut as needed (b first)
    assert data["logs-b.txt"].startswith("(trimmed")
    assert "logs-b.txt: 600000 bytes cut" in data["trimmed.txt"]
    assert data["logs-unavailable.txt"] == "c: HTTP 404\n"


def test_even_a_huge_event_list_is_cut() -> None:
    data = {"pods.yaml": "p" * 10, "events.yaml": "e" * 2_000_000}
    _fit(data, 100_000)
    assert sum(len(v.encode()) for v in data.values()) <= 100_000
    assert "events.yaml" in data["trimmed.txt"]


def test_small_evidence_is_untouched() -> None:
    data = {"pods.yaml": "p", "logs-a.txt": "l"}
    _fit(data, 10_000)
    assert data == {"pods.yaml": "p", "logs-a.txt": "l"}
