"""Retention with an archive, on the installed cluster (manifests/install applied, its admission
policies included), the operator running as its ServiceAccount with `retention` configured:

- Closed incidents whose `status.closedAt` is older than `closedForDays` (backdated by the test's
  admin through the status subresource) are archived into IncidentArchives and deleted, with the
  ConfigMaps they own; a recently closed one and an open one stay;
- the monthly report (the plugin, and the operator's /reports) gives the same numbers before and
  after; `kubectl incident history` lists the archived ones; a new incident repeating an archived
  one is still found a repeat;
- a tenant who may read the namespace reads the archive, and cannot create, change or delete an
  IncidentArchive even with RBAC to do so (the admission policy refuses anyone but the operator).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import (
    INSTALL_NS,
    Cluster,
    OperatorProcess,
    create_namespace,
    kubectl_as,
    reader_token,
    token_kubeconfig,
)
from tests.e2e.users import create_as, merge_patch
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

GROUP, VERSION = "incident-operator.dev", "v1alpha1"
NS = "retention-e2e"
TENANTS = "retention-tenants"
OPERATOR_ONLY = (
    f"only the operator ({INSTALL_NS}/incident-operator-admission, key operators) writes incident archives"
)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = datetime.now(UTC).replace(microsecond=0)
DETECTED = NOW - timedelta(days=4)  # inside the 30-day repeat window
CLOSED_LONG_AGO = NOW - timedelta(days=2)  # closedForDays: 1
OLD = ("web-down", "slow-api", "db-lost", "breached", "escalated", "with-items")


def plugin(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "incident_operator.cli.kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def spec_of(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "title": f"{name} happened",
        "severity": {"web-down": "P1", "db-lost": "P2", "breached": "P2"}.get(name, "P3"),
        "category": {"slow-api": "performance", "db-lost": "data"}.get(name, "availability"),
    }
    if name in ("web-down", "young"):
        spec["targets"] = [{"kind": "Deployment", "name": "web"}]
    if name == "with-items":
        spec["actionItems"] = [
            {"id": "alert", "title": "alert on pool", "done": True},
            {"id": "runbook", "title": "write it", "due": stamp(NOW - timedelta(days=1))[:10]},
        ]
    return {**spec, "resolution": {"summary": "fixed"}, "closed": True}


def status_of(index: int, closed_at: datetime) -> dict[str, Any]:
    detected = DETECTED + timedelta(minutes=10 * index)
    status: dict[str, Any] = {
        "phase": "Closed",
        "detectedAt": stamp(detected),
        "acknowledgedAt": stamp(detected + timedelta(seconds=60 * (index + 1))),
        "mitigatedAt": stamp(detected + timedelta(seconds=300 * (index + 1))),
        "resolvedAt": stamp(detected + timedelta(seconds=900 * (index + 1))),
        "closedAt": stamp(closed_at),
        "settled": True,
    }
    if index == 3:
        status["conditions"] = [
            {
                "type": "ResponseTargetBreached",
                "status": "True",
                "reason": "ResponseTargetBreached",
                "message": "late",
                "lastTransitionTime": stamp(detected + timedelta(minutes=15)),
            }
        ]
    if index == 4:
        status["escalations"] = 2
    return status


@pytest.fixture(scope="module")
def world(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The namespace with six incidents closed two days ago, one closed an hour ago, one open, and
    the ConfigMaps the operator would have written for them; the report as it was before."""
    custom = client.CustomObjectsApi(installed.api)
    core = client.CoreV1Api(installed.api)
    create_namespace(installed, NS, opt_in=True)
    uids = {}
    for index, name in enumerate((*OLD, "young")):
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident", "metadata": {"name": name}}
        created = custom.create_namespaced_custom_object(
            GROUP, VERSION, NS, "incidents", {**body, "spec": spec_of(name)}
        )
        uids[name] = created["metadata"]["uid"]
        closed_at = NOW - timedelta(hours=1) if name == "young" else CLOSED_LONG_AGO
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, "incidents", name, {"status": status_of(index, closed_at)}
        )
        owner = client.V1OwnerReference(
            api_version=f"{GROUP}/{VERSION}", kind="Incident", name=name, uid=uids[name]
        )
        for suffix, data in (
            ("postmortem", {"postmortem.md": f"# Post-mortem: {name}\n"}),
            ("evidence", {"x": "y"}),
        ):
            core.create_namespaced_config_map(
                NS,
                client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(
                        name=f"{name}-{suffix}",
                        labels={f"{GROUP}/incident": name},
                        owner_references=[owner],
                    ),
                    data=data,
                ),
            )
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, "incidents", name, {"status": {"postmortemRef": f"{name}-postmortem"}}
        )
    opened = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident", "metadata": {"name": "open"}}
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        "incidents",
        {**opened, "spec": {"title": "still open", "severity": "P4", "category": "data"}},
    )
    archived = sorted({stamp(DETECTED + timedelta(minutes=10 * i))[:7] for i in range(len(OLD))})
    months = sorted({*archived, stamp(DETECTED + timedelta(minutes=60))[:7], stamp(NOW)[:7]})
    before = {m: report(installed.kubeconfig, m) for m in months}
    assert sum(b["total"] for b in before.values()) == len(OLD) + 2  # young and open too
    yield {
        "uids": uids,
        "months": archived,
        "before": before,
        "workdir": tmp_path_factory.mktemp("retention"),
    }
    core.delete_namespace(NS)


