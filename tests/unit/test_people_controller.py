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
from incident_operator.core import paging
from incident_operator.core.paging import Addressee
from incident_operator.settings.config import FileConfig
from tests.polling import until

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
SPEC: dict[str, Any] = {
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


class Schedules:
    """Several schedules' status, patched by name (the calls `People.mail_to` makes)."""

    def __init__(self, **statuses: dict[str, Any]) -> None:
        self.bodies = {
            ("shop", name): {**body(status), "metadata": {"namespace": "shop", "name": name}}
            for name, status in statuses.items()
        }
        for name, entry in (("primary", "dave"), ("secondary", "Dave.Ops")):
            if ("shop", name) in self.bodies:
                spec = {**SPEC, "people": [{"name": entry, "email": "DAVE@example.com"}, *SPEC["people"][1:]]}
                if name == "primary":
                    spec = SPEC
                self.bodies[("shop", name)]["spec"] = spec

    async def patch_object_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> Any:
        key = (namespace, name)
        self.bodies[key] = {**self.bodies[key], "status": {**self.bodies[key]["status"], **patch["status"]}}
        return self.bodies[key]

    def people(self, clock: Any = lambda: T0) -> People:
        book = ScheduleBook(lambda: self.bodies)
        return People(self, None, CONFIG.oncall, CONFIG.notifications, book, secret=lambda r: "", clock=clock)

    def sent(self, name: str) -> list[dict[str, Any]]:
        return list(self.bodies[("shop", name)]["status"].get("mailsSent") or [])


def test_the_limit_counts_per_address_across_schedules_and_names_also_after_a_restart() -> None:
    api = Schedules(primary={}, secondary={})
    dave = Addressee("shop/primary", "dave", "dave@example.com")
    same = Addressee("shop/secondary", "Dave.Ops", "DAVE@example.com")  # one mailbox, another name

    async def run() -> list[str | None]:
        live = api.people()
        return [(await live.mail_to(p))[0] for p in (dave, same, dave, same)]

    assert asyncio.run(run()) == ["dave@example.com", "DAVE@example.com", "dave@example.com", None]
    # each schedule keeps the sends made through it, with the address
    assert [(e["person"], e["address"]) for e in api.sent("primary")] == [("dave", "dave@example.com")] * 2
    assert [(e["person"], e["address"]) for e in api.sent("secondary")] == [("Dave.Ops", "dave@example.com")]

    async def restarted() -> tuple[str | None, str]:
        return await api.people(lambda: T0 + timedelta(minutes=1)).mail_to(same)

    to, why = asyncio.run(restarted())  # a new process reads both schedules' records of the address
    assert to is None
    assert "3 mails within the hour" in why


def test_an_entry_recorded_without_an_address_counts_for_its_persons_address() -> None:
    earlier = [{"person": "dave", "at": format_time(T0 - timedelta(minutes=m))} for m in (30, 20, 10)]
    api = Schedules(primary={"mailsSent": earlier}, secondary={})
    to, why = asyncio.run(api.people().mail_to(Addressee("shop/secondary", "Dave.Ops", "dave@example.com")))
    assert to is None
    assert "counted per namespace and address" in why


def test_the_record_is_bounded_but_the_count_in_the_process_is_not() -> None:
    api = Schedules(primary={})
    everyone = [Addressee("shop/primary", f"p{i}", f"p{i}@example.com") for i in range(4)]

    async def run() -> list[str | None]:
        live = api.people()
        live.kept = 2  # the record keeps the newest two sends
        return [(await live.mail_to(p))[0] for p in everyone * 4]

    got = asyncio.run(run())
    assert got.count(None) == 4  # three each within the hour, whatever the record kept
    assert [got[i::4].count(None) for i in range(4)] == [1, 1, 1, 1]
    assert len(api.sent("primary")) == 2


def test_mails_kept_keeps_the_last_hour_the_limits_worth_per_address_then_the_newest() -> None:
    sends = [(T0 - timedelta(minutes=m), "a", "a@x") for m in (1, 2, 3, 4, 70)]
    sends += [(T0 - timedelta(minutes=m), "b", "b@x") for m in (5, 6)]
    kept = paging.mails_kept(sends, T0, per_hour=3)
    assert [(e[1], int((T0 - e[0]).total_seconds() // 60)) for e in kept] == [
        ("b", 6),
        ("b", 5),
        ("a", 3),
        ("a", 2),
        ("a", 1),
    ]  # oldest first; a's 4th and its send of 70 minutes ago are no use to the limit
    assert paging.mails_kept(sends, T0, per_hour=3, cap=2) == kept[-2:]
    twice = [*sends, sends[0]]  # two sends in the same second are two
    assert [e[1] for e in paging.mails_kept(twice, T0, per_hour=3)] == ["b", "b", "a", "a", "a"]
    assert paging.mails_kept(twice, T0, per_hour=3)[-2:] == [sends[0], sends[0]]


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
    assert record["until"] == "2026-12-02T08:00:00Z"  # the turn's end as told: an edit moving it tells nobody
    assert api.events[0][:2] == ("Normal", "Handoff")


def test_an_edit_that_moves_the_start_of_the_same_persons_turn_announces_nothing() -> None:
    api = Api(body())

    async def run() -> Recording:
        told = people(api, lambda: T0 + timedelta(hours=2))
        handoffs = Handoffs(api, told, clock=lambda: T0 + timedelta(hours=2))
        handoffs.observe("ADDED", api.body)
        await asyncio.gather(*handoffs.busy.values())
        layer = {**SPEC["layers"][0], "start": "2026-11-30T09:00:00Z"}  # the handoff at 09:00 now
        api.body = {**api.body, "spec": {**SPEC, "layers": [layer]}}
        handoffs.observe("MODIFIED", api.body)
        await asyncio.gather(*handoffs.busy.values())
        return told

    told = asyncio.run(run())
    assert [to for to, _ in told.sent_to] == ["erin@example.com"]  # once, not again at the edit
    assert len(api.body["status"]["handoffs"]) == 1


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


def schedule_body(
    namespace: str, name: str, people: list[dict[str, Any]], status: dict[str, Any]
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": "1"},
        "spec": {**SPEC, "people": people, "layers": []},
        "status": status,
    }


class Tenants(Schedules):
    """Schedules of several namespaces; a status patch of a schedule in `slow` waits for `go`."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.bodies = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies}
        self.slow: set[tuple[str, str]] = set()
        self.go = asyncio.Event()
        self.writes: list[tuple[str, str]] = []
        self.held: list[tuple[str, str]] = []
        """The slow writes that have begun waiting for `go`."""

    async def patch_object_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> Any:
        if (namespace, name) in self.slow:
            self.held.append((namespace, name))
            await self.go.wait()
        self.writes.append((namespace, name))
        return await super().patch_object_status(plural, namespace, name, patch)


DAVE = [{"name": "dave", "email": "dave@example.com"}]


def test_another_namespace_listing_the_address_cannot_spend_its_budget() -> None:
    api = Tenants(schedule_body("a", "s", DAVE, {}), schedule_body("b", "s", DAVE, {}))
    in_a, in_b = (Addressee(f"{ns}/s", "dave", "dave@example.com") for ns in "ab")

    async def run() -> list[str | None]:
        live = api.people()
        return [(await live.mail_to(p))[0] for p in (in_a, in_a, in_a, in_a, in_b)]

    assert asyncio.run(run()) == ["dave@example.com"] * 3 + [None, "dave@example.com"]

    async def restarted() -> list[str | None]:  # a new process: b's record is b's, a's is a's
        live = api.people(lambda: T0 + timedelta(minutes=1))
        return [(await live.mail_to(p))[0] for p in (in_a, in_b, in_b, in_b)]

    assert asyncio.run(restarted()) == [None, "dave@example.com", "dave@example.com", None]


def test_a_forged_mails_sent_entry_spends_nobodys_budget() -> None:
    forged = {"mailsSent": [{"person": "x", "at": format_time(T0), "address": "dave@example.com"}] * 5}
    api = Tenants(
        schedule_body("evil", "s", [{"name": "x", "email": "x@example.com"}], forged),
        schedule_body("shop", "decoy", [{"name": "x", "email": "x@example.com"}], forged),
        schedule_body("shop", "primary", DAVE, {}),
    )
    dave = Addressee("shop/primary", "dave", "dave@example.com")

    async def run() -> list[str | None]:
        live = api.people()
        return [(await live.mail_to(dave))[0] for _ in range(4)]

    # neither another namespace's nor the same namespace's schedule counts an address it does not list
    assert asyncio.run(run()) == ["dave@example.com"] * 3 + [None]


def test_a_slow_status_write_holds_no_mail_through_another_schedule() -> None:
    api = Tenants(schedule_body("shop", "slow", DAVE, {}), schedule_body("shop", "fast", DAVE, {}))
    api.slow.add(("shop", "slow"))

    async def run() -> tuple[tuple[str | None, str], tuple[str | None, str], bool]:
        live = api.people()
        stuck = asyncio.create_task(live.mail_to(Addressee("shop/slow", "dave", "dave@example.com")))
        # it counted and waits for its write
        await until(lambda: ("shop", "slow") in api.held, timeout=5, what="the slow write begun")
        other = await asyncio.wait_for(live.mail_to(Addressee("shop/fast", "erin", "erin@example.com")), 5)
        waiting = not stuck.done()  # the slow one's send does not go before its record is written
        api.go.set()
        return other, await stuck, waiting

    other, stuck, waiting = asyncio.run(run())
    assert other == ("erin@example.com", "")
    assert stuck == ("dave@example.com", "")
    assert waiting
    assert api.writes == [("shop", "fast"), ("shop", "slow")]


def test_concurrent_sends_through_one_schedule_are_all_recorded() -> None:
    api = Tenants(schedule_body("shop", "primary", DAVE, {}))
    api.slow.add(("shop", "primary"))
    people = [Addressee("shop/primary", f"p{i}", f"p{i}@example.com") for i in range(3)]

    async def run() -> list[tuple[str | None, str]]:
        live = api.people()
        tasks = [asyncio.create_task(live.mail_to(p)) for p in people]
        await until(
            lambda: len(live.sent) == 3 and bool(api.held), timeout=5, what="3 sends counted, a write held"
        )
        api.go.set()
        return list(await asyncio.gather(*tasks))

    assert [to for to, _ in asyncio.run(run())] == [p.email for p in people]
    recorded = api.bodies[("shop", "primary")]["status"]["mailsSent"]
    assert sorted(e["address"] for e in recorded) == ["p0@example.com", "p1@example.com", "p2@example.com"]
    assert len(api.writes) <= 2  # the first write, then one carrying the two sends counted meanwhile


def test_addresses_without_a_send_within_the_hour_and_schedules_gone_are_forgotten() -> None:
    api = Tenants(schedule_body("shop", "primary", DAVE, {}), schedule_body("shop", "old", DAVE, {}))
    now = [T0]
    live = api.people(lambda: now[0])
    everyone = [Addressee("shop/primary", f"p{i}", f"p{i}@example.com") for i in range(4)]

    async def run() -> None:
        for person in everyone:
            await live.mail_to(person)
        assert len(live.sent) == 4
        assert live.seeded == {"shop/primary", "shop/old"}
        del api.bodies[("shop", "old")]
        now[0] = T0 + timedelta(hours=2)
        await live.mail_to(everyone[0])

    asyncio.run(run())
    assert list(live.sent) == [("shop", "p0@example.com")]
    assert live.seeded == {"shop/primary"}
