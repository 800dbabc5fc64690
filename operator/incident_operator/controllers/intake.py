"""`POST /alertmanager`: Alertmanager's webhook in, Incidents out.

Owns authentication (bearer tokens read from Secrets, re-read every few seconds so they can be
rotated without a restart; a token of `alertIntake.tokens` opens incidents only in the namespaces
it is bound to), request validation, and writing each alert onto its Incident. The
mapping itself is pure (`alerts`). Answers: 401 (token), 413 (body over the limit, by aiohttp),
400 (not JSON, or not a version-4 payload; the reason is in the body), 503 (the API server is
unavailable: Alertmanager retries, so no alert is lost), 200 with a result per alert otherwise.
No answer carries the API server's words or an exception's text (fixed texts and result codes;
the detail goes to the operator's log).
Repeated deliveries are idempotent: an unchanged alert writes nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import (
    ApiException,
    Kube,
    TransportError,
    api_body,
    api_reason,
    secret_value,
)
from incident_operator.api import keys
from incident_operator.api.reasons import Reason
from incident_operator.api.targets import MAX_TARGETS
from incident_operator.api.timestamps import format_micro_time, utc_now
from incident_operator.core import alerts
from incident_operator.settings.config import OperatorConfig

logger = logging.getLogger(__name__)

TOKEN_TTL_S = 5.0
AUTH_UNAVAILABLE = "cannot read the alert token: API server unavailable; retry"
API_UNAVAILABLE = "API server unavailable; retry"
"""Fixed texts: what failed and where (a Secret's name, the API server's message) goes to the log."""
KNOWN_FINGERPRINTS = 50_000


class ApiUnavailable(Exception):
    """The API server did not answer usefully; the caller answers 503 so the sender retries."""


def _unavailable(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, TransportError | OSError)


TokenRef = tuple[str, str, str]
"""A token's Secret: namespace, name, key."""


@dataclass(frozen=True)
class Caller:
    """Who sent an authenticated request: the namespaces its token may open incidents in."""

    namespaces: frozenset[str] | None
    """None: the token of --alert-token-secret, bound to none (alertIntake's scope still applies)."""


