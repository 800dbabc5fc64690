"""On-call schedules on the installed cluster (manifests/install applied, admission policies and
RBAC included), with the operator running as its ServiceAccount:

- a schedule of two people with an override: status says who is on call now, until when, and who
  is next, `kubectl get oncall` shows it in its columns, and the status follows a boundary by itself;
- `kubectl incident oncall` answers from the spec (now and `--at`);
- `kubectl incident oncall override` as a responder (verbs patch and override) is admitted and
  merges by key with the overrides already there; a schedule editor without the verb override is
  refused, and the responder may not change anything but the overrides;
- the iCalendar feed parses (a real parser), with the calendar token or a bearer token; a wrong
  token is 403, and so is an unknown schedule asked with a token;
- an invalid schedule gets Ready=False/InvalidSpec and an Event;
- a responder (patch and override, no update) adds overrides of the schedule's people and changes
  annotations, and nothing else: labels, finalizers, ownerReferences, a spec key the schedule did
  not have, and an override of a stranger are refused with what they need; an editor removing a
  person is not blocked by an older override naming them, which the operator then ignores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import icalendar
import pytest
from kubernetes import client

from tests.e2e.conftest import (
    INSTALL_NS,
    Cluster,
    OperatorProcess,
    create_namespace,
    kubectl_as,
    service_account_token,
    token_kubeconfig,
)
from tests.e2e.users import admitted, merge_patch, refused
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

NS = "oncall-e2e"
GROUP, VERSION, PLURAL = "incident-operator.dev", "v1alpha1", "oncallschedules"
CALENDAR_TOKEN = "calendar-e2e-s3cret"
NEEDS_OVERRIDE = "needs the verb override on oncallschedules (ClusterRole incident-operator-responder)"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def operator(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator as its ServiceAccount (what it may do is what the install grants)."""
    workdir = tmp_path_factory.mktemp("oncall")
    kubeconfig = token_kubeconfig(installed, "incident-operator", INSTALL_NS, workdir / "sa.kubeconfig")
    process = OperatorProcess(kubeconfig, workdir, {}, (), name="oncall")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def users(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """alice the responder (ClusterRole incident-operator-responder in NS), mallory who edits
    schedules with every standard verb but has no override."""
    create_namespace(installed, NS, opt_in=False)
    core = client.CoreV1Api(installed.api)
    workdir = tmp_path_factory.mktemp("oncall-users")
    found = {}
    for name in ("alice", "mallory"):
        core.create_namespaced_service_account(
            NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
        found[name] = (
            f"system:serviceaccount:{NS}:{name}",
            token_kubeconfig(installed, name, NS, workdir / name),
        )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "alice-responds",
        "-n",
        NS,
        "--clusterrole=incident-operator-responder",
        f"--serviceaccount={NS}:alice",
    )
    installed.run_kubectl(
        "create",
        "role",
        "schedule-editor",
        "-n",
        NS,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=oncallschedules.incident-operator.dev",
    )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "mallory-edits",
        "-n",
        NS,
        "--role=schedule-editor",
        f"--serviceaccount={NS}:mallory",
    )
    return found