def report(kubeconfig: Path, month: str) -> dict[str, Any]:
    done = plugin(kubeconfig, "report", "-n", NS, "--month", month, "--format", "json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def operator(installed: Cluster, world: dict[str, Any]) -> Iterator[OperatorProcess]:
    workdir = world["workdir"]
    kubeconfig = token_kubeconfig(installed, "incident-operator", INSTALL_NS, workdir / "sa.kubeconfig")
    settings = {"retention": {"closedForDays": 1, "deletesPerSecond": 20, "intervalSeconds": 10}}
    process = OperatorProcess(kubeconfig, workdir, settings, (), name="retention")
    process.reader_token = reader_token(installed)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def names(installed: Cluster, plural: str) -> set[str]:
    listed = client.CustomObjectsApi(installed.api).list_namespaced_custom_object(GROUP, VERSION, NS, plural)
    return {i["metadata"]["name"] for i in listed["items"]}


def test_closed_incidents_are_archived_then_deleted_and_the_report_stays_the_same(
    installed: Cluster, world: dict[str, Any], operator: OperatorProcess
) -> None:
    wait_until(
        lambda: names(installed, "incidents") == {"young", "open"},
        timeout=120,
        what="the incidents closed two days ago deleted",
    )
    archives = client.CustomObjectsApi(installed.api).list_namespaced_custom_object(
        GROUP, VERSION, NS, "incidentarchives"
    )["items"]
    entries = {uid: e for a in archives for uid, e in a["spec"]["entries"].items()}
    assert {e["name"] for e in entries.values()} == set(OLD)
    assert set(entries) == {world["uids"][n] for n in OLD}  # keyed by uid
    assert {a["metadata"]["name"] for a in archives} == {f"incidents-{m}" for m in world["months"]}
    assert entries[world["uids"]["web-down"]]["postmortem"] == "# Post-mortem: web-down\n"
    assert entries[world["uids"]["breached"]]["breachedAt"]
    core = client.CoreV1Api(installed.api)

    def left() -> set[str]:
        return {str(c.metadata.name) for c in core.list_namespaced_config_map(NS).items if c.metadata.labels}

    # Each incident's ConfigMaps go with it: the garbage collector follows their ownerReference.
    wait_until(
        lambda: left() == {"young-postmortem", "young-evidence"},
        timeout=60,
        what="the deleted incidents' ConfigMaps gone with them",
        describe=lambda: str(sorted(left())),
    )

    for month, before in world["before"].items():
        assert report(installed.kubeconfig, month) == before
        status, _, body = operator.get(f"/reports/{month}?namespace={NS}&format=json", operator.reader_token)
        assert status == 200, body
        assert json.loads(body) == before

    listed = plugin(installed.kubeconfig, "history", "-n", NS)
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()[1:]} == set(OLD)
    assert "web-down happened" in listed.stdout
    one_month = plugin(installed.kubeconfig, "history", "-n", NS, "--month", world["months"][0], "-o", "json")
    assert {i["metadata"]["name"] for i in json.loads(one_month.stdout)} <= set(OLD)


