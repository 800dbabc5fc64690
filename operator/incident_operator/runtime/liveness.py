"""What `/healthz` answers: the process serves, unless a task it cannot work without has ended.

The operator's own long-running tasks (the watch of Incidents, the Event posters, the run
recorder, retention, the report deliveries) retry every error they expect themselves and end only
when cancelled on the way out. One that ends otherwise (a bug) leaves a process that looks healthy
and no longer does its work: incidents unwatched, Events unposted. `Liveness.guard` notices the
end, logs it as critical and turns `/healthz` to 503 naming the task, so the kubelet's liveness
probe restarts the container, which starts from a fresh listing (an in-process restart would keep
whatever state the bug left).
"""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger(__name__)


class Liveness:
    """The first essential task that ended unexpectedly, if any (shared by the HTTP server and the
    kopf run that starts the tasks)."""

    def __init__(self) -> None:
        self.failed: str | None = None

    def fail(self, what: str, error: BaseException | None = None) -> None:
        """`what` ended: said at once (with `error` in the log only: an exception's text may carry
        an API answer); `/healthz` answers 503 naming the first `what` from now on."""
        logger.critical(
            "%s ended: /healthz answers 503 so that the operator is restarted", what, exc_info=error
        )
        if self.failed is None:
            self.failed = f"{what} ended"

    def guard(self, task: asyncio.Task[None], what: str) -> asyncio.Task[None]:
        """Fail when `task` (which runs until cancelled) ends any other way; returns it."""

        def ended(done: asyncio.Task[None]) -> None:
            if not done.cancelled():
                self.fail(what, done.exception())

        task.add_done_callback(ended)
        return task
