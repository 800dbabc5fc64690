"""Count the API writes of one-step incidents (create → Resolved), by verb and resource.

A focused measurement of the writes `make bench` counts, without the rest of the bench: starts
its own local cluster with an apiserver audit log (metadata of every create, update, patch and
delete), runs the operator from this tree, and creates incidents one at a time, each with its own
one-step `scale` Playbook (as the bench does: the Playbook's run record is not shared). Each
incident's writes are those the operator's user agents (`kopf/*`, `incident-operator/*`) made
from the API server receiving its create until it is Resolved, its run is recorded on its
Playbook and no operator write came for QUIET_S. The first incident is a warm-up (the circuit
breaker's ConfigMap is created then) and is not counted. Access reviews are questions, not writes.

    python hack/count_writes.py [RUNS]

Prints a table (verb resource[/subresource], mean per incident) and the mean total. Not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
LOCALCLUSTER = ROOT / "localcluster" / "localcluster.py"
GROUP, VERSION = "incident-operator.dev", "v1alpha1"
NS = "writes"
PORT = 18199
QUIET_S = 3.0
"""No operator write for this long after the run is recorded: the incident's writes are all in."""
AGENTS = ("kopf/", "incident-operator/")
QUESTIONS = ("selfsubjectaccessreviews", "selfsubjectreviews", "subjectaccessreviews")
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
"""


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception:
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise SystemExit(f"count_writes: timed out waiting for {what}")


def entries(audit: Path) -> list[dict[str, Any]]:
    found = []
    for line in audit.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("stage") == "ResponseComplete":
            found.append(entry)
    return found


def received(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


def operator_writes(audit: Path, since: float) -> list[dict[str, Any]]:
    return [
        e
        for e in entries(audit)
        if str(e.get("userAgent", "")).startswith(AGENTS)
        and received(e) >= since
        and (e.get("objectRef") or {}).get("resource") not in QUESTIONS
    ]


def kind_of(entry: dict[str, Any]) -> str:
    ref = entry.get("objectRef") or {}
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{entry['verb']} {ref.get('resource')}{sub}"


def one_incident(
    apps: client.AppsV1Api, custom: client.CustomObjectsApi, audit: Path, name: str
) -> list[dict[str, Any]]:
    """Create a one-step scale incident on its own Deployment and Playbook; its operator writes."""
    labels = {"app": name}
    pod = client.V1PodSpec(containers=[client.V1Container(name="c", image="x:1")])
    apps.create_namespaced_deployment(
        NS,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod),
            ),
        ),
    )
    step = {"name": "scale", "scale": {"target": {"kind": "Deployment", "name": name}, "replicas": 2}}
    playbook = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Playbook",
        "metadata": {"name": f"pb-{name}"},
        "spec": {"match": {}, "stabilizationSeconds": 0, "steps": [step]},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "playbooks", playbook)

    def get(plural: str, obj: str) -> dict[str, Any]:
        return cast(dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, obj))

    def ready() -> bool:
        status = apps.read_namespaced_deployment(name, NS).status
        return status is not None and (status.ready_replicas or 0) == 1

    until(ready, 60, "ready")
    until(lambda: (get("playbooks", f"pb-{name}").get("status") or {}).get("observedGeneration"), 60, "valid")
    incident = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Incident",
        "metadata": {"name": f"inc-{name}"},
        "spec": {
            "title": name,
            "severity": "P2",
            "category": "performance",
            "playbookRef": {"name": f"pb-{name}"},
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "incidents", incident)
    create = until(
        lambda: next(
            e
            for e in entries(audit)
            if e["verb"] == "create" and (e.get("objectRef") or {}).get("name") == f"inc-{name}"
        ),
        30,
        "the create in the audit log",
    )

    def resolved() -> bool:
        return (get("incidents", f"inc-{name}").get("status") or {}).get("phase") == "Resolved"

    until(resolved, 120, "Resolved")
    until(lambda: (get("playbooks", f"pb-{name}").get("status") or {}).get("runs") == 1, 30, "run recorded")
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < QUIET_S:  # a script, not a test: wait for the writes to stop
        count = len(operator_writes(audit, received(create)))
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        time.sleep(0.2)
    return operator_writes(audit, received(create))


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    work = Path(tempfile.mkdtemp(prefix="incident-writes-"))
    (work / "policy.yaml").write_text(POLICY)
    audit, data = work / "audit.log", work / "cluster"
    up = subprocess.run(
        [
            sys.executable,
            str(LOCALCLUSTER),
            "up",
            "--dir",
            str(data),
            "--extra-arg",
            f"kube-apiserver=--audit-policy-file={work / 'policy.yaml'}",
            "--extra-arg",
            f"kube-apiserver=--audit-log-path={audit}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if up.returncode != 0:
        print(up.stderr, file=sys.stderr)
        return 1
    kubeconfig = up.stdout.strip().splitlines()[-1].removeprefix("KUBECONFIG=")
    operator: subprocess.Popen[bytes] | None = None
    try:
        api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        api.user_agent = "incident-operator-count-writes"
        kubectl = [str(data / "kubectl"), f"--kubeconfig={kubeconfig}"]
        subprocess.run([*kubectl, "apply", "-f", str(ROOT / "crds")], check=True, capture_output=True)
        apps, core, custom = client.AppsV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)
        namespace = client.V1Namespace(metadata=client.V1ObjectMeta(name=NS))
        until(lambda: core.create_namespace(namespace), 60, "namespace")
        until(lambda: core.read_namespaced_service_account("default", NS), 60, "service account")
        until(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, NS, "incidents"), 60, "CRDs")
        settings = work / "config.json"
        settings.write_text(json.dumps({"automation": {"stateNamespace": NS}}))
        log = (work / "operator.log").open("wb")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "incident_operator",
                "run",
                "--http-host=127.0.0.1",
                f"--http-port={PORT}",
                f"--status-port={PORT + 1}",
                f"--namespace={NS}",
                f"--config={settings}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": kubeconfig},
        )
        ready = f"http://127.0.0.1:{PORT}/readyz"
        until(lambda: urllib.request.urlopen(ready, timeout=1).status == 200, 60, "operator ready")
        one_incident(apps, custom, audit, "warmup")
        per_kind: Counter[str] = Counter()
        totals = []
        for i in range(runs):
            writes = one_incident(apps, custom, audit, f"w{i}")
            totals.append(len(writes))
            per_kind.update(kind_of(e) for e in writes)
        print(f"writes per one-step incident (create -> Resolved), {runs} incidents after a warm-up:")
        for kind, count in sorted(per_kind.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {kind:40s} {count / runs:.1f}")
        print(f"  {'total':40s} {sum(totals) / runs:.1f} (min {min(totals)}, max {max(totals)})")
        print(f"(audit log: {audit}; operator log: {work / 'operator.log'})")
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        subprocess.run([sys.executable, str(LOCALCLUSTER), "down", "--dir", str(data)], check=False)


if __name__ == "__main__":
    sys.exit(main())
