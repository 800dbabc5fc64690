"""`kubectl incident` commands against an in-memory stand-in for the user's API access: what they
send (approvals name their run; assign names others, which the API server may refuse) and how a
refusal reads."""

from __future__ import annotations

import argparse
import json
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException

from incident_operator.cli.kubectl.client import Api, Failed
from incident_operator.cli.kubectl.main import parser
from incident_operator.cli.kubectl.respond import cmd_ack, cmd_assign, cmd_open, run_in_flight

ME = "system:serviceaccount:people:alice"
REFUSAL = (
    'incidents.incident-operator.dev "web" is forbidden: ValidatingAdmissionPolicy '
    "'incident-operator-identities' with binding 'incident-operator-identities' denied request: user "
    "system:serviceaccount:people:alice may not name bob as commander: naming someone other than "
    "yourself needs the verb assign on incidents (ClusterRole incident-operator-responder)"
)


class FakeApi:
    """The `Api` methods the response commands call, over one incident held in memory."""

    namespace = "shop"

    def __init__(self, incident: dict[str, Any], refuse: ApiException | None = None) -> None:
        self.incident = incident
        self.patches: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.refuse = refuse
        self.objects = self

    def get(self, name: str) -> dict[str, Any]:
        return self.incident

    def patch_spec(
        self, name: str, spec: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        self.patches.append(spec)
        return self.incident

    def whoami(self) -> str:
        return ME

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return {"metadata": {"name": body["metadata"].get("name", "x")}}


def incident(run: str | None = None, states: tuple[str, ...] = ()) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if run is not None:
        steps = [{"name": f"s{i}", "action": "scale", "state": s} for i, s in enumerate(states)]
        status["playbook"] = {"name": "pb", "runId": run, "steps": steps}
    return {"metadata": {"name": "web", "resourceVersion": "7"}, "spec": {}, "status": status}


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def run(fake: FakeApi, *argv: str) -> None:
    parsed = args(*argv)
    parsed.fn(cast(Api, fake), parsed)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (incident(), None),  # no run started
        (incident("r2", ("Succeeded", "AwaitingApproval")), "r2"),
        (incident("r2", ("Running", "Pending")), "r2"),
        (incident("r1", ("Succeeded", "Skipped", "Failed")), None),  # the run is over
        (incident("r3", ()), "r3"),  # started, steps not written yet
    ],
)
def test_the_run_in_flight_is_the_runid_of_a_run_with_a_step_not_settled(
    status: dict[str, Any], expected: str | None
) -> None:
    assert run_in_flight(status) == expected


def test_approve_names_the_run_in_flight(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeApi(incident("r2", ("Succeeded", "AwaitingApproval")))
    fake.incident["spec"]["approvals"] = [{"step": "s1", "by": "someone", "run": "r1"}]
    run(fake, "approve", "web", "s1")
    assert fake.patches == [{"approvals": [{"step": "s1", "by": ME, "run": "r2"}]}]
    assert capsys.readouterr().out.strip().endswith(f"step s1 approved by {ME} for run r2")


def test_approve_without_a_run_in_flight_leaves_run_out() -> None:
    fake = FakeApi(incident())
    run(fake, "approve", "web", "isolate")
    assert fake.patches == [{"approvals": [{"step": "isolate", "by": ME}]}]


def test_assign_names_another_person_and_says_so() -> None:
    fake = FakeApi(incident())
    cmd_assign(cast(Api, fake), args("assign", "web", "tech-lead", "bob"))
    cmd_assign(cast(Api, fake), args("assign", "web", "commander", "bob"))
    assert fake.patches == [{"roles": {"techLead": "bob"}}, {"commander": "bob"}]


def refusal(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "reason": "Forbidden", "message": message})
    return exc


@pytest.mark.parametrize(
    "command", [("assign", "web", "commander", "bob"), ("ack", "web", "--commander", "bob")]
)
def test_a_refused_assignment_says_which_verb_is_missing(command: tuple[str, ...]) -> None:
    fake = FakeApi(incident(), refuse=refusal(403, REFUSAL))
    parsed = args(*command)
    with pytest.raises(Failed) as failed:
        (cmd_assign if command[0] == "assign" else cmd_ack)(cast(Api, fake), parsed)
    said = str(failed.value)
    assert said.startswith("you may not name bob as commander of incident web: naming someone other")
    assert (
        "needs the verb assign on incidents in this namespace (ClusterRole incident-operator-responder)"
        in said
    )
    assert f"Error from server (Forbidden): {REFUSAL}" in said


def test_other_refusals_are_not_reported_as_a_missing_assign_verb() -> None:
    fake = FakeApi(
        incident(), refuse=refusal(403, "incidents.incident-operator.dev is forbidden: cannot patch")
    )
    with pytest.raises(ApiException):
        cmd_assign(cast(Api, fake), args("assign", "web", "comms", "bob"))


