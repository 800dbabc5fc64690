"""The intake's answers when the API server is unreachable: 503, so Alertmanager retries and no
alert is lost; and which namespaces a request's token may open incidents in. A stand-in for the
API client raises the connection errors a real one raises, or holds Secrets and Incidents in
memory; the HTTP side is the real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from incident_operator.adapters.kube import ApiException
from incident_operator.controllers import intake as intake_module
from incident_operator.controllers.intake import Intake
from incident_operator.runtime.httpserver import build_app, start_server
from incident_operator.settings.config import FileConfig, OperatorConfig


class Methods:
    """Stands in for an API group: every method is just its name."""

    def __getattr__(self, name: str) -> str:
        return name


class UnreachableApi:
    """Every call fails as the official client does when the API server is down."""

    core = custom = Methods()

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise aiohttp.ServerDisconnectedError()  # a transport failure, not an OSError

    async def list_objects(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("list_objects", *args, **kwargs)

    async def create_object(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("create_object", *args, **kwargs)

    async def patch_object(self, *args: Any, **kwargs: Any) -> Any:
        return await self.call("patch_object", *args, **kwargs)


class TokenOnlyApi(UnreachableApi):
    """The token Secret can be read; everything else fails."""

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn == "read_namespaced_secret":
            return type("Secret", (), {"data": {"token": "dG9rZW4="}})()  # base64("token")
        return await super().call(fn, *args, **kwargs)


def post(kube: Any, body: dict[str, Any], config: OperatorConfig | None = None) -> tuple[int, dict[str, Any]]:
    return post_each(kube, body, config, ("token",))[0]


def post_each(
    kube: Any, body: dict[str, Any], config: OperatorConfig | None, tokens: tuple[str, ...]
) -> list[tuple[int, dict[str, Any]]]:
    """POST the body once per token (one intake, so its token cache is shared)."""
    config = config or OperatorConfig(alert_token_secret=("ops", "alert-token"))

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        app = build_app(asyncio.Event(), Intake(kube, config))
        runner = await start_server(app, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        answers = []
        try:
            async with aiohttp.ClientSession() as session:
                for token in tokens:
                    headers = {"Authorization": f"Bearer {token}"}
                    async with session.post(
                        f"http://127.0.0.1:{port}/alertmanager", json=body, headers=headers
                    ) as resp:
                        answers.append((resp.status, json.loads(await resp.text())))
        finally:
            await runner.cleanup()
        return answers

    return asyncio.run(scenario())


PAYLOAD = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {"status": "firing", "labels": {"alertname": "ServiceDown", "namespace": "shop"}, "fingerprint": "ab"}
    ],
}


def test_an_unreadable_token_secret_answers_503() -> None:
    status, body = post(UnreachableApi(), PAYLOAD)
    assert status == 503
    assert "API server unavailable" in body["error"]


def test_an_unwritable_incident_answers_503_so_the_alert_is_retried() -> None:
    status, body = post(TokenOnlyApi(), PAYLOAD)
    assert status == 503
    assert body["done"] == []
    assert "retry" in body["error"]


# --------------------------------------------------------------------------- tokens bound to namespaces


class InMemoryApi(UnreachableApi):
    """Secrets by (namespace, name), and Incidents created in memory; a Secret named in
    `unreadable` answers as an API server that is down."""

    def __init__(self, secrets: dict[tuple[str, str], dict[str, str]], unreadable: tuple[str, ...] = ()):
        self.secrets = secrets
        self.unreadable = unreadable
        self.created: list[tuple[str, str]] = []

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn != "read_namespaced_secret":
            return await super().call(fn, *args, **kwargs)
        name, namespace = args
        if name in self.unreadable:
            raise ApiException(status=503, reason="Service Unavailable")
        if (namespace, name) not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        data = {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[namespace, name].items()}
        return type("Secret", (), {"data": data})()

    async def create_object(self, plural: str, namespace: str, body: dict[str, Any]) -> Any:
        self.created.append((namespace, body["metadata"]["name"]))
        return body

    async def list_objects(self, *args: Any, **kwargs: Any) -> Any:
        return []


def bound_config(**intake: Any) -> OperatorConfig:
    tokens = [
        {"secretRef": {"namespace": "ops", "name": "alert-tokens", "key": "team-a"}, "namespaces": ["a"]},
        {"secretRef": {"namespace": "ops", "name": "alert-token-b"}, "namespaces": ["b", "b2"]},
    ]
    return OperatorConfig(
        alert_token_secret=("ops", "alert-token"),
        file=FileConfig.model_validate({"alertIntake": {"tokens": tokens, **intake}}),
    )


SECRETS = {
    ("ops", "alert-token"): {"token": "single"},
    ("ops", "alert-tokens"): {"team-a": "token-a"},
    ("ops", "alert-token-b"): {"token": "token-b"},
}


def batch(*namespaces: str) -> dict[str, Any]:
    alerts = [
        {"status": "firing", "labels": {"alertname": "Down", "namespace": ns}, "fingerprint": f"f{i}"}
        for i, ns in enumerate(namespaces)
    ]
    return {"version": "4", "status": "firing", "alerts": alerts}


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("incident_operator_alerts_skipped_total", {"reason": reason}) or 0.0


def test_a_bound_token_opens_incidents_in_its_namespaces_and_skips_the_others() -> None:
    kube = InMemoryApi(SECRETS)
    before = skipped("NotAllowedForToken")
    ((status, body),) = post_each(kube, batch("b", "a", "b2"), bound_config(), ("token-b",))
    assert status == 200  # never an error for the whole batch
    assert [(r["result"], r.get("code")) for r in body["results"]] == [
        ("created", None),
        ("skipped", "NotAllowedForToken"),
        ("created", None),
    ]
    assert body["results"][1]["reason"] == "namespace a is not one this token may open incidents in"
    assert kube.created == [("b", "alert-f0"), ("b2", "alert-f2")]
    assert skipped("NotAllowedForToken") == before + 1


def test_the_single_token_is_bound_to_none_and_an_unknown_token_is_refused() -> None:
    kube = InMemoryApi(SECRETS)
    answers = post_each(kube, batch("a", "b"), bound_config(), ("single", "token-a", "nope", ""))
    (single, team_a, unknown, empty) = answers
    assert [r["result"] for r in single[1]["results"]] == ["created", "created"]
    assert [r.get("code") for r in team_a[1]["results"]] == [None, "NotAllowedForToken"]
    assert (unknown[0], unknown[1]["error"]) == (401, "missing or wrong bearer token")
    assert empty[0] == 401
    # alertIntake.namespaces still applies to the single token and to a bound one.
    kube = InMemoryApi(SECRETS)
    answers = post_each(kube, batch("a", "b"), bound_config(namespaces=["b"]), ("single", "token-a"))
    assert [r.get("code") for r in answers[0][1]["results"]] == ["NotAllowed", None]
    assert [r.get("code") for r in answers[1][1]["results"]] == ["NotAllowed", "NotAllowedForToken"]


def test_every_configured_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = intake_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return bool(real(a, b))

    monkeypatch.setattr(intake_module.hmac, "compare_digest", counting)
    post_each(InMemoryApi(SECRETS), batch("a"), bound_config(), ("single",))
    # The first token matched, and the others were compared all the same (no early exit).
    assert sorted(compared) == [b"single", b"token-a", b"token-b"]


def test_a_missing_token_secret_refuses_only_its_token_and_an_unreadable_one_answers_503() -> None:
    secrets = {k: v for k, v in SECRETS.items() if k != ("ops", "alert-token-b")}
    answers = post_each(InMemoryApi(secrets), batch("a"), bound_config(), ("token-a", "token-b"))
    assert [status for status, _ in answers] == [200, 401]
    # A Secret the API server cannot give now: a token that matched another is answered; one that
    # matched none may be that one's, so 503 (Alertmanager retries), never a 401 that loses it.
    kube = InMemoryApi(SECRETS, unreadable=("alert-token-b",))
    answers = post_each(kube, batch("a"), bound_config(), ("token-a", "token-b"))
    assert [status for status, _ in answers] == [200, 503]
    # Nothing configured, or no Secret there: 401 with what to do.
    status, body = post(InMemoryApi({}), batch("a"), bound_config())
    assert status == 401
    assert "alertIntake.tokens" in body["error"]


# --------------------------------------------------------------------------- no API words in answers

API_WORDS = ("HTTP 403", "Forbidden", "is forbidden", "s3cr3t", "alert-token", "ops/")


class RefusingApi(InMemoryApi):
    """The token Secret's read is refused (403) when `secret_refused`; creating an incident is
    refused with `create_status` and the API server's message (which names things it should not)."""

    def __init__(self, secret_refused: bool = False, create_status: int = 403, message: str = "") -> None:
        super().__init__({("ops", "alert-token"): {"token": "token"}})
        self.secret_refused, self.create_status, self.message = secret_refused, create_status, message

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn == "read_namespaced_secret" and self.secret_refused:
            raise ApiException(status=403, reason="Forbidden")
        return await super().call(fn, *args, **kwargs)

    async def create_object(self, plural: str, namespace: str, body: dict[str, Any]) -> Any:
        error = ApiException(status=self.create_status, reason="Forbidden")
        error.body = json.dumps({"message": self.message}).encode()  # the client keeps the bytes
        raise error


def test_a_refused_token_secret_is_a_503_without_the_api_servers_words() -> None:
    status, body = post(RefusingApi(secret_refused=True), PAYLOAD)
    assert (status, body) == (503, {"error": intake_module.AUTH_UNAVAILABLE})


@pytest.mark.parametrize(
    ("create_status", "message", "code"),
    [
        (403, 'secrets "s3cr3t" is forbidden: User "x" cannot create', "Forbidden"),
        (403, "exceeded quota: incidents, requested: count/incidents=1, used: 10, s3cr3t", "QuotaExceeded"),
        (422, "admission webhook s3cr3t denied the request", "ApiError"),
    ],
)
def test_a_refused_incident_has_a_fixed_reason_and_its_code(
    create_status: int, message: str, code: str
) -> None:
    status, body = post(RefusingApi(create_status=create_status, message=message), PAYLOAD)
    assert status == 200
    (result,) = body["results"]
    assert (result["result"], result["code"]) == ("skipped", code)
    assert result["reason"].startswith("namespace shop: ")
    for word in API_WORDS:
        assert word not in result["reason"], word
