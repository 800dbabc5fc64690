"""Monthly reports that arrive by themselves (issue 23 item 7): the pure decision of what is due at a
given moment, the record that keeps each month's delivery to one, and the leader's pass against an
in-memory ConfigMap (claims with resourceVersion, another replica's claim respected)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from incident_operator.adapters.kube import ApiException, Kube
from incident_operator.controllers.notifier import Notifier
from incident_operator.controllers.reports import ReportDeliveries
from incident_operator.core import deliveries
from incident_operator.core.deliveries import Item, claimed, due, finished, report_month
from incident_operator.settings.config import FileConfig, ReportDelivery

DELIVERIES = (
    ReportDelivery(name="team", namespaces=("shop", "pay"), channels=("mail",)),
    ReportDelivery(name="all", all=True, channels=("mail", "hook")),
)


def at(day: int, month: int = 12, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, 5, tzinfo=UTC)


def test_the_previous_month_is_reported_on_the_first_day_and_caught_up_within_catch_up_days() -> None:
    assert report_month(at(1)) == "2026-11"
    assert report_month(at(1, month=1)) == "2025-12"
    items = due(at(1), DELIVERIES, {}, catch_up_days=3)
    assert sorted(i.key for i in items) == ["all/hook/*", "all/mail/*", "team/mail/pay", "team/mail/shop"]
    assert {i.month for i in items} == {"2026-11"}
    assert len(due(at(3, hour=23), DELIVERIES, {}, catch_up_days=3)) == 4  # the operator was down
    assert due(at(4), DELIVERIES, {}, catch_up_days=3) == []  # too late: not sent any more
    assert due(at(15), DELIVERIES, {}, catch_up_days=3) == []


def test_claimed_or_sent_is_not_due_again_and_failed_is_retried_a_bounded_number_of_times() -> None:
    item = Item("all", "hook", None, "2026-11")
    record = claimed({}, item, at(1))
    assert record["all/hook/*"]["state"] == "sending"
    assert item not in due(at(1), DELIVERIES, record, 3)  # claimed: never twice (at most once)
    sent = finished(record, item, at(1), None)
    assert item not in due(at(2), DELIVERIES, sent, 3)
    failed: dict[str, dict[str, Any]] = {}
    for attempt in range(1, deliveries.MAX_ATTEMPTS + 1):
        assert item in due(at(1), DELIVERIES, failed, 3)
        failed = finished(claimed(failed, item, at(1)), item, at(1), "HTTP 500 after 3 attempt(s)")
        assert failed["all/hook/*"]["attempts"] == attempt
    assert item not in due(at(1), DELIVERIES, failed, 3)  # given up for this month
    next_month = Item("all", "hook", None, "2026-12")
    assert next_month in due(datetime(2027, 1, 1, tzinfo=UTC), DELIVERIES, failed, 3)


def test_the_record_survives_its_encoding_and_an_unreadable_one_is_empty() -> None:
    item = Item("team", "mail", "shop", "2026-11")
    record = finished(claimed({}, item, at(1)), item, at(1), None)
    assert deliveries.decode(deliveries.encode(record)) == record
    assert deliveries.decode("not json") == {}
    assert deliveries.decode("[1]") == {}


def test_config_checks_scope_and_channels() -> None:
    channels = [
        {"name": "mail", "type": "email", "smtp": {"host": "smtp", "from": "a@b.c"}, "to": ["x@y.z"]},
        {"name": "chat", "type": "slack", "urlSecretRef": {"namespace": "o", "name": "s"}},
    ]
    ok = FileConfig.model_validate(
        {
            "notifications": {"channels": channels},
            "reports": {"deliver": [{"name": "monthly", "all": True, "channels": ["mail"]}]},
        }
    )
    assert ok.reports.deliver[0].all
    with pytest.raises(ValidationError, match="of type slack"):
        FileConfig.model_validate(
            {
                "notifications": {"channels": channels},
                "reports": {"deliver": [{"name": "m", "all": True, "channels": ["chat"]}]},
            }
        )
    with pytest.raises(ValidationError, match="unknown"):
        FileConfig.model_validate(
            {"reports": {"deliver": [{"name": "m", "all": True, "channels": ["nope"]}]}}
        )
    with pytest.raises(ValidationError, match="either namespaces or all"):
        ReportDelivery.model_validate({"name": "m", "namespaces": ["a"], "all": True, "channels": ["mail"]})
    with pytest.raises(ValidationError, match="either namespaces or all"):
        ReportDelivery.model_validate({"name": "m", "channels": ["mail"]})


# ----------------------------------------------------------------------------- the leader's pass


class FakeCore:
    """One ConfigMap with resourceVersion checks; `interloper` writes before the next replace."""

    def __init__(self) -> None:
        self.data: dict[str, str] | None = None
        self.version = 0
        self.interloper: dict[str, str] | None = None

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        if self.data is None:
            raise ApiException(status=404)
        return SimpleNamespace(
            data=copy.deepcopy(self.data), metadata=SimpleNamespace(resource_version=str(self.version))
        )

    def create_namespaced_config_map(self, namespace: str, body: dict[str, Any]) -> None:
        if self.data is not None:
            raise ApiException(status=409)
        self._interlope()
        if self.data is not None:
            raise ApiException(status=409)
        self.data, self.version = body["data"], self.version + 1

    def replace_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        self._interlope()
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise ApiException(status=409)
        self.data, self.version = body["data"], self.version + 1

    def _interlope(self) -> None:
        if self.interloper is not None:
            self.data, self.version, self.interloper = self.interloper, self.version + 1, None


class FakeKube:
    def __init__(self) -> None:
        self.core = FakeCore()
        self.objects = SimpleNamespace(list=self._list)

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result

    async def _list(self, plural: str, namespace: str | None, **query: Any) -> list[Any]:
        return []

    async def list_incidents(self, namespace: str | None) -> list[Any]:
        return []


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bool]] = []

    async def send_report(self, channel: Any, subject: str, plain: str, rich: str, body: Any) -> str | None:
        self.sent.append((channel.name, subject, "<img src='data:image/png;base64," in rich))
        return None


def deliverer(kube: FakeKube, notifier: FakeNotifier, now: datetime) -> ReportDeliveries:
    config = FileConfig.model_validate(
        {
            "notifications": {
                "channels": [
                    {
                        "name": "mail",
                        "type": "email",
                        "smtp": {"host": "smtp", "from": "a@b.c"},
                        "to": ["x@y.z"],
                    },
                    {"name": "hook", "type": "webhook", "urlSecretRef": {"namespace": "o", "name": "s"}},
                ]
            },
            "reports": {
                "deliver": [{"name": "monthly", "namespaces": ["shop"], "channels": ["mail", "hook"]}]
            },
        }
    )
    return ReportDeliveries(
        cast(Kube, kube),
        cast(Notifier, notifier),
        config.reports,
        notifications=config.notifications,
        namespace="incident-operator",
        clock=lambda: now,
    )


def test_a_pass_sends_each_item_once_and_a_restarted_leader_sends_nothing_again() -> None:
    kube, notifier = FakeKube(), FakeNotifier()
    done = asyncio.run(deliverer(kube, notifier, at(1)).once())
    assert [(i.key, e) for i, e in done] == [("monthly/mail/shop", None), ("monthly/hook/shop", None)]
    assert [(c, s) for c, s, _ in notifier.sent] == [
        ("mail", "Monthly incident report 2026-11 (namespace shop)"),
        ("hook", "Monthly incident report 2026-11 (namespace shop)"),
    ]
    assert notifier.sent[0][2]  # the email's HTML carries the chart
    record = deliveries.decode((kube.core.data or {})[deliveries.DATA_KEY])
    assert {k: v["state"] for k, v in record.items()} == {
        "monthly/mail/shop": "sent",
        "monthly/hook/shop": "sent",
    }
    again = asyncio.run(deliverer(kube, FakeNotifier(), at(1, hour=5)).once())  # a new process
    assert again == []


def test_a_claim_another_replica_made_first_is_respected() -> None:
    kube, notifier = FakeKube(), FakeNotifier()
    other = claimed({}, Item("monthly", "mail", "shop", "2026-11"), at(1))
    kube.core.interloper = {deliveries.DATA_KEY: deliveries.encode(other)}  # lands before our first write
    done = asyncio.run(deliverer(kube, notifier, at(1)).once())
    assert [i.key for i, _ in done] == ["monthly/hook/shop"]
    assert [c for c, _, _ in notifier.sent] == ["hook"]


class BrokenNotifier(FakeNotifier):
    async def send_report(self, channel: Any, subject: str, plain: str, rich: str, body: Any) -> str | None:
        raise OSError("connection reset by smtp.example:25 password=hunter2")


def test_an_unexpected_error_while_sending_marks_the_item_failed_not_stuck_in_sending() -> None:
    kube = FakeKube()
    done = asyncio.run(deliverer(kube, BrokenNotifier(), at(1)).once())
    assert [e for _, e in done] == ["the report could not be built or sent: OSError"] * 2
    record = deliveries.decode((kube.core.data or {})[deliveries.DATA_KEY])
    assert {v["state"] for v in record.values()} == {"failed"}
    assert "hunter2" not in str(record)