def plugin(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "incident_operator.cli.kubectl",
            f"--kubeconfig={kubeconfig}",
            "-n",
            NS,
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def schedule(cluster: Cluster, name: str) -> dict[str, Any]:
    found = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, name
    )
    return cast(dict[str, Any], found)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def test_a_schedule_of_two_people_with_an_override(
    installed: Cluster, operator: OperatorProcess, users: dict[str, tuple[str, Path]]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=1)
    override_start, override_end = now + timedelta(hours=1), now + timedelta(hours=2)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OnCallSchedule",
        "metadata": {"name": "primary", "namespace": NS},
        "spec": {
            "timeZone": "Europe/Berlin",
            "people": [
                {"name": "alice", "email": "alice@example.com"},
                {"name": "bob", "email": "bob@example.com"},
            ],
            "layers": [
                {"name": "rota", "start": stamp(start), "rotation": "P1D", "people": ["alice", "bob"]}
            ],
            "overrides": [{"person": "bob", "start": stamp(override_start), "end": stamp(override_end)}],
            "calendarTokenSecret": "primary-calendar",
        },
    }
    client.CustomObjectsApi(installed.api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    # status: now, until when, and next; Ready
    def settled() -> dict[str, Any] | None:
        status = schedule(installed, "primary").get("status") or {}
        return status if status.get("current") and status.get("next") else None

    status = wait_until(settled, timeout=60, what="status.current and status.next", describe=operator.log)
    assert status["current"] == {"person": "alice", "layer": "rota", "until": stamp(override_start)}
    assert status["next"] == {"person": "bob", "layer": "override", "from": stamp(override_start)}
    ready = condition(schedule(installed, "primary"), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Valid")
    columns = installed.run_kubectl("get", "oncall", "primary", "-n", NS).stdout.splitlines()
    assert columns[0].split()[:6] == ["NAME", "ON", "CALL", "UNTIL", "NEXT", "READY"]
    assert columns[1].split()[:5] == ["primary", "alice", stamp(override_start), "bob", "True"]
    written = schedule(installed, "primary")["metadata"]["resourceVersion"]

    # the CLI answers from the spec, now and at another time
    admin = installed.kubeconfig
    answered = plugin(admin, "oncall", "primary", "-o", "json")
    admitted(answered)
    [now_answer] = json.loads(answered.stdout)
    assert (now_answer["current"]["person"], now_answer["next"]["person"]) == ("alice", "bob")
    later = plugin(admin, "oncall", "primary", "--at", stamp(override_start + timedelta(minutes=30)))
    admitted(later)
    assert later.stdout.splitlines()[1].split()[:3] == ["primary", "bob", "override"]

    # admission: overrides need the verb override, the rest of the spec the verb update
    alice, alice_cfg = users["alice"]
    mallory, mallory_cfg = users["mallory"]
    refused(
        plugin(mallory_cfg, "oncall", "override", "primary", "--person", "mallory", "--for", "1h"),
        "mallory is not one of the people",
    )
    refused(
        plugin(mallory_cfg, "oncall", "override", "primary", "--person", "bob", "--for", "1h"),
        f"user {mallory} may not change the overrides of on-call schedules in namespace {NS}",
        NEEDS_OVERRIDE,
    )
    refused(
        merge_patch(installed, mallory_cfg, NS, "oncall", "primary", body={"spec": {"overrides": []}}),
        NEEDS_OVERRIDE,
    )
    refused(
        merge_patch(installed, alice_cfg, NS, "oncall", "primary", body={"spec": {"timeZone": "UTC"}}),
        f"user {alice} may change only the overrides of on-call schedules in namespace {NS}",
    )
    admitted(
        merge_patch(
            installed, mallory_cfg, NS, "oncall", "primary", body={"metadata": {"labels": {"team": "sre"}}}
        )
    )

    # a responder's override: bob from 30 s ago for a minute, merged with the override git wrote
    admitted(
        plugin(
            alice_cfg,
            "oncall",
            "override",
            "primary",
            "--person",
            "bob",
            "--for",
            "1m",
            "--start",
            stamp(datetime.now(UTC) - timedelta(seconds=30)),
        )
    )
    overrides = schedule(installed, "primary")["spec"]["overrides"]
    assert len(overrides) == 2
    assert overrides[0] == body["spec"]["overrides"][0]  # the one created with it, kept
    managers = {m["manager"] for m in schedule(installed, "primary")["metadata"]["managedFields"]}
    assert "incident-operator-oncall" in managers

    def bob_now() -> dict[str, Any] | None:
        current = (schedule(installed, "primary").get("status") or {}).get("current") or {}
        return current if current.get("layer") == "override" else None

    current = wait_until(bob_now, timeout=30, what="bob on call by the override", describe=operator.log)
    assert current["person"] == "bob"
    assert schedule(installed, "primary")["metadata"]["resourceVersion"] != written

    def alice_again() -> dict[str, Any] | None:  # the override ends: the boundary wakes the operator
        current = (schedule(installed, "primary").get("status") or {}).get("current") or {}
        return current if current.get("person") == "alice" else None

    wait_until(alice_again, timeout=90, what="alice again after the override ended", describe=operator.log)

    # the feed: the calendar token (the operator may read that one Secret), a bearer token
    core = client.CoreV1Api(installed.api)
    core.create_namespaced_secret(
        NS,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="primary-calendar"), string_data={"token": CALENDAR_TOKEN}
        ),
    )
    installed.run_kubectl(
        "create",
        "role",
        "calendar-token",
        "-n",
        NS,
        "--verb=get",
        "--resource=secrets",
        "--resource-name=primary-calendar",
    )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "calendar-token",
        "-n",
        NS,
        "--role=calendar-token",
        f"--serviceaccount={INSTALL_NS}:incident-operator",
    )

    def feed() -> tuple[int, dict[str, str], str] | None:
        answer = operator.get(f"/oncall/{NS}/primary.ics?token={CALENDAR_TOKEN}")
        return answer if answer[0] == 200 else None

    _, headers, text = wait_until(feed, timeout=60, what="the feed with the calendar token")
    assert headers["Content-Type"] == "text/calendar; charset=utf-8"
    events = icalendar.Calendar.from_ical(text).walk("VEVENT")
    summaries = [str(e["SUMMARY"]) for e in events]
    assert "On call: alice (rota)" in summaries
    assert "On call: bob (override)" in summaries
    assert all(e.decoded("DTSTART").utcoffset() == timedelta(0) for e in events)
    again = icalendar.Calendar.from_ical(operator.get(f"/oncall/{NS}/primary.ics?token={CALENDAR_TOKEN}")[2])
    assert [str(e["UID"]) for e in again.walk("VEVENT")] == [str(e["UID"]) for e in events]
    wrong = operator.get(f"/oncall/{NS}/primary.ics?token=wrong")
    mismatch = "forbidden: the calendar token does not match (or no such schedule takes one)\n"
    assert (wrong[0], wrong[2]) == (403, mismatch)
    assert operator.get(f"/oncall/{NS}/nothing.ics?token=x")[:3:2] == (403, mismatch)  # no existence probe
    alice_token = service_account_token(installed, "alice", NS)
    assert operator.get(f"/oncall/{NS}/primary.ics", alice_token)[0] == 200  # responders may get schedules
    nobody = operator.get(f"/oncall/{NS}/primary.ics", service_account_token(installed, "oncall-nobody"))
    assert nobody[0] == 403
    assert "get oncallschedules.incident-operator.dev primary" in nobody[2]
    assert operator.get(f"/oncall/{NS}/primary.ics")[0] == 401
    assert CALENDAR_TOKEN not in operator.full_log()


