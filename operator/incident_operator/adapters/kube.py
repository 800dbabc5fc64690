"""Thin async access to the Kubernetes API for the engine and the actions.

Wraps the asyncio Kubernetes client (`kubernetes_asyncio`: generated from the same OpenAPI as the
official client, so the same API classes, method names and models, on aiohttp, which kopf already
uses): every call is a coroutine on the event loop, no call waits for a thread. Owns client
construction (in-cluster ServiceAccount with its rotating token, or kubeconfig; the cluster's TLS;
a connection pool limit; the user agent), what every call carries (a request timeout, bounded
retries on 429 with Retry-After), the few read helpers the actions share (workload readiness, pod
readiness) and access reviews (what the operator may do in a namespace). Nothing here decides
anything. The `kubectl incident` plugin stays on the synchronous client (`cli.kubectl.objects`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException as ApiException  # noqa: PLC0414 - callers catch it
from kubernetes_asyncio.config.config_exception import ConfigException as ConfigException  # noqa: PLC0414
from kubernetes_asyncio.config.incluster_config import SERVICE_CERT_FILENAME, SERVICE_TOKEN_FILENAME
from yarl import URL

from incident_operator import __version__
from incident_operator.api.keys import API_GROUP, API_VERSION, LABEL_INCIDENT
from incident_operator.api.rbac import Permission
from incident_operator.api.timestamps import parse_time
from incident_operator.core.revisions import (
    CHANGE_CAUSE_ANNOTATION,
    Revision,
    fingerprint,
    revision_number,
    template_without_hash,
)
from incident_operator.settings.egress import ServiceFacts

T = TypeVar("T")
TransportError = aiohttp.ClientError
"""What a call raises when the connection to the API server failed or broke (besides OSError, and
`RequestTimeout` when the request timeout passed): callers that answer "unavailable" catch it too."""

logger = logging.getLogger(__name__)


class RequestTimeout(TransportError):
    """The API server did not answer within the call's request timeout. Not a TimeoutError, so that
    a caller's own deadline (`asyncio.wait_for` around an action) is never mistaken for it."""


USER_AGENT = f"incident-operator/{__version__}"
REQUEST_TIMEOUT_S = 30
KUBE_CONNECTIONS = 16
"""At most this many requests in flight to the API server (the connection pool's limit; it was the
thread pool's size when the client was synchronous)."""
RETRIES_ON_429 = 3
"""A request the API server refused with 429 (API Priority and Fairness: not processed) is sent
again at most this many times, after its Retry-After."""
RETRY_AFTER_MAX_S = 10.0
RETRY_AFTER_DEFAULT_S = 1.0
CLIENT_READ_BUFSIZE = 2**21
"""The client's read buffer (as `kubernetes_asyncio` sets it: a watch event of a large object fits)."""
CLOSE_TIMEOUT_S = 2.0
"""Closing the client never waits longer than this (a frozen API server must not hold SIGTERM)."""
MAX_LOCKS_SEEN = 10_000
"""Workload lock Leases a `Kube` remembers as existing (`Kube.lock_seen`); the least recently
seen is forgotten first."""
API_SERVER_NAMESPACE = "default"
API_SERVER_SERVICE = "kubernetes"
ENDPOINTSLICE_CONTROLLER = "endpointslice-controller.k8s.io"
"""`endpointslice.kubernetes.io/managed-by` of the slices made from a Service's selector."""


async def load_configuration(
    *,
    token_file: str = SERVICE_TOKEN_FILENAME,
    cert_file: str = SERVICE_CERT_FILENAME,
    environ: Mapping[str, str] | None = None,
) -> client.Configuration:
    """In-cluster ServiceAccount when deployed, else the current kubeconfig (KUBECONFIG or
    ~/.kube/config). In cluster, the client verifies the API server with the mounted CA and sends
    the projected token, which the kubelet rotates: the client reads the token file again at most a
    minute after it last read it (`kubernetes_asyncio`'s refresh hook, called before every request).
    Raises ConfigException if there is neither."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration,
            try_refresh_token=True,
            token_filename=token_file,
            cert_filename=cert_file,
            environ=os.environ if environ is None else environ,
        )
    except ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = KUBE_CONNECTIONS
    return configuration


class ApiClient(client.ApiClient):
    """The client's `ApiClient`, reading timestamps with `datetime.fromisoformat`: the client parses
    each with dateutil's general parser, three quarters of the time it takes to turn a
    Deployment into its model. What fromisoformat refuses goes to the client's own parser."""

    def _ApiClient__deserialize_datetime(self, string: str) -> datetime:  # the client's hook (mangled)
        try:
            return datetime.fromisoformat(string)
        except (TypeError, ValueError):
            general = getattr(super(), "_ApiClient__deserialize_datetime")  # noqa: B009 - mangled
            return cast(datetime, general(string))


