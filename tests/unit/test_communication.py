"""The communication cadence of seed 4.2 (issue 23 item 6): updates due, the overdue reminder once
per period, public updates announced once, the status words, the config that sets it."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError

from incident_operator.adapters.kube import Kube
from incident_operator.adapters.outbound import Outbound
from incident_operator.api.models import IncidentSpec, IncidentStatus, OnCallScheduleSpec, Phase, Severity
from incident_operator.api.reasons import Reason
from incident_operator.controllers.incident import IncidentLoop, parse_playbook
from incident_operator.core.conditions import find_condition
from incident_operator.core.matching import select
from incident_operator.core.notices import (
    IncidentView,
    Notice,
    channels_for,
    notices,
    page_status,
    slack_body,
    statuspage_body,
)
from incident_operator.core.planner import Decision, PlanInput, check_deadlines, plan
from incident_operator.core.planner.communication import human_duration
from incident_operator.settings.channels import parse_channel
from incident_operator.settings.config import FileConfig, OperatorConfig, StatusPageConfig, UpdateCadence
from tests.unit.fake_kube import NAMESPACE, FakeKube

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EVERY = {Severity.P1: timedelta(minutes=15)}


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Incident:
    """One incident planned with a clock the test moves (no playbook: the cadence alone)."""

    def __init__(self, inputs: dict[str, Any] | None = None, **spec: Any) -> None:
        self.inputs = inputs or {}
        self.raw: dict[str, Any] = {"title": "web down", "severity": "P1", "category": "availability", **spec}
        self.status = IncidentStatus()
        self.now = T0
        self.records: list[tuple[Reason, str]] = []
        self.last: Decision | None = None

    @property
    def spec(self) -> IncidentSpec:
        return IncidentSpec.model_validate(self.raw)

    def update(self, minutes: float, message: str = "looking into it", **extra: Any) -> None:
        entry = {"time": stamp(T0 + timedelta(minutes=minutes)), "message": message, **extra}
        self.raw["updates"] = [*self.raw.get("updates", []), entry]

    def input(self) -> PlanInput:
        return PlanInput(
            spec=self.spec,
            status=self.status,
            generation=1,
            selection=select(self.spec, []),
            response_target=timedelta(hours=1),
            now=self.now,
            update_every=EVERY,
            namespace=NAMESPACE,
            **self.inputs,
        )

    def plan(self, at_minutes: float, *, deadlines_only: bool = False) -> Decision:
        self.now = T0 + timedelta(minutes=at_minutes)
        decision = (check_deadlines if deadlines_only else plan)(self.input())
        self.status = decision.status
        self.records += [(r.reason, r.message) for r in decision.records]
        self.last = decision
        return decision

    def overdue(self) -> dict[str, Any] | None:
        conds = [c.model_dump(mode="json") for c in self.status.conditions or []]
        return find_condition(conds, "UpdateOverdue")

    def said(self, reason: Reason) -> list[str]:
        return [m for r, m in self.records if r == reason]


def test_an_update_is_due_every_period_from_detection_and_the_loop_wakes_then() -> None:
    inc = Incident()
    decision = inc.plan(0)
    assert inc.status.communication is not None
    assert inc.status.communication.nextUpdateBy == T0 + timedelta(minutes=15)
    assert decision.wake_at is not None
    assert decision.wake_at <= T0 + timedelta(minutes=15)
    assert inc.overdue() is None
    inc.update(10)
    inc.plan(11)
    assert inc.status.communication is not None
    assert inc.status.communication.nextUpdateBy == T0 + timedelta(minutes=25)
    assert inc.overdue() is None
    assert not inc.said(Reason.UPDATE_OVERDUE)


def test_overdue_reminds_once_clears_on_the_next_update_and_reminds_once_again() -> None:
    inc = Incident(roles={"comms": "carol"}, commander="alice")
    inc.plan(0)
    inc.plan(15)
    overdue = inc.overdue()
    assert overdue is not None
    assert overdue["status"] == "True"
    assert overdue["reason"] == "UpdateOverdue"
    assert "15m" in overdue["message"]
    assert len(inc.said(Reason.UPDATE_OVERDUE)) == 1
    assert "carol (communications lead)" in inc.said(Reason.UPDATE_OVERDUE)[0]
    for minute in (16, 20, 29):  # still overdue: no second reminder, no new status write
        before = inc.status.model_copy(deep=True)
        inc.plan(minute)
        assert inc.status == before
    assert len(inc.said(Reason.UPDATE_OVERDUE)) == 1
    inc.update(30, "we found the cause", public=True, status="identified")  # any update clears it
    inc.plan(30)
    overdue = inc.overdue()
    assert overdue is not None
    assert overdue["status"] == "False"
    assert overdue["reason"] == "UpdatePublished"
    assert len(inc.said(Reason.UPDATE_PUBLISHED)) == 1
    inc.plan(45)  # the next period passes without an update: once again
    assert len(inc.said(Reason.UPDATE_OVERDUE)) == 2
    assert inc.overdue() is not None
    assert inc.overdue()["status"] == "True"


def test_the_reminder_goes_to_the_commander_without_a_communications_lead() -> None:
    inc = Incident(commander="alice")
    inc.plan(0)
    inc.plan(16)
    assert "alice (commander" in inc.said(Reason.UPDATE_OVERDUE)[0]


def test_the_reminder_is_a_notice_for_the_channels() -> None:
    inc = Incident(commander="alice")
    inc.plan(0)
    old = inc.status
    decision = inc.plan(16)
    view = IncidentView(NAMESPACE, "web-down", inc.spec, Phase.ACKNOWLEDGED)
    found = notices(old, decision.status, decision.records, view)
    assert [n.event for n in found] == ["updateOverdue"]
    assert "alice" in found[0].message
    assert "[P1] web down" in found[0].message


PEOPLE = OnCallScheduleSpec.model_validate(
    {
        "timeZone": "UTC",
        "people": [
            {"name": "carol", "user": "oidc:carol", "email": "carol@example.com", "slackId": "UCAROL"},
            {"name": "alice", "email": "alice@example.com"},
            {"name": "dave"},
        ],
        "layers": [{"name": "day", "start": "2026-11-01T00:00:00Z", "rotation": "P1D", "people": ["alice"]}],
    }
)
TOLD = {"schedules": {f"{NAMESPACE}/primary": PEOPLE}, "tell_channels": ("mail", "chat")}
CHANNELS = FileConfig.model_validate(
    {
        "notifications": {
            "channels": [
                {
                    "name": "mail",
                    "type": "email",
                    "to": ["sre@example.com"],
                    "events": [],
                    "smtp": {"host": "smtp.example.com", "from": "io@example.com"},
                },
                {
                    "name": "chat",
                    "type": "slack",
                    "urlSecretRef": {"namespace": "ops", "name": "s", "key": "u"},
                    "events": ["updateOverdue"],
                },
                {
                    "name": "hook",
                    "type": "webhook",
                    "urlSecretRef": {"namespace": "ops", "name": "s", "key": "h"},
                    "events": ["updateOverdue"],
                },
            ]
        },
        "oncall": {"channels": ["mail", "chat"], "allowedEmailDomains": ["example.com"]},
    }
).notifications


def overdue_notices(inc: Incident) -> list[Notice]:
    inc.plan(0)
    old = inc.status
    decision = inc.plan(16)
    view = IncidentView(NAMESPACE, "web-down", inc.spec, Phase.ACKNOWLEDGED)
    return notices(old, decision.status, decision.records, view)


def taken(notice: Notice, inc: Incident) -> list[str]:
    view = IncidentView(NAMESPACE, "web-down", inc.spec, Phase.ACKNOWLEDGED)
    return [c.name for c in channels_for(CHANNELS, notice, view, StatusPageConfig())]


def test_the_reminder_reaches_the_communications_lead_through_oncall_channels_once_per_period() -> None:
    inc = Incident(TOLD, roles={"comms": "oidc:carol"}, commander="alice")
    broadcast, personal = overdue_notices(inc)
    assert inc.said(Reason.UPDATE_OVERDUE)[0].endswith("(carol told through mail, chat)")
    assert personal.person is not None
    assert personal.person.email == "carol@example.com"
    assert personal.personal
    assert personal.message.startswith("[P1] web down (")
    assert "carol, update overdue" in personal.message
    # to carol: by mail to her address and in Slack mentioning her; the subscribed webhook gets the
    # reminder as before, and the Slack channel posts it once (with the mention), not twice
    assert taken(personal, inc) == ["mail", "chat"]
    assert broadcast.person is None
    assert taken(broadcast, inc) == ["hook"]
    assert slack_body(CHANNELS.channels[1], personal, IncidentView(NAMESPACE, "w", inc.spec, Phase.DETECTED))[
        "text"
    ].startswith("<@UCAROL> ")
    for minute in (17, 29):  # once per overdue period
        assert not [r for r in inc.plan(minute).records if r.reason == Reason.UPDATE_OVERDUE]
    inc.update(30)
    inc.plan(30)
    found = [r for r in inc.plan(45).records if r.reason == Reason.UPDATE_OVERDUE]
    assert [r.person.name if r.person else None for r in found] == ["carol"]


def test_the_commander_is_reminded_without_a_communications_lead_and_slack_without_an_id_stays_quiet() -> (
    None
):
    inc = Incident(TOLD, commander="alice")
    broadcast, personal = overdue_notices(inc)
    assert personal.person is not None
    assert personal.person.name == "alice"
    assert taken(broadcast, inc) == ["chat", "hook"]  # alice has no Slack id: the channel posts it plainly
    assert taken(personal, inc) == ["mail", "chat"]  # (the notifier skips Slack for her, as for roles)


@pytest.mark.parametrize(
    ("inputs", "spec", "why"),
    [
        (TOLD, {"commander": "zed"}, "zed not told: not in an on-call schedule of " + NAMESPACE),
        (TOLD, {"roles": {"comms": "dave"}}, "dave not told: dave has no email or Slack id in "),
        ({"schedules": TOLD["schedules"]}, {"commander": "alice"}, "alice not told: no oncall.channels"),
    ],
)
def test_a_reminder_that_cannot_reach_its_person_says_why_and_still_goes_to_the_channels(
    inputs: dict[str, Any], spec: dict[str, Any], why: str
) -> None:
    inc = Incident(inputs, **spec)
    found = overdue_notices(inc)
    assert [n.person for n in found] == [None]
    assert taken(found[0], inc) == ["chat", "hook"]
    assert why in inc.said(Reason.UPDATE_OVERDUE)[0]
    assert why in next(e.message for e in inc.status.timeline or [] if e.type == "UpdateOverdue")


def test_the_remembered_reminder_is_not_sent_again_after_a_restart() -> None:
    inc = Incident()
    inc.plan(0)
    inc.plan(16)
    restarted = Incident()
    restarted.status = IncidentStatus.model_validate(inc.status.model_dump(mode="json"))  # from the API
    restarted.plan(17)
    restarted.plan(20, deadlines_only=True)
    assert not restarted.said(Reason.UPDATE_OVERDUE)


def test_the_deadline_only_plan_of_a_waiting_step_reminds_too() -> None:
    inc = Incident()
    inc.plan(0)
    inc.plan(15, deadlines_only=True)
    assert len(inc.said(Reason.UPDATE_OVERDUE)) == 1


def test_resolved_ends_the_cadence_and_clears_the_condition() -> None:
    inc = Incident()
    inc.plan(0)
    inc.plan(16)
    inc.raw["resolution"] = {"summary": "restarted the pool"}
    inc.plan(17)
    overdue = inc.overdue()
    assert overdue is not None
    assert overdue["status"] == "False"
    assert overdue["reason"] == "Resolved"
    assert inc.status.communication is not None
    assert inc.status.communication.nextUpdateBy is None
    inc.plan(60)
    assert len(inc.said(Reason.UPDATE_OVERDUE)) == 1


def test_a_severity_without_cadence_is_never_overdue() -> None:
    inc = Incident(severity="P3")
    inc.plan(0)
    inc.plan(600)
    assert inc.overdue() is None
    assert not inc.said(Reason.UPDATE_OVERDUE)


def test_each_public_update_is_announced_once_even_after_resolution() -> None:
    inc = Incident(updates=[{"time": stamp(T0), "message": "opened with this", "public": True}])
    inc.plan(0)
    assert not inc.said(Reason.PUBLIC_UPDATE)  # the opened notice carries it
    inc.update(5, "internal only")
    inc.update(6, "we are on it", public=True)
    inc.update(7, "cause found", public=True, status="identified")
    decision = inc.plan(8)
    assert inc.said(Reason.PUBLIC_UPDATE) == [
        "public update (investigating): we are on it",
        "public update (identified): cause found",
    ]
    assert [r.update_at for r in decision.records if r.reason == Reason.PUBLIC_UPDATE] == [
        T0 + timedelta(minutes=6),
        T0 + timedelta(minutes=7),
    ]
    inc.plan(9)
    inc.plan(10)
    assert len(inc.said(Reason.PUBLIC_UPDATE)) == 2
    inc.raw["resolution"] = {"summary": "fixed"}
    inc.plan(11)
    inc.update(12, "all good again", public=True, status="resolved")
    inc.plan(12)
    assert inc.said(Reason.PUBLIC_UPDATE)[-1] == "public update (resolved): all good again"
    assert len(inc.said(Reason.PUBLIC_UPDATE)) == 3


def test_a_public_update_notice_goes_to_statuspage_channels_with_its_own_words() -> None:
    inc = Incident(public=True, estimatedResolution=stamp(T0 + timedelta(hours=1)))
    inc.plan(0)
    old = inc.status
    inc.update(3, "first", public=True)
    inc.update(4, "cause found", public=True, status="identified")
    decision = inc.plan(5)
    view = IncidentView(NAMESPACE, "web-down", inc.spec, Phase.INVESTIGATING)
    found = [n for n in notices(old, decision.status, decision.records, view) if n.event == "update"]
    assert len(found) == 2
    page = parse_channel(
        {"name": "page", "type": "statuspage", "urlSecretRef": {"namespace": "o", "name": "s"}}
    )
    assert "update" in page.takes
    assert "updateOverdue" not in page.takes
    first = statuspage_body(page, found[0], view)
    second = statuspage_body(page, found[1], view)
    assert (first["message"], first["status"]) == ("first", "Investigating")
    assert (second["message"], second["status"]) == ("cause found", "Identified")
    assert second["estimatedResolution"] == stamp(T0 + timedelta(hours=1))
    assert [u["status"] for u in second["updates"]] == ["investigating", "identified"]


def test_status_words_follow_the_newest_public_update_until_resolved() -> None:
    spec = IncidentSpec.model_validate(
        {
            "title": "t",
            "severity": "P1",
            "category": "data",
            "updates": [{"time": stamp(T0), "message": "m", "public": True, "status": "monitoring"}],
        }
    )
    assert page_status(spec, Phase.INVESTIGATING) == "Monitoring"
    assert page_status(spec, Phase.RESOLVED) == "Resolved"
    bare = IncidentSpec.model_validate({"title": "t", "severity": "P1", "category": "data"})
    assert page_status(bare, Phase.MITIGATING) == "Identified"
    with pytest.raises(ValidationError):
        IncidentSpec.model_validate(
            {
                "title": "t",
                "severity": "P1",
                "category": "data",
                "updates": [{"time": stamp(T0), "message": "m", "status": "fixed"}],
            }
        )


def test_a_statuspage_channel_refuses_internal_events() -> None:
    with pytest.raises(ValidationError, match="internal events"):
        parse_channel(
            {
                "name": "page",
                "type": "statuspage",
                "urlSecretRef": {"namespace": "o", "name": "s"},
                "events": ["opened", "updateOverdue"],
            }
        )
    slack = parse_channel({"name": "s", "type": "slack", "urlSecretRef": {"namespace": "o", "name": "s"}})
    assert "updateOverdue" in slack.takes
    assert "update" not in slack.takes


def test_config_update_every_defaults_and_bounds() -> None:
    cadence = FileConfig().communication.updateEvery
    assert cadence.of(Severity.P1) == timedelta(minutes=15)
    assert cadence.of(Severity.P2) == timedelta(minutes=30)
    assert cadence.of(Severity.P3) is None
    assert cadence.of(Severity.P4) is None
    custom = FileConfig.model_validate({"communication": {"updateEvery": {"P1": "PT10S", "P4": "P1D"}}})
    assert custom.communication.updateEvery.of(Severity.P1) == timedelta(seconds=10)
    assert custom.communication.updateEvery.of(Severity.P4) == timedelta(days=1)
    with pytest.raises(ValidationError, match="between 10 seconds"):
        UpdateCadence.model_validate({"P1": "PT5S"})
    with pytest.raises(ValidationError):
        FileConfig.model_validate({"communication": {"updateEvery": {"P5": "PT1M"}}})
    assert human_duration(timedelta(minutes=90)) == "1h30m"


# ----------------------------------------------------------------------------- the loop


def _loop(api: FakeKube, clock: list[datetime]) -> IncidentLoop:
    config = OperatorConfig(
        file=FileConfig.model_validate({"communication": {"updateEvery": {"P2": "PT10S"}}})
    )

    def playbooks() -> tuple[list[Any], dict[str, str]]:
        pb = api.playbook
        meta = pb["metadata"]
        entry = parse_playbook(meta["name"], pb["spec"], copy.deepcopy(pb["status"]), meta.get("generation"))
        return ([entry], {}) if not isinstance(entry, str) else ([], {"pb": entry})

    return IncidentLoop(
        kube=cast(Kube, api),
        outbound=cast(Outbound, None),
        config=config,
        namespace=NAMESPACE,
        name=api.incident["metadata"]["name"],
        uid=api.incident["metadata"]["uid"],
        body=api.incident,
        playbooks=playbooks,
        post_event=api.post_event,
        clock=lambda: clock[0],
        backoff=(0.0,),
    )


def test_the_loop_wakes_at_the_due_time_reminds_once_across_a_restart_and_clears() -> None:
    api = FakeKube(
        {"title": "web down", "severity": "P2", "category": "availability"},
        {  # a step that waits for approval: the incident stays open
            "steps": [
                {
                    "name": "scale-web",
                    "requiresApproval": True,
                    "scale": {"target": {"kind": "Deployment", "name": "web"}, "delta": 1},
                }
            ]
        },
        {"web": 2},
    )
    clock = [T0]

    async def scenario() -> None:
        loop = _loop(api, clock)
        _, wake_at = await loop.iterate()
        assert wake_at == T0 + timedelta(seconds=10)  # the loop sleeps until the update is due
        clock[0] = T0 + timedelta(seconds=10)
        await loop.iterate()
        restarted = _loop(api, clock)  # from what the API holds
        clock[0] = T0 + timedelta(seconds=12)
        await restarted.iterate()
        await restarted.iterate()
        overdue = [c for c in api.called("event") if c[1] == "UpdateOverdue"]
        assert len(overdue) == 1
        conds = {c["type"]: c for c in api.status()["conditions"]}
        assert conds["UpdateOverdue"]["status"] == "True"
        api.incident["spec"]["updates"] = [{"time": stamp(T0 + timedelta(seconds=13)), "message": "on it"}]
        api.incident["metadata"]["generation"] = api.incident["metadata"].get("generation", 1) + 1
        clock[0] = T0 + timedelta(seconds=14)
        _, wake_at = await restarted.iterate()
        conds = {c["type"]: c for c in api.status()["conditions"]}
        assert conds["UpdateOverdue"]["status"] == "False"
        assert wake_at is not None
        assert wake_at <= T0 + timedelta(seconds=23)
        timeline = [e["type"] for e in api.status()["timeline"]]
        assert timeline.count("UpdateOverdue") == 1
        assert timeline.count("UpdatePublished") == 1

    asyncio.run(scenario())


def test_fractions_of_a_second_do_not_make_an_update_new_after_a_round_trip_through_the_api() -> None:
    inc = Incident(updates=[])
    inc.now = T0 + timedelta(microseconds=400_000)
    inc.plan(0.01)
    inc.raw["updates"] = [{"time": "2026-11-27T12:05:00.750Z", "message": "on it", "public": True}]
    inc.plan(6)
    assert len(inc.said(Reason.PUBLIC_UPDATE)) == 1
    inc.plan(21)  # overdue: reminded
    for _ in range(3):  # read back from the API (times to the second), planned again
        inc.status = IncidentStatus.model_validate(inc.status.model_dump(mode="json"))
        inc.plan(22)
    assert len(inc.said(Reason.PUBLIC_UPDATE)) == 1
    assert len(inc.said(Reason.UPDATE_OVERDUE)) == 1


def test_an_update_dated_in_the_future_neither_stops_the_cadence_nor_later_announcements() -> None:
    inc = Incident(updates=[{"time": stamp(T0), "message": "opened with this", "public": True}])
    inc.plan(0)
    inc.raw["updates"].append({"time": "2099-01-01T00:00:00Z", "message": "typo in the year", "public": True})
    inc.plan(5)
    assert inc.status.communication is not None
    assert inc.status.communication.nextUpdateBy == T0 + timedelta(minutes=20)  # counted as published at 5
    assert inc.status.communication.lastPublished is not None
    assert inc.status.communication.lastPublished <= T0 + timedelta(minutes=5)
    inc.update(6, "we are on it", public=True)
    inc.plan(7)
    inc.plan(8)
    assert inc.said(Reason.PUBLIC_UPDATE) == ["public update (investigating): we are on it"]


def test_an_update_a_few_seconds_ahead_of_the_operators_clock_is_announced_at_once() -> None:
    """The writer's clock may run ahead of the operator's: an update dated seconds ahead is
    announced when seen (not left waiting for a pass after its time), and only once."""
    inc = Incident(updates=[{"time": stamp(T0), "message": "opened with this", "public": True}])
    inc.plan(0)
    inc.update(6 + 2 / 60, "identified the cause", public=True)  # 2 s ahead of the pass at 6
    inc.plan(6)
    assert inc.said(Reason.PUBLIC_UPDATE) == ["public update (investigating): identified the cause"]
    inc.plan(7)
    assert inc.said(Reason.PUBLIC_UPDATE) == ["public update (investigating): identified the cause"]


def test_an_over_long_commander_is_recorded_cut_once_and_never_makes_the_plan_fail() -> None:
    inc = Incident(commander="x" * 300)
    inc.plan(0)
    inc.plan(1)
    assert [t.who for t in inc.status.rolesTold or []] == ["x" * 256]
    assert len(inc.said(Reason.ROLE_NOT_TOLD)) == 1
