"""Pages, handoffs and roles that reach a person: who is addressed, allowed domains, the rate
limit, handoff detection, roles told once, and how each channel addresses the person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from incident_operator.api.models import (
    IncidentSpec,
    IncidentStatus,
    OnCallHandoff,
    OnCallScheduleSpec,
    Phase,
    PlaybookSpec,
    RoleTold,
)
from incident_operator.core import oncall, paging
from incident_operator.core.matching import Candidate, select
from incident_operator.core.notices import (
    IncidentView,
    Notice,
    notices,
    opsgenie,
    pagerduty,
    slack_body,
    webhook_body,
)
from incident_operator.core.paging import Addressee
from incident_operator.core.planner import Level, PlanInput, check_deadlines, plan
from incident_operator.settings.channels import OpsgenieChannel, PagerDutyChannel, parse_channel
from incident_operator.settings.config import FileConfig
from tests.unit.test_oncall_properties import SETTINGS, moments, schedules

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
REF = {"namespace": "ops", "name": "keys"}


def schedule(**extra: Any) -> OnCallScheduleSpec:
    body = {
        "timeZone": "UTC",
        "people": [
            {"name": "alice", "user": "oidc:alice", "email": "alice@example.com", "slackId": "UALICE"},
            {"name": "bob", "email": "bob@elsewhere.org", "opsgenieUser": "bob@elsewhere.org"},
            {"name": "carol"},
        ],
        "layers": [
            {"name": "daily", "start": "2026-11-30T08:00:00Z", "rotation": "P1D", "people": ["alice", "bob"]}
        ],
        **extra,
    }
    return OnCallScheduleSpec.model_validate(body)


SCHEDULES: paging.Schedules = {"shop/primary": schedule(), "shop/broken": "unknown person dave"}


# ----------------------------------------------------------------------------- who is addressed


def test_the_person_on_call_at_the_fire_time_is_addressed() -> None:
    person, said = paging.on_call_at("shop/primary", SCHEDULES, T0)  # day 2 of the rotation: bob
    assert person is not None
    assert person.name == "bob"
    assert person.opsgenieUser == "bob@elsewhere.org"
    assert said == "bob on call in shop/primary"
    person, _ = paging.on_call_at("shop/primary", SCHEDULES, T0 - timedelta(hours=1))
    assert person is not None
    assert person.name == "alice"


def test_an_override_wins_over_the_rotation() -> None:
    override = {"person": "carol", "start": "2026-12-01T07:00:00Z", "end": "2026-12-01T09:00:00Z"}
    person, _ = paging.on_call_at("x/y", {"x/y": schedule(overrides=[override])}, T0)
    assert person is not None
    assert person.name == "carol"


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("shop/missing", "schedule shop/missing not found"),
        ("shop/broken", "schedule shop/broken is invalid (unknown person dave)"),
    ],
)
def test_a_missing_or_invalid_schedule_addresses_nobody_and_says_why(key: str, why: str) -> None:
    assert paging.on_call_at(key, SCHEDULES, T0) == (None, why)


def test_a_schedule_with_nobody_on_call_says_so() -> None:
    early = datetime(2026, 1, 1, tzinfo=UTC)  # before the layer's first handoff
    assert paging.on_call_at("shop/primary", SCHEDULES, early) == (
        None,
        "schedule shop/primary has nobody on call",
    )


def test_a_bare_schedule_name_is_in_the_incidents_namespace() -> None:
    assert paging.schedule_key("primary", "shop") == "shop/primary"
    assert paging.schedule_key("platform/secondary", "shop") == "platform/secondary"


# ----------------------------------------------------------------------------- mail to people


@pytest.mark.parametrize(
    ("email", "domains", "allowed"),
    [
        ("alice@example.com", ("example.com",), True),
        ("alice@mail.example.com", ("example.com",), True),  # a subdomain
        ("alice@EXAMPLE.com", ("example.com",), True),
        ("alice@badexample.com", ("example.com",), False),  # not a subdomain
        ("alice@example.com", (), False),  # none listed: no mail to people
        ("alice@example.com.evil.org", ("example.com",), False),
        ("a@b@example.com", ("example.com",), False),
        ("alice@example.com\r\nBcc: x@example.com", ("example.com",), False),
        ("alice@example.com,x@evil.org", ("example.com",), False),
        (None, ("example.com",), False),
    ],
)
def test_mail_goes_only_to_allowed_domains(
    email: str | None, domains: tuple[str, ...], allowed: bool
) -> None:
    assert paging.mail_allowed(email, domains) is allowed


def test_the_rate_limit_counts_the_last_hour_only() -> None:
    sent = [T0 - timedelta(minutes=m) for m in (70, 50, 30, 10)]
    assert paging.recent(sent, T0) == sorted(sent[1:])
    assert paging.mail_budget(sent, T0, 3) == 0
    assert paging.mail_budget(sent, T0, 4) == 1
    assert paging.mail_budget(sent, T0 + timedelta(minutes=15), 3) == 1  # the 50-minute one aged out


def test_config_checks_domains_and_the_channels_that_tell_people() -> None:
    smtp = {"host": "mail", "from": "io@example.com"}
    channels = [
        {"name": "mail", "type": "email", "smtp": smtp, "to": ["oncall@example.com"]},
        {"name": "pd", "type": "pagerduty", "keySecretRef": REF},
    ]
    ok = FileConfig.model_validate(
        {
            "notifications": {"channels": channels},
            "oncall": {"allowedEmailDomains": ["example.com"], "channels": ["mail"]},
        }
    )
    assert ok.oncall.maxMailsPerPersonPerHour == 10
    with pytest.raises(ValidationError, match="only email and slack"):
        FileConfig.model_validate({"notifications": {"channels": channels}, "oncall": {"channels": ["pd"]}})
    with pytest.raises(ValidationError, match="unknown channel"):
        FileConfig.model_validate({"oncall": {"channels": ["nope"]}})
    with pytest.raises(ValidationError, match="lower-case domain"):
        FileConfig.model_validate({"oncall": {"allowedEmailDomains": ["*.example.com"]}})
    level = {"afterSeconds": 0, "channels": ["mail"], "schedule": "shop/primary"}
    FileConfig.model_validate(
        {"notifications": {"channels": channels, "escalation": {"P1": {"levels": [level]}}}}
    )
    bad = {**level, "schedule": "a/b/c"}
    with pytest.raises(ValidationError, match="schedule"):
        FileConfig.model_validate(
            {"notifications": {"channels": channels, "escalation": {"P1": {"levels": [bad]}}}}
        )


# ----------------------------------------------------------------------------- handoffs


def test_a_handoff_is_due_once_until_recorded() -> None:
    spec = schedule()
    shift = paging.due_handoff(spec, [], T0)
    assert shift is not None
    assert (shift.person, shift.start) == ("bob", T0)
    recorded = paging.recorded([], OnCallHandoff(at=shift.start, person=shift.person, layer=shift.layer))
    assert paging.due_handoff(spec, recorded, T0 + timedelta(hours=3)) is None  # same turn: said
    following = paging.due_handoff(spec, recorded, T0 + timedelta(days=1))
    assert following is not None
    assert following.person == "alice"


def told(shift: Any, *, until: bool = True) -> OnCallHandoff:
    """The record `Handoffs.announce` writes for `shift` (`until=False`: as an older version wrote it)."""
    return OnCallHandoff(
        at=shift.start, person=shift.person, layer=shift.layer, until=shift.end if until else None
    )


def test_a_moved_handoff_time_does_not_tell_the_person_on_call_again() -> None:
    spec = schedule()
    shift = paging.due_handoff(spec, [], T0)  # bob from 08:00, told
    assert shift is not None
    records = [told(shift)]
    moved = schedule(
        layers=[
            {"name": "daily", "start": "2026-11-30T09:00:00Z", "rotation": "P1D", "people": ["alice", "bob"]}
        ]
    )  # the handoff at 09:00 from now on: the same bob, his turn now starting at 09:00
    assert paging.due_handoff(moved, records, T0 + timedelta(hours=2)) is None
    following = paging.due_handoff(moved, records, T0 + timedelta(days=1, hours=2))
    assert following is not None
    assert (following.person, following.start) == ("alice", T0 + timedelta(days=1, hours=1))
    # a record written before `until` existed: the schedule as it is now says alice was on call
    # from 08:00 to 09:00, so bob's turn at 09:00 is a new one (told again, as before)
    assert paging.due_handoff(moved, [told(shift, until=False)], T0 + timedelta(hours=2)) is not None


def test_an_adjacent_override_of_the_same_person_goes_on_with_the_turn_and_another_is_told() -> None:
    spec = schedule()
    shift = paging.due_handoff(spec, [], T0)
    assert shift is not None
    for until in (True, False):  # by the record's `until`, or by the schedule as it is now
        records = [told(shift, until=until)]
        longer = schedule(
            overrides=[{"person": "bob", "start": "2026-12-02T08:00:00Z", "end": "2026-12-02T12:00:00Z"}]
        )
        assert paging.due_handoff(longer, records, T0 + timedelta(days=1, hours=1)) is None
        after = paging.due_handoff(longer, records, T0 + timedelta(days=1, hours=5))
        assert after is not None
        assert after.person == "alice"


def test_the_same_person_back_after_someone_else_or_a_gap_is_told_again() -> None:
    spec = schedule()
    alice = paging.due_handoff(spec, [], T0 - timedelta(hours=1))  # alice's turn of the day before
    assert alice is not None
    # bob's turn was never recorded (the operator was away): alice's next turn is announced
    again = paging.due_handoff(spec, [told(alice)], T0 + timedelta(days=1, hours=1))
    assert again is not None
    assert (again.person, again.start) == ("alice", T0 + timedelta(days=1))
    office = schedule(
        layers=[
            {
                "name": "office",
                "start": "2026-11-30T00:00:00Z",
                "rotation": "P7D",
                "people": ["alice"],
                "restrictions": [{"from": "09:00", "to": "17:00"}],
            }
        ]
    )
    monday = paging.due_handoff(office, [], T0 + timedelta(hours=2))
    assert monday is not None
    tuesday = paging.due_handoff(office, [told(monday)], T0 + timedelta(days=1, hours=2))
    assert tuesday is not None  # a turn that comes back after a gap is a new one
    assert tuesday.start == T0 + timedelta(days=1, hours=1)


def test_the_handoff_record_is_bounded() -> None:
    entries = [OnCallHandoff(at=T0 + timedelta(days=d), person="alice") for d in range(25)]
    kept = paging.recorded(entries[:-1], entries[-1])
    assert len(kept) == paging.HANDOFFS_KEPT
    assert kept[-1] == entries[-1]


# ----------------------------------------------------------------------------- roles


def test_a_roles_holder_is_found_by_user_then_by_name_in_the_namespace() -> None:
    found = paging.find_person("oidc:alice", "shop", SCHEDULES)
    assert found is not None
    assert found.name == "alice"
    assert paging.find_person("bob", "shop", SCHEDULES) is not None
    assert paging.find_person("bob", "other", SCHEDULES) is None  # another namespace's schedule


def spec(**extra: Any) -> IncidentSpec:
    return IncidentSpec.model_validate(
        {"title": "web down", "severity": "P1", "category": "availability", **extra}
    )


def plan_input(incident: IncidentSpec, status: IncidentStatus, now: datetime, **extra: Any) -> PlanInput:
    playbook = Candidate(
        "pb", PlaybookSpec.model_validate({"steps": [{"name": "w", "httpCheck": {"url": "http://x/"}}]})
    )
    return PlanInput(
        spec=incident,
        status=status,
        generation=1,
        selection=select(incident, [playbook]),
        response_target=timedelta(minutes=15),
        now=now,
        namespace="shop",
        **{"schedules": SCHEDULES, **extra},
    )


def test_each_role_is_told_once_and_one_without_contact_is_recorded_as_not_told() -> None:
    incident = spec(
        commander="oidc:alice", roles={"techLead": "bob", "comms": "carol", "customerSuccess": "zed"}
    )
    first = plan(plan_input(incident, IncidentStatus(), T0, tell_channels=("mail",)))
    told = [
        (r.reason, r.person.name if r.person else None) for r in first.records if r.reason.startswith("Role")
    ]
    assert ("RoleTold", "alice") in told
    assert ("RoleTold", "bob") in told
    assert ("RoleNotTold", None) in told  # carol (no contact) and zed (in no schedule)
    messages = [e.message for e in first.status.timeline or [] if e.type == "RoleNotTold"]
    assert any("carol has no email or Slack id" in m for m in messages)
    assert any("zed not told" in m and "not in an on-call schedule of shop" in m for m in messages)
    assert {(t.role, t.told) for t in first.status.rolesTold or []} == {
        ("commander", True),
        ("techLead", True),
        ("comms", False),
        ("customerSuccess", False),
    }
    again = plan(plan_input(incident, first.status, T0 + timedelta(minutes=1), tell_channels=("mail",)))
    assert not [r for r in again.records if r.reason.startswith("Role")]  # once, across plans (and restarts)
    changed = spec(commander="oidc:alice", roles={"techLead": "oidc:alice"})
    third = plan(plan_input(changed, again.status, T0 + timedelta(minutes=2), tell_channels=("mail",)))
    # a new role: told once more
    new_roles = [r.message for r in third.records if r.reason == "RoleTold"]
    assert new_roles == ["oidc:alice told they are Technical Lead, through mail"]


def test_without_oncall_channels_nobody_is_told_and_the_timeline_says_why() -> None:
    decision = plan(plan_input(spec(roles={"techLead": "bob"}), IncidentStatus(), T0))
    assert [e.message for e in decision.status.timeline or [] if e.type == "RoleNotTold"] == [
        "bob not told they are Technical Lead: no oncall.channels configured"
    ]


# ----------------------------------------------------------------------------- escalation


def test_a_level_naming_a_schedule_pages_the_person_on_call_then_the_secondary() -> None:
    schedules = {
        **SCHEDULES,
        "platform/secondary": schedule(
            overrides=[{"person": "carol", "start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z"}]
        ),
    }
    levels = (
        Level(timedelta(0), ("mail", "og"), "shop/primary"),
        Level(timedelta(minutes=10), ("mail",), "platform/secondary"),
        Level(timedelta(minutes=20), ("mail",), "shop/missing"),
    )
    first = plan(plan_input(spec(), IncidentStatus(), T0, escalation=levels, schedules=schedules))
    paged = [r for r in first.records if r.reason == "Escalated"]
    assert paged[0].person is not None
    assert paged[0].person.name == "bob"
    assert "to bob on call in shop/primary" in paged[0].message
    history = first.status.escalation.history if first.status.escalation else []
    assert [(e.schedule, e.person) for e in history] == [("shop/primary", "bob")]
    later = check_deadlines(
        plan_input(spec(), first.status, T0 + timedelta(minutes=25), escalation=levels, schedules=schedules)
    )
    history = later.status.escalation.history if later.status.escalation else []
    assert [(e.level, e.person) for e in history] == [(1, "bob"), (2, "carol"), (3, None)]
    last = [r for r in later.records if r.reason == "Escalated"][-1]
    assert last.person is None
    assert "schedule shop/missing not found: to the channels' own recipients" in last.message


# ----------------------------------------------------------------------------- channels


ALICE = Addressee("shop/primary", "alice", "alice@example.com", "UALICE", "alice@og", "PALICE")
VIEW = IncidentView("shop", "web-outage", spec(), Phase.DETECTED)


def test_each_channel_addresses_the_person() -> None:
    notice = Notice("escalated", "[P1] web down: escalated", ("x",), person=ALICE)
    slack = slack_body(parse_channel({"name": "s", "type": "slack", "urlSecretRef": REF}), notice, VIEW)
    assert str(slack["text"]).startswith("<@UALICE> ")
    og = parse_channel({"name": "og", "type": "opsgenie", "keySecretRef": REF})
    assert isinstance(og, OpsgenieChannel)
    _, body = opsgenie(og, notice, VIEW)
    assert body["responders"] == [{"type": "user", "username": "alice@og"}]
    pd = parse_channel({"name": "pd", "type": "pagerduty", "keySecretRef": REF})
    assert isinstance(pd, PagerDutyChannel)
    payload = pagerduty(pd, notice, VIEW, "key")["payload"]
    assert isinstance(payload, dict)
    assert str(payload["summary"]).startswith(
        "for alice (on call in shop/primary): "
    )  # the service, naming them
    hook = webhook_body(parse_channel({"name": "w", "type": "webhook", "urlSecretRef": REF}), notice, VIEW)
    assert hook["person"] == "alice"


def test_a_slack_id_that_is_not_a_member_id_mentions_nobody() -> None:
    hostile = Addressee("shop/primary", "eve", slackId="<!channel>")
    notice = Notice("escalated", "m", person=hostile)
    slack = slack_body(parse_channel({"name": "s", "type": "slack", "urlSecretRef": REF}), notice, VIEW)
    assert "<!channel>" not in str(slack["text"])


def test_the_escalation_and_role_notices_carry_the_person() -> None:
    from incident_operator.core.planner import Record

    records = [
        Record("Escalated", "level 1 of 1: mail", channels=("mail",), person=ALICE),
        Record("RoleTold", "alice told they are Technical Lead", channels=("mail",), person=ALICE),
    ]
    found = notices(IncidentStatus(), IncidentStatus(), records, VIEW)
    assert [(n.event, n.person) for n in found] == [("escalated", ALICE), ("roleAssigned", ALICE)]


def test_a_role_notice_speaks_to_the_person() -> None:
    from incident_operator.core.planner import Record

    record = Record(
        "RoleTold",
        "bob told they are Technical Lead",
        channels=("mail",),
        person=ALICE,
        role="Technical Lead",
    )
    (notice,) = notices(IncidentStatus(), IncidentStatus(), [record], VIEW)
    assert "alice, you are Technical Lead (kubectl -n shop get incident web-outage)" in notice.message


def test_roles_of_a_resolved_incident_are_not_told() -> None:
    resolved = spec(roles={"techLead": "bob"}, resolution={"summary": "fixed"})
    first = plan(plan_input(resolved, IncidentStatus(), T0, tell_channels=("mail",)))
    upgraded = first.status.model_copy(update={"rolesTold": None})  # as from a version without it
    later = plan(plan_input(resolved, upgraded, T0 + timedelta(minutes=1), tell_channels=("mail",)))
    assert not [r for r in later.records if r.reason in ("RoleTold", "RoleNotTold")]


def test_the_cut_of_roles_told_never_drops_a_current_holder_so_nobody_is_told_twice() -> None:
    status = IncidentStatus()
    told_alice = 0
    for i in range(paging.ROLES_TOLD_KEPT + 10):  # the tech lead changes hands 74 times
        incident = spec(commander="oidc:alice", roles={"techLead": f"lead-{i}"})
        decision = plan(plan_input(incident, status, T0 + timedelta(minutes=i), tell_channels=("mail",)))
        status = decision.status
        told_alice += len(
            [r for r in decision.records if r.reason == "RoleTold" and r.message.startswith("oidc:")]
        )
        kept = status.rolesTold or []
        assert len(kept) <= paging.ROLES_TOLD_KEPT
        assert ("commander", "oidc:alice") in {(t.role, t.who) for t in kept}  # the oldest entry stays
        assert ("techLead", f"lead-{i}") in {(t.role, t.who) for t in kept}
    assert told_alice == 1
    assert [t.who for t in status.rolesTold or []][-2:] == [
        f"lead-{paging.ROLES_TOLD_KEPT + 8}",
        f"lead-{paging.ROLES_TOLD_KEPT + 9}",
    ]
    assert "lead-0" not in {t.who for t in status.rolesTold or []}  # an old holder is what goes


def test_roles_told_kept_keeps_current_holders_then_the_newest() -> None:
    told = [RoleTold(role="techLead", who=f"t{i}", told=False) for i in range(5)]
    told.insert(1, RoleTold(role="commander", who="c", told=True))
    kept = paging.roles_told_kept(told, spec(commander="c", roles={"techLead": "t0"}), cap=3)
    assert [(t.role, t.who) for t in kept] == [("techLead", "t0"), ("commander", "c"), ("techLead", "t4")]


@SETTINGS
@given(st.data())
def test_handoffs_are_announced_at_most_once_never_missed_and_not_again_for_an_extension(
    data: st.DataObject,
) -> None:
    """Watched at random moments: a turn is announced at most once; whenever someone is on call,
    the latest record is theirs (a change of person is never missed); an override that extends the
    current turn of the same person (an adjacent edit) announces nothing."""
    base = data.draw(moments)
    spec = data.draw(schedules(base=base))
    records: list[OnCallHandoff] = []
    announced: set[tuple[str, datetime]] = set()
    for minutes in sorted(data.draw(st.lists(st.integers(0, 6 * 1440), min_size=1, max_size=10))):
        now = base + timedelta(minutes=minutes)
        shift = paging.due_handoff(spec, records, now)
        if shift is not None:
            assert (shift.person, shift.start) not in announced
            announced.add((shift.person, shift.start))
            records = paging.recorded(records, told(shift))
            assert paging.due_handoff(spec, records, now) is None
        current = oncall.on_call(spec, now)
        if current is None:
            continue
        assert records[-1].person == current.person
        if oncall.open_ended(current, now):
            continue
        extension = {
            "person": current.person,
            "start": current.end.isoformat(),
            "end": (current.end + timedelta(hours=2)).isoformat(),
        }
        raw = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        edited = OnCallScheduleSpec.model_validate(
            {**raw, "overrides": [*raw.get("overrides", []), extension]}
        )
        assert paging.due_handoff(edited, records, current.end) is None


def test_an_open_ended_turn_bounds_nothing_and_the_same_person_after_someone_else_is_told() -> None:
    always = schedule(
        layers=[{"name": "solo", "start": "2026-11-30T08:00:00Z", "rotation": "P1D", "people": ["alice"]}]
    )
    alice = paging.due_handoff(always, [], T0)
    assert alice is not None
    assert oncall.open_ended(alice, T0)  # alice forever: her turn's end is where the search stopped
    records = [told(alice)]
    assert paging.due_handoff(always, records, T0 + timedelta(days=3)) is None  # the same turn
    # bob took a day that was never recorded (the operator was away); alice's turn after it is new
    edited = schedule(
        layers=[{"name": "solo", "start": "2026-11-30T08:00:00Z", "rotation": "P1D", "people": ["alice"]}],
        overrides=[{"person": "bob", "start": "2026-12-02T08:00:00Z", "end": "2026-12-03T08:00:00Z"}],
    )
    again = paging.due_handoff(edited, records, T0 + timedelta(days=2, hours=1))
    assert again is not None
    assert (again.person, again.start) == ("alice", T0 + timedelta(days=2))
    # an override of alice herself before then goes on with her turn
    hers = schedule(
        layers=[{"name": "solo", "start": "2026-11-30T08:00:00Z", "rotation": "P1D", "people": ["alice"]}],
        overrides=[{"person": "alice", "start": "2026-12-02T08:00:00Z", "end": "2026-12-03T08:00:00Z"}],
    )
    assert paging.due_handoff(hers, records, T0 + timedelta(days=2, hours=1)) is None


def test_a_turn_cut_at_both_ends_by_the_search_budget_is_announced_once() -> None:
    # a layer handing off every minute under one that keeps alice on call: every minute may be a
    # change, so the search runs out of budget both ways (a lone person's layer alone costs one)
    minutes = schedule(
        layers=[
            {
                "name": "minutes",
                "start": "2026-10-01T08:00:00Z",
                "rotation": "PT1M",
                "people": ["bob", "carol"],
            },
            {"name": "solo", "start": "2026-10-01T08:00:00Z", "rotation": "P1D", "people": ["alice"]},
        ]
    )
    alice = paging.due_handoff(minutes, [], T0)
    assert alice is not None
    assert alice.start <= T0 - oncall.HORIZON  # both ends are where the search stopped
    records = [told(alice)]
    for later in (timedelta(seconds=1), timedelta(minutes=5), timedelta(hours=2), timedelta(days=3)):
        assert paging.due_handoff(minutes, records, T0 + later) is None


@SETTINGS
@given(st.data())
def test_after_an_open_ended_turn_someone_elses_unrecorded_turn_makes_the_next_one_new(
    data: st.DataObject,
) -> None:
    """A person alone on call (open-ended), then anyone else for a while (not recorded), then the
    first again: that turn is announced, whenever it is looked at."""
    days = data.draw(st.integers(1, 300))
    hours = data.draw(st.integers(1, 48))
    solo = {"name": "solo", "start": "2026-11-30T08:00:00Z", "rotation": "P1D", "people": ["alice"]}
    start = T0 + timedelta(days=days)
    other = {"person": "bob", "start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat()}
    first = paging.due_handoff(schedule(layers=[solo]), [], T0)
    assert first is not None
    look = start + timedelta(hours=hours, minutes=data.draw(st.integers(0, 600)))
    again = paging.due_handoff(schedule(layers=[solo], overrides=[other]), [told(first)], look)
    assert again is not None
    assert (again.person, again.start) == ("alice", start + timedelta(hours=hours))
