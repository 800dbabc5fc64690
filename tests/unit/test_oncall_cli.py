"""`kubectl incident oncall` without a cluster: times and lengths, who is on call from the spec,
the overrides the plugin owns (server-side apply), and the admission policy and role it relies on."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from incident_operator.cli.kubectl import oncall as cli
from incident_operator.cli.kubectl.client import Failed
from incident_operator.cli.kubectl.main import parser

INSTALL = Path(__file__).resolve().parents[2] / "manifests" / "install"

SCHEDULE: dict[str, Any] = {
    "metadata": {
        "resourceVersion": "41",
        "namespace": "shop",
        "name": "primary",
        "managedFields": [
            {
                "manager": "argocd-controller",
                "operation": "Apply",
                "fieldsV1": {
                    "f:spec": {"f:overrides": {'k:{"person":"carol","start":"2026-12-01T00:00:00Z"}': {}}}
                },
            },
            {
                "manager": cli.FIELD_MANAGER,
                "operation": "Apply",
                "fieldsV1": {
                    "f:spec": {
                        "f:overrides": {
                            'k:{"person":"bob","start":"2026-12-02T10:00:00Z"}': {".": {}, "f:end": {}},
                            ".": {},
                        }
                    }
                },
            },
        ],
    },
    "spec": {
        "people": [{"name": "alice"}, {"name": "bob"}, {"name": "carol"}],
        "layers": [
            {"name": "daily", "start": "2026-12-01T09:00:00Z", "rotation": "P1D", "people": ["alice", "bob"]}
        ],
        "overrides": [
            {"person": "carol", "start": "2026-12-01T00:00:00Z", "end": "2026-12-01T06:00:00Z"},
            {"person": "bob", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T12:00:00Z"},
        ],
    },
}


def test_times_and_lengths() -> None:
    assert cli.parse_moment("2026-12-24T17:00:00+01:00") == datetime(2026, 12, 24, 16, tzinfo=UTC)
    assert cli.parse_moment("2026-12-24T16:00:00Z") == datetime(2026, 12, 24, 16, tzinfo=UTC)
    with pytest.raises(Failed, match="no offset"):
        cli.parse_moment("2026-12-24T16:00:00")
    with pytest.raises(Failed, match="not a time"):
        cli.parse_moment("tomorrow")
    assert cli.parse_length("2h") == timedelta(hours=2)
    assert cli.parse_length("1h30m") == timedelta(minutes=90)
    assert cli.parse_length("1d") == timedelta(days=1)
    assert cli.parse_length("PT45M") == timedelta(minutes=45)
    for bad in ("0h", "two hours", "", "365d", "-2h"):
        with pytest.raises(Failed):
            cli.parse_length(bad)


def test_who_is_on_call_is_computed_from_the_spec() -> None:
    found = cli.describe(SCHEDULE, datetime(2026, 12, 2, 11, tzinfo=UTC))
    assert found["current"] == {
        "person": "bob",
        "layer": "override",
        "since": "2026-12-02T10:00:00Z",
        "until": "2026-12-02T12:00:00Z",
    }
    # bob's own turn follows his override: the next is another person's, alice's next morning
    assert found["next"] == {"person": "alice", "layer": "daily", "from": "2026-12-03T09:00:00Z"}
    text = cli.render([found], all_namespaces=True)
    assert text.splitlines()[0].split() == [
        "NAMESPACE",
        "SCHEDULE",
        "ON",
        "CALL",
        "LAYER",
        "UNTIL",
        "NEXT",
        "FROM",
    ]
    assert text.splitlines()[1].split() == [
        "shop",
        "primary",
        "bob",
        "override",
        "2026-12-02T12:00:00Z",
        "alice",
        "2026-12-03T09:00:00Z",
    ]


def test_an_invalid_schedule_says_why() -> None:
    broken = {**SCHEDULE, "spec": {**SCHEDULE["spec"], "timeZone": "Nowhere/Else"}}
    found = cli.describe(broken, datetime(2026, 12, 2, 11, tzinfo=UTC))
    assert found["current"] is None
    assert "unknown time zone" in found["problems"][0]
    assert "primary: invalid: unknown time zone" in cli.render([found], all_namespaces=False)


def test_the_plugin_applies_again_only_the_overrides_it_owns() -> None:
    assert cli.owned_overrides(SCHEDULE, cli.FIELD_MANAGER) == [
        {"person": "bob", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T12:00:00Z"}
    ]
    assert cli.owned_overrides(SCHEDULE, "someone-else") == []


class FakeObjects:
    """The schedule as read; `refusals`: what the next applies answer (an ApiException) instead."""

    def __init__(self, schedule: dict[str, Any], refusals: list[ApiException] | None = None) -> None:
        self.schedule = schedule
        self.refusals = list(refusals or [])
        self.reads = 0
        self.applied: list[tuple[dict[str, Any], str]] = []

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return self.schedule

    def apply(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        self.applied.append((body, field_manager))
        if self.refusals:
            raise self.refusals.pop(0)
        return body


class FakeApi:
    def __init__(self, schedule: dict[str, Any], refusals: list[ApiException] | None = None) -> None:
        self.namespace = "shop"
        self.objects = FakeObjects(schedule, refusals)


def _conflict(body: str) -> ApiException:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = body
    return exc


MODIFIED = (
    '{"kind":"Status","reason":"Conflict","message":"Operation cannot be fulfilled on oncallschedules'
    '.incident-operator.dev \\"primary\\": the object has been modified; please apply your changes to '
    'the latest version and try again"}'
)


def _override_args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["oncall", "override", "primary", *argv])


def test_an_override_is_applied_with_the_owned_ones_still_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "utc_now", lambda: datetime(2026, 12, 2, 11, tzinfo=UTC))
    api = FakeApi(SCHEDULE)
    cli.cmd_oncall(api, _override_args("--person", "carol", "--for", "2h"))
    [(body, manager)] = api.objects.applied
    assert manager == cli.FIELD_MANAGER
    assert body["metadata"]["resourceVersion"] == "41"  # a concurrent apply is not overwritten
    assert body["kind"] == "OnCallSchedule"
    assert body["spec"] == {
        "overrides": [
            {"person": "bob", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T12:00:00Z"},
            {"person": "carol", "start": "2026-12-02T11:00:00Z", "end": "2026-12-02T13:00:00Z"},
        ]
    }
    later = FakeApi(SCHEDULE)  # once bob's has ended, it is left out (the plugin's own clean-up)
    monkeypatch.setattr(cli, "utc_now", lambda: datetime(2026, 12, 3, tzinfo=UTC))
    cli.cmd_oncall(
        later, _override_args("--person", "alice", "--for", "1d", "--start", "2026-12-04T00:00:00Z")
    )
    assert later.objects.applied[0][0]["spec"]["overrides"] == [
        {"person": "alice", "start": "2026-12-04T00:00:00Z", "end": "2026-12-05T00:00:00Z"}
    ]


def test_an_override_is_applied_again_when_the_schedule_changed_since_it_was_read() -> None:
    api = FakeApi(SCHEDULE, [_conflict(MODIFIED), _conflict(MODIFIED)])
    cli.cmd_oncall(api, _override_args("--person", "carol", "--for", "2h"))
    assert api.objects.reads == 3
    assert len(api.objects.applied) == 3
    busy = FakeApi(SCHEDULE, [_conflict(MODIFIED)] * cli.APPLY_ATTEMPTS)
    with pytest.raises(Failed, match="oncallschedule primary kept changing; try again"):
        cli.cmd_oncall(busy, _override_args("--person", "carol", "--for", "2h"))


def test_a_field_conflict_of_the_apply_is_not_retried() -> None:
    field = _conflict('{"kind":"Status","reason":"Conflict","message":"Apply failed with 1 conflict"}')
    api = FakeApi(SCHEDULE, [field])
    with pytest.raises(ApiException):
        cli.cmd_oncall(api, _override_args("--person", "carol", "--for", "2h"))
    assert len(api.objects.applied) == 1


def test_an_override_for_someone_not_in_the_schedule_is_refused() -> None:
    api = FakeApi(SCHEDULE)
    with pytest.raises(Failed, match="zed is not one of the people of oncallschedule primary"):
        cli.cmd_oncall(api, _override_args("--person", "zed", "--for", "2h"))
    with pytest.raises(Failed, match="needs --person NAME and --for"):
        cli.cmd_oncall(api, _override_args("--person", "bob"))
    assert api.objects.applied == []


def test_the_override_verb_is_the_responders_and_admission_checks_it() -> None:
    docs = [
        d for f in ("rbac.yaml", "admission.yaml") for d in yaml.safe_load_all((INSTALL / f).read_text()) if d
    ]
    responder = next(
        d
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "incident-operator-responder"
    )
    rules = [r for r in responder["rules"] if "oncallschedules" in r["resources"]]
    assert {"get", "list", "patch", "override"} <= {v for r in rules for v in r["verbs"]}
    assert not {"update", "create", "delete"} & {v for r in rules for v in r["verbs"]}
    policy = next(
        d
        for d in docs
        if d["kind"] == "ValidatingAdmissionPolicy"
        and d["metadata"]["name"] == "incident-operator-oncall-override"
    )
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["oncallschedules"]
    checks = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "check('override')" in checks
    assert "check('update')" in checks
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "object.spec.exists(k, k != 'overrides'" in variables["restChanged"]  # every key, no list
    assert all(f"?{f}." in variables["metadataChanged"] for f in ("labels", "finalizers", "ownerReferences"))
    # only the GitOps tools' annotations are guarded: client-side apply rewrites its own one
    assert "?annotations" not in variables["metadataChanged"]
    assert "argocd.argoproj.io/" in variables["gitopsAnnotationsChanged"]
    assert "fluxcd.io/" in variables["gitopsAnnotationsChanged"]
    assert "object.spec.people.exists(p, p.name == o.person)" in variables["strangers"]
    binding = next(
        d
        for d in docs
        if d["kind"] == "ValidatingAdmissionPolicyBinding"
        and d["metadata"]["name"] == "incident-operator-oncall-override"
    )
    assert binding["spec"]["validationActions"] == ["Deny"]
    operator = next(
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "incident-operator"
    )
    schedules = [r for r in operator["rules"] if "oncallschedules" in r["resources"]]
    assert {v for r in schedules for v in r["verbs"]} == {"get", "list", "watch"}  # never their spec
