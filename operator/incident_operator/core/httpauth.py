"""Who may read the operator's authenticated endpoints (`/metrics`, `/reports`, `/oncall`). Pure.

The shape is controller-runtime's (and kube-rbac-proxy's) for metrics: the request's bearer token
goes to the API server in a TokenReview, which answers with the user, groups and extra; a
SubjectAccessReview for that user then says whether it may do what the endpoint needs
(`Requirement`): `get` on the non-resource URL `/metrics`, `list incidents` in the namespace of a
report, or at cluster scope for the cluster-wide one. This module says what to ask and what the
answers mean, and remembers decisions briefly (`DecisionCache`, keyed by a hash of the token, never
the token) so that a scraper does not cost two API calls per scrape. Asking is an adapter's
(`adapters.reviews`); serving is the runtime's (`runtime.httpserver`).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any

from incident_operator.api.rbac import METRICS_PATH, METRICS_VERB, REPORT_READ, SCHEDULE_READ
from incident_operator.core.ttlcache import TtlCache

ALLOWED_TTL_S = 15.0
"""How long an allowed decision is reused: a revoked binding stops working within this."""
DENIED_TTL_S = 5.0
"""How long a refusal (unknown token, no permission) is reused: a new binding works within this."""
MAX_DECISIONS = 1024
"""Identities and allowed verdicts kept at most."""
MAX_REFUSALS = 256
"""Refusals (unknown tokens, no permission) kept at most, apart: a flood of random tokens evicts
only other refusals, never a scraper's allowed verdict."""
MAX_TOKEN_BYTES = 16384
"""Longer "tokens" are refused without asking the API server."""


class ReviewUnavailable(Exception):
    """The API server did not answer a TokenReview or SubjectAccessReview, or its authorizer failed
    (the request gets a 503; nothing is remembered)."""


class UnsureToken(Exception):
    """The TokenReview did not authenticate the token and gave an error (an expired or badly signed
    token, or an authenticator that failed): refused with a 401, as the API server itself does, but
    not remembered, so a passing failure does not stick."""


@dataclass(frozen=True)
class User:
    """An identity as a TokenReview returns it, to be put into a SubjectAccessReview."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(
        cls, name: str, uid: str | None, groups: list[str] | None, extra: dict[str, list[str]] | None
    ) -> User:
        return cls(
            name=name,
            uid=uid or "",
            groups=tuple(groups or ()),
            extra=tuple(sorted((k, tuple(v or ())) for k, v in (extra or {}).items())),
        )


@dataclass(frozen=True)
class Requirement:
    """What an endpoint needs: `verb` on a non-resource `path`, or on `resource.group` in
    `namespace` ("" is cluster scope)."""

    verb: str
    path: str = ""
    resource: str = ""
    group: str = ""
    namespace: str = ""
    name: str = ""
    """One object of the resource (`get` of one OnCallSchedule); "" is any."""

    def describe(self) -> str:
        if self.path:
            return f"{self.verb} on {self.path}"
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.name:
            resource = f"{resource} {self.name}"
        where = f"in namespace {self.namespace}" if self.namespace else "at cluster scope"
        return f"{self.verb} {resource} {where}"

    def review_spec(self, user: User) -> dict[str, Any]:
        """The `spec` of a SubjectAccessReview (authorization.k8s.io/v1) asking this for `user`."""
        spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups)}
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        if self.path:
            spec["nonResourceAttributes"] = {"path": self.path, "verb": self.verb}
        else:
            attributes = {"verb": self.verb, "group": self.group, "resource": self.resource}
            if self.namespace:
                attributes["namespace"] = self.namespace
            if self.name:
                attributes["name"] = self.name
            spec["resourceAttributes"] = attributes
        return spec


METRICS = Requirement(METRICS_VERB, path=METRICS_PATH)


def schedule_reader(namespace: str, name: str) -> Requirement:
    """`/oncall/NS/NAME.ics` with a bearer token needs `get` on that OnCallSchedule."""
    return Requirement(
        SCHEDULE_READ.verb,
        resource=SCHEDULE_READ.resource,
        group=SCHEDULE_READ.group,
        namespace=namespace,
        name=name,
    )


def report_reader(namespace: str | None) -> Requirement:
    """`/reports/YYYY-MM?namespace=NS` needs `list incidents` in NS; without a namespace (every
    namespace) at cluster scope."""
    return Requirement(
        REPORT_READ.verb, resource=REPORT_READ.resource, group=REPORT_READ.group, namespace=namespace or ""
    )


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    """A short text for the response; never the API server's words, never the token."""

    @property
    def status(self) -> int:
        return {Outcome.ALLOWED: 200, Outcome.UNAUTHENTICATED: 401, Outcome.FORBIDDEN: 403}[self.outcome]