def api_client(configuration: client.Configuration) -> client.ApiClient:
    """An API client for `configuration` with the operator's user agent (the audit log and the
    bench tell our requests apart by it), whose requests never wait for a thread (`_direct`) and
    whose models read timestamps quickly (`ApiClient`). Made inside the event loop (it opens an
    aiohttp session)."""
    api = ApiClient(configuration)
    api.user_agent = USER_AGENT
    _direct(api.rest_client, str(configuration.host))
    return api


def _direct(rest: Any, host: str) -> None:
    """Let `rest` (the client's `RESTClientObject`) send without a thread hop. The client's aiohttp
    session trusts the environment, and aiohttp then looks up `~/.netrc` and the proxy variables
    in a worker thread on every request: two thread round trips per call, each waiting for the
    event loop's next turn (with other incidents' work queued, tens of milliseconds). The
    environment does not change while the process runs: the API server's proxy (HTTPS_PROXY or
    HTTP_PROXY by the server's scheme, NO_PROXY honoured, its credentials) is looked up once here
    and given to every request, as before (credentials in the proxy's URL: aiohttp sends them to
    the proxy alone, in the CONNECT of an https server); `~/.netrc` is not read for the API
    server (the client authenticates with its own headers). A proxy the configuration names wins."""
    trusting = rest.pool_manager
    if not trusting.trust_env:
        return  # a client that no longer trusts the environment: nothing to undo
    rest.pool_manager = aiohttp.ClientSession(
        connector=trusting.connector, trust_env=False, read_bufsize=CLIENT_READ_BUFSIZE
    )
    trusting.detach()  # its connector is the new session's now
    if rest.proxy:
        return
    try:
        proxy, auth = get_env_proxy_for_url(URL(host))
    except LookupError:  # none for this host, or NO_PROXY covers it
        return
    if auth is not None:
        proxy = proxy.with_user(auth.login).with_password(auth.password)
    rest.proxy = str(proxy)


async def load_api_client() -> client.ApiClient:
    """The operator's API client: `load_configuration()` with the operator's user agent."""
    return api_client(await load_configuration())


def retry_after(exc: ApiException) -> float:
    """Seconds to wait before sending again a request refused with 429: its Retry-After (seconds;
    a date or garbage counts as the default), within [0, RETRY_AFTER_MAX_S]."""
    value = (getattr(exc, "headers", None) or {}).get("Retry-After")
    try:
        seconds = float(value) if value is not None else RETRY_AFTER_DEFAULT_S
    except ValueError:
        seconds = RETRY_AFTER_DEFAULT_S
    if math.isnan(seconds):
        seconds = RETRY_AFTER_DEFAULT_S
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


async def secret_value(kube: Kube, namespace: str, name: str, key: str) -> str | None:
    """The decoded, stripped value of a Secret's key; None if the key is absent or empty.

    Raises the client's errors (ApiException 404 when the Secret does not exist). The value is a
    secret: callers never log it or copy it into status.
    """
    secret = await kube.call(kube.core.read_namespaced_secret, name, namespace)
    raw = (secret.data or {}).get(key)
    return _decoded(raw) if raw else None


@dataclass(frozen=True)
class SecretView:
    """What the operator reads of a Secret a Playbook names: whether its owner shared it, and
    with which hosts (labels, annotations), and its decoded values."""

    labels: dict[str, str]
    annotations: dict[str, str]
    data: dict[str, str] = field(repr=False)


def _decoded(raw: str | bytes) -> str:
    """A Secret's value as text: base64-decoded, surrounding whitespace stripped."""
    return base64.b64decode(raw).decode().strip()


def owned_metadata(name: str, incident: str, incident_uid: str) -> client.V1ObjectMeta:
    """Metadata of an object an incident creates: labelled with it and garbage-collected with it."""
    owner = client.V1OwnerReference(
        api_version=f"{API_GROUP}/{API_VERSION}", kind="Incident", name=incident, uid=incident_uid
    )
    return client.V1ObjectMeta(name=name, labels={LABEL_INCIDENT: incident}, owner_references=[owner])


def not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


def api_body(exc: ApiException) -> str:
    """An API error's body as text (the asyncio client keeps the bytes it read; empty if none)."""
    body = exc.body
    if isinstance(body, bytes):
        return body.decode(errors="replace")
    return str(body or "")


def expired_continue(exc: ApiException, token: str | None, plural: str) -> str:
    """The token to go on with when a paged listing's continue token expired (HTTP 410: etcd
    compacted its revision, about 5 minutes, while a slow reader paged through thousands of
    objects): the API server's answer carries one that continues from the next key in the latest
    snapshot, so the listing ends (objects created or deleted meanwhile may be missed or seen;
    every caller keys on uid or looks again at its next pass) instead of starting over and
    expiring again. Anything else, or a 410 on the first page, is raised again."""
    if exc.status == 410 and token is not None:
        try:
            fresh = (json.loads(exc.body or "{}").get("metadata") or {}).get("continue")
        except (ValueError, AttributeError):
            fresh = None
        if isinstance(fresh, str) and fresh and fresh != token:  # the same again: no progress
            logger.info("listing %s: the continue token expired; going on from the latest snapshot", plural)
            return fresh
    raise exc


