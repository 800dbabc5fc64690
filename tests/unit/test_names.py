"""Names the operator makes from others' names stay valid and distinct however long those are."""

from __future__ import annotations

import re

import pytest

from incident_operator.api.base import WorkloadRef
from incident_operator.controllers.actions import evidence_name
from incident_operator.core.names import SUBDOMAIN_MAX, bounded

SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def test_a_name_that_fits_is_kept() -> None:
    assert bounded("web-outage-evidence-r1") == "web-outage-evidence-r1"
    assert bounded("a" * SUBDOMAIN_MAX) == "a" * SUBDOMAIN_MAX


@pytest.mark.parametrize("cut_at", ["-", ".", "-.-"])
def test_a_cut_name_never_ends_in_a_dash_or_dot_before_its_digest(cut_at: str) -> None:
    head = "a" * (SUBDOMAIN_MAX - 17 - len(cut_at))
    made = bounded(f"{head}{cut_at}tail-{'b' * 40}")
    assert len(made) <= SUBDOMAIN_MAX
    assert SUBDOMAIN.match(made), made


def test_two_long_names_alike_up_to_the_cut_stay_distinct() -> None:
    common = "x" * 300
    assert bounded(f"{common}-web") != bounded(f"{common}-api")


def test_evidence_of_each_workload_has_its_own_valid_name_however_long() -> None:
    incident = "i" * 200
    first = WorkloadRef.model_validate({"kind": "Deployment", "name": "w" * 60 + "-a"})
    second = WorkloadRef.model_validate({"kind": "Deployment", "name": "w" * 60 + "-b"})
    names = {evidence_name(incident, "r1", ref) for ref in (first, second, None)}
    assert len(names) == 3
    assert all(len(n) <= SUBDOMAIN_MAX and SUBDOMAIN.match(n) for n in names)
    assert evidence_name("web", "r2", None) == "web-evidence-r2"
    assert evidence_name("web", "r2", first).startswith("web-evidence-r2-deployment-www")
