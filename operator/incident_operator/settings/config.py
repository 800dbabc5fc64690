"""Run-time settings of the operator: what the command line and the --config file may set.

Pure: no kopf, no Kubernetes client, no I/O except `load_config_file`, which only reads a file.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from incident_operator.api.keys import DEFAULT_LEASE_NAME
from incident_operator.api.models import Category, IncidentSpec, Severity, SourceType
from incident_operator.settings.channels import Channel
from incident_operator.settings.egress import EgressPolicy, TenantEgress

Port = Annotated[int, Field(ge=1, le=65535)]


class ResponseTargets(BaseModel):
    """Time to acknowledge, per severity (seed section 1.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    P1: timedelta = timedelta(minutes=15)
    P2: timedelta = timedelta(hours=1)
    P3: timedelta = timedelta(hours=4)
    P4: timedelta = timedelta(hours=24)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # fullmatch: no trailing newline
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class TokenSecretRef(BaseModel):
    """Where an alert token is: a key of a Secret (in the operator's namespace, by convention)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(pattern=_DNS_LABEL.pattern)
    name: str = Field(pattern=_SECRET_NAME.pattern)
    key: str = Field(default="token", min_length=1, max_length=253)


class AlertToken(BaseModel):
    """A bearer token bound to the namespaces its alerts may open incidents in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secretRef: TokenSecretRef
    namespaces: tuple[str, ...] = Field(min_length=1)
    """The only namespaces an alert sent with this token may open or change incidents in."""

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in value if not _DNS_LABEL.fullmatch(n)]
        if bad:
            raise ValueError(f"not namespace names: {', '.join(map(repr, bad))}")
        return value