def api_reason(exc: ApiException) -> str:
    """A one-line reason from an API error, without headers or bodies that may hold secrets."""
    return f"HTTP {exc.status} {exc.reason}".strip()


@dataclass(frozen=True)
class Readiness:
    desired: int
    ready: int
    available: int
    updated: int
    rolled_out: bool

    @property
    def ready_percent(self) -> float:
        return 100.0 if self.desired == 0 else 100.0 * self.ready / self.desired

    def describe(self) -> str:
        return f"{self.ready}/{self.desired} ready, {self.updated} updated, {self.available} available"


def pod_name(pod: Any) -> str:
    """The name of a V1Pod (of either client: the plugin reads pods with the synchronous one)."""
    return str(pod.metadata.name) if pod.metadata is not None and pod.metadata.name else ""


def pod_ready(pod: Any) -> bool:
    """Whether a V1Pod (of either client) is Ready and not being deleted."""
    if pod.metadata is not None and pod.metadata.deletion_timestamp is not None:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


@dataclass(frozen=True)
class RolloutHistory:
    revisions: list[Revision]
    current: int | None
    restores: dict[str, Any]
    """By revision name: a Deployment's pod template, or a StatefulSet's ControllerRevision data."""


_WORKLOAD_METHODS: dict[str, dict[str, str]] = {
    "Deployment": {
        "read": "read_namespaced_deployment",
        "patch": "patch_namespaced_deployment",
        "scale": "patch_namespaced_deployment_scale",
        "history": "list_namespaced_replica_set",
    },
    "StatefulSet": {
        "read": "read_namespaced_stateful_set",
        "patch": "patch_namespaced_stateful_set",
        "scale": "patch_namespaced_stateful_set_scale",
        "history": "list_namespaced_controller_revision",
    },
}
"""The apps/v1 calls per workload kind (their resources are `api.rbac.workload_resource`)."""


MERGE_PATCH = {"_content_type": "application/merge-patch+json"}
"""A dict body of a custom object's patch is a JSON merge patch (RFC 7386): the asyncio client would
label it a JSON patch (a list of operations) otherwise. Built-in kinds take a strategic merge patch,
which both clients choose for a dict."""