def test_open_sends_no_source_and_has_no_drill_flag(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeApi(incident())
    cmd_open(cast(Api, fake), args("open", "web-down", "--title", "web is down", "--commander", ME))
    spec = fake.created[0]["spec"]
    assert spec == {"title": "web is down", "severity": "P3", "category": "availability", "commander": ME}
    with pytest.raises(SystemExit):
        args("open", "--title", "x", "--drill")  # drills are opened by a Drill, as the operator
    capsys.readouterr()


PUBLISH_REFUSAL = (
    'incidents.incident-operator.dev "web" is forbidden: ValidatingAdmissionPolicy '
    "'incident-operator-approvals' with binding 'incident-operator-approvals' denied request: user "
    "system:serviceaccount:people:alice may not post public updates to incidents in namespace shop: "
    "needs the verb publish on incidents (ClusterRole incident-operator-responder)"
)


def test_update_is_internal_unless_public_and_public_marks_the_update_and_the_incident_in_one_write(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeApi(incident())
    fake.incident["spec"]["updates"] = [{"time": "2026-01-01T10:00:00Z", "message": "old"}]
    run(fake, "update", "web", "db-7 OOM")
    assert fake.patches[-1]["updates"][-1].keys() == {"time", "message"}
    assert "public" not in fake.patches[-1]
    run(fake, "update", "web", "Checkouts fail for some users", "--public")
    assert len(fake.patches) == 2  # one write each
    sent = fake.patches[-1]
    assert sent["public"] is True
    assert sent["updates"][0] == {"time": "2026-01-01T10:00:00Z", "message": "old"}  # carried along
    assert sent["updates"][-1]["message"] == "Checkouts fail for some users"
    assert sent["updates"][-1]["public"] is True
    assert capsys.readouterr().out.strip().endswith("updated and shown on the status page")


def test_update_carries_its_status_word_and_the_estimated_resolution_in_the_same_write() -> None:
    fake = FakeApi(incident())
    run(
        fake,
        "update",
        "web",
        "Cause found",
        "--public",
        "--status",
        "identified",
        "--eta",
        "2026-12-01T15:00:00+01:00",
    )
    sent = fake.patches[-1]
    assert sent["updates"][-1]["status"] == "identified"
    assert sent["estimatedResolution"] == "2026-12-01T14:00:00Z"
    run(fake, "update", "web", "still on it", "--eta", "1h30m")
    assert len(fake.patches) == 2
    assert fake.patches[-1]["estimatedResolution"].endswith("Z")
    with pytest.raises(Failed, match="--eta must be"):
        run(fake, "update", "web", "x", "--eta", "2026-12-01T15:00")  # no offset: refused
    with pytest.raises(SystemExit):
        run(fake, "update", "web", "x", "--status", "fixed")


def test_a_refused_public_update_says_which_verb_is_missing() -> None:
    fake = FakeApi(incident(), refuse=refusal(403, PUBLISH_REFUSAL))
    with pytest.raises(Failed) as failed:
        run(fake, "update", "web", "Checkouts fail", "--public")
    said = str(failed.value)
    assert (
        "need the verb publish on incidents in this namespace (ClusterRole incident-operator-responder)"
        in said
    )
    assert "without --public" in said
    assert f"Error from server (Forbidden): {PUBLISH_REFUSAL}" in said


# ----------------------------------------------------------------------------- automation resume


class FakeCore:
    """The breaker's ConfigMap as the user's CoreV1Api sees it (resourceVersion checked)."""

    def __init__(self, data: dict[str, str] | None, conflicts: int = 0) -> None:
        self.data, self.version, self.conflicts = data, "7", conflicts
        self.replaced: list[Any] = []

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        from kubernetes import client

        if self.data is None:
            raise ApiException(status=404, reason="NotFound")
        meta = client.V1ObjectMeta(name=name, namespace=namespace, resource_version=self.version)
        return client.V1ConfigMap(metadata=meta, data=dict(self.data))

    def replace_namespaced_config_map(self, name: str, namespace: str, body: Any) -> Any:
        if self.conflicts:
            self.conflicts -= 1
            self.version = str(int(self.version) + 1)
            raise ApiException(status=409, reason="Conflict")
        assert body.metadata.resource_version == self.version
        assert (name, namespace) == ("incident-operator-automation", "incident-operator")
        self.replaced.append(body)
        self.data = dict(body.data)
        return body


def test_automation_resume_forgets_the_window_says_who_and_retries_a_conflict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from datetime import UTC, datetime

    from incident_operator.cli.kubectl.automation import cmd_automation
    from incident_operator.core import breaker

    then = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    tripped = breaker.State(
        actions=(breaker.Action(then, "shop", "u/r1/scale/1"),),
        trips={"namespace/shop": breaker.Trip(then, then)},
    )
    api = FakeApi(incident())
    core = FakeCore({breaker.DATA_KEY: breaker.to_json(tripped)}, conflicts=1)
    api.core = core
    args = parser().parse_args(["automation", "resume"])
    cmd_automation(cast(Api, api), args)
    assert len(core.replaced) == 1
    state = breaker.from_json(core.data[breaker.DATA_KEY] if core.data else None)
    assert (state.actions, state.runs, dict(state.trips)) == ((), (), {})
    assert state.resumed_by == ME
    assert state.resumed_at is not None
    out = capsys.readouterr().out
    assert f"automation resumed by {ME} (namespace/shop)" in out

    cmd_automation(cast(Api, api), parser().parse_args(["automation", "status"]))
    status = capsys.readouterr().out
    assert "paused: no" in status
    assert f"by {ME}" in status


def test_automation_resume_with_nothing_recorded_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from incident_operator.cli.kubectl.automation import cmd_automation

    api = FakeApi(incident())
    core = FakeCore(None)
    api.core = core
    cmd_automation(cast(Api, api), parser().parse_args(["automation", "resume"]))
    assert core.replaced == []
    assert "not paused" in capsys.readouterr().out
