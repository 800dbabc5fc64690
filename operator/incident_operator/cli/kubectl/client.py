"""The plugin's API access (the user's own credentials, through `CustomObjects`) and output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from incident_operator.api.keys import API_GROUP, LABEL_ARCHIVE_MONTH
from incident_operator.api.models import IncidentSpec, IncidentStatus
from incident_operator.api.timestamps import parse_time
from incident_operator.cli.kubectl.objects import CustomObjects
from incident_operator.core import archive

PLURAL = "incidents"


RESOURCE = f"incident.{API_GROUP}"


class Failed(Exception):
    """A refusal to print as `error: ...` with exit code 1."""


class Api:
    """The user's API client and namespace, from kubeconfig (or in-cluster config)."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if context and chosen is None:
                raise Failed(f'context "{context}" does not exist')
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            default_ns = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        except ConfigException:
            if kubeconfig or context:
                raise
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            self.api = client.ApiClient()
            default_ns = "default"
        self.namespace = namespace or default_ns
        self.objects = CustomObjects(self.api)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)

    def get(self, name: str) -> dict[str, Any]:
        return self.objects.get(PLURAL, self.namespace, name)

    def patch_spec(
        self, name: str, spec: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"spec": spec}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self.objects.patch(PLURAL, self.namespace, name, body)

    def archives(self, all_namespaces: bool, month: str | None = None) -> list[dict[str, Any]]:
        """The IncidentArchives (of one month of detection, if given); raises ApiException."""
        query = {"label_selector": f"{LABEL_ARCHIVE_MONTH}={month}"} if month else {}
        return self.objects.list(archive.PLURAL, None if all_namespaces else self.namespace, **query)

    def list(self, all_namespaces: bool) -> list[dict[str, Any]]:
        return self.objects.list(PLURAL, None if all_namespaces else self.namespace)

    def whoami(self) -> str:
        review = client.AuthenticationV1Api(self.api).create_self_subject_review(client.V1SelfSubjectReview())
        username = review.status.user_info.username if review.status and review.status.user_info else None
        if not username:
            raise Failed("the API server did not say who you are; give the name with --commander or --by")
        return str(username)


def server_error(exc: ApiException) -> str:
    """As kubectl says it: `Error from server (NotFound): ...`."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    reason = body.get("reason") or exc.reason or "Error"
    message = body.get("message") or exc.reason or str(exc.status)
    return f"Error from server ({reason}): {message}"


def edit_list(
    api: Api,
    name: str,
    key: str,
    change: Callable[[list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]],
    also: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the incident, change one of its spec lists, write it back guarded by resourceVersion
    (retried on a conflict: someone else edited meanwhile), with the spec fields `also` in the
    same write."""
    for _ in range(5):
        incident = api.get(name)
        spec = incident.get("spec") or {}
        if spec.get("closed") and key != "actionItems":
            raise Failed(f"incident {name} is closed: it is read-only history")
        updated = change([dict(x) for x in spec.get(key) or []], incident)
        try:
            body = {**(also or {}), key: updated}
            return api.patch_spec(name, body, incident["metadata"]["resourceVersion"])
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise Failed(f"incident {name} kept changing; try again")


def age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    seconds = max(0, int((now - parse_time(stamp)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def parse_incident(incident: dict[str, Any]) -> tuple[IncidentSpec, IncidentStatus]:
    try:
        return (
            IncidentSpec.model_validate(incident.get("spec") or {}),
            IncidentStatus.model_validate(incident.get("status") or {}),
        )
    except ValidationError as exc:
        raise Failed(
            f"incident {incident['metadata']['name']} cannot be read: {exc.errors()[0]['msg']}"
        ) from None
