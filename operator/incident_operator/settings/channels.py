"""Notification channels (`notifications.channels` of the --config file): one model per type.

`Channel` is a union discriminated by `type`; each member declares the fields its type uses and
`needs` (the ones it cannot work without, checked with the message 0.1 gave). Adding a channel is
one model here (in `Channel`) and one sender in `controllers.notifier.SENDERS`; a unit test ties
the two together.

0.1 had one flat model for every type and accepted a field another type uses (a `to:` on a
Slack channel, say) and ignored it. Such a file still loads: the field is dropped and named in
`ignored` (the operator logs it at start), so an upgrade never turns a running config into an
error. Pure.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from incident_operator.api.models import Severity
from incident_operator.settings import templates

NotificationEvent = Literal[
    "opened",
    "phase",
    "stepFailed",
    "breached",
    "resolved",
    "acknowledged",
    "escalated",
    "automationPaused",
    "updateOverdue",
    "update",
    "roleAssigned",
]
ALL_EVENTS: tuple[NotificationEvent, ...] = (
    "opened",
    "phase",
    "stepFailed",
    "breached",
    "resolved",
    "automationPaused",
    "updateOverdue",
)
"""What a channel takes by default. `update` (a public update published) is a statuspage
channel's by default, any other's when it lists it; `updateOverdue` (a reminder to the
communications lead) is internal: never a statuspage channel's."""
STATUSPAGE_EVENTS: tuple[NotificationEvent, ...] = (
    "opened",
    "phase",
    "stepFailed",
    "breached",
    "resolved",
    "automationPaused",
    "update",
)
INTERNAL_EVENTS: frozenset[str] = frozenset({"updateOverdue"})
"""Events a statuspage channel never takes (their text is for the response team)."""


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str
    name: str
    key: str = "url"


class Smtp(BaseModel):
    """How an `email` channel reaches its mail server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    """STARTTLS (port 587), implicit TLS (port 465), or none (only for a relay on the node)."""
    sender: str = Field(min_length=3, alias="from")
    usernameSecretRef: SecretRef | None = None
    passwordSecretRef: SecretRef | None = None
    caSecretRef: SecretRef | None = None
    """A PEM bundle to trust for the server's certificate (default: the system's)."""


# Every field a channel of 0.1 could carry, whatever its type (see the module docstring).
_FLAT_FIELDS = frozenset({"urlSecretRef", "url", "keySecretRef", "mode", "pageId", "smtp", "to", "cc"})


class ChannelBase(BaseModel):
    """What every channel has: a name, which notices it takes, and how hard it tries."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    paging: ClassVar[bool] = False
    """Pages through escalation levels (PagerDuty, Opsgenie) instead of taking events."""
    default_url: ClassVar[str] = ""
    default_events: ClassVar[tuple[NotificationEvent, ...]] = ALL_EVENTS

    name: str = Field(min_length=1)
    linkTemplate: str | None = None
    """A link back to the incident in pages and mail, e.g. 'https://console/{namespace}/{name}'."""
    events: tuple[NotificationEvent, ...] | None = None
    """Which notices the channel takes (default: opened, phase, stepFailed, breached, resolved).
    Paging channels (pagerduty, opsgenie) take none: they page when an escalation level names
    them, and then hear that incident's acknowledgement and resolution."""
    severities: tuple[Severity, ...] = ()
    """Only incidents of these severities (empty: all)."""
    namespaces: tuple[str, ...] = ()
    """Only incidents in these namespaces (empty: all)."""
    timeoutSeconds: float = Field(default=5.0, gt=0, le=60)
    maxAttempts: int = Field(default=3, ge=1, le=10)
    template: str | None = None
    """Message template, e.g. '{severity} {title}: {event}' (fields: see templates.FIELDS)."""
    ignored: tuple[str, ...] = Field(default=(), exclude=True)
    """Fields of another channel type this one was given (0.1 accepted them): dropped, logged."""

    @model_validator(mode="before")
    @classmethod
    def _drop_other_types_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        foreign = sorted(k for k in data if k in _FLAT_FIELDS and k not in cls.model_fields)
        if not foreign:
            return data
        kept = {k: v for k, v in data.items() if k not in foreign}
        return {**kept, "ignored": tuple(foreign)}

    @field_validator("template", "linkTemplate")
    @classmethod
    def _template_is_valid(cls, value: str | None) -> str | None:
        if value is not None:
            templates.check(value)
        return value

    def needs(self) -> tuple[str, ...]:
        """The fields this channel cannot work without."""
        return ()

    @model_validator(mode="after")
    def _has_what_it_needs(self) -> ChannelBase:
        kind = getattr(self, "type", "?")
        missing = [field for field in self.needs() if not getattr(self, field)]
        if missing:
            raise ValueError(f"channel {self.name} ({kind}) needs {', '.join(missing)}")
        if self.paging and self.events is not None:
            raise ValueError(
                f"channel {self.name} ({kind}) pages through escalation levels; it takes no events"
            )
        return self

    @property
    def takes(self) -> tuple[NotificationEvent, ...]:
        if self.paging:
            return ()
        return self.events if self.events is not None else self.default_events

    @property
    def secret_refs(self) -> tuple[SecretRef, ...]:
        """Every Secret a delivery reads (resolved before the notice is sent)."""
        return ()


class _UrlChannel(ChannelBase):
    urlSecretRef: SecretRef | None = None
    """The URL posted to."""

    def needs(self) -> tuple[str, ...]:
        return ("urlSecretRef",)

    @property
    def secret_refs(self) -> tuple[SecretRef, ...]:
        return (self.urlSecretRef,) if self.urlSecretRef else ()


