"""Secrets a Playbook names, used only where their owner shared them. Pure.

A Playbook author may write `headersSecretRef` or `notify.*.urlSecretRef`, and the operator reads
Secrets with its own rights; without a rule it would be a confused deputy, sending any Secret of
the namespace to any URL the author writes. So a Secret is used only when it says so itself:
the label `incident-operator.dev/shared-with-playbooks: "true"` (only someone who may write
Secrets can set it), and the annotation `incident-operator.dev/allowed-hosts` naming the hosts
its values may be sent to (exact host names, or `*.example.com` for the subdomains of one).
Anything else is a misconfiguration the step waits on (`Stalled`/`Misconfigured`), never a
failure.
"""

from __future__ import annotations

from collections.abc import Mapping

from incident_operator.api.keys import SECRET_HOSTS_ANNOTATION, SECRET_SHARED_LABEL


def allowed_hosts(annotations: Mapping[str, str]) -> list[str]:
    raw = annotations.get(SECRET_HOSTS_ANNOTATION) or ""
    return [h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip()]


def host_allowed(patterns: list[str], host: str) -> bool:
    """Whether `host` is one of `patterns`: equal, or a subdomain of a `*.` pattern."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def refusal(
    secret: str,
    field: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    host: str | None,
) -> str | None:
    """Why Secret `secret` (namespace/name), named in `field`, may not be sent to `host`, or None."""
    if labels.get(SECRET_SHARED_LABEL) != "true":
        return (
            f"Secret {secret} ({field}) is not shared with playbooks: its owner must label it "
            f'{SECRET_SHARED_LABEL}="true" and list the hosts in annotation {SECRET_HOSTS_ANNOTATION}'
        )
    if not host:
        return f"Secret {secret} ({field}): the URL has no host"
    patterns = allowed_hosts(annotations)
    if not host_allowed(patterns, host):
        listed = ", ".join(patterns) if patterns else "none"
        return (
            f"Secret {secret} ({field}) may not be sent to {host}: "
            f"annotation {SECRET_HOSTS_ANNOTATION} allows {listed}"
        )
    return None