def test_an_invalid_schedule_is_ready_false_with_the_reason_and_an_event(
    installed: Cluster, operator: OperatorProcess, users: dict[str, tuple[str, Path]]
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OnCallSchedule",
        "metadata": {"name": "broken", "namespace": NS},
        "spec": {
            "timeZone": "Europe/Atlantis",
            "people": [{"name": "alice"}],
            "layers": [
                {
                    "name": "rota",
                    "start": "2026-01-01T00:00:00Z",
                    "rotation": "P1D",
                    "people": ["alice", "zed"],
                }
            ],
        },
    }
    client.CustomObjectsApi(installed.api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    def invalid() -> dict[str, Any] | None:
        ready = condition(schedule(installed, "broken"), "Ready")
        return ready if ready.get("reason") == "InvalidSpec" else None

    ready = wait_until(invalid, timeout=60, what="Ready=False/InvalidSpec", describe=operator.log)
    assert ready["status"] == "False"
    assert "unknown time zone 'Europe/Atlantis'" in ready["message"]
    assert "layer rota: unknown people zed" in ready["message"]
    assert condition(schedule(installed, "broken"), "Invalid")["status"] == "True"

    def event() -> list[Any]:
        found = client.CoreV1Api(installed.api).list_namespaced_event(
            NS, field_selector="involvedObject.name=broken,reason=Invalid"
        )
        return list(found.items)

    [warning] = wait_until(event, timeout=30, what="the Invalid Event")
    assert warning.type == "Warning"
    assert "unknown people zed" in warning.message
    answered = plugin(installed.kubeconfig, "oncall", "broken")
    admitted(answered)
    assert "broken: invalid: unknown time zone" in answered.stdout
    # the schema refuses what it can check itself
    bad = {**body, "metadata": {"name": "bad-override", "namespace": NS}}
    bad["spec"] = {
        "people": [{"name": "alice"}],
        "overrides": [{"person": "alice", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}],
    }
    with pytest.raises(client.exceptions.ApiException) as refusal:
        client.CustomObjectsApi(installed.api).create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, bad
        )
    assert "end must be after start" in str(refusal.value.body)


