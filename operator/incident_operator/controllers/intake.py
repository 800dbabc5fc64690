"""`POST /alertmanager`: Alertmanager's webhook in, Incidents out.

Owns authentication (a bearer token read from a Secret, re-read every few seconds so it can be
rotated without a restart), request validation, and writing each alert onto its Incident. The
mapping itself is pure (`alerts`). Answers: 401 (token), 413 (body over the limit, by aiohttp),
400 (not JSON, or not a version-4 payload; the reason is in the body), 503 (the API server is
unavailable: Alertmanager retries, so no alert is lost), 200 with a result per alert otherwise.
Repeated deliveries are idempotent: an unchanged alert writes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from urllib3.exceptions import HTTPError as Urllib3Error

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import ApiException, Kube, api_reason, secret_value
from incident_operator.api import keys
from incident_operator.api.timestamps import format_micro_time, utc_now
from incident_operator.core import alerts
from incident_operator.settings.config import OperatorConfig

logger = logging.getLogger(__name__)

TOKEN_TTL_S = 5.0
KNOWN_FINGERPRINTS = 50_000


class ApiUnavailable(Exception):
    """The API server did not answer usefully; the caller answers 503 so the sender retries."""


def _unavailable(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or exc.status >= 500
    return isinstance(exc, Urllib3Error | OSError)


class Intake:
    def __init__(
        self, kube: Kube, config: OperatorConfig, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock or utc_now
        self._token: tuple[float, str | None] = (0.0, None)
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()  # fingerprints seen (bounded)

    # ------------------------------------------------------------------ authentication

    async def expected_token(self) -> str | None:
        if self.config.alert_token_secret is None:
            return None
        fetched_at, token = self._token
        if time.monotonic() - fetched_at < TOKEN_TTL_S:
            return token
        namespace, name = self.config.alert_token_secret
        try:
            token = await secret_value(self.kube, namespace, name, "token")
        except ApiException as exc:
            if exc.status == 404:
                logger.warning("alert token Secret %s/%s not found; rejecting alerts", namespace, name)
                self._token = (time.monotonic(), None)
                return None
            raise ApiUnavailable(api_reason(exc)) from exc
        except (Urllib3Error, OSError) as exc:
            raise ApiUnavailable(type(exc).__name__) from exc
        self._token = (time.monotonic(), token)
        return token

    async def authorized(self, request: web.Request) -> str | None:
        """None if authorized, else the reason for a 401."""
        expected = await self.expected_token()
        if expected is None:
            return (
                "alert intake is not configured: start the operator with --alert-token-secret (key 'token')"
            )
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected.encode()):
            return "missing or wrong bearer token"
        return None

    # ------------------------------------------------------------------ the endpoint

    async def handle(self, request: web.Request) -> web.Response:
        try:
            refused = await self.authorized(request)
        except ApiUnavailable as exc:
            return _json(503, {"error": f"cannot read the alert token: API server unavailable ({exc})"})
        if refused:
            return _json(401, {"error": refused}, headers={"WWW-Authenticate": "Bearer"})
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
                results.append(await self.accept(alert))
            except ApiUnavailable as exc:
                logger.warning("alert intake: API server unavailable (%s); answering 503", exc)
                return _json(503, {"error": f"API server unavailable ({exc}); retry", "done": results})
        if payload.truncatedAlerts:
            logger.warning(
                "alert intake: Alertmanager truncated %d alerts of group %s",
                payload.truncatedAlerts,
                payload.groupKey,
            )
        return _json(200, {"results": results})

    async def accept(self, alert: alerts.Alert) -> dict[str, str]:
        metrics.alert_received(alert.status)
        action = alerts.plan_alert(
            alert, self.config.file.alertIntake, self.config.namespaces, self.config.own_namespace
        )
        if isinstance(action, alerts.Skip):
            return self._skipped(action.fingerprint, action.reason, action.code)
        try:
            outcome = await self.upsert(action)
        except ApiException as exc:
            if _unavailable(exc):
                raise ApiUnavailable(api_reason(exc)) from exc
            code, reason = "ApiError", f"namespace {action.namespace}: {api_reason(exc)}"
            if exc.status == 404:
                code, reason = "NamespaceNotFound", f"namespace {action.namespace} does not exist"
            elif exc.status == 403 and "exceeded quota" in str(exc.body or ""):
                # Answered 200 with the reason: a retry cannot succeed until someone raises the quota.
                code = "QuotaExceeded"
                reason = f"namespace {action.namespace}: the ResourceQuota on incidents is used up"
            elif exc.status == 403:
                code = "Forbidden"
                reason = f"namespace {action.namespace}: {api_reason(exc)}: {_status_message(exc)}"
            return self._skipped(action.fingerprint, reason, code)
        except (Urllib3Error, OSError) as exc:
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
        await self.kube.create_object("incidents", action.namespace, action.body(name, self.clock()))

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
        return str(json.loads(exc.body or "{}").get("message", ""))[:300]
    except (ValueError, AttributeError):
        return ""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body) + "\n", content_type="application/json", headers=headers
    )
