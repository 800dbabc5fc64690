"""TokenReview and SubjectAccessReview for the operator's authenticated endpoints: the two API calls
behind `/metrics` and `/reports` (what they mean is `core.httpauth`'s, when to ask `runtime.guard`'s).

Calls are `Kube`'s coroutines (nothing blocks the event loop). Any failure to get an answer (the
API server down, a timeout, a refusal of the operator's own request) is `ReviewUnavailable`: logged
here with the status only, never the token, and turned into a fixed 503 text by the caller; so is
a SubjectAccessReview that an authorizer failed to evaluate (`evaluationError`, not allowed, not
denied), never remembered as a refusal. A TokenReview that answers with an error and no user is
`UnsureToken`: a 401, as the API server gives such a token, but not remembered either.
"""

from __future__ import annotations

import logging

from kubernetes_asyncio import client

from incident_operator.adapters.kube import ApiException, Kube, api_reason
from incident_operator.core.httpauth import Requirement, ReviewUnavailable, UnsureToken, User

logger = logging.getLogger(__name__)

REVIEW_TIMEOUT_S = 5


class Reviews:
    """Asks the API server who a bearer token is, and whether that identity may do something."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.authn = client.AuthenticationV1Api(kube.api)
        self.authz = client.AuthorizationV1Api(kube.api)

    async def authenticate(self, token: str) -> User | None:
        """The token's user (TokenReview, authentication.k8s.io/v1); None if not authenticated."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        try:
            review = await self.kube.call(
                self.authn.create_token_review, body, _request_timeout=REVIEW_TIMEOUT_S
            )
        except Exception as exc:
            raise _unavailable("TokenReview", exc) from None
        status = review.status
        user = status.user if status is not None and status.authenticated else None
        if user is None or not user.username:
            if status is not None and status.error:
                # An expired or badly signed token, or an authenticator that failed: the API server
                # itself answers 401 to such a token; so do we, but without remembering it.
                logger.info("TokenReview did not authenticate a token (%s)", str(status.error)[:200])
                raise UnsureToken
            return None
        return User.of(str(user.username), user.uid, user.groups, user.extra)

    async def authorize(self, user: User, requirement: Requirement) -> bool:
        """Whether `user` may do `requirement` (SubjectAccessReview, authorization.k8s.io/v1)."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": requirement.review_spec(user),
        }
        try:
            review = await self.kube.call(
                self.authz.create_subject_access_review, body, _request_timeout=REVIEW_TIMEOUT_S
            )
        except Exception as exc:
            raise _unavailable("SubjectAccessReview", exc) from None
        status = review.status
        if status is None:
            return False
        if not status.allowed and not status.denied and status.evaluation_error:
            # An authorizer failed (a webhook down, say) and none allowed: the API server itself
            # answers 500 then, not 403. Unavailable: a 503, and not remembered as a refusal.
            logger.warning(
                "SubjectAccessReview could not be evaluated (%s): the endpoint answers 503",
                str(status.evaluation_error)[:200],
            )
            raise ReviewUnavailable("SubjectAccessReview: evaluation error")
        return bool(status.allowed)


def _unavailable(kind: str, exc: Exception) -> ReviewUnavailable:
    why = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
    logger.warning("%s failed (%s): the endpoint answers 503", kind, why)
    return ReviewUnavailable(f"{kind}: {why}")