class AlertIntakeConfig(BaseModel):
    """How Alertmanager alerts become Incidents (`alertIntake:` in the --config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severityMap: dict[str, Severity] = {
        "critical": Severity.P1,
        "high": Severity.P2,
        "error": Severity.P2,
        "warning": Severity.P3,
        "info": Severity.P4,
    }
    defaultSeverity: Severity = Severity.P3
    categoryByAlertname: dict[str, Category] = {
        "ServiceDown": Category.AVAILABILITY,
        "HighErrorRate": Category.AVAILABILITY,
        "DatabaseDown": Category.DATA,
        "QueueBacklog": Category.PERFORMANCE,
    }
    defaultCategory: Category = Category.AVAILABILITY
    defaultNamespace: str | None = None
    """Namespace for alerts without a `namespace` label (else they are skipped)."""
    maxBodyBytes: int = Field(default=1_048_576, ge=1024, le=67_108_864)
    maxAlertsPerRequest: int = Field(default=1000, ge=1, le=100_000)
    """More alerts in one delivery are refused with 413 (Alertmanager retries smaller groups)."""
    namespaces: tuple[str, ...] = ()
    """Namespaces alerts may open incidents in (empty: every watched namespace but the excluded)."""
    excludeNamespaces: tuple[str, ...] = ("kube-system",)
    """Never open incidents here (the operator's own namespace is always excluded too)."""
    tokens: tuple[AlertToken, ...] = Field(default=(), max_length=1000)
    """Bearer tokens bound to namespaces, besides the one of --alert-token-secret (which is bound
    to none: it may open incidents wherever `namespaces` and `excludeNamespaces` allow)."""

    @field_validator("tokens")
    @classmethod
    def _distinct_secrets(cls, value: tuple[AlertToken, ...]) -> tuple[AlertToken, ...]:
        refs = [t.secretRef for t in value]
        repeated = {f"{r.namespace}/{r.name} key {r.key}" for r in refs if refs.count(r) > 1}
        if repeated:
            raise ValueError(f"the same Secret key in two tokens: {', '.join(sorted(repeated))}")
        return value


SCHEDULE_REF_PATTERN = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$"
"""An OnCallSchedule named by an escalation level: NAME, or NAMESPACE/NAME."""


class EscalationLevel(BaseModel):
    """One level of an escalation policy: who is told, and when, while no person has acknowledged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    afterSeconds: int | None = Field(default=None, ge=0, le=7 * 86400)
    """Seconds after detection; none: when the severity's response target passes."""
    channels: tuple[str, ...] = Field(min_length=1)
    schedule: str | None = Field(default=None, pattern=SCHEDULE_REF_PATTERN)
    """An OnCallSchedule (`NAME` in the incident's namespace, or `NAMESPACE/NAME`): the level's
    channels are addressed to the person on call in it when the level fires (email to their
    address, Slack mentioning them, Opsgenie with them as responder, PagerDuty naming them);
    nobody on call, or no such schedule: the channels' own recipients."""


class EscalationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: tuple[EscalationLevel, ...] = Field(min_length=1, max_length=10)

    @model_validator(mode="before")
    @classmethod
    def _from_channel_list(cls, value: object) -> object:
        """The older form, a list of channels: one level, at the response target."""
        if isinstance(value, list | tuple):
            return {"levels": [{"channels": list(value)}]}
        return value

    @model_validator(mode="after")
    def _in_order(self) -> EscalationPolicy:
        timed = [level.afterSeconds for level in self.levels if level.afterSeconds is not None]
        if timed != sorted(timed):
            raise ValueError("escalation levels must come in the order of their afterSeconds")
        return self


class Notifications(BaseModel):
    """`notifications:` in the --config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[Channel, ...] = ()
    escalation: dict[Severity, EscalationPolicy] = {}
    """Per severity, who is told while nobody acknowledges: levels with a delay and channels."""

    @model_validator(mode="after")
    def _known_channels(self) -> Notifications:
        names = [c.name for c in self.channels]
        if len(names) != len(set(names)):
            raise ValueError("channel names must be unique")
        unknown = {
            n for policy in self.escalation.values() for level in policy.levels for n in level.channels
        } - set(names)
        if unknown:
            raise ValueError(f"escalation names unknown channels: {', '.join(sorted(unknown))}")
        return self


class OnCallConfig(BaseModel):
    """`oncall:` in the --config file: how the operator reaches people of OnCallSchedules.

    Mail goes to a person's own address only when its domain is listed (none listed: no mail to
    people; their level's email channel mails its own `to` instead), and at most
    `maxMailsPerPersonPerHour` per namespace and address: the schedules of one namespace listing
    an address, under any name, share one budget; each namespace listing it has its own (one
    tenant cannot spend another's). Counted in the schedules' `status.mailsSent`, so a restart does
    not start the count again from zero; an entry there counts only if its address is one of that
    schedule's people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowedEmailDomains: tuple[str, ...] = ()
    """Domains (example.com; a subdomain matches too) a person's email may be in."""
    maxMailsPerPersonPerHour: int = Field(default=10, ge=1, le=1000)
    """Mails to one address in any hour, per namespace whose schedules list it."""
    channels: tuple[str, ...] = ()
    """Channels (email and/or slack) people are told through of handoffs and of roles given to
    them: an email channel's SMTP server mails them, a slack channel mentions them. None: nobody
    is told of handoffs and roles."""

    @field_validator("allowedEmailDomains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for domain in value:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+", domain):
                raise ValueError(f"allowedEmailDomains: {domain!r} is not a lower-case domain name")
        return value


class LeaderElection(BaseModel):
    """`leaderElection:` in the --config file: the Lease that lets one replica act at a time.

    Used when the operator runs with `--leader-elect`. After the active replica dies, a standby
    takes over within `leaseDurationSeconds` + `retryPeriodSeconds`; a leader that cannot renew
    for `renewDeadlineSeconds` stops acting (before anyone may consider its Lease expired).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    leaseName: str = Field(default=DEFAULT_LEASE_NAME, min_length=1)
    namespace: str | None = None
    """Namespace of the Lease; default: the pod's own namespace, else `incident-operator`."""
    leaseDurationSeconds: int = Field(default=15, ge=2, le=300)
    renewDeadlineSeconds: int = Field(default=10, ge=1, le=300)
    retryPeriodSeconds: int = Field(default=2, ge=1, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElection:
        if not self.retryPeriodSeconds < self.renewDeadlineSeconds < self.leaseDurationSeconds:
            raise ValueError(
                "leaderElection needs retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds"
            )
        return self


class AccessConfig(BaseModel):
    """`access:` in the --config file: how the operator learns what it may do in a namespace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recheckSeconds: int = Field(default=30, ge=1, le=3600)
    """How often an incident stalled as Forbidden (namespace not opted in) checks again."""
    remediatorBinding: str = "incident-operator-remediator"
    """Name of the RoleBinding (and ClusterRole) that opts a namespace in, named in messages."""
    jobsBinding: str = "incident-operator-jobs"
    """Name of the RoleBinding (and ClusterRole) that lets Job steps run in a namespace."""


class NamespaceEgress(BaseModel):
    """One entry of `egress.namespaces`: private addresses these namespaces' Playbooks may reach."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: tuple[str, ...] = Field(min_length=1)
    """Namespace names; `["*"]` is every namespace (for a single-tenant cluster only)."""
    allow: tuple[str, ...] = Field(min_length=1)
    """CIDRs or exact host names: reachable from these namespaces even when not public (the
    global `allow`/`deny` and the always-denied addresses still apply)."""

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in value and len(value) > 1:
            raise ValueError('"*" (every namespace) stands alone in its entry')
        bad = [ns for ns in value if ns != "*" and not _DNS_LABEL.fullmatch(ns)]
        if bad:
            raise ValueError(f"not namespace names: {bad}")
        return value

    @field_validator("allow")
    @classmethod
    def _entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        EgressPolicy.build(allow=value)  # raises EgressError (a ValueError) on a bad entry
        return value


_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")


class EgressConfig(BaseModel):
    """`egress:` in the --config file: where outgoing requests may go (see `egress`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: tuple[str, ...] = ()
    """CIDRs or exact host names; once non-empty, nothing else is reachable."""
    deny: tuple[str, ...] = ()
    namespaces: tuple[NamespaceEgress, ...] = ()
    """Playbook requests only: the private addresses (beyond the namespace's own Services) each
    namespace may reach. Without an entry, a namespace reaches its own Services and public
    addresses."""
    clusterDomain: str = Field(default="cluster.local", pattern=_DOMAIN.pattern, max_length=253)
    """The cluster's DNS domain: `NAME.NS.svc.<clusterDomain>` names a Service of NS."""
    clusterNetworks: tuple[str, ...] = ()
    """CIDRs of the cluster's own pods, Services and nodes: never public to Playbook requests,
    even where they are global addresses (IPv6 clusters, public ranges used privately)."""

    @field_validator("clusterNetworks")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        TenantEgress.build(cluster_networks=value)  # raises EgressError (a ValueError) on a bad one
        return value

    @field_validator("allow", "deny")
    @classmethod
    def _entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        EgressPolicy.build(allow=value)  # raises EgressError (a ValueError) on a bad entry
        return value

    def tenant_policy(self) -> TenantEgress:
        """The per-namespace policy of Playbook requests (`egress.TenantEgress`)."""
        return TenantEgress.build(
            ((e.namespaces, e.allow) for e in self.namespaces), self.clusterDomain, self.clusterNetworks
        )


class Limits(BaseModel):
    """`limits:` in the --config file: ceilings applied to every Playbook, even one that sets none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    maxReplicas: int = Field(default=100, ge=0, le=10_000)
    """No scale step goes above this."""
    maxPodDeletionsPerIncident: int = Field(default=20, ge=0, le=10_000)
    """Pods one incident may delete over all its runs."""
    maxEvidenceBytes: int = Field(default=900_000, ge=10_000, le=1_000_000)
    """Size of an evidence ConfigMap's data (a ConfigMap holds at most 1 MiB)."""
    maxLogBytesPerPod: int = Field(default=65_536, ge=1024, le=1_000_000)
    """Bytes of log read per pod for evidence (never more than what is left of maxEvidenceBytes)."""
    maxEvidencePods: int = Field(default=20, ge=0, le=1000)
    """Pods whose logs one evidence step reads; more matching pods are listed as skipped."""
    maxOpenIncidentsPerNamespace: int = Field(default=50, ge=0, le=10_000)
    """Open incidents of one namespace whose playbooks run; the others are recorded and wait
    (`AutomationPaused`/`OpenIncidentLimit`), oldest first, until older ones resolve. 0: no playbook
    runs anywhere (incidents are still recorded and people told). Drills are not counted."""


class MutatingActionLimits(BaseModel):
    """`automation.maxMutatingActions:` the circuit breaker: mutating actions per sliding window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    perNamespace: int = Field(default=20, ge=1, le=3000)
    """Mutating actions (step starts and retries) of one namespace's incidents within the window."""
    clusterWide: int = Field(default=100, ge=1, le=3000)
    """Mutating actions of all incidents within the window (the breaker's state keeps one entry per
    action of the window, about 100 bytes each, so the bound also bounds its size: 3,000 entries
    and the runs it lists fit one ConfigMap with room to spare)."""
    windowSeconds: int = Field(default=300, ge=10, le=86_400)
    """The sliding window: an action counts for this long after it started."""

    @model_validator(mode="after")
    def _namespace_within_cluster(self) -> MutatingActionLimits:
        if self.perNamespace > self.clusterWide:
            raise ValueError(
                f"automation.maxMutatingActions.perNamespace ({self.perNamespace}) is above "
                f"clusterWide ({self.clusterWide}): one namespace could never use it"
            )
        return self


class AutomationConfig(BaseModel):
    """`automation:` in the --config file: bounds on automation as a whole (the circuit breaker and
    the storm guard), kept in the API (a ConfigMap in the operator's namespace), so they hold across
    restarts, replicas and a leader handover. Diagnostic steps are never held."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    maxMutatingActions: MutatingActionLimits = MutatingActionLimits()
    maxConcurrentRunsPerPlaybook: int = Field(default=10, ge=1, le=1000)
    """The storm guard: runs of one Playbook that may have acted (taken a mutating slot) and still
    be in flight at once; a further run's first mutating step waits (`StormGuard`)."""
    stateConfigMap: str = "incident-operator-automation"
    """The ConfigMap, in the operator's namespace (or `stateNamespace`), that holds the breaker's
    window and the runs in flight."""
    stateNamespace: str | None = None
    """Where `stateConfigMap` lives; unset: the operator's own namespace."""

    @field_validator("stateConfigMap", "stateNamespace")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid name (lowercase DNS label)")
        return value


_QUANTITY = re.compile(r"^([+]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes resource quantity ("500m", "1", "512Mi", "1e3") as a number (cores, bytes).

    Raises ValueError for anything else (a negative quantity included)."""
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    found = _QUANTITY.match(text)
    if found is None:
        raise ValueError(f"{value!r} is not a resource quantity (e.g. 500m, 1, 512Mi)")
    number, suffix = found.group(1), found.group(2) or ""
    try:
        scale = _SUFFIXES[suffix] if suffix in _SUFFIXES else Decimal(10) ** int(suffix[1:])
        return Decimal(number) * scale
    except (ArithmeticError, ValueError) as exc:  # InvalidOperation, Overflow (1e999999999999)
        raise ValueError(f"{value!r} is not a resource quantity") from exc


class JobsConfig(BaseModel):
    """`jobs:` in the --config file: what a Playbook's `job` step may run (docs/operations/security.md).

    A pod template must meet the Pod Security Standards' restricted profile; these settings say
    what else it may do. The defaults allow no ServiceAccount and no Secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serviceAccounts: tuple[str, ...] = ()
    """ServiceAccounts a template may name in `serviceAccountName` (none: the namespace's
    `default`, with no token mounted)."""
    allowSecrets: bool = False
    """Let templates use Secret and projected volumes, `env.valueFrom.secretKeyRef`,
    `envFrom.secretRef` and `imagePullSecrets`."""
    maxCpu: str = "1"
    """The highest `resources.limits.cpu` of a container (every container must set one)."""
    maxMemory: str = "512Mi"
    """The highest `resources.limits.memory` of a container (every container must set one)."""
    maxConcurrentPerNamespace: int = Field(default=3, ge=1, le=100)
    """Jobs of the operator running at once in one namespace; a step beyond waits (queued)
    within its timeout."""

    @field_validator("maxCpu", "maxMemory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if parse_quantity(value) <= 0:
            raise ValueError(f"{value!r} must be above zero")
        return value

    @field_validator("serviceAccounts")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
                raise ValueError(f"{name!r} is not a ServiceAccount name")
        return value

    @property
    def cpu_cap(self) -> Decimal:
        return parse_quantity(self.maxCpu)

    @property
    def memory_cap(self) -> Decimal:
        return parse_quantity(self.maxMemory)


class AcknowledgementConfig(BaseModel):
    """`acknowledgement:` in the --config file: who may acknowledge an incident."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    automationCounts: bool = False
    """A playbook starting acknowledges the incident (the behaviour before 0.3). Off: only a
    person does (`spec.commander`, `kubectl incident ack`), so time to acknowledge measures the team."""


class RepeatsConfig(BaseModel):
    """`repeats:` in the --config file: when an incident counts as a repeat of an earlier one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windowDays: int = Field(default=30, ge=1, le=366)
    """An earlier incident in the same namespace with the same alertname (or, for incidents not
    from an alert, the same category) and the same targets, detected this many days before at most."""


class RetentionConfig(BaseModel):
    """`retention:` in the --config file: Closed incidents archived (IncidentArchive) then deleted.
    Off unless `closedForDays` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    closedForDays: int | None = Field(default=None, ge=1, le=36_600)
    """A Closed incident whose `status.closedAt` is this many days old is archived, then deleted.
    Unset: retention is off, nothing is ever deleted."""
    deletesPerSecond: float = Field(default=5.0, gt=0, le=100)
    """The pace of deletes (incidents and their ConfigMaps), so a first pass over years of history
    does not flood the API server."""
    intervalSeconds: int = Field(default=3600, ge=10, le=86_400)
    """How often the leader looks for incidents due (the first pass runs as soon as it leads)."""

    @property
    def enabled(self) -> bool:
        return self.closedForDays is not None


MIN_UPDATE_EVERY = timedelta(seconds=10)
"""The shortest `communication.updateEvery` (small values are for tests and demos)."""


class UpdateCadence(BaseModel):
    """How often an open incident publishes an update, per severity (null: no cadence)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    P1: timedelta | None = timedelta(minutes=15)
    """The seed's 4.2: "we will provide updates every 15 minutes"."""
    P2: timedelta | None = timedelta(minutes=30)
    P3: timedelta | None = None
    P4: timedelta | None = None

    @field_validator("P1", "P2", "P3", "P4")
    @classmethod
    def _not_too_short(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not MIN_UPDATE_EVERY <= value <= timedelta(days=7):
            raise ValueError("updateEvery must be between 10 seconds (PT10S) and 7 days (P7D), or null")
        return value

    def of(self, severity: Severity) -> timedelta | None:
        value: timedelta | None = getattr(self, str(severity))
        return value


class CommunicationConfig(BaseModel):
    """`communication:` in the --config file: the update cadence of seed 4.2."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    updateEvery: UpdateCadence = UpdateCadence()
    """Per severity (ISO 8601 durations, e.g. PT15M): from detection until Resolved, an update
    (any entry of spec.updates) is due this long after the last one (or detection); when none
    came, condition UpdateOverdue and one reminder (notice updateOverdue)."""


_DELIVERY_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ReportDelivery(BaseModel):
    """One monthly report to deliver: whose incidents, to which channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_DELIVERY_NAME.pattern)
    """Names the delivery in the record of what was sent (renaming it sends the month again)."""
    namespaces: tuple[str, ...] = ()
    """The namespaces the report covers (one report for all of them)."""
    all: bool = False
    """The report covers every namespace the operator watches (instead of `namespaces`)."""
    channels: tuple[str, ...] = Field(min_length=1)
    """`email` channels get the HTML (the chart in it), `webhook` channels the JSON."""

    @model_validator(mode="after")
    def _scope(self) -> ReportDelivery:
        if self.all == bool(self.namespaces):
            raise ValueError(f"report delivery {self.name}: give either namespaces or all: true")
        bad = [n for n in self.namespaces if not _DNS_LABEL.fullmatch(n)]
        if bad:
            raise ValueError(f"report delivery {self.name}: not namespace names: {', '.join(map(repr, bad))}")
        return self


class ReportsConfig(BaseModel):
    """`reports:` in the --config file: monthly reports delivered on the first day of the month."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deliver: tuple[ReportDelivery, ...] = Field(default=(), max_length=50)
    catchUpDays: int = Field(default=3, ge=1, le=28)
    """A month's report is delivered on the first day of the next month (UTC), or on a later day up
    to this one if the operator was not running (after that, it is not sent any more)."""
    intervalSeconds: int = Field(default=300, ge=5, le=3600)
    """How often the leader looks for a delivery due."""
    recordConfigMap: str = Field(default="incident-operator-reports", pattern=_DNS_LABEL.pattern)
    """The ConfigMap in the operator's namespace that records what was sent."""
    testingNow: datetime | None = None
    """For tests only: the scheduler's clock stands at this instant (never set in production)."""

    @field_validator("deliver")
    @classmethod
    def _distinct(cls, value: tuple[ReportDelivery, ...]) -> tuple[ReportDelivery, ...]:
        names = [d.name for d in value]
        if len(names) != len(set(names)):
            raise ValueError("report delivery names must be unique")
        return value


class StatusPageConfig(BaseModel):
    """`statusPage:` in the --config file: the public status page at /status (seed 4.2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = "Service status"
    publicSeverities: tuple[Severity, ...] = ()
    """Within `namespaces`: incidents of these severities are public unless `spec.public: false`;
    others only with `spec.public: true`."""
    components: dict[str, str] = {}
    """Names users know for workloads: {"Deployment/web": "Checkout"}; others show their name."""
    namespaces: tuple[str, ...] = ()
    """Only incidents of these namespaces are ever public (empty: nothing is; it used to mean all)."""
    historyDays: int = Field(default=90, ge=1, le=366)
    baseURL: str | None = None
    """Where users reach the page (`https://status.example.com`, or with a path prefix): every
    absolute link (the Atom feed's ids and links) is built from it, never from a request's Host
    header. Unset: links are relative and the feed's ids are `urn:` names."""

    @field_validator("baseURL")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = urlsplit(value.strip())
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"baseURL is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("baseURL must be an http:// or https:// URL with a host")
        if url.username is not None or url.password is not None or "@" in url.netloc:
            raise ValueError("baseURL must not carry user:password@")
        if url.query or url.fragment or value.strip().endswith(("?", "#")):
            raise ValueError("baseURL must have no ?query and no #fragment")
        if any(c.isspace() or c in "<>\"'" for c in value.strip()):
            raise ValueError("baseURL must not contain spaces, quotes or angle brackets")
        return value.strip().rstrip("/")

    def publishes(self, namespace: str, spec: IncidentSpec) -> bool:
        """Whether an incident is public: the one rule of the status page and the `statuspage`
        channels. Never a drill; only in a listed namespace; there `spec.public`, or without it a
        severity in `publicSeverities` (the declared one, as the page shows it)."""
        if spec.drill or (spec.source is not None and spec.source.type == SourceType.DRILL):
            return False
        if namespace not in self.namespaces:
            return False
        if spec.public is not None:
            return spec.public
        return spec.severity in self.publicSeverities


class SeverityRule(BaseModel):
    """One entry of `severityEscalation:`: "P2 not mitigated in 5 minutes becomes P1" is
    `{from: P2, to: P1, notMitigatedWithinSeconds: 300}` (seed 1.1: impact grows with time)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: Severity = Field(alias="from")
    to: Severity
    notMitigatedWithinSeconds: int | None = Field(default=None, ge=1, le=30 * 86400)
    notAcknowledgedWithinSeconds: int | None = Field(default=None, ge=1, le=30 * 86400)
    namespaces: tuple[str, ...] = ()
    """Only incidents of these namespaces (empty: every namespace)."""
    categories: tuple[Category, ...] = ()
    """Only incidents of these categories (empty: every category)."""
    alertnames: tuple[str, ...] = ()
    """Only incidents opened by an alert of these names (empty: every incident, alert or not)."""

    @model_validator(mode="after")
    def _one_condition_and_upwards(self) -> SeverityRule:
        given = [x for x in (self.notMitigatedWithinSeconds, self.notAcknowledgedWithinSeconds) if x]
        if len(given) != 1:
            raise ValueError("give exactly one of notMitigatedWithinSeconds, notAcknowledgedWithinSeconds")
        if self.to >= self.source:  # "P1" < "P2": an escalation goes towards P1
            raise ValueError(f"{self.source} -> {self.to} is not an escalation (towards P1)")
        return self

    def applies_to(self, category: Category, alertname: str | None) -> bool:
        """Whether the rule's category and alertname filters take an incident."""
        if self.categories and category not in self.categories:
            return False
        return not self.alertnames or alertname in self.alertnames

    @property
    def unless(self) -> Literal["mitigated", "acknowledged"]:
        return "mitigated" if self.notMitigatedWithinSeconds else "acknowledged"

    @property
    def within(self) -> timedelta:
        return timedelta(seconds=self.notMitigatedWithinSeconds or self.notAcknowledgedWithinSeconds or 0)


class FileConfig(BaseModel):
    """The part of the settings that lives in the --config YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    responseTargets: ResponseTargets = ResponseTargets()
    alertIntake: AlertIntakeConfig = AlertIntakeConfig()
    notifications: Notifications = Notifications()
    oncall: OnCallConfig = OnCallConfig()
    leaderElection: LeaderElection = LeaderElection()
    access: AccessConfig = AccessConfig()
    egress: EgressConfig = EgressConfig()
    limits: Limits = Limits()
    jobs: JobsConfig = JobsConfig()
    acknowledgement: AcknowledgementConfig = AcknowledgementConfig()
    repeats: RepeatsConfig = RepeatsConfig()
    retention: RetentionConfig = RetentionConfig()
    statusPage: StatusPageConfig = StatusPageConfig()
    automation: AutomationConfig = AutomationConfig()
    severityEscalation: tuple[SeverityRule, ...] = ()
    """Rules that raise the severity an incident is treated as (status.effectiveSeverity)."""
    communication: CommunicationConfig = CommunicationConfig()
    reports: ReportsConfig = ReportsConfig()

    @model_validator(mode="after")
    def _report_channels(self) -> FileConfig:
        kinds = {c.name: c.type for c in self.notifications.channels}
        for delivery in self.reports.deliver:
            for name in delivery.channels:
                if kinds.get(name) not in ("email", "webhook"):
                    raise ValueError(
                        f"report delivery {delivery.name}: channel {name} is "
                        + ("unknown" if name not in kinds else f"of type {kinds[name]}")
                        + " (reports go to email and webhook channels)"
                    )
        return self

    @model_validator(mode="after")
    def _oncall_channels(self) -> FileConfig:
        kinds = {c.name: c.type for c in self.notifications.channels}
        for name in self.oncall.channels:
            if name not in kinds:
                raise ValueError(f"oncall.channels names an unknown channel: {name}")
            if kinds[name] not in ("email", "slack"):
                raise ValueError(f"oncall.channels: {name} is a {kinds[name]} channel; only email and slack")
        return self


class OperatorConfig(BaseModel):
    """Everything `incident-operator run` needs to know; built once at startup, then read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all namespaces (cluster-wide)."""
    http_host: str = "0.0.0.0"  # noqa: S104 - the operator serves inside its pod
    http_port: Port = 8080
    status_port: Port = 8081
    """`--status-port`: the public status page, alone on its own listener."""
    leader_elect: bool = False
    """Take part in leader election (`--leader-elect`): only the Lease holder reconciles; every
    replica serves the HTTP endpoints. Off: this process acts alone (one replica only)."""
    file: FileConfig = FileConfig()
    alert_token_secret: tuple[str, str] | None = None
    """(namespace, name) of the Secret whose key `token` authenticates Alertmanager."""
    allow_egress: tuple[str, ...] = ()
    """`--allow-egress` entries, added to `egress.allow` of the config file."""
    own_namespace: str = "incident-operator"
    """The namespace the operator runs in (alerts never open incidents there)."""

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in value if not _DNS_LABEL.fullmatch(n)]
        if bad:  # the operator lists and watches each by name: no globs, no patterns
            raise ValueError(f"--namespace takes namespace names, not {', '.join(map(repr, bad))}")
        return tuple(dict.fromkeys(value))

    @field_validator("allow_egress")
    @classmethod
    def _egress_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        EgressPolicy.build(allow=value)
        return value

    @model_validator(mode="after")
    def _single_token_not_bound(self) -> OperatorConfig:
        if self.alert_token_secret is not None:
            namespace, name = self.alert_token_secret
            if TokenSecretRef(namespace=namespace, name=name) in {
                t.secretRef for t in self.file.alertIntake.tokens
            }:
                raise ValueError(
                    f"Secret {namespace}/{name} key token is --alert-token-secret (bound to no namespace) "
                    "and also in alertIntake.tokens: give the bound token another Secret or key"
                )
        return self

    @model_validator(mode="after")
    def _two_ports(self) -> OperatorConfig:
        if self.http_port == self.status_port:
            raise ValueError(f"--http-port and --status-port must differ (both {self.http_port})")
        return self

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


class ConfigError(Exception):
    """The --config file is missing, unreadable or invalid; the message says which and why."""


def load_config_file(path: Path) -> FileConfig:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    try:
        return FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config file {path} is invalid:\n{exc}") from exc