class SlackChannel(_UrlChannel):
    """A Slack incoming webhook (`{"text": ...}`)."""

    type: Literal["slack"]


class WebhookChannel(_UrlChannel):
    """A JSON webhook: the notice with the incident's fields."""

    type: Literal["webhook"]


class StatuspageChannel(ChannelBase):
    """A status page: our JSON shape posted to `urlSecretRef`, or Statuspage's incident API.

    It hears only public incidents (`StatusPageConfig.publishes`, the status page's rule; never
    a drill) and says only public things: the title, the status, the impact and the updates
    marked `public: true` (`core.notices.statuspage_body`), never a notice's own text."""

    default_url: ClassVar[str] = "https://api.statuspage.io"
    default_events: ClassVar[tuple[NotificationEvent, ...]] = STATUSPAGE_EVENTS

    type: Literal["statuspage"]
    mode: Literal["json", "statuspageio"] = "json"
    """json: our JSON shape posted to `urlSecretRef` (one `id` per incident: create, then update);
    statuspageio: the Statuspage API (`pageId`, `keySecretRef`, `url`): one page incident per
    Incident, created once and then updated."""
    urlSecretRef: SecretRef | None = None
    url: str | None = None
    """statuspageio: the API's base URL (default: Statuspage's)."""
    keySecretRef: SecretRef | None = None
    """statuspageio: the API key."""
    pageId: str | None = None

    public_fields: ClassVar[tuple[str, ...]] = ("title", "severity", "phase", "event", "notice")
    """What a status page may be told: its `template` may use only these (`notice` is the latest
    public update, or the status and title), never a description, commander or failure text."""

    @field_validator("template")
    @classmethod
    def _template_is_public(cls, value: str | None) -> str | None:
        internal = sorted(templates.fields(value) - set(cls.public_fields)) if value else []
        if internal:
            raise ValueError(
                f"a statuspage channel's template may use only {', '.join(cls.public_fields)} "
                f"(public text); not {', '.join(internal)}"
            )
        return value

    @field_validator("events")
    @classmethod
    def _public_events(
        cls, value: tuple[NotificationEvent, ...] | None
    ) -> tuple[NotificationEvent, ...] | None:
        internal = sorted(set(value or ()) & INTERNAL_EVENTS)
        if internal:
            raise ValueError(f"a statuspage channel takes no internal events ({', '.join(internal)})")
        return value

    def needs(self) -> tuple[str, ...]:
        return ("urlSecretRef",) if self.mode == "json" else ("pageId", "keySecretRef")

    @property
    def secret_refs(self) -> tuple[SecretRef, ...]:
        return tuple(r for r in (self.urlSecretRef, self.keySecretRef) if r is not None)

    @property
    def api_url(self) -> str:
        return (self.url or self.default_url).rstrip("/")


class EmailChannel(ChannelBase):
    """Mail over SMTP, plain text and HTML."""

    type: Literal["email"]
    smtp: Smtp | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()

    def needs(self) -> tuple[str, ...]:
        return ("smtp", "to")

    @property
    def secret_refs(self) -> tuple[SecretRef, ...]:
        smtp = self.smtp
        if smtp is None:
            return ()
        refs = (smtp.usernameSecretRef, smtp.passwordSecretRef, smtp.caSecretRef)
        return tuple(r for r in refs if r is not None)


class _PagingChannel(ChannelBase):
    paging: ClassVar[bool] = True

    keySecretRef: SecretRef | None = None
    """PagerDuty: the integration's routing key; Opsgenie: the API key."""
    url: str | None = None
    """The API's URL (default: PagerDuty's or Opsgenie's)."""

    def needs(self) -> tuple[str, ...]:
        return ("keySecretRef",)

    @property
    def secret_refs(self) -> tuple[SecretRef, ...]:
        return (self.keySecretRef,) if self.keySecretRef else ()

    @property
    def api_url(self) -> str:
        return (self.url or self.default_url).rstrip("/")


class PagerDutyChannel(_PagingChannel):
    """PagerDuty's Events API v2: a page per incident (trigger, acknowledge, resolve)."""

    default_url: ClassVar[str] = "https://events.pagerduty.com/v2/enqueue"

    type: Literal["pagerduty"]


class OpsgenieChannel(_PagingChannel):
    """Opsgenie's Alert API: an alert per incident (create, acknowledge, close)."""

    default_url: ClassVar[str] = "https://api.opsgenie.com"

    type: Literal["opsgenie"]


Channel = Annotated[
    SlackChannel | WebhookChannel | StatuspageChannel | EmailChannel | PagerDutyChannel | OpsgenieChannel,
    Field(discriminator="type"),
]
"""Somewhere people hear about incidents: Slack, a JSON webhook, a status page, email, PagerDuty
(Events API v2) or Opsgenie (Alert API)."""

CHANNEL_TYPES: dict[str, type[ChannelBase]] = {
    "slack": SlackChannel,
    "webhook": WebhookChannel,
    "statuspage": StatuspageChannel,
    "email": EmailChannel,
    "pagerduty": PagerDutyChannel,
    "opsgenie": OpsgenieChannel,
}

_ADAPTER: TypeAdapter[Channel] = TypeAdapter(Channel)


def parse_channel(raw: Any) -> Channel:
    """One channel from its config mapping (raises pydantic's ValidationError)."""
    return _ADAPTER.validate_python(raw)