def test_an_override_only_user_changes_overrides_of_known_people_and_nothing_else(
    installed: Cluster, operator: OperatorProcess, users: dict[str, tuple[str, Path]]
) -> None:
    """alice has patch and override on schedules, not update: the admission policy lets her add an
    override of one of the schedule's people and change annotations, and refuses (naming what it
    needs) labels, finalizers, ownerReferences, a spec key the schedule did not have, and an
    override of a stranger; an editor removing a person is not blocked by older overrides."""
    alice, alice_cfg = users["alice"]
    now = datetime.now(UTC).replace(microsecond=0)
    first = now + timedelta(days=2)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OnCallSchedule",
        "metadata": {"name": "guarded", "namespace": NS},
        "spec": {
            "people": [{"name": "alice"}, {"name": "bob"}],
            "layers": [{"name": "rota", "start": stamp(now), "rotation": "P1D", "people": ["alice"]}],
            "overrides": [{"person": "bob", "start": stamp(first), "end": stamp(first + timedelta(hours=1))}],
        },
    }
    client.CustomObjectsApi(installed.api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    holder = client.CoreV1Api(installed.api).create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="guarded-owner"))
    )

    def patch(kind: str, change: Any, name: str = "guarded") -> subprocess.CompletedProcess[str]:
        return kubectl_as(
            installed,
            alice_cfg,
            "patch",
            "oncall",
            name,
            "-n",
            NS,
            f"--type={kind}",
            "-p",
            json.dumps(change),
        )

    needs_update = f"of on-call schedules in namespace {NS}: needs the verb update on oncallschedules"
    refused(
        patch("merge", {"metadata": {"labels": {"argocd.argoproj.io/instance": "elsewhere"}}}),
        f"user {alice} may not change metadata.labels {needs_update} (other annotations need only patch)",
    )
    refused(
        patch("merge", {"metadata": {"finalizers": ["example.com/hold"]}}),
        f"user {alice} may not change metadata.finalizers {needs_update}",
    )
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "guarded-owner", "uid": holder.metadata.uid}
    refused(
        patch("merge", {"metadata": {"ownerReferences": [owner]}}),
        f"user {alice} may not change metadata.ownerReferences {needs_update}",
    )
    refused(
        patch("merge", {"metadata": {"labels": {"team": "x"}, "finalizers": ["example.com/hold"]}}),
        f"user {alice} may not change metadata.labels, metadata.finalizers {needs_update}",
    )
    # the GitOps tools' annotations: Argo CD's tracking id, Flux's switch for reconciling it
    for gitops in (
        {"argocd.argoproj.io/tracking-id": "elsewhere:incident-operator.dev/OnCallSchedule:shop/guarded"},
        {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"},
    ):
        refused(
            patch("merge", {"metadata": {"annotations": gitops}}),
            f"user {alice} may not change metadata.annotations of Argo CD or Flux {needs_update}",
        )
    # a key the spec did not have (as a field added to the CRD later would be), and one removed
    only_overrides = f"user {alice} may change only the overrides of on-call schedules in namespace {NS}"
    refused(patch("merge", {"spec": {"calendarTokenSecret": "guarded-calendar"}}), only_overrides)
    refused(patch("json", [{"op": "remove", "path": "/spec/layers"}]), only_overrides)
    stranger_start = first + timedelta(hours=3)
    stranger = {"person": "carol", "start": stamp(stranger_start), "end": stamp(first + timedelta(hours=4))}
    refused(
        patch("json", [{"op": "add", "path": "/spec/overrides/-", "value": stranger}]),
        "an override must name someone in spec.people: override of carol from "
        f"{stamp(stranger_start)}: unknown person carol (not in spec.people)",
    )
    assert schedule(installed, "guarded")["metadata"].get("labels") is None
    assert schedule(installed, "guarded")["metadata"].get("finalizers") is None
    assert schedule(installed, "guarded")["metadata"].get("ownerReferences") is None

    # what she may do: an override of one of the people, an annotation
    known = {"person": "alice", "start": stamp(stranger_start), "end": stamp(first + timedelta(hours=4))}
    admitted(patch("json", [{"op": "add", "path": "/spec/overrides/-", "value": known}]))
    admitted(patch("merge", {"metadata": {"annotations": {"example.com/note": "swapped with bob"}}}))
    # a GitOps annotation git (the admin here) set is not hers to remove either; others she may change
    tracked = {"argocd.argoproj.io/tracking-id": "shop:incident-operator.dev/OnCallSchedule:shop/guarded"}
    client.CustomObjectsApi(installed.api).patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "guarded", {"metadata": {"annotations": tracked}}
    )
    refused(
        patch("json", [{"op": "remove", "path": "/metadata/annotations/argocd.argoproj.io~1tracking-id"}]),
        f"user {alice} may not change metadata.annotations of Argo CD or Flux {needs_update}",
    )
    admitted(patch("merge", {"metadata": {"annotations": {"example.com/note": "and back"}}}))
    annotations = schedule(installed, "guarded")["metadata"]["annotations"]
    assert {**tracked, "example.com/note": "and back"}.items() <= annotations.items()
    assert [o["person"] for o in schedule(installed, "guarded")["spec"]["overrides"]] == ["bob", "alice"]

    # the policy's cost at the limits of the CRD: 100 people, 200 new overrides in one request
    people = [{"name": f"p{i}", "email": f"p{i}@example.com"} for i in range(100)]
    big = {
        **body,
        "metadata": {"name": "crowded", "namespace": NS},
        "spec": {"people": people, "layers": [{**body["spec"]["layers"][0], "people": ["p0"]}]},
    }
    client.CustomObjectsApi(installed.api).create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, big)
    many = [
        {
            "person": f"p{i % 100}",
            "start": stamp(first + timedelta(hours=i)),
            "end": stamp(first + timedelta(hours=i + 1)),
        }
        for i in range(200)
    ]
    admitted(patch("merge", {"spec": {"overrides": many}}, "crowded"))
    many[-1] = {**many[-1], "person": "zed"}
    refused(
        patch("merge", {"spec": {"overrides": many}}, "crowded"),
        f"override of zed from {many[-1]['start']}: unknown person zed (not in spec.people)",
    )

    # an editor (the admin here) removing bob is not blocked by bob's older override
    admitted(
        kubectl_as(
            installed,
            installed.kubeconfig,
            "patch",
            "oncall",
            "guarded",
            "-n",
            NS,
            "--type=json",
            "-p",
            json.dumps([{"op": "remove", "path": "/spec/people/1"}]),
        )
    )
    assert [p["name"] for p in schedule(installed, "guarded")["spec"]["people"]] == ["alice"]

    def ignored() -> dict[str, Any] | None:  # bob's override is left out; the schedule stays Ready
        ready = condition(schedule(installed, "guarded"), "Ready")
        return ready if "ignored: override of bob" in ready.get("message", "") else None

    ready = wait_until(ignored, timeout=60, what="Ready naming the ignored override", describe=operator.log)
    assert (ready["status"], ready["reason"]) == ("True", "Valid")
    assert ready["message"].endswith(
        f"ignored: override of bob from {first.isoformat()}: unknown person bob (not in spec.people)"
    )
    assert (schedule(installed, "guarded").get("status") or {})["current"]["person"] == "alice"

    # the API server's type check of the policy against the CRD's schema found nothing to warn about
    def checked() -> Any:
        policy = client.AdmissionregistrationV1Api(installed.api).read_validating_admission_policy(
            "incident-operator-oncall-override"
        )
        status = policy.status
        return status if status and status.observed_generation == policy.metadata.generation else None

    type_check = wait_until(checked, timeout=30, what="the policy's type check").type_checking
    assert type_check is not None
    assert not type_check.expression_warnings, type_check.expression_warnings
