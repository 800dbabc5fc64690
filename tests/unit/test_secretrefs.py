"""Secrets a Playbook names are used only where their owner shared them, for the hosts they list."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from incident_operator.adapters.kube import ApiException, Kube, SecretView
from incident_operator.api.keys import SECRET_HOSTS_ANNOTATION, SECRET_SHARED_LABEL
from incident_operator.api.reasons import Reason
from incident_operator.controllers.actions import shared_secret
from incident_operator.core.planner import Outcome
from incident_operator.core.secretrefs import host_allowed, refusal

SHARED = {SECRET_SHARED_LABEL: "true"}


def hosts(value: str) -> dict[str, str]:
    return {SECRET_HOSTS_ANNOTATION: value}


@pytest.mark.parametrize(
    ("patterns", "host", "allowed"),
    [
        (["hooks.example.com"], "hooks.example.com", True),
        (["hooks.example.com"], "HOOKS.Example.com.", True),
        (["hooks.example.com"], "evil.example.com", False),
        (["hooks.example.com"], "hooks.example.com.evil.net", False),
        (["*.example.com"], "a.b.example.com", True),
        (["*.example.com"], "example.com", False),
        (["*.example.com"], "badexample.com", False),
        ([], "hooks.example.com", False),
    ],
)
def test_hosts_match_exactly_or_as_subdomains_of_a_wildcard(
    patterns: list[str], host: str, allowed: bool
) -> None:
    assert host_allowed(patterns, host) is allowed


def test_a_secret_without_the_label_is_refused_whatever_its_annotation_says() -> None:
    said = refusal("shop/db", "headersSecretRef", {}, hosts("hooks.example.com"), "hooks.example.com")
    assert said is not None
    assert said.startswith("Secret shop/db (headersSecretRef) is not shared with playbooks")
    assert SECRET_SHARED_LABEL in said
    wrong_value = refusal("shop/db", "f", {SECRET_SHARED_LABEL: "yes"}, hosts("h"), "h")
    assert wrong_value is not None


def test_a_shared_secret_goes_only_to_the_hosts_it_lists() -> None:
    assert (
        refusal("shop/hook", "urlSecretRef", SHARED, hosts("hooks.example.com, *.slack.com"), "x.slack.com")
        is None
    )
    said = refusal("shop/hook", "urlSecretRef", SHARED, hosts("hooks.example.com"), "attacker.example.net")
    assert said == (
        "Secret shop/hook (urlSecretRef) may not be sent to attacker.example.net: "
        f"annotation {SECRET_HOSTS_ANNOTATION} allows hooks.example.com"
    )
    assert refusal("shop/hook", "urlSecretRef", SHARED, {}, "hooks.example.com") is not None  # none listed
    assert refusal("shop/hook", "urlSecretRef", SHARED, hosts("*"), "hooks.example.com") is not None
    assert refusal("shop/hook", "urlSecretRef", SHARED, hosts("h"), None) is not None


class Secrets:
    """The one Kube method `shared_secret` uses: Secrets by name, 404 for others."""

    def __init__(self, **secrets: SecretView) -> None:
        self.secrets = secrets

    async def secret(self, namespace: str, name: str) -> SecretView:
        if name not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        return self.secrets[name]


def shared(kube: Any, name: str, **where: Any) -> dict[str, str] | Outcome:
    field = "urlSecretRef" if "key" in where else "headersSecretRef"
    where.setdefault("url", None)
    return asyncio.run(shared_secret(cast(Kube, kube), "shop", name, field, **where))


def test_a_step_waits_as_misconfigured_on_a_secret_it_may_not_use_and_never_fails() -> None:
    kube = Secrets(
        db=SecretView({}, {}, {"password": "hunter2"}),
        hook=SecretView(SHARED, hosts("hooks.example.com"), {"url": "https://hooks.example.com/T/x"}),
        headers=SecretView(SHARED, hosts("status.example.com"), {"Authorization": "Bearer t"}),
    )
    for outcome in (
        shared(kube, "db", key="password"),  # not shared: whatever the author points it at
        shared(kube, "absent", key="url"),
        shared(kube, "hook", key="nope"),
        shared(kube, "headers", url="https://attacker.example.net/collect"),
    ):
        assert isinstance(outcome, Outcome)
        assert outcome.blocked is Reason.MISCONFIGURED
        assert not outcome.ok
        assert "hunter2" not in outcome.message
        assert "Bearer" not in outcome.message
    assert shared(kube, "hook", key="url") == {"url": "https://hooks.example.com/T/x"}
    assert shared(kube, "headers", url="https://status.example.com/api") == {"Authorization": "Bearer t"}