class Intake:
    def __init__(
        self, kube: Kube, config: OperatorConfig, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock or utc_now
        self._tokens: dict[TokenRef, tuple[float, str | None]] = {}  # ref -> (read at, value)
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()  # fingerprints seen (bounded)
        self.on_created: Callable[[dict[str, Any]], None] | None = None
        """Told each Incident this intake created, as the API returned it (the runtime starts its
        loop at once, not after its watch event queued behind a storm's: `runtime.handlers`)."""

    # ------------------------------------------------------------------ authentication

    def _token_refs(self) -> list[tuple[TokenRef, frozenset[str] | None]]:
        """Every configured token: where it is, and the namespaces it is bound to (None: none)."""
        refs: list[tuple[TokenRef, frozenset[str] | None]] = []
        if self.config.alert_token_secret is not None:
            namespace, name = self.config.alert_token_secret
            refs.append(((namespace, name, "token"), None))
        for token in self.config.file.alertIntake.tokens:
            ref = token.secretRef
            refs.append(((ref.namespace, ref.name, ref.key), frozenset(token.namespaces)))
        return refs

    async def token_value(self, ref: TokenRef) -> str | None:
        """A token's value, read at most every TOKEN_TTL_S (rotation without a restart); None if
        its Secret or key is absent. Raises ApiUnavailable when the Secret cannot be read."""
        cached = self._tokens.get(ref)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_TTL_S:
            return cached[1]
        namespace, name, key = ref
        try:
            token = await secret_value(self.kube, namespace, name, key)
        except ApiException as exc:
            if exc.status == 404:
                logger.warning("alert token Secret %s/%s not found; its token is refused", namespace, name)
                self._tokens[ref] = (time.monotonic(), None)
                return None
            raise ApiUnavailable(f"Secret {namespace}/{name}: {api_reason(exc)}") from exc
        except (TransportError, OSError) as exc:
            raise ApiUnavailable(type(exc).__name__) from exc
        self._tokens[ref] = (time.monotonic(), token)
        return token

    async def caller(self, request: web.Request) -> Caller | str:
        """Who sent the request, by its bearer token; else the reason for a 401.

        The given token is compared, in constant time, with every configured one (no early exit).
        Raises ApiUnavailable when no token matched and a token Secret could not be read: the
        request may carry that token, so the answer is 503 (Alertmanager retries), never 401."""
        refs = self._token_refs()
        values = await asyncio.gather(*(self.token_value(ref) for ref, _ in refs), return_exceptions=True)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip().encode() if scheme.lower() == "bearer" else b""
        bound: list[frozenset[str] | None] = []
        unavailable: ApiUnavailable | None = None
        readable = 0
        for (_, namespaces), value in zip(refs, values, strict=True):
            if isinstance(value, ApiUnavailable):
                unavailable = value
                continue
            if isinstance(value, BaseException):
                raise value
            if value is None:
                continue
            readable += 1
            if hmac.compare_digest(presented, value.encode()):
                bound.append(namespaces)
        if bound:
            # The same value in several entries (give each its own): the union of their scopes.
            if any(namespaces is None for namespaces in bound):
                return Caller(None)
            return Caller(frozenset().union(*(n for n in bound if n is not None)))
        if unavailable is not None:
            raise unavailable
        if not readable:
            return (
                "alert intake is not configured: start the operator with --alert-token-secret (key "
                "'token') or set alertIntake.tokens, and create the Secret"
            )
        return "missing or wrong bearer token"

    # ------------------------------------------------------------------ the endpoint

    async def handle(self, request: web.Request) -> web.Response:
        try:
            caller = await self.caller(request)
        except ApiUnavailable as exc:  # the detail (which Secret, what status) in the log only
            logger.warning("alert intake: cannot read an alert token (%s); answering 503", exc)
            return _json(503, {"error": AUTH_UNAVAILABLE})
        if isinstance(caller, str):
            return _json(401, {"error": caller}, headers={"WWW-Authenticate": "Bearer"})
        raw = await request.read()  # aiohttp answers 413 itself above the configured size
        try:
            payload = alerts.WebhookPayload.model_validate_json(raw)
        except ValidationError as exc:
            reasons = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10]]
            return _json(
                400, {"error": "not an Alertmanager webhook payload (version 4)", "reasons": reasons}
            )
        if payload.version != "4":
            return _json(400, {"error": f"unsupported payload version {payload.version!r}; expected '4'"})
        limit = self.config.file.alertIntake.maxAlertsPerRequest
        if len(payload.alerts) > limit:
            return _json(
                413,
                {
                    "error": f"{len(payload.alerts)} alerts in one request; at most {limit} "
                    "(alertIntake.maxAlertsPerRequest): lower max_alerts in the Alertmanager receiver"
                },
            )
        results = []
        for alert in payload.alerts:
            try:
                results.append(await self.accept(alert, caller.namespaces))
            except ApiUnavailable as exc:
                logger.warning("alert intake: API server unavailable (%s); answering 503", exc)
                return _json(503, {"error": API_UNAVAILABLE, "done": results})
        if payload.truncatedAlerts:
            logger.warning(
                "alert intake: Alertmanager truncated %d alerts of group %s",
                payload.truncatedAlerts,
                payload.groupKey,
            )
        return _json(200, {"results": results})

    async def accept(
        self, alert: alerts.Alert, token_namespaces: frozenset[str] | None = None
    ) -> dict[str, str]:
        """One alert onto its Incident; `token_namespaces`: the namespaces the request's token is
        bound to (None: bound to none, or the operator itself, as a Drill's fireAlert)."""
        metrics.alert_received(alert.status)
        action = alerts.plan_alert(
            alert,
            self.config.file.alertIntake,
            self.config.namespaces,
            self.config.own_namespace,
            token_namespaces,
        )
        if isinstance(action, alerts.Skip):
            return self._skipped(action.fingerprint, action.reason, action.code)
        try:
            outcome = await self.upsert(action)
        except ApiException as exc:
            if _unavailable(exc):
                raise ApiUnavailable(api_reason(exc)) from exc
            logger.warning(
                "alert %s: namespace %s: %s: %s",
                action.fingerprint,
                action.namespace,
                api_reason(exc),
                _status_message(exc),
            )  # the API server's words in the log; the caller gets a fixed reason and a code
            code = "ApiError"
            reason = (
                f"namespace {action.namespace}: the API server refused the incident "
                "(the operator's log says why)"
            )
            if exc.status == 404:
                code, reason = "NamespaceNotFound", f"namespace {action.namespace} does not exist"
            elif exc.status == 403 and "exceeded quota" in api_body(exc):
                # Answered 200 with the reason: a retry cannot succeed until someone raises the quota.
                code = "QuotaExceeded"
                reason = f"namespace {action.namespace}: the ResourceQuota on incidents is used up"
            elif exc.status == 403:
                code = "Forbidden"
                reason = (
                    f"namespace {action.namespace}: the operator may not write this incident there "
                    "(the operator's log says why)"
                )
            return self._skipped(action.fingerprint, reason, code)
        except (TransportError, OSError) as exc:
            raise ApiUnavailable(type(exc).__name__) from exc
        return {"fingerprint": action.fingerprint, **outcome}

    def _skipped(self, fingerprint: str, reason: str, code: str) -> dict[str, str]:
        logger.warning("alert %s skipped: %s", fingerprint, reason)
        metrics.alert_skipped(code)
        return {"fingerprint": fingerprint, "result": "skipped", "reason": reason, "code": code}

    async def upsert(self, action: alerts.Upsert) -> dict[str, str]:
        key = (action.namespace, action.fingerprint)
        if key not in self._known and action.status == "firing":
            # A fingerprint this process has not seen: most likely new, so create first (one
            # request instead of a list and a create); a 409 falls through to the general path.
            try:
                await self._create(action, action.base_name)
                self._remember(key)
                return {"result": "created", "incident": action.base_name}
            except ApiException as exc:
                if exc.status != 409:
                    raise
        self._remember(key)
        existing = await self._incidents_for(action)
        open_ones = [i for i in existing if not (i.get("spec") or {}).get("closed")]
        if open_ones:
            incident = max(open_ones, key=lambda i: i["metadata"]["creationTimestamp"])
            name = incident["metadata"]["name"]
            annotations = incident["metadata"].get("annotations") or {}
            if annotations.get(keys.ANNOTATION_STATUS) == action.status:
                return {"result": "unchanged", "incident": name}
            patch = {
                "metadata": {
                    "annotations": {
                        keys.ANNOTATION_STATUS: action.status,
                        keys.ANNOTATION_CHANGED_AT: format_micro_time(self.clock()),
                    }
                }
            }
            await self.kube.patch_object("incidents", action.namespace, name, patch)
            return {"result": f"marked {action.status}", "incident": name}
        if action.status == "resolved":
            return {"result": "ignored", "reason": "resolved alert without an open incident"}
        taken = {i["metadata"]["name"] for i in existing}
        name = alerts.next_name(action.base_name, taken)
        try:
            await self._create(action, name)
        except ApiException as exc:
            if exc.status == 409:  # a concurrent delivery created it first
                return {"result": "unchanged", "incident": name}
            raise
        return {"result": "created", "incident": name}

    async def _create(self, action: alerts.Upsert, name: str) -> None:
        body = action.body(name, self.clock())
        found, not_read = await self._named_indirectly(action)
        body["spec"], left_out = alerts.with_targets(body["spec"], found)
        missing: list[str] = []
        if left_out:
            missing.append(f"{left_out} workloads its labels name left out (at most {MAX_TARGETS} targets)")
        if not_read:
            missing.append(f"the workloads its pod/service labels name not read ({not_read})")
        created = await self.kube.create_object("incidents", action.namespace, body)
        if self.on_created is not None:
            try:
                self.on_created(created)
            except Exception:  # its watch event starts it all the same
                logger.exception("incident %s/%s: not started from its creation", action.namespace, name)
        if missing:
            said = f"alert {action.fingerprint}: " + "; ".join(missing) + ": add them to spec.targets"
            logger.warning("incident %s/%s: %s", action.namespace, name, said)
            await self._tell(created, said)

    async def _tell(self, incident: dict[str, Any], message: str) -> None:
        """A Warning Event on the incident just opened (best effort: the incident is what counts)."""
        try:
            await self.kube.post_event(incident, "Warning", Reason.TARGETS_INCOMPLETE, message, self.clock())
        except Exception as exc:  # logged above already; an Event is no reason to fail a delivery
            logger.info("Event %s not posted: %s", Reason.TARGETS_INCOMPLETE, exc)

    async def _named_indirectly(self, action: alerts.Upsert) -> tuple[list[dict[str, str]], str | None]:
        """The workloads the alert's `pod` and `service` labels name: the pod's Deployment (through
        its ReplicaSet) or StatefulSet, the workloads whose pods the Service selects. Read with
        the namespace's remediator rights; the pod and the service are looked up independently,
        and what cannot be read is left out, each with its own reason (the second value): the
        incident is opened all the same."""
        pod, service = alerts.lookups(action.spec.get("source", {}).get("labels") or {})
        found: list[dict[str, str]] = []
        not_read: list[str] = []
        namespace = action.namespace
        if pod is not None:
            try:
                found += await self._pod_owner(namespace, pod)
            except ApiException as exc:
                if _unavailable(exc):
                    raise
                not_read.append(f"pod {pod}: {api_reason(exc)}")
        if service is not None:
            try:
                selector = await self.kube.service_selector(namespace, service)
                if selector:
                    templates = await self.kube.workload_templates(namespace)
                    found += alerts.selected_workloads(selector, templates)
            except ApiException as exc:
                if _unavailable(exc):
                    raise
                not_read.append(f"service {service}: {api_reason(exc)}")
        return found, "; ".join(not_read) or None

    async def _pod_owner(self, namespace: str, pod: str) -> list[dict[str, str]]:
        """The Deployment (through its ReplicaSet) or StatefulSet owning `pod`, if any."""
        owners = await self.kube.owners("Pod", namespace, pod)
        replicaset = next((n for k, n, c in owners or [] if c and k == "ReplicaSet"), None)
        rs_owners = await self.kube.owners("ReplicaSet", namespace, replicaset) if replicaset else None
        owner = alerts.owning_workload(owners or [], rs_owners)
        return [owner] if owner is not None else []

    def _remember(self, key: tuple[str, str]) -> None:
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > KNOWN_FINGERPRINTS:
            self._known.popitem(last=False)

    async def _incidents_for(self, action: alerts.Upsert) -> list[dict[str, Any]]:
        return await self.kube.list_objects(
            "incidents", action.namespace, label_selector=f"{keys.LABEL_FINGERPRINT}={action.fingerprint}"
        )


def _status_message(exc: ApiException) -> str:
    """The API server's one-line message from a Status body (admission and RBAC say why there)."""
    try:
        return str(json.loads(api_body(exc) or "{}").get("message", ""))[:300]
    except (ValueError, AttributeError):
        return ""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body) + "\n", content_type="application/json", headers=headers
    )
