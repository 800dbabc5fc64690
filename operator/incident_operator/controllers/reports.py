"""Monthly reports delivered to channels (config `reports.deliver`), on the leader only.

Started with kopf (which runs on the leader alone), a pass every `reports.intervalSeconds`: what is
due is `core.deliveries.due`'s decision at the scheduler's clock (`reports.testingNow` for tests,
else the real one); each item is claimed in the record ConfigMap (`reports.recordConfigMap` in the
operator's namespace) with the resourceVersion it was read at, then built (`core.report`, from the
Incidents and the month's IncidentArchives, as `/reports` builds it), sent
(`Notifier.send_report`: email gets the HTML with its chart, webhooks the JSON), and marked sent or
failed. A claim that conflicts reads the record again and decides again, so of two replicas (a
leader handover in the middle of a pass) one sends. At most once: see `core.deliveries`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from incident_operator.adapters import metrics
from incident_operator.adapters.kube import ApiException, Kube, api_reason
from incident_operator.adapters.recordmap import RecordMap
from incident_operator.api.keys import LABEL_ARCHIVE_MONTH
from incident_operator.api.timestamps import utc_now
from incident_operator.controllers.notifier import Notifier
from incident_operator.core import archive, deliveries, report
from incident_operator.core.deliveries import Item
from incident_operator.settings.config import Notifications, ReportsConfig

logger = logging.getLogger(__name__)

WRITE_ATTEMPTS = 5

Record = dict[str, dict[str, Any]]


class ReportDeliveries:
    """The leader's deliveries of monthly reports."""

    def __init__(
        self,
        kube: Kube,
        notifier: Notifier,
        config: ReportsConfig,
        *,
        notifications: Notifications,
        namespace: str,
        watched: tuple[str, ...] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.kube, self.notifier, self.config = kube, notifier, config
        self.channels = {c.name: c for c in notifications.channels}
        self.store = RecordMap(kube, namespace, config.recordConfigMap, deliveries.DATA_KEY)
        self.watched = watched
        testing = config.testingNow
        self.clock = clock or ((lambda: testing) if testing is not None else utc_now)

    async def run(self) -> None:
        """A pass now, then every `intervalSeconds`; an error is logged and the next pass tries again."""
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = api_reason(exc) if isinstance(exc, ApiException) else type(exc).__name__
                logger.warning(
                    "report deliveries: pass failed (%s); next in %ss", reason, self.config.intervalSeconds
                )
            await asyncio.sleep(self.config.intervalSeconds)

    async def once(self) -> list[tuple[Item, str | None]]:
        """One pass: every item due sent at most once. Returns what was tried, with its error."""
        now = self.clock()
        record, _ = await self.read()
        done: list[tuple[Item, str | None]] = []
        for item in deliveries.due(now, self.config.deliver, record, self.config.catchUpDays):
            if not await self._claim(item, now):
                continue
            error = await self._send(item, now)
            await self._finish(item, now, error)
            metrics.REPORT_DELIVERIES.labels(result="sent" if error is None else "failed").inc()
            if error is None:
                logger.info("report %s for %s sent to channel %s", item.key, item.month, item.channel)
            else:
                logger.warning("report %s for %s not sent: %s", item.key, item.month, error)
            done.append((item, error))
        metrics.REPORT_PASSES.inc()
        return done

    async def read(self) -> tuple[Record, str | None]:
        """The record and its resourceVersion (None: no ConfigMap yet)."""
        text, version = await self.store.read()
        return deliveries.decode(text), version

    async def _write(self, record: Record, version: str | None) -> bool:
        """Create or replace the record with `version`; False when another writer came first."""
        return await self.store.write(deliveries.encode(record), version)

    async def _claim(self, item: Item, now: datetime) -> bool:
        """Claim `item` (state sending) unless someone else did or it is no longer due."""
        for _ in range(WRITE_ATTEMPTS):
            record, version = await self.read()
            still = deliveries.due(now, self.config.deliver, record, self.config.catchUpDays)
            if item not in still:
                return False
            if await self._write(deliveries.claimed(record, item, now), version):
                return True
        raise RuntimeError(f"the record {self.config.recordConfigMap} kept changing")

    async def _finish(self, item: Item, now: datetime, error: str | None) -> None:
        for _ in range(WRITE_ATTEMPTS):
            record, version = await self.read()
            if await self._write(deliveries.finished(record, item, now, error), version):
                return
        raise RuntimeError(f"the record {self.config.recordConfigMap} kept changing")

    async def _incidents(self, namespace: str | None, month: str) -> list[Mapping[str, Any]]:
        """The live incidents and the month's archived ones of `namespace` (None: every watched one)."""
        scopes: tuple[str | None, ...] = (
            (namespace,) if namespace is not None or not self.watched else self.watched
        )
        live: list[Mapping[str, Any]] = []
        archived: list[Mapping[str, Any]] = []
        for scope in scopes:
            live += await self.kube.list_incidents(scope)
            archived += await self.kube.call(
                self.kube.objects.list, archive.PLURAL, scope, label_selector=f"{LABEL_ARCHIVE_MONTH}={month}"
            )
        return archive.history(live, archived)

    async def _send(self, item: Item, now: datetime) -> str | None:
        channel = self.channels.get(item.channel)
        if channel is None:  # the config validates this; a reload could still drop one
            return f"no channel {item.channel}"
        year, month = report.parse_month(item.month)
        try:
            incidents = await self._incidents(item.namespace, item.month)
        except ApiException as exc:
            return f"the incidents could not be listed: {api_reason(exc)}"
        try:
            built = report.build(incidents, year, month, now, item.namespace)
            plain = report.to_markdown(built)
            rich = await asyncio.to_thread(report.to_html, built) if channel.type == "email" else ""
            body = {
                "event": "report",
                "month": item.month,
                "namespace": item.namespace,
                "delivery": item.delivery,
                "report": built.to_json(),
            }
            return await self.notifier.send_report(channel, deliveries.subject(item), plain, rich, body)
        except Exception as exc:  # any failure marks the item failed: the bounded retry applies
            # the type only: a message could carry a URL with a key or an SMTP reply
            return f"the report could not be built or sent: {type(exc).__name__}"
