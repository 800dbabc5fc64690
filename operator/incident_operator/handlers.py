"""Kopf handlers. For now: the single startup handler that configures the framework.

Everything kopf-specific is set here and nowhere else: watch and request timeouts, the
finalizer name and progress-storage prefix (our own, so they never collide with another
Kopf operator), and the level of Events kopf posts. Nothing here connects at import time.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from incident_operator import API_GROUP

ANNOTATION_PREFIX = API_GROUP
FINALIZER = f"{API_GROUP}/finalizer"

# Watches are re-established at least this often, so a silently broken connection heals.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 30


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "incident-operator"
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
