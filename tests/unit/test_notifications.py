"""Which notices a change produces, who gets them, and in which shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.api.models import IncidentSpec, IncidentStatus, Phase, Severity
from incident_operator.core.notices import (
    IncidentView,
    Notice,
    channels_for,
    notices,
    slack_body,
    statuspage_body,
    statuspage_io,
    webhook_body,
)
from incident_operator.core.planner import Record
from incident_operator.settings.channels import Channel, StatuspageChannel, parse_channel
from incident_operator.settings.config import EscalationPolicy, Notifications, StatusPageConfig

SPEC = IncidentSpec.model_validate({"title": "web down", "severity": "P1", "category": "availability"})
VIEW = IncidentView("shop", "web-outage", SPEC, Phase.MITIGATING)
REF = {"namespace": "ops", "name": "hooks"}
PAGE = StatusPageConfig(namespaces=("shop",), publicSeverities=("P1",))


def channel(name: str, type_: str = "slack", **extra: Any) -> Channel:
    return parse_channel({"name": name, "type": type_, "urlSecretRef": REF, **extra})


def statuspage(name: str, **extra: Any) -> StatuspageChannel:
    found = channel(name, "statuspage", **extra)
    assert isinstance(found, StatuspageChannel)
    return found


def status(phase: Phase | None) -> IncidentStatus:
    return IncidentStatus(phase=phase, detectedAt=datetime(2026, 1, 1, tzinfo=UTC))


def test_opening_phase_changes_failures_breaches_and_resolution_are_noticed() -> None:
    opened = notices(IncidentStatus(), status(Phase.MITIGATING), [Record("Detected", "x")], VIEW)
    assert [n.event for n in opened] == ["opened"]
    moved = notices(status(Phase.MITIGATING), status(Phase.MONITORING), [Record("Monitoring", "x")], VIEW)
    assert moved[0].message.endswith("Mitigating -> Monitoring")
    failed = notices(
        status(Phase.MITIGATING), status(Phase.MITIGATING), [Record("StepFailed", "step s failed")], VIEW
    )
    assert [n.event for n in failed] == ["stepFailed"]
    resolved = notices(status(Phase.MONITORING), status(Phase.RESOLVED), [Record("Resolved", "ok")], VIEW)
    assert [n.event for n in resolved] == ["resolved"]  # not also a phase notice
    breached = notices(status(None), status(None), [Record("ResponseTargetBreached", "late")], VIEW)
    assert "P1 response target" in breached[0].message


def test_channels_filter_by_event_severity_namespace_and_escalate_on_breach() -> None:
    config = Notifications(
        channels=(
            channel("all"),
            channel("p2-only", severities=["P2"]),
            channel("other-ns", namespaces=["payments"]),
            channel("pager", events=[]),
            channel("payments-pager", events=[], namespaces=["payments"]),
        ),
        escalation={Severity.P1: EscalationPolicy.model_validate(["pager", "payments-pager"])},
    )
    assert [c.name for c in channels_for(config, Notice("opened", "m"), VIEW, PAGE)] == ["all"]
    assert [c.name for c in channels_for(config, Notice("breached", "m"), VIEW, PAGE)] == ["all"]
    escalated = Notice("escalated", "m", channels=("pager",))  # the engine names the level's channels
    assert [c.name for c in channels_for(config, escalated, VIEW, PAGE)] == ["pager"]
    assert config.escalation[Severity.P1].levels[0].afterSeconds is None  # the list form: at the target


def test_escalation_to_an_unknown_channel_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="escalation names unknown channels: ghost"):
        Notifications.model_validate({"channels": [channel("a")], "escalation": {"P1": ["ghost"]}})


def test_payload_shapes_and_templates() -> None:
    notice = Notice("phase", "[P1] web down: Investigating -> Mitigating")
    said = "[P1] web down: Investigating -&gt; Mitigating"  # Slack shows ->
    assert slack_body(channel("s"), notice, VIEW) == {"text": said}
    templated = channel("t", template=":fire: {severity} {name} {event}: {notice}")
    assert slack_body(templated, notice, VIEW)["text"] == f":fire: P1 web-outage phase: {said}"
    page = statuspage_body(statuspage("p"), notice, VIEW)
    assert (page["status"], page["impact"], page["title"]) == ("Identified", "critical", "web down")
    hook = webhook_body(channel("w", "webhook"), notice, VIEW)
    assert (hook["event"], hook["namespace"], hook["phase"]) == ("phase", "shop", "Mitigating")


def test_a_bad_channel_template_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="unknown field"):
        channel("bad", template="{secret_url}")


KEY = {"namespace": "ops", "name": "paging", "key": "key"}


def test_paging_channels_need_their_key_and_take_no_events() -> None:
    with pytest.raises(ValidationError, match=r"channel pd \(pagerduty\) needs keySecretRef"):
        parse_channel({"name": "pd", "type": "pagerduty"})
    with pytest.raises(ValidationError, match="pages through escalation levels"):
        parse_channel({"name": "pd", "type": "pagerduty", "keySecretRef": KEY, "events": ["opened"]})
    with pytest.raises(ValidationError, match=r"channel mail \(email\) needs smtp, to"):
        parse_channel({"name": "mail", "type": "email"})
    with pytest.raises(ValidationError, match="in the order of their afterSeconds"):
        Notifications.model_validate(
            {
                "channels": [{"name": "a", "type": "slack", "urlSecretRef": REF}],
                "escalation": {
                    "P1": {
                        "levels": [
                            {"afterSeconds": 60, "channels": ["a"]},
                            {"afterSeconds": 0, "channels": ["a"]},
                        ]
                    }
                },
            }
        )


def test_an_escalation_pages_and_a_person_acknowledging_and_resolving_follow_up_where_it_paged() -> None:
    from incident_operator.api.models import EscalationEntry, EscalationStatus

    paged = status(Phase.INVESTIGATING)
    paged.escalation = EscalationStatus(
        level=1,
        history=[EscalationEntry(level=1, at=datetime(2026, 1, 1, tzinfo=UTC), channels=["pd", "og"])],
    )
    escalated = notices(
        status(Phase.INVESTIGATING),
        paged,
        [Record("Escalated", "level 1 of 2: pd, og", True, channels=("pd", "og"))],
        VIEW,
    )
    assert [(n.event, n.channels) for n in escalated] == [("escalated", ("pd", "og"))]
    acked = notices(paged, paged, [Record("Acknowledged", "by alice", actor="alice")], VIEW)
    assert [(n.event, n.channels) for n in acked] == [("acknowledged", ("pd", "og"))]
    resolved = notices(paged, paged, [Record("Resolved", "ok")], VIEW)
    assert [(n.event, n.channels) for n in resolved] == [("resolved", ("pd", "og"))]
    never_paged = notices(
        status(Phase.INVESTIGATING),
        status(Phase.INVESTIGATING),
        [Record("Acknowledged", "x", actor="bob")],
        VIEW,
    )
    assert never_paged == []


def test_pagerduty_events_share_one_dedup_key_and_map_the_severity() -> None:
    from incident_operator.core.notices import pagerduty

    pd = parse_channel(
        {
            "name": "pd",
            "type": "pagerduty",
            "keySecretRef": KEY,
            "linkTemplate": "https://console/{namespace}/{name}",
        }
    )
    trigger = pagerduty(pd, Notice("escalated", "escalated, level 1"), VIEW, "R0UTING")
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == "R0UTING"
    assert trigger["dedup_key"] == "incident-operator/shop/web-outage"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["links"] == [
        {"href": "https://console/shop/web-outage", "text": "incident shop/web-outage"}
    ]
    ack = pagerduty(pd, Notice("acknowledged", "by alice"), VIEW, "R0UTING")
    resolve = pagerduty(pd, Notice("resolved", "ok"), VIEW, "R0UTING")
    assert (ack["event_action"], resolve["event_action"]) == ("acknowledge", "resolve")
    assert ack["dedup_key"] == resolve["dedup_key"] == trigger["dedup_key"]
    assert "payload" not in ack
    assert pd.api_url == "https://events.pagerduty.com/v2/enqueue"


def test_opsgenie_creates_then_acknowledges_and_closes_by_alias() -> None:
    from incident_operator.core.notices import opsgenie

    og = parse_channel({"name": "og", "type": "opsgenie", "keySecretRef": KEY, "url": "http://127.0.0.1:9/"})
    path, body = opsgenie(og, Notice("escalated", "m"), VIEW)
    assert path == "/v2/alerts"
    assert (body["alias"], body["priority"], body["message"]) == (
        "incident-operator/shop/web-outage",
        "P1",
        "[P1] web down",
    )
    path, _ = opsgenie(og, Notice("acknowledged", "m"), VIEW)
    assert path == "/v2/alerts/incident-operator%2Fshop%2Fweb-outage/acknowledge?identifierType=alias"
    path, _ = opsgenie(og, Notice("resolved", "m"), VIEW)
    assert path.endswith("/close?identifierType=alias")
    assert og.api_url == "http://127.0.0.1:9"


def test_email_text_and_html_come_from_the_same_template() -> None:
    from incident_operator.core.notices import email

    mail = parse_channel(
        {
            "name": "mail",
            "type": "email",
            "smtp": {"host": "smtp.example.com", "from": "ops@example.com"},
            "to": ["lead@example.com"],
            "template": "{severity} {title} <{event}>",
        }
    )
    subject, plain, rich = email(mail, Notice("escalated", "m"), VIEW)
    assert subject == "[P1] web down: escalated"
    assert plain.startswith("P1 web down <escalated>")
    assert "P1 web down &lt;escalated&gt;" in rich  # the same text, escaped
    assert "kubectl -n shop get incident web-outage" in plain


def test_the_statuspage_api_shape_creates_then_updates_and_the_json_mode_names_the_incident() -> None:
    from incident_operator.core.notices import statuspage_io

    sp = parse_channel(
        {"name": "sp", "type": "statuspage", "mode": "statuspageio", "pageId": "PAGE 1", "keySecretRef": KEY}
    )
    method, path, body = statuspage_io(sp, Notice("opened", "m"), VIEW, None)
    assert (method, path) == ("POST", "/v1/pages/PAGE%201/incidents")
    assert body["incident"]["name"] == "web down"
    assert body["incident"]["status"] == "identified"  # Mitigating
    method, path, body = statuspage_io(sp, Notice("resolved", "m"), VIEW, "pi-1")
    assert (method, path) == ("PATCH", "/v1/pages/PAGE%201/incidents/pi-1")
    assert "name" not in body["incident"]
    assert sp.api_url == "https://api.statuspage.io"
    with pytest.raises(ValidationError, match=r"needs pageId, keySecretRef"):
        parse_channel({"name": "sp", "type": "statuspage", "mode": "statuspageio"})
    json_mode = statuspage_body(statuspage("p"), Notice("opened", "m"), VIEW)
    assert (json_mode["id"], json_mode["action"]) == ("incident-operator/shop/web-outage", "create")
    assert statuspage_body(statuspage("p"), Notice("resolved", "m"), VIEW)["action"] == "update"


def test_a_channel_hears_one_incidents_notices_in_order_even_if_the_first_is_slow() -> None:
    import asyncio

    from incident_operator.controllers.notifier import Notifier

    delivered: list[str] = []

    class Recording(Notifier):
        async def deliver(self, channel: Channel, notice: Notice, view: IncidentView) -> str | None:
            if notice.event == "opened":
                await asyncio.sleep(0.05)  # a slow first delivery (a Secret read, a slow receiver)
            delivered.append(f"{channel.name}:{view.name}:{notice.event}")
            return None

    async def scenario() -> None:
        config = Notifications.model_validate({"channels": [channel("a", events=["opened", "phase"])]})
        notifier = Recording(None, None, config)
        other = IncidentView("shop", "other", SPEC, Phase.MITIGATING)
        tasks = notifier.send_all([Notice("opened", "x")], VIEW, delivered.append)
        tasks += notifier.send_all([Notice("phase", "y")], VIEW, delivered.append)
        tasks += notifier.send_all([Notice("phase", "z")], other, delivered.append)
        await asyncio.gather(*tasks)
        assert notifier.latest == {}

    asyncio.run(scenario())
    # Same channel and incident: in order. Another incident does not wait for this one.
    assert delivered == ["a:other:phase", "a:web-outage:opened", "a:web-outage:phase"]


def test_every_channel_type_has_one_model_and_one_sender() -> None:
    from typing import get_args

    from incident_operator.controllers.notifier import SENDERS
    from incident_operator.settings.channels import CHANNEL_TYPES

    members = get_args(get_args(Channel)[0])
    assert {m.model_fields["type"].annotation.__args__[0] for m in members} == set(CHANNEL_TYPES)
    assert set(CHANNEL_TYPES.values()) == set(members)
    assert set(SENDERS) == set(CHANNEL_TYPES)


SMTP = {"host": "mail.example.com", "from": "ops@example.com"}
EVERY_FIELD_OF_01 = {  # 0.1's one flat channel model accepted all of these on every type
    "urlSecretRef": REF,
    "url": "https://api.example.com",
    "keySecretRef": KEY,
    "mode": "json",
    "pageId": "p1",
    "smtp": SMTP,
    "to": ["oncall@example.com"],
    "cc": ["lead@example.com"],
}


@pytest.mark.parametrize("kind", ["slack", "webhook", "statuspage", "email", "pagerduty", "opsgenie"])
def test_a_channel_config_0_1_accepted_still_loads_and_names_what_it_ignores(kind: str) -> None:
    from incident_operator.settings.channels import CHANNEL_TYPES

    raw = {"name": "c", "type": kind, **EVERY_FIELD_OF_01}
    loaded = parse_channel(raw)
    assert type(loaded) is CHANNEL_TYPES[kind]
    own = set(type(loaded).model_fields)
    assert set(loaded.ignored) == set(EVERY_FIELD_OF_01) - own
    assert all(getattr(loaded, field) is not None for field in set(EVERY_FIELD_OF_01) & own)
    with pytest.raises(ValidationError, match="unknownField"):
        parse_channel({**raw, "unknownField": 1})  # a field no type ever had is still an error


def test_the_shipped_and_documented_configs_load() -> None:
    import re
    from pathlib import Path

    import yaml

    from incident_operator.settings.config import FileConfig

    root = Path(__file__).resolve().parents[2]
    shipped = yaml.safe_load((root / "manifests" / "install" / "config.yaml").read_text())
    FileConfig.model_validate(yaml.safe_load(shipped["data"]["config.yaml"]) or {})
    loaded = 0
    for doc in sorted((root / "docs").rglob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and "notifications" in data and "channels" in data["notifications"]:
                FileConfig.model_validate(data)
                loaded += 1
    assert loaded > 0  # the notification guide shows a config with channels


# ----------------------------------------------------------------------------- Slack's escaping

INJECTED = "db <!channel> <@U123> <http://evil.example|click> & co"
ESCAPED = "db &lt;!channel&gt; &lt;@U123&gt; &lt;http://evil.example|click&gt; &amp; co"


def test_slack_text_from_people_cannot_mention_or_link() -> None:
    spec = IncidentSpec.model_validate(
        {"title": INJECTED, "description": "<!here>", "severity": "P1", "category": "availability"}
    )
    view = IncidentView("shop", "web-outage", spec, Phase.MITIGATING)
    (opened,) = notices(IncidentStatus(), status(Phase.MITIGATING), [Record("Detected", "x")], view)
    said = slack_body(channel("s"), opened, view)["text"]
    assert isinstance(said, str)
    assert ESCAPED in said
    assert "<" not in said
    assert ">" not in said
    templated = channel("t", template="{title} / {description} / {notice}")
    said = slack_body(templated, Notice("stepFailed", "step <b> failed & stopped"), view)["text"]
    assert said == f"{ESCAPED} / &lt;!here&gt; / step &lt;b&gt; failed &amp; stopped"


def test_the_operators_own_slack_template_keeps_its_formatting() -> None:
    """A channel's template is the operator's configuration: its mentions and links stay."""
    templated = channel("t", template="<!subteam^S1> {title} <https://status.example|status>")
    spec = IncidentSpec.model_validate({"title": "a <b> & c", "severity": "P1", "category": "availability"})
    view = IncidentView("shop", "web-outage", spec, Phase.MITIGATING)
    said = slack_body(templated, Notice("opened", "m"), view)["text"]
    assert said == "<!subteam^S1> a &lt;b&gt; &amp; c <https://status.example|status>"


def test_only_slack_escapes() -> None:
    spec = IncidentSpec.model_validate({"title": INJECTED, "severity": "P1", "category": "availability"})
    view = IncidentView("shop", "web-outage", spec, Phase.MITIGATING)
    notice = Notice("opened", INJECTED)
    assert webhook_body(channel("w", "webhook"), notice, view)["message"] == INJECTED
    assert statuspage_body(statuspage("p"), notice, view)["title"] == INJECTED


def test_the_notify_actions_slack_message_is_escaped_and_its_webhook_message_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    from types import SimpleNamespace

    from incident_operator.api.models import PlaybookSpec, StepStatus
    from incident_operator.controllers import actions

    posted: list[Any] = []

    class Outbound:
        async def request(self, method: str, url: str, **kwargs: Any) -> Any:
            posted.append(kwargs["json"])
            return SimpleNamespace(status_code=200)

    async def secret_url(ctx: Any, name: str, key: str) -> str:
        return "https://hooks.example/x"

    monkeypatch.setattr(actions, "read_secret_url", secret_url)
    ref = {"urlSecretRef": {"name": "hook", "key": "url"}}
    spec = IncidentSpec.model_validate({"title": INJECTED, "severity": "P1", "category": "availability"})
    for target in ("slack", "webhook"):
        playbook = PlaybookSpec.model_validate(
            {"steps": [{"name": "tell", "notify": {target: ref, "message": "<!here> {title}"}}]}
        )
        ctx = actions.ActionContext(
            kube=None,
            outbound=Outbound(),
            limits=None,
            namespace="shop",
            incident="web-outage",
            incident_uid="uid",
            spec=spec,
            status=IncidentStatus(phase=Phase.MITIGATING),
            playbook=playbook,
            step=playbook.steps[0],
            step_status=StepStatus(name="tell", action="notify", attempts=1),
            now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
            persist=None,
        )
        assert asyncio.run(actions.notify(ctx)).ok
    slack, webhook = posted
    assert slack == {"text": f"&lt;!here&gt; {ESCAPED}"}  # a Playbook's message is people's text too
    assert webhook["message"] == f"<!here> {INJECTED}"  # JSON receivers escape for themselves


def _view(namespace: str = "shop", **spec: Any) -> IncidentView:
    fields = {"title": "web down", "severity": "P1", "category": "availability", **spec}
    return IncidentView(namespace, "web-outage", IncidentSpec.model_validate(fields), Phase.MITIGATING)


def test_a_statuspage_channel_takes_only_public_incidents_never_drills() -> None:
    config = Notifications(channels=(channel("all"), statuspage("page")))
    opened = Notice("opened", "m")

    def names(view: IncidentView, page: StatusPageConfig = PAGE) -> list[str]:
        return [c.name for c in channels_for(config, opened, view, page)]

    assert names(_view()) == ["all", "page"]  # P1 is a public severity in shop
    assert names(_view(), StatusPageConfig(publicSeverities=("P1",))) == ["all"]  # no namespace listed
    assert names(_view("dev", public=True)) == ["all"]  # dev is not listed
    assert names(_view(severity="P3")) == ["all"]
    assert names(_view(severity="P3", public=True)) == ["all", "page"]
    assert names(_view(public=False)) == ["all"]
    assert names(_view(drill=True, public=True)) == ["all"]
    assert names(_view(source={"type": "drill"}, public=True)) == ["all"]


def test_a_statuspage_channel_says_only_public_updates_never_failures_or_the_description() -> None:
    updates = [
        {"time": "2026-01-01T10:00:00Z", "message": "We are looking into failed checkouts.", "public": True},
        {"time": "2026-01-01T10:05:00Z", "message": "db-7 OOM, pod web-7d9f8 crashloop"},
    ]
    view = _view(description="internal: see runbook", updates=updates)
    failed = Notice("stepFailed", "[P1] web down: step kill failed: job log tail: password=hunter2")
    body = statuspage_body(statuspage("p"), failed, view)
    assert body["message"] == "We are looking into failed checkouts."
    assert body["updates"] == [
        {
            "time": "2026-01-01T10:00:00Z",
            "status": "identified",
            "message": "We are looking into failed checkouts.",
        }
    ]
    _, _, api = statuspage_io(
        statuspage("sp", mode="statuspageio", pageId="p1", keySecretRef=KEY), failed, view, None
    )
    assert api["incident"]["body"] == "We are looking into failed checkouts."
    for said in (json.dumps(body), json.dumps(api)):
        for internal in ("hunter2", "db-7", "runbook"):
            assert internal not in said
    quiet = statuspage_body(statuspage("p"), failed, _view())
    assert quiet["message"] == "Identified: web down"  # no public update yet: the status and the title
    templated = statuspage("t", template="{severity} {title}: {notice}")
    assert statuspage_body(templated, failed, view)["message"] == (
        "P1 web down: We are looking into failed checkouts."
    )
    with pytest.raises(ValidationError, match=r"may use only .*not description"):
        statuspage("bad", template="{title}: {description}")


def test_a_reminder_to_a_person_without_a_slack_id_is_not_posted_unaddressed() -> None:
    import asyncio
    import time

    from incident_operator.controllers import notifier as notifier_module
    from incident_operator.controllers.notifier import Notifier
    from incident_operator.core.paging import Addressee

    posted: list[str] = []

    async def record(notifier: Notifier, ch: Any, notice: Notice, view: IncidentView, value: Any) -> None:
        posted.append(str(slack_body(ch, notice, view)["text"]))

    chat = channel("chat", events=[])
    config = Notifications(channels=(chat,))
    failures: list[str] = []

    async def scenario() -> None:
        notifier = Notifier(None, None, config)
        ref = chat.secret_refs[0]
        notifier.secrets[(ref.namespace, ref.name, ref.key)] = (time.monotonic(), "https://h.example/")
        for person in (
            Addressee("shop/team", "alice", "alice@example.com"),
            Addressee("shop/team", "bob", None, "UBOB"),
        ):
            notice = Notice("updateOverdue", "overdue", ("chat",), person=person, personal=True)
            await asyncio.gather(*notifier.send_all([notice], VIEW, failures.append))

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(notifier_module.SENDERS, "slack", record)
        asyncio.run(scenario())
    assert posted == ["<@UBOB> overdue"]  # alice (no Slack id) is told by mail, not in the channel
    assert failures == []
