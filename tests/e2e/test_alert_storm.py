"""An alert storm: 500 deliveries in random order, with duplicates and resolves, over several
namespaces, sent concurrently. Exactly one Incident per firing fingerprint; none lost."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.conftest import Cluster, OperatorProcess
from tests.e2e.engine_helpers import GROUP, VERSION
from tests.e2e.test_alerts import post
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

NAMESPACES = 4
FINGERPRINTS = 150
DELIVERIES = 500
BATCH = 5


@pytest.fixture
def storm_namespaces(cluster: Cluster) -> Iterator[list[str]]:
    core = client.CoreV1Api(cluster.api)
    names = [f"storm-{uuid.uuid4().hex[:6]}" for _ in range(NAMESPACES)]
    for name in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield names
    for name in names:
        core.delete_namespace(name)


def alert(namespace: str, fingerprint: str, status: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "QueueBacklog",
            "namespace": namespace,
            "severity": "warning",
            "fp": fingerprint,
        },
        "annotations": {"summary": "queue lag"},
        "fingerprint": fingerprint,
    }


def test_a_storm_ends_with_one_incident_per_firing_fingerprint(
    crds_installed: Cluster, operator: OperatorProcess, storm_namespaces: list[str]
) -> None:
    rng = random.Random(20261127)  # noqa: S311 - a reproducible shuffle, not security
    fingerprints = {f"{i:016x}": rng.choice(storm_namespaces) for i in range(1, FINGERPRINTS + 1)}
    deliveries = [(fp, "firing") for fp in fingerprints]  # every fingerprint fires at least once
    while len(deliveries) < DELIVERIES:
        deliveries.append((rng.choice(list(fingerprints)), rng.choice(["firing", "firing", "resolved"])))
    rng.shuffle(deliveries)
    batches = [deliveries[i : i + BATCH] for i in range(0, len(deliveries), BATCH)]

    def send(batch: list[tuple[str, str]]) -> int:
        alerts = [alert(fingerprints[fp], fp, status) for fp, status in batch]
        body = {"version": "4", "status": "firing", "alerts": alerts, "groupKey": "storm"}
        status, answer = post(operator.port, json.dumps(body).encode())
        assert status == 200, answer
        return len(answer["results"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        answered = sum(pool.map(send, batches))
    assert answered == DELIVERIES

    custom = client.CustomObjectsApi(crds_installed.api)

    def incidents() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for namespace in storm_namespaces:
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "incidents")["items"]:
                fp = item["metadata"]["labels"]["incident-operator.dev/fingerprint"]
                found.setdefault(fp, []).append(f"{namespace}/{item['metadata']['name']}")
        return found

    # Every firing fingerprint whose firing was delivered has exactly one Incident, in its namespace.
    found = wait_until(
        lambda: incidents() if len(incidents()) == FINGERPRINTS else None,
        timeout=60,
        what=f"{FINGERPRINTS} incidents",
        describe=lambda: f"{len(incidents())} incidents",
    )
    assert set(found) == set(fingerprints)
    assert all(len(names) == 1 for names in found.values()), {fp: n for fp, n in found.items() if len(n) > 1}
    assert all(names[0].split("/")[0] == fingerprints[fp] for fp, names in found.items())
