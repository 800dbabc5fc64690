"""`controllers.people` against an in-memory API: the mail count read back from the schedule's
status after a restart, handoffs claimed with the resourceVersion (a lost claim sends nothing), and
announced once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from incident_operator.adapters.kube import ApiException
from incident_operator.api.timestamps import format_time
from incident_operator.controllers.people import Handoffs, People, ScheduleBook
from incident_operator.core.paging import Addressee
from incident_operator.settings.config import FileConfig

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SMTP = {"host": "127.0.0.1", "port": 2525, "security": "none", "from": "io@example.com"}
CONFIG = FileConfig.model_validate(
    {
        "notifications": {
            "channels": [{"name": "mail", "type": "email", "smtp": SMTP, "to": ["team@example.com"]}]
        },
        "oncall": {
            "allowedEmailDomains": ["example.com"],
            "maxMailsPerPersonPerHour": 3,
            "channels": ["mail"],
        },
    }
)
SPEC = {
    "timeZone": "UTC",
    "people": [{"name": "dave", "email": "dave@example.com"}, {"name": "erin", "email": "erin@example.com"}],
    "layers": [
        {"name": "daily", "start": "2026-11-30T08:00:00Z", "rotation": "P1D", "people": ["dave", "erin"]}
    ],
}


class Api:
    """The calls `controllers.people` makes; a status patch carrying an older resourceVersion is a 409."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    async def patch_object_status(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> Any:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != self.body["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.patches.append(body)
        self.body = {
            **self.body,
            "metadata": {
                **self.body["metadata"],
                "resourceVersion": str(int(self.body["metadata"]["resourceVersion"]) + 1),
            },
            "status": {**(self.body.get("status") or {}), **body["status"]},
        }
        return self.body

    async def post_event(self, involved: Any, type_: str, reason: str, message: str, when: datetime) -> None:
        self.events.append((type_, reason, message))

    async def list_objects(self, plural: str, namespace: str | None, **query: Any) -> list[dict[str, Any]]:
        open_one = {
            "metadata": {"name": "db-slow"},
            "spec": {"severity": "P2", "title": "db slow"},
            "status": {"phase": "Investigating"},
        }
        closed = {"metadata": {"name": "old"}, "spec": {"closed": True}, "status": {"phase": "Closed"}}
        return [open_one, closed]


def body(status: dict[str, Any] | None = None, version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "incident-operator.dev/v1alpha1",
        "kind": "OnCallSchedule",
        "metadata": {"namespace": "shop", "name": "primary", "resourceVersion": version, "generation": 1},
        "spec": SPEC,
        "status": status or {},
    }


class Recording(People):
    """People whose sends are recorded instead of mailed (the budget and the record are real)."""

    sent_to: list[tuple[str, str]]

    async def send(self, channel: Any, person: Addressee, subject: str, message: str) -> str | None:
        to, why = await self.mail_to(person)
        if to is None:
            return why
        self.sent_to.append((to, message))
        return None


def people(api: Api, clock: Any) -> Recording:
    book = ScheduleBook(lambda: {("shop", "primary"): api.body})
    found = Recording(
        api, None, CONFIG.oncall, CONFIG.notifications, book, secret=lambda ref: "", clock=clock
    )
    found.sent_to = []
    return found


def test_the_hourly_mail_count_is_read_back_from_the_schedule_after_a_restart() -> None:
    earlier = [{"person": "dave", "at": format_time(T0 - timedelta(minutes=m))} for m in (50, 20)]
    earlier.append({"person": "dave", "at": format_time(T0 - timedelta(minutes=90))})  # no longer counts
    api = Api(body({"mailsSent": earlier}))
    dave = Addressee("shop/primary", "dave", "dave@example.com")

    async def run() -> list[tuple[str | None, str]]:
        fresh = people(api, lambda: T0)  # a new process: nothing in memory
        return [await fresh.mail_to(dave), await fresh.mail_to(dave)]

    first, second = asyncio.run(run())
    assert first == ("dave@example.com", "")  # 2 of 3 used within the hour: one more
    assert second[0] is None
    assert "3 mails within the hour" in second[1]
    written = api.patches[-1]["status"]["mailsSent"]
    assert len(written) == 3  # the 90-minute-old send dropped, the new one kept


def test_mail_outside_the_allowed_domains_is_refused_with_why() -> None:
    api = Api(body())
    eve = Addressee("shop/primary", "eve", "eve@elsewhere.org")
    to, why = asyncio.run(people(api, lambda: T0).mail_to(eve))
    assert to is None
    assert why == "eve's address is not in oncall.allowedEmailDomains"
    assert not api.patches


def test_a_handoff_is_claimed_then_announced_once_with_the_open_incidents() -> None:
    api = Api(body())

    async def run() -> Recording:
        told = people(api, lambda: T0)
        handoffs = Handoffs(api, told, clock=lambda: T0)
        handoffs.observe("ADDED", api.body)
        await asyncio.gather(*handoffs.busy.values())
        handoffs.observe("MODIFIED", api.body)  # our own record comes back: nothing more
        await asyncio.gather(*handoffs.busy.values())
        return told

    told = asyncio.run(run())
    assert [to for to, _ in told.sent_to] == ["erin@example.com"]  # day 2 of the rotation
    assert "Open incidents in shop: 1" in told.sent_to[0][1]
    assert "db-slow: [P2] db slow (Investigating" in told.sent_to[0][1]
    (record,) = api.body["status"]["handoffs"]
    assert (record["person"], record["at"], record["announced"]) == (
        "erin",
        "2026-12-01T08:00:00Z",
        "told through mail",
    )
    assert api.events[0][:2] == ("Normal", "Handoff")


def test_a_lost_claim_sends_nothing() -> None:
    api = Api(body(version="7"))
    stale = body(version="6")  # another leader wrote meanwhile

    async def run() -> Recording:
        told = people(api, lambda: T0)
        handoffs = Handoffs(api, told, clock=lambda: T0)
        await handoffs.announce(("shop", "primary"), stale, handoffs.due(stale))
        return told

    told = asyncio.run(run())
    assert not told.sent_to
    assert not api.patches


def test_a_channel_scoped_to_other_namespaces_carries_no_handoff_or_role_message() -> None:
    channels = [
        {"name": "mail", "type": "email", "smtp": SMTP, "to": ["team@example.com"], "namespaces": ["shop"]},
        {"name": "other", "type": "email", "smtp": SMTP, "to": ["b@example.com"], "namespaces": ["bank"]},
        {"name": "all", "type": "email", "smtp": SMTP, "to": ["c@example.com"]},
    ]
    config = FileConfig.model_validate(
        {
            "notifications": {"channels": channels},
            "oncall": {"allowedEmailDomains": ["example.com"], "channels": ["mail", "other", "all"]},
        }
    )
    api = Api(body())
    book = ScheduleBook(lambda: {("shop", "primary"): api.body})
    found = People(
        api, None, config.oncall, config.notifications, book, secret=lambda ref: "", clock=lambda: T0
    )
    dave = Addressee("shop/primary", "dave", "dave@example.com")
    assert found.reaching(dave, "shop") == ["mail", "all"]
    assert found.reaching(dave, "bank") == ["other", "all"]
    # the incident's role messages: the same scoping
    from incident_operator.controllers.incident.inputs import Inputs

    inputs = object.__new__(Inputs)
    object.__setattr__(inputs, "config", type("C", (), {"file": config})())
    object.__setattr__(inputs, "namespace", "bank")
    assert inputs._tell_channels() == ("other", "all")