class AsyncCustomObjects:
    """The operator's own kinds (`incidents`, `playbooks`, `drills`, `incidentarchives` of
    incident-operator.dev), as
    coroutines (called through `Kube.call`, which adds the request timeout to `options` and retries
    429s). Thin: bodies are plain dicts; `options` go to the client as they are
    (`_request_timeout`). The plugin's synchronous twin is `cli.kubectl.objects.CustomObjects`."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = client.CustomObjectsApi(api)

    async def get(self, plural: str, namespace: str, name: str, **options: Any) -> dict[str, Any]:
        found = await self.api.get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, name, **options
        )
        return cast(dict[str, Any], found)

    async def page(
        self, plural: str, namespace: str | None, token: str | None, limit: int, **options: Any
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of at most `limit` objects, and the token of the next (None: the last)."""
        query: dict[str, Any] = {**options, "limit": limit, **({"_continue": token} if token else {})}
        if namespace is None:
            listed = await self.api.list_cluster_custom_object(API_GROUP, API_VERSION, plural, **query)
        else:
            listed = await self.api.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, plural, **query
            )
        result = cast(dict[str, Any], listed)
        return result.get("items") or [], (result.get("metadata") or {}).get("continue") or None

    async def list(self, plural: str, namespace: str | None, **query: Any) -> list[dict[str, Any]]:
        """Every object of `namespace` (None: all) that `query` selects, read in pages of 500 (a
        continue token that expired meanwhile goes on from the latest snapshot: `expired_continue`)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            try:
                found, token = await self.page(plural, namespace, token, 500, **query)
            except ApiException as exc:
                token = expired_continue(exc, token, plural)
                continue
            items += found
            if not token:
                return items

    async def create(
        self, plural: str, namespace: str, body: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        created = await self.api.create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, body, **options
        )
        return cast(dict[str, Any], created)

    async def patch(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """A merge patch of the object (metadata, spec)."""
        patched = await self.api.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, name, body, **{**MERGE_PATCH, **options}
        )
        return cast(dict[str, Any], patched)

    async def replace(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """Replace the object; with `metadata.resourceVersion` in `body`, 409 if it changed."""
        replaced = await self.api.replace_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, name, body, **options
        )
        return cast(dict[str, Any], replaced)

    async def delete(
        self, plural: str, namespace: str, name: str, uid: str | None = None, **options: Any
    ) -> None:
        """Delete the object; with `uid`, only that object (a 409 if the name now holds another)."""
        preconditions = client.V1Preconditions(uid=uid) if uid else None
        body = client.V1DeleteOptions(preconditions=preconditions)
        await self.api.delete_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, name, body=body, **options
        )

    async def patch_status(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """A merge patch of the status subresource (`body` is `{"status": ...}`, maybe a resourceVersion)."""
        patched = await self.api.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, plural, name, body, **{**MERGE_PATCH, **options}
        )
        return cast(dict[str, Any], patched)


class Kube:
    """The API groups the operator uses, called as coroutines on the event loop."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.custom = client.CustomObjectsApi(api)  # other groups' objects (metrics.k8s.io)
        self.objects = AsyncCustomObjects(api)
        self.networking = client.NetworkingV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.locks_seen: dict[tuple[str, str], None] = {}
        """Workload lock Leases (namespace, name) this process saw exist (`lock_seen`), the
        least recently seen first."""

    @property
    def host(self) -> str:
        """The API server's URL, as the client reaches it."""
        return str(self.api.configuration.host)

    async def api_server_addresses(self) -> list[str]:
        """Every address of the `kubernetes` Service's EndpointSlices (namespace `default`): where
        the API server really listens, whatever the port. Raises the client's errors."""
        slices = await self.call(
            self.discovery.list_namespaced_endpoint_slice,
            API_SERVER_NAMESPACE,
            label_selector=f"kubernetes.io/service-name={API_SERVER_SERVICE}",
            _request_timeout=10,
        )
        return [
            str(address)
            for piece in slices.items or []
            for endpoint in piece.endpoints or []
            for address in endpoint.addresses or []
        ]

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await `fn(*args, **kwargs)` (a client method or an `AsyncCustomObjects` one) with a
        request timeout unless given; a 429 is sent again after its Retry-After, at most
        RETRIES_ON_429 times (the API server did not process it). Raises the client's errors,
        TransportError, and RequestTimeout when the timeout passed. The client's copy of the last
        raw answer (`last_response`, which nothing reads) is dropped: a page of a listing, megabytes
        at a realistic history, is not kept until the next call replaces it."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        for attempt in range(RETRIES_ON_429 + 1):
            try:
                return await fn(*args, **kwargs)
            except TimeoutError as exc:  # the request's own timeout (a caller's deadline cancels)
                raise RequestTimeout(f"no answer within {kwargs['_request_timeout']}s") from exc
            except ApiException as exc:
                if exc.status != 429 or attempt == RETRIES_ON_429:
                    raise
                await asyncio.sleep(retry_after(exc))
            finally:
                self.api.last_response = None  # type: ignore[attr-defined]  # set by call_api only
        raise AssertionError("unreachable")  # pragma: no cover

    def separate(self, connections: int) -> Kube:
        """Another `Kube` on the same configuration (server, TLS, the token and its refresh) with a
        pool of its own of `connections`: for long-lived watches, each of which holds a connection
        for good and would otherwise take it from the calls of the hot path, and for short checks
        that must not queue behind a burst's writes (the loops' Playbook listing). Close it too."""
        configuration = copy.copy(self.api.configuration)
        configuration.connection_pool_maxsize = connections
        return Kube(api_client(configuration))

    async def close(self) -> None:
        """Close the client's connections, within CLOSE_TIMEOUT_S whatever the API server does."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.api.close(), CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ workloads

    def _workload_api(self, kind: str, verb: str) -> Callable[..., Any]:
        """The apps/v1 client method `verb` (read, patch, scale, history) for a workload kind."""
        methods = _WORKLOAD_METHODS.get(str(kind), _WORKLOAD_METHODS["Deployment"])
        return cast(Callable[..., Any], getattr(self.apps, methods[verb]))

    async def read_workload(self, kind: str, name: str, namespace: str) -> Any:
        return await self.call(self._workload_api(kind, "read"), name, namespace)

    async def patch_workload(self, kind: str, name: str, namespace: str, body: dict[str, Any]) -> Any:
        return await self.call(self._workload_api(kind, "patch"), name, namespace, body)

    async def workload_labels(self, kind: str, name: str, namespace: str) -> dict[str, str]:
        """A workload's own labels (what a selector bound of a Playbook reads)."""
        return dict((await self.read_workload(kind, name, namespace)).metadata.labels or {})

    def lock_seen(self, namespace: str, lease: str) -> bool:
        """Whether this process saw the workload lock Lease exist (read, created, or refused as
        already there) and not deleted since: a claim of one not seen creates it first and reads
        it only when it is there. A workload's first lock is one round trip (a create), not a
        read and a create; a Lease that exists but this process has not seen since it started
        (or forgot: it keeps MAX_LOCKS_SEEN) costs one more (the refused create)."""
        return (namespace, lease) in self.locks_seen

    def _seen(self, namespace: str, lease: str, exists: bool) -> None:
        key = (namespace, lease)
        self.locks_seen.pop(key, None)
        if exists:
            self.locks_seen[key] = None  # the most recently seen last
            if len(self.locks_seen) > MAX_LOCKS_SEEN:
                del self.locks_seen[next(iter(self.locks_seen))]

    async def read_lock(self, namespace: str, lease: str) -> tuple[str | None, str | None]:
        """(holder, resourceVersion) of the workload lock Lease `lease`; (None, None) without one."""
        try:
            found = await self.call(
                self.coordination.read_namespaced_lease, lease, namespace, _request_timeout=10
            )
        except ApiException as exc:
            if not_found(exc):
                self._seen(namespace, lease, exists=False)
                return None, None
            raise
        self._seen(namespace, lease, exists=True)
        holder = found.spec.holder_identity if found.spec else None
        return holder or None, found.metadata.resource_version if found.metadata else None

    async def write_lock(
        self, namespace: str, lease: str, holder: str | None, resource_version: str | None
    ) -> None:
        """Create the lock Lease for `holder` (no resource_version), replace it, or (holder None)
        delete it, each only if it is still at `resource_version`: 409 otherwise."""
        if holder is None:
            options = client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=resource_version)
            )
            try:
                await self.call(self.coordination.delete_namespaced_lease, lease, namespace, body=options)
            except ApiException as exc:
                if not not_found(exc):
                    raise
            self._seen(namespace, lease, exists=False)
            return
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease, "namespace": namespace},
            "spec": {"holderIdentity": holder},
        }
        if resource_version is None:
            try:
                await self.call(self.coordination.create_namespaced_lease, namespace, body)
            except ApiException as exc:
                if exc.status == 409:  # AlreadyExists: the claim reads it and decides
                    self._seen(namespace, lease, exists=True)
                raise
            self._seen(namespace, lease, exists=True)
            return
        body["metadata"]["resourceVersion"] = resource_version
        await self.call(self.coordination.replace_namespaced_lease, lease, namespace, body)

    async def scale_workload(
        self, kind: str, name: str, namespace: str, replicas: int, resource_version: str | None = None
    ) -> None:
        """Set the workload's replicas; with `resource_version`, only if it is still at that
        version (409 Conflict otherwise)."""
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        await self.call(self._workload_api(kind, "scale"), name, namespace, body)

    async def readiness(self, kind: str, name: str, namespace: str) -> Readiness:
        workload = await self.read_workload(kind, name, namespace)
        spec, status, meta = workload.spec, workload.status, workload.metadata
        desired = spec.replicas if spec.replicas is not None else 1
        ready = status.ready_replicas or 0
        updated = status.updated_replicas or 0
        available = status.available_replicas or 0 if kind == "Deployment" else ready
        current = status.replicas or 0
        rolled_out = (
            (status.observed_generation or 0) >= (meta.generation or 0)
            and updated == desired
            and current == desired
            and ready == desired
            and available == desired
        )
        return Readiness(desired, ready, available, updated, rolled_out)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        """A client model as the API's JSON (camelCase keys)."""
        return cast(dict[str, Any], self.api.sanitize_for_serialization(obj))

    async def rollout_history(self, kind: str, name: str, namespace: str) -> RolloutHistory:
        """The workload's revisions (its ReplicaSets or ControllerRevisions), the current one, and
        what restores each: a Deployment's pod template, a StatefulSet's revision patch."""
        workload = self.to_dict(await self.read_workload(kind, name, namespace))
        uid = workload["metadata"]["uid"]
        match = (workload["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        listing = self._workload_api(kind, "history")
        listed = self.to_dict(await self.call(listing, namespace, label_selector=selector))
        owned = [
            item
            for item in listed.get("items") or []
            if any(o.get("uid") == uid for o in item["metadata"].get("ownerReferences") or [])
        ]
        revisions: list[Revision] = []
        restores: dict[str, Any] = {}
        for item in owned:
            meta = item["metadata"]
            annotations = meta.get("annotations") or {}
            if kind == "StatefulSet":
                number: int | None = item.get("revision")
                restores[meta["name"]] = item.get("data")
                template = ((item.get("data") or {}).get("spec") or {}).get("template")
                replicas = None
            else:
                number = revision_number(annotations)
                template = item["spec"]["template"]
                restores[meta["name"]] = template_without_hash(template)
                replicas = (item.get("status") or {}).get("replicas")
            if number is None:
                continue
            created = meta.get("creationTimestamp")
            revisions.append(
                Revision(
                    int(number),
                    meta["name"],
                    parse_time(created) if created else None,
                    annotations.get(CHANGE_CAUSE_ANNOTATION),
                    replicas,
                    fingerprint(template),
                )
            )
        if kind == "StatefulSet":
            named = (workload.get("status") or {}).get("updateRevision")
            current = next((r.number for r in revisions if r.name == named), None)
        else:
            current = revision_number(workload["metadata"].get("annotations"))
        return RolloutHistory(revisions, current, restores)

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self.call(self.core.delete_namespaced_pod, name, namespace)

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """Every key of a Secret, decoded and stripped (values are secrets: never log them)."""
        return (await self.secret(namespace, name)).data

    async def secret(self, namespace: str, name: str) -> SecretView:
        """A Secret's labels, annotations and decoded values (values are secrets: never log them)."""
        secret = await self.call(self.core.read_namespaced_secret, name, namespace)
        meta = secret.metadata
        return SecretView(
            dict((meta.labels if meta else None) or {}),
            dict((meta.annotations if meta else None) or {}),
            {k: _decoded(v) for k, v in (secret.data or {}).items()},
        )

    async def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        await self.call(self.batch.create_namespaced_job, namespace, body)

    async def read_job(self, namespace: str, name: str) -> Any:
        return await self.call(self.batch.read_namespaced_job, name, namespace)

    async def jobs_labelled(self, namespace: str, label_selector: str) -> list[client.V1Job]:
        result = await self.call(self.batch.list_namespaced_job, namespace, label_selector=label_selector)
        return list(result.items)

    async def pods_labelled(self, namespace: str, label_selector: str) -> list[client.V1Pod]:
        result = await self.call(self.core.list_namespaced_pod, namespace, label_selector=label_selector)
        return list(result.items)

    async def pod_log(self, namespace: str, name: str, *, lines: int, limit_bytes: int) -> str:
        """The last `lines` of a pod's log, at most `limit_bytes` (the kubelet serves it)."""
        text = await self.call(
            self.core.read_namespaced_pod_log,
            name,
            namespace,
            tail_lines=lines,
            limit_bytes=limit_bytes,
            _request_timeout=10,
        )
        return str(text)

    async def events(self, namespace: str) -> list[Any]:
        result = await self.call(self.core.list_namespaced_event, namespace)
        return list(result.items)

    async def pod_metrics(self, namespace: str, label_selector: str) -> dict[str, Any]:
        """The metrics API's PodMetrics list (metrics.k8s.io/v1beta1, served by metrics-server)."""
        listed = await self.call(
            self.custom.list_namespaced_custom_object,
            "metrics.k8s.io",
            "v1beta1",
            namespace,
            "pods",
            label_selector=label_selector,
            _request_timeout=10,
        )
        return cast(dict[str, Any], listed)

    async def create_deny_all_policy(
        self, namespace: str, metadata: client.V1ObjectMeta, selector: dict[str, str]
    ) -> None:
        """Create a NetworkPolicy that denies all ingress and egress of the pods `selector` picks."""
        policy = client.V1NetworkPolicy(
            metadata=metadata,
            spec=client.V1NetworkPolicySpec(
                pod_selector=client.V1LabelSelector(match_labels=selector),
                policy_types=["Ingress", "Egress"],
            ),
        )
        await self.call(self.networking.create_namespaced_network_policy, namespace, policy)

    async def service_facts(self, namespace: str, name: str) -> ServiceFacts | None:
        """Service `name` of `namespace` for the egress policy's name route: its type, cluster
        IPs and ports and, if headless, the addresses and ports of the EndpointSlices the
        EndpointSlice controller made from its selector (hand-written or mirrored slices do not
        count), each kept only if it is an address of the live, non-host-network pod its
        `targetRef` names among the pods the Service selects (an allow-list: a pod gone between
        the two reads, or a host-network pod, whose addresses are its node's, is dropped). None if
        there is no such Service. Raises the client's other errors."""
        service = await self._service(namespace, name)
        if service is None:
            return None
        spec = service.spec or client.V1ServiceSpec()
        kind = str(spec.type or "ClusterIP")
        cluster_ips = tuple(spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else []))
        if kind == "ExternalName" or any(ip != "None" for ip in cluster_ips):
            ports = tuple(int(p.port) for p in spec.ports or [] if p.port)
            return ServiceFacts(kind, cluster_ips, (), ports)
        if not spec.selector:  # no controller-made slices: its endpoints are whoever wrote them
            return ServiceFacts(kind, cluster_ips)
        slices = await self.call(
            self.discovery.list_namespaced_endpoint_slice,
            namespace,
            label_selector=(
                f"kubernetes.io/service-name={name},"
                f"endpointslice.kubernetes.io/managed-by={ENDPOINTSLICE_CONTROLLER}"
            ),
            _request_timeout=10,
        )
        selected = await self.call(  # the pods the Service selects, read after its slices
            self.core.list_namespaced_pod,
            namespace,
            label_selector=",".join(f"{k}={v}" for k, v in sorted(spec.selector.items())),
            _request_timeout=10,
        )
        own = {  # a host-network pod's addresses are its node's: never the Service's
            pod.metadata.name: {_ip(ip) for ip in _pod_ips(pod)}
            for pod in selected.items or []
            if pod.metadata and not (pod.spec and pod.spec.host_network)
        }
        endpoints = tuple(
            str(address)
            for piece in slices.items or []
            for endpoint in piece.endpoints or []
            if endpoint.target_ref is not None and endpoint.target_ref.kind == "Pod"
            for address in endpoint.addresses or []
            if _ip(str(address)) in own.get(endpoint.target_ref.name, set())
        )
        slice_ports = tuple(  # a port left unset means "all ports": never admitted
            int(port.port) for piece in slices.items or [] for port in piece.ports or [] if port.port
        )
        return ServiceFacts(kind, cluster_ips, endpoints, tuple(sorted(set(slice_ports))))

    async def owners(self, kind: str, namespace: str, name: str) -> list[tuple[str, str, bool]] | None:
        """The owner references (kind, name, controller) of pod or ReplicaSet `name`, or None if
        there is none such. Listed by name (the remediator's role lists, it does not get, them)."""
        method: Callable[..., Any] = (
            self.core.list_namespaced_pod if kind == "Pod" else self.apps.list_namespaced_replica_set
        )
        listed = await self.call(
            method, namespace, field_selector=f"metadata.name={name}", _request_timeout=10
        )
        items = listed.items or []
        if not items:
            return None
        refs = items[0].metadata.owner_references or []
        return [(str(r.kind), str(r.name), bool(r.controller)) for r in refs]

    async def service_selector(self, namespace: str, name: str) -> dict[str, str] | None:
        """Service `name`'s pod selector (None: no such Service, or none)."""
        service = await self._service(namespace, name)
        if service is None:
            return None
        return dict(service.spec.selector or {}) if service.spec else None

    async def _service(self, namespace: str, name: str) -> client.V1Service | None:
        """Service `name` of `namespace`, None if there is none. Raises the client's other errors."""
        try:
            return await self.call(self.core.read_namespaced_service, name, namespace, _request_timeout=10)
        except ApiException as exc:
            if not_found(exc):
                return None
            raise

    async def workload_templates(self, namespace: str) -> list[tuple[str, str, dict[str, str]]]:
        """Every Deployment and StatefulSet of `namespace` with its pod template's labels."""
        found = []
        lists: tuple[tuple[str, Callable[..., Any]], ...] = (
            ("Deployment", self.apps.list_namespaced_deployment),
            ("StatefulSet", self.apps.list_namespaced_stateful_set),
        )
        for kind, method in lists:
            listed = await self.call(method, namespace, _request_timeout=10)
            for item in listed.items or []:
                meta = item.spec.template.metadata if item.spec and item.spec.template else None
                found.append((kind, str(item.metadata.name), dict((meta.labels if meta else None) or {})))
        return found

    async def pods(self, namespace: str, selector: dict[str, str]) -> list[client.V1Pod]:
        return await self.pods_labelled(namespace, ",".join(f"{k}={v}" for k, v in sorted(selector.items())))

    # ------------------------------------------------------------------ our resources

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self.call(self.objects.get, plural, namespace, name)

    async def list_objects(self, plural: str, namespace: str | None, **query: Any) -> list[dict[str, Any]]:
        return await self.call(self.objects.list, plural, namespace, **query)

    async def create_object(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call(self.objects.create, plural, namespace, body)

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str, when: datetime
    ) -> None:
        """Post a core/v1 Event about the object `involved` (its body as the API returned it)."""
        metadata = involved.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        kind = str(involved.get("kind") or "")
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{metadata.get('name', 'object')}."),
            involved_object=client.V1ObjectReference(
                api_version=str(involved.get("apiVersion") or ""),
                kind=kind,
                name=str(metadata.get("name") or ""),
                namespace=namespace,
                uid=str(metadata.get("uid") or ""),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=when,
            last_timestamp=when,
            count=1,
            source=client.V1EventSource(component="incident-operator"),
        )
        await self.call(self.core.create_namespaced_event, namespace, event)

    async def patch_object(
        self, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.call(self.objects.patch, plural, namespace, name, body)

    async def patch_object_status(
        self, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.call(self.objects.patch_status, plural, namespace, name, body)

    async def patch_incident_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self.patch_object_status("incidents", namespace, name, {"status": status})

    async def write_owned_configmap(
        self, namespace: str, name: str, data: dict[str, str], incident: str, incident_uid: str
    ) -> None:
        """Create or replace ConfigMap `name`, owned by the incident (garbage-collected with it)."""
        body = client.V1ConfigMap(metadata=owned_metadata(name, incident, incident_uid), data=data)
        try:
            await self.call(self.core.create_namespaced_config_map, namespace, body)
        except ApiException as exc:
            if not conflict(exc):
                raise
            await self.call(self.core.replace_namespaced_config_map, name, namespace, body)

    async def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's data (retention reads the post-mortem); raises the client's errors."""
        found = await self.call(self.core.read_namespaced_config_map, name, namespace)
        return dict(found.data or {})

    async def list_incidents(self, namespace: str | None) -> list[Mapping[str, Any]]:
        """Every Incident of `namespace` (None: all), as the API returns them, in pages of 500."""
        return list(await self.list_objects("incidents", namespace))

    async def incident_pages(
        self, namespace: str | None, limit: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every Incident of `namespace` (None: all), one page at a time: a caller that keeps a
        few facts of each holds one page of whole bodies at most, not all of them."""
        async for page in self.pages("incidents", namespace, limit):
            yield page
            del page  # not held while the next page is read

    async def pages(
        self, plural: str, namespace: str | None, limit: int, **query: Any
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every object of one of the operator's kinds in `namespace` (None: all) that `query`
        selects, a page at a time (a continue token that expired meanwhile goes on from the latest
        snapshot: `expired_continue`)."""
        token: str | None = None
        while True:
            try:
                items, token = await self.call(self.objects.page, plural, namespace, token, limit, **query)
            except ApiException as exc:
                token = expired_continue(exc, token, plural)
                continue
            yield items
            del items  # not held while the next page is read
            if token is None:
                return

    async def get_playbook(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.get_object("playbooks", namespace, name)

    async def patch_playbook_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        """Merge-patch the Playbook's status; with `resource_version`, fail (409) if it changed."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        await self.patch_object_status("playbooks", namespace, name, body)


class AccessReviews:
    """Asks the API server what the operator may do (SelfSubjectAccessReview), with a short cache.

    One review per permission and namespace at most every `allowed_ttl` seconds once allowed, and
    every `denied_ttl` seconds while denied, so a thousand incidents in a namespace cost a handful
    of reviews, and a namespace that opts in is noticed within `denied_ttl`.
    """

    def __init__(self, kube: Kube, *, allowed_ttl: float = 60.0, denied_ttl: float = 5.0) -> None:
        self.kube = kube
        self.authz = client.AuthorizationV1Api(kube.api)
        self.authn = client.AuthenticationV1Api(kube.api)
        self.allowed_ttl, self.denied_ttl = allowed_ttl, denied_ttl
        self._cache: dict[tuple[str, Permission], tuple[float, bool]] = {}
        self._asking: dict[tuple[str, Permission], asyncio.Future[bool]] = {}
        """Reviews in flight: who asks the same meanwhile waits for that answer."""
        self._username: str | None = None
        self._asked_username = False

    async def username(self) -> str | None:
        """Who the operator is to the API server (SelfSubjectReview), asked once; None if unknown."""
        if not self._asked_username:
            self._asked_username = True
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            try:
                review = await self.kube.call(self.authn.create_self_subject_review, body)
                info = review.status.user_info if review.status is not None else None
                self._username = info.username if info is not None else None
            except Exception:  # an older API server: the message then says "the operator"
                self._username = None
        return self._username

    async def allowed(self, namespace: str, permission: Permission, now: float) -> bool:
        """Whether the operator has `permission` in `namespace`: cached, else asked (once for
        everyone who asks while the review is in flight)."""
        key = (namespace, permission)
        cached = self._cache.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        while (pending := self._asking.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                # the one asking was: ask again
        asking = self._asking[key] = asyncio.get_running_loop().create_future()
        try:
            ok = await self._review(namespace, permission)
            self._cache[key] = (now + (self.allowed_ttl if ok else self.denied_ttl), ok)
            asking.set_result(ok)
            return ok
        except Exception as exc:
            asking.set_exception(exc)
            asking.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._asking[key]
            if not asking.done():  # cancelled: who waits asks again
                asking.cancel()

    async def _review(self, namespace: str, permission: Permission) -> bool:
        attributes = {
            "namespace": namespace,
            "verb": permission.verb,
            "group": permission.group,
            "resource": permission.resource,
            "subresource": permission.subresource,
        }
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        review = await self.kube.call(self.authz.create_self_subject_access_review, body)
        return review.status is not None and bool(review.status.allowed)

    async def denied(self, namespace: str, permissions: list[Permission], now: float) -> list[Permission]:
        """Those of `permissions` the operator lacks in `namespace`; the reviews not cached are
        asked at once (one round trip, not one per permission). A review that fails raises once
        every review has answered (the answers are cached all the same)."""
        answers = await asyncio.gather(
            *(self.allowed(namespace, p, now) for p in permissions), return_exceptions=True
        )
        failed = next((a for a in answers if isinstance(a, BaseException)), None)
        if failed is not None:
            raise failed
        return [p for p, ok in zip(permissions, answers, strict=True) if not ok]


def _ip(value: str) -> str:
    """An address in one spelling (IPv6 compressed), so that equal addresses compare equal."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def _pod_ips(pod: client.V1Pod) -> list[str]:
    status = pod.status
    if status is None:
        return []
    return [str(p.ip) for p in status.pod_ips or [] if p.ip] + ([str(status.pod_ip)] if status.pod_ip else [])
