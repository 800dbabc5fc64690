"""Playbook selection: playbookRef first, else the highest priority whose match fits."""

from __future__ import annotations

from typing import Any

from incident_operator.api.models import IncidentSpec, PlaybookSpec
from incident_operator.core.matching import Candidate, select

STEP = {"name": "s", "restart": {"target": {"kind": "Deployment", "name": "web"}}}


def incident(**extra: Any) -> IncidentSpec:
    return IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "availability", **extra})


def playbook(name: str, priority: int = 0, **match: Any) -> Candidate:
    return Candidate(
        name, PlaybookSpec.model_validate({"priority": priority, "match": match, "steps": [STEP]})
    )


def test_playbook_ref_wins_over_priority() -> None:
    chosen = select(incident(playbookRef={"name": "low"}), [playbook("low", 1), playbook("high", 9)])
    assert chosen.playbook is not None
    assert chosen.playbook.name == "low"


def test_a_playbook_ref_to_nothing_says_so() -> None:
    chosen = select(incident(playbookRef={"name": "ghost"}), [playbook("other")])
    assert chosen.playbook is None
    assert chosen.reason == "PlaybookNotFound"
    assert "ghost" in chosen.message


def test_highest_priority_match_wins_and_ties_break_by_name() -> None:
    options = [playbook("b", 5), playbook("a", 5), playbook("c", 1)]
    assert select(incident(), options).playbook.name == "a"


def test_every_given_part_must_match() -> None:
    alert = incident(
        source={"type": "alert", "alertname": "ServiceDown", "labels": {"team": "shop", "env": "prod"}}
    )
    options = [
        playbook("sev", 9, severities=["P2"]),
        playbook("cat", 9, categories=["security"]),
        playbook("alert", 9, alertnames=["DatabaseDown"]),
        playbook("label", 9, labels={"team": "infra"}),
        playbook("fits", 1, severities=["P1", "P2"], alertnames=["ServiceDown"], labels={"team": "shop"}),
    ]
    chosen = select(alert, options)
    assert chosen.playbook is not None
    assert chosen.playbook.name == "fits"


def test_an_empty_match_matches_everything_and_no_match_is_explained() -> None:
    assert select(incident(), [playbook("any")]).playbook is not None
    none = select(incident(), [playbook("p2", severities=["P2"])])
    assert none.playbook is None
    assert none.reason == "NoMatchingPlaybook"


def test_alertname_match_needs_an_alert() -> None:
    assert select(incident(), [playbook("alert", alertnames=["ServiceDown"])]).playbook is None
