"""Roles of the response (seed 3.1) assigned with `kubectl incident assign`, in the timeline and
the post-mortem; a severity escalation rule (the session's: a P2 not mitigated in 3 s is treated
as a P1, in its own namespace) moves the deadline and the escalation channel, never the spec."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests.e2e.conftest import SEVERITY_NAMESPACE, Cluster, LocalServer, OperatorProcess, named_namespace
from tests.e2e.engine_helpers import TIMEOUT, Scenario
from tests.e2e.test_after_the_incident import kubectl
from tests.polling import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def severity_namespace(crds_installed: Cluster, operator: OperatorProcess) -> Iterator[str]:
    """The namespace the session's severity rule and its P1 channel are limited to."""
    with named_namespace(crds_installed, SEVERITY_NAMESPACE) as name:
        yield name


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess, severity_namespace: str) -> Scenario:
    return Scenario(crds_installed, operator, severity_namespace)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_p2_nobody_mitigates_is_treated_as_p1_and_pages_the_p1_channel(
    s: Scenario, receivers: LocalServer
) -> None:
    s.incident("slow-burn", severity="P2", title="checkout errors grow", playbookRef={"name": "none-here"})
    s.wait_condition("slow-burn", "Stalled", reason="PlaybookNotFound")
    status = s.status("slow-burn")
    assert at(status["acknowledgeBy"]) - at(status["detectedAt"]) == timedelta(hours=1)  # P2's target

    status = wait_until(
        lambda: (st := s.status("slow-burn")).get("effectiveSeverity") and st,
        timeout=TIMEOUT,
        what="the P2 treated as a P1",
        describe=s.describer("slow-burn"),
    )
    assert status["effectiveSeverity"] == "P1"
    [change] = status["severityHistory"]
    assert (change["previous"], change["severity"], change["reason"]) == (
        "P2",
        "P1",
        "not mitigated within 3s",
    )
    assert 3 <= (at(change["at"]) - at(status["detectedAt"])).total_seconds() < 10
    assert at(status["acknowledgeBy"]) - at(status["detectedAt"]) == timedelta(seconds=10)  # P1's target
    assert s.get("incidents", "slow-burn")["spec"]["severity"] == "P2"  # spec is the human's
    escalated = [e for e in s.events("slow-burn") if e.reason == "SeverityEscalated"]
    assert [(e.type, e.message) for e in escalated] == [("Warning", "P2 -> P1: not mitigated within 3s")]

    s.wait_condition("slow-burn", "ResponseTargetBreached")
    pages = wait_until(
        lambda: [p for p in receivers.received_at("/sev-pager") if "slow-burn" in p["body"]["text"]],
        timeout=TIMEOUT,
        what="the P1 escalation page",
    )
    assert [p["body"]["text"] for p in pages] == ["PAGE P1 slow-burn: escalated"]
    listed = kubectl(s, "list", "-n", s.namespace).stdout
    assert "P2->P1" in listed
    s.patch_incident("slow-burn", {"resolution": {"summary": "test over"}})


def test_a_person_raising_the_severity_moves_the_deadline_and_pages_the_new_policy(
    s: Scenario, receivers: LocalServer
) -> None:
    """A P3 (1 h target here) raised to P1 (10 s) by a person: the deadline becomes detection +
    10 s, so it is breached within seconds, and the P1 policy pages; before, it kept its hour."""
    s.incident(
        "underrated", severity="P3", title="it is worse than it looked", playbookRef={"name": "none-here"}
    )
    s.wait_condition("underrated", "Stalled", reason="PlaybookNotFound")
    status = s.status("underrated")
    assert at(status["acknowledgeBy"]) - at(status["detectedAt"]) == timedelta(hours=1)
    assert status["declaredSeverity"] == "P3"
    s.patch_incident("underrated", {"severity": "P1"})

    s.wait_condition("underrated", "ResponseTargetBreached")
    status = s.status("underrated")
    assert at(status["acknowledgeBy"]) - at(status["detectedAt"]) == timedelta(seconds=10)
    [change] = status["severityHistory"]
    assert (change["previous"], change["severity"], change["by"], change["direction"]) == (
        "P3",
        "P1",
        "person",
        "raised",
    )
    changed = [e for e in s.events("underrated") if e.reason == "SeverityChanged"]
    assert [e.type for e in changed] == ["Warning"]
    assert changed[0].message.startswith("P3 -> P1: raised by a person (spec.severity)")
    wait_until(
        lambda: [p for p in receivers.received_at("/sev-pager") if "underrated" in p["body"]["text"]],
        timeout=TIMEOUT,
        what="the P1 escalation page",
    )
    s.patch_incident("underrated", {"resolution": {"summary": "test over"}})


def test_a_mitigated_p2_stays_p2(s: Scenario) -> None:
    s.deployment("cart", 1)
    s.playbook(
        "fix", [{"name": "scale", "scale": {"target": {"kind": "Deployment", "name": "cart"}, "delta": 1}}]
    )
    s.incident("handled", severity="P2", playbookRef={"name": "fix"})
    s.wait_condition("handled", "Mitigated")
    wait_until(
        lambda: (
            datetime.now(at(s.status("handled")["detectedAt"]).tzinfo)
            > at(s.status("handled")["detectedAt"]) + timedelta(seconds=4)
        ),
        timeout=TIMEOUT,
        what="the rule's time passed",
    )
    status = s.status("handled")
    assert "effectiveSeverity" not in status
    assert "SeverityEscalated" not in [e["type"] for e in status["timeline"]]


def test_roles_are_assigned_with_the_plugin_and_shown_in_the_timeline_and_post_mortem(s: Scenario) -> None:
    s.incident("team", severity="P3", title="search is slow", playbookRef={"name": "none-here"})
    kubectl(s, "assign", "team", "commander", "alice", "-n", s.namespace)
    kubectl(s, "assign", "team", "tech-lead", "bob", "-n", s.namespace)
    kubectl(s, "assign", "team", "comms", "carol", "-n", s.namespace)
    done = kubectl(s, "assign", "team", "customer-success", "dan", "-n", s.namespace)
    assert done.stdout.strip() == "incident.incident-operator.dev/team: dan is the Customer Success"
    spec = s.get("incidents", "team")["spec"]
    assert spec["commander"] == "alice"
    assert spec["roles"] == {"techLead": "bob", "comms": "carol", "customerSuccess": "dan"}

    def assigned() -> list[str]:
        return [e["message"] for e in s.status("team").get("timeline") or [] if e["type"] == "RoleAssigned"]

    wait_until(lambda: len(assigned()) == 3, timeout=TIMEOUT, what="three roles in the timeline")
    assert sorted(assigned()) == [
        "Communications Lead: carol",
        "Customer Success: dan",
        "Technical Lead: bob",
    ]
    kubectl(s, "assign", "team", "tech-lead", "erin", "-n", s.namespace)
    wait_until(lambda: "Technical Lead: erin (was bob)" in assigned(), timeout=TIMEOUT, what="the hand-over")
    s.wait_condition("team", "Acknowledged", reason="CommanderAssigned")

    postmortem = kubectl(s, "postmortem", "team", "-n", s.namespace).stdout
    for line in (
        "- **Incident Commander**: alice",
        "- **Technical Lead**: erin",
        "- **Communications Lead**: carol",
        "- **Customer Success**: dan",
    ):
        assert line in postmortem
    wrong = kubectl(s, "assign", "team", "janitor", "x", "-n", s.namespace, expect=2)
    assert "invalid choice: 'janitor'" in wrong.stderr