NO_TOKEN = Verdict(
    Outcome.UNAUTHENTICATED, "unauthorized: send a Kubernetes bearer token (Authorization: Bearer TOKEN)"
)
BAD_TOKEN = Verdict(Outcome.UNAUTHENTICATED, "unauthorized: the API server does not accept this token")
UNAVAILABLE = "cannot check the token right now: the API server does not answer; try again"
BUSY = "too many token checks at once; try again shortly"


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header; None without one (or an empty,
    oversized or multi-word one)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > MAX_TOKEN_BYTES:
        return None
    return token


def decide(user: User | None, allowed: bool | None, requirement: Requirement) -> Verdict:
    """The verdict from the TokenReview's user (None: not authenticated) and the access review's
    answer (None: not asked)."""
    if user is None:
        return BAD_TOKEN
    if not allowed:
        return Verdict(Outcome.FORBIDDEN, f"forbidden: this needs {requirement.describe()}")
    return Verdict(Outcome.ALLOWED, "allowed")


def token_key(token: str) -> str:
    """What the cache keeps of a token: its SHA-256, so the cache never holds a credential."""
    return hashlib.sha256(token.encode()).hexdigest()


class DecisionCache:
    """Who a token is and verdicts by (hash of the token, requirement): identities and allowed
    verdicts for ALLOWED_TTL_S, at most MAX_DECISIONS; refusals (unknown tokens, no permission) for
    DENIED_TTL_S, at most MAX_REFUSALS, apart, so that refusals evict only refusals. The API
    server's failures are not verdicts: never kept."""

    def __init__(
        self,
        *,
        allowed_ttl: float = ALLOWED_TTL_S,
        denied_ttl: float = DENIED_TTL_S,
        max_entries: int = MAX_DECISIONS,
        max_refusals: int = MAX_REFUSALS,
    ) -> None:
        self.allowed_ttl, self.denied_ttl = allowed_ttl, denied_ttl
        self._users: TtlCache[str, User] = TtlCache(max_entries)
        self._allowed: TtlCache[tuple[str, Requirement], Verdict] = TtlCache(max_entries)
        self._refused: TtlCache[tuple[str, Requirement | None], Verdict] = TtlCache(max_refusals)
        """Unknown tokens under (hash, None), missing permissions under (hash, requirement)."""

    def user(self, token: str, now: float) -> User | Verdict | None:
        """The token's identity, or the refusal of an unknown token; None if not known now."""
        key = token_key(token)
        return self._users.get(key, now) or self._refused.get((key, None), now)

    def put_user(self, token: str, user: User | None, now: float) -> None:
        """Remember the TokenReview's answer (None: the token is not authenticated)."""
        if user is None:
            self._refused.put((token_key(token), None), BAD_TOKEN, now, self.denied_ttl)
        else:
            self._users.put(token_key(token), user, now, self.allowed_ttl)

    def get(self, token: str, requirement: Requirement, now: float) -> Verdict | None:
        key = (token_key(token), requirement)
        return self._allowed.get(key, now) or self._refused.get(key, now)

    def put(self, token: str, requirement: Requirement, verdict: Verdict, now: float) -> None:
        key = (token_key(token), requirement)
        if verdict.outcome is Outcome.ALLOWED:
            self._allowed.put(key, verdict, now, self.allowed_ttl)
        else:
            self._refused.put(key, verdict, now, self.denied_ttl)

    def __len__(self) -> int:
        return len(self._users) + len(self._allowed) + len(self._refused)