def test_a_later_incident_of_an_archived_month_is_added_to_that_archive(
    installed: Cluster, world: dict[str, Any], operator: OperatorProcess
) -> None:
    """The month's archive exists (the first pass wrote it): a later pass adds the next due
    incident of that month to it, as a merge patch at its resourceVersion made with the operator's
    own ServiceAccount (its ClusterRole's `patch`, the admission policy), the entries there kept
    and the count right; no new archive."""
    wait_until(lambda: not names(installed, "incidents") & set(OLD), timeout=120, what="the first pass done")
    custom = client.CustomObjectsApi(installed.api)
    archive_name = f"incidents-{stamp(DETECTED)[:7]}"
    archives = names(installed, "incidentarchives")
    before = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "incidentarchives", archive_name)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident", "metadata": {"name": "late-one"}}
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, NS, "incidents", {**body, "spec": spec_of("late-one")}
    )

    def status() -> dict[str, Any]:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "incidents", "late-one")
        return dict(found.get("status") or {})

    # The operator closes it now (spec.closed); once it is done with it, its times move back
    # (as the world's were written) into the archived month, closed two days ago.
    wait_until(
        lambda: status().get("phase") == "Closed" and status().get("postmortemRef"),
        timeout=60,
        what="late-one closed by the operator",
        describe=lambda: json.dumps(status())[:2000],
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, "incidents", "late-one", {"status": status_of(0, CLOSED_LONG_AGO)}
    )
    wait_until(lambda: "late-one" not in names(installed, "incidents"), timeout=120, what="late-one archived")
    after = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "incidentarchives", archive_name)
    entries = after["spec"]["entries"]
    assert set(entries) == {*before["spec"]["entries"], created["metadata"]["uid"]}
    assert entries[created["metadata"]["uid"]]["name"] == "late-one"
    assert after["spec"]["count"] == len(entries) == before["spec"]["count"] + 1
    assert names(installed, "incidentarchives") == archives


def test_a_new_incident_repeating_an_archived_one_is_a_repeat(
    installed: Cluster, world: dict[str, Any], operator: OperatorProcess
) -> None:
    wait_until(lambda: "web-down" not in names(installed, "incidents"), timeout=120, what="web-down archived")
    custom = client.CustomObjectsApi(installed.api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Incident",
        "metadata": {"name": "web-down-again"},
        "spec": {
            "title": "web down again",
            "severity": "P3",
            "category": "availability",
            "targets": [{"kind": "Deployment", "name": "web"}],
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "incidents", body)

    def repeat_of() -> str | None:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "incidents", "web-down-again")
        return (found.get("status") or {}).get("repeatOf")

    # The young one (same key, live, detected later) is the latest: it is the one repeated.
    assert wait_until(repeat_of, timeout=60, what="repeatOf set") == "young"
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "incidents", "web-down-again")
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "incidents", "young")
    body["metadata"]["name"] = "web-down-third"
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "incidents", body)

    def third() -> str | None:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "incidents", "web-down-third")
        return (found.get("status") or {}).get("repeatOf")

    assert wait_until(third, timeout=60, what="repeatOf set") == "web-down"  # found in the archive


