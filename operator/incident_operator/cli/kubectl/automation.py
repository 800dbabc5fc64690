"""`kubectl incident automation status|resume`: the circuit breaker and the storm guard, for people.

The breaker's state is a ConfigMap in the operator's namespace (`automation.stateConfigMap`, see
`core.breaker`). `resume` replaces it, guarded by its resourceVersion, with a state that forgets
the window, the runs counted and every trip, and says who resumed and when; the operator reads it
at its next reservation (within seconds), and the steps that waited go on. Who may do it is who
may `get` and `update` that one ConfigMap (the ClusterRole `incident-operator-automation-resumer`,
bound in the operator's namespace: docs/SECURITY.md).
"""

from __future__ import annotations

import argparse

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from incident_operator.adapters.breakerstate import MANAGED_BY
from incident_operator.api.timestamps import utc_now
from incident_operator.cli.kubectl.client import Api, Failed
from incident_operator.core import breaker

DEFAULT_NAMESPACE = "incident-operator"
DEFAULT_CONFIGMAP = "incident-operator-automation"
ATTEMPTS = 5


def _read(api: Api, args: argparse.Namespace) -> tuple[breaker.State, str | None]:
    try:
        found = api.core.read_namespaced_config_map(args.state_configmap, args.operator_namespace)
    except ApiException as exc:
        if exc.status == 404:
            return breaker.State(), None
        raise
    version = found.metadata.resource_version if found.metadata else None
    return breaker.from_json((found.data or {}).get(breaker.DATA_KEY)), version


def cmd_automation(api: Api, args: argparse.Namespace) -> None:
    if args.verb == "status":
        state, _ = _read(api, args)
        print("\n".join(breaker.describe(state)))
        return
    try:
        who: str | None = api.whoami()
    except (Failed, ApiException):
        who = None
    for _ in range(ATTEMPTS):
        state, version = _read(api, args)
        if version is None:
            print("automation is not paused: the operator has recorded no mutating action yet")
            return
        resumed = breaker.resume(state, utc_now(), who)
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=args.state_configmap,
                namespace=args.operator_namespace,
                labels=MANAGED_BY,
                resource_version=version,
            ),
            data={breaker.DATA_KEY: breaker.to_json(resumed)},
        )
        try:
            api.core.replace_namespaced_config_map(args.state_configmap, args.operator_namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                continue  # the operator wrote meanwhile: read again
            raise
        was = ", ".join(sorted(state.trips)) or "nothing was paused"
        print(f"automation resumed by {who or 'you'} ({was}); the window starts again now")
        return
    raise Failed("the breaker's state kept changing; try again")