def test_a_tenant_reads_the_archive_and_cannot_write_it(
    installed: Cluster, world: dict[str, Any], operator: OperatorProcess
) -> None:
    wait_until(lambda: names(installed, "incidentarchives"), timeout=120, what="an archive")
    core = client.CoreV1Api(installed.api)
    create_namespace(installed, TENANTS, opt_in=False)
    core.create_namespaced_service_account(
        TENANTS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="tina"))
    )
    tina = token_kubeconfig(installed, "tina", TENANTS, world["workdir"] / "tina")
    installed.run_kubectl(
        "create",
        "rolebinding",
        "tina-views",
        "-n",
        NS,
        "--clusterrole=view",
        f"--serviceaccount={TENANTS}:tina",
    )
    # The built-in view does not read archived incidents (titles, people, post-mortems): only whom
    # may read the live ones does (the responder role includes the archive reader).
    viewed = kubectl_as(installed, tina, "get", "incidentarchives", "-n", NS, "-o", "name")
    assert viewed.returncode != 0, viewed.stdout
    assert "forbidden" in viewed.stderr.lower(), viewed.stderr
    installed.run_kubectl(
        "create",
        "rolebinding",
        "tina-responds",
        "-n",
        NS,
        "--clusterrole=incident-operator-responder",
        f"--serviceaccount={TENANTS}:tina",
    )
    # Even a tenant granted every standard verb on archives is refused by admission.
    installed.run_kubectl(
        "create",
        "role",
        "archive-writer",
        "-n",
        NS,
        "--verb=create,update,patch,delete",
        "--resource=incidentarchives.incident-operator.dev",
    )
    installed.run_kubectl(
        "create",
        "rolebinding",
        "tina-writes",
        "-n",
        NS,
        "--role=archive-writer",
        f"--serviceaccount={TENANTS}:tina",
    )
    user = f"system:serviceaccount:{TENANTS}:tina"

    def readable() -> subprocess.CompletedProcess[str] | None:
        done = kubectl_as(installed, tina, "get", "incidentarchives", "-n", NS, "-o", "name")
        return done if done.returncode == 0 else None

    read = wait_until(readable, timeout=30, what="the responder role reads archives")
    assert f"incidentarchive.{GROUP}/incidents-{world['months'][0]}" in read.stdout
    history = plugin(tina, "history", "-n", NS)
    assert history.returncode == 0, history.stderr
    assert "web-down" in history.stdout

    month = world["months"][0]
    forged = {
        "month": month,
        "count": 1,
        "entries": {"fake-uid": {"name": "fake", "severity": "P1", "category": "data"}},
    }
    for done in (
        create_as(installed, tina, NS, "IncidentArchive", name=f"incidents-{month}-9", spec=forged),
        merge_patch(
            installed, tina, NS, "incidentarchive", f"incidents-{month}", body={"spec": {"count": 0}}
        ),
        kubectl_as(installed, tina, "delete", "incidentarchive", f"incidents-{month}", "-n", NS),
    ):
        assert done.returncode != 0
        assert OPERATOR_ONLY in done.stderr, done.stderr
        assert f"not user {user}" in done.stderr
    assert world["months"][0] in {a[len("incidents-") :] for a in names(installed, "incidentarchives")}
    core.delete_namespace(TENANTS)


def test_a_namespace_deleted_takes_its_archives_with_it(
    installed: Cluster, world: dict[str, Any], operator: OperatorProcess
) -> None:
    """The admission policy lets the namespace controller delete archives: no namespace is stuck
    Terminating because of them."""
    gone = "retention-gone"
    create_namespace(installed, gone, opt_in=False)
    empty = {"month": "2026-01", "count": 0, "entries": {}}
    made = create_as(
        installed, operator.kubeconfig, gone, "IncidentArchive", name="incidents-2026-01", spec=empty
    )
    assert made.returncode == 0, made.stderr
    core = client.CoreV1Api(installed.api)
    core.delete_namespace(gone)
    wait_until(
        lambda: gone not in {n.metadata.name for n in core.list_namespace().items},
        timeout=120,
        what=f"namespace {gone} deleted with its archive",
    )
