"""What the kopf handlers share while the operator runs: one typed object instead of kopf's memo bag.

Kopf hands every handler a `memo`, shallow-copied per watched object. Anything a handler assigns
to a memo lands on that object's copy only; so the shared state lives in one `RuntimeContext`
that every copy refers to (`context(memo)`), and assignments go to it. Built by the runner for
each kopf run (a replica that is elected again gets a fresh one).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from incident_operator.adapters import metrics
from incident_operator.adapters.events import EventQueue
from incident_operator.adapters.kube import AccessReviews, Kube
from incident_operator.adapters.outbound import Outbound
from incident_operator.adapters.runledger import RunRecorder
from incident_operator.controllers import automation
from incident_operator.controllers.automation import Breaker
from incident_operator.controllers.intake import Intake
from incident_operator.controllers.notifier import Notifier
from incident_operator.controllers.oncall import OnCallKeeper
from incident_operator.controllers.people import Handoffs, People, ScheduleBook
from incident_operator.controllers.supervisor import Supervisor
from incident_operator.core import archive, openlimit, repeats
from incident_operator.runtime.liveness import Liveness
from incident_operator.settings.config import OperatorConfig

if TYPE_CHECKING:
    from incident_operator.runtime.incidents import IncidentStream


@dataclass
class RuntimeContext:
    config: OperatorConfig
    kube: Kube
    outbound: Outbound
    intake: Intake
    """The alert intake the HTTP server serves; a Drill's fireAlert takes the same path."""
    notifier: Notifier
    run_records: RunRecorder
    access_reviews: AccessReviews
    events: EventQueue
    """Posts the incidents' Events (`adapters.events`); its task is `events_task`."""
    liveness: Liveness = field(default_factory=Liveness)
    """What `/healthz` answers: the tasks below that run until cancelled are guarded by it."""
    open_incidents: metrics.OpenIncidents = field(default_factory=metrics.OpenIncidents)
    action_items: metrics.OpenActionItems = field(default_factory=metrics.OpenActionItems)
    open_ranks: openlimit.Rankings = field(default_factory=openlimit.Rankings)
    """The open incidents of each namespace in the cap's order (`incidents.index_incident`)."""
    history: repeats.History = field(default_factory=repeats.History)
    """Every watched incident's repeat key and detection time, nothing else (`incidents.index_incident`)."""
    archived: archive.ArchivedRepeats = field(default_factory=archive.ArchivedRepeats)
    """The archived incidents' repeat facts (`handlers.index_archives`, retention's writes)."""
    lookups: Kube | None = None
    """A client with a small connection pool of its own for the loops' short checks (the shared
    Playbook listing, `PlaybookListings`): never queued behind hundreds of the loops' writes in a
    burst. Opened with kopf (`handlers.configure`), closed at its cleanup."""
    supervisor: Supervisor | None = None
    """The incident loops' supervisor, built at kopf's start (it needs kopf's Playbook index)."""
    incident_streams: list[IncidentStream] = field(default_factory=list)
    """The operator's own Incident watches, one per watched scope (`runtime.incidents`)."""
    incidents_task: asyncio.Task[None] | None = None
    """Runs the Incident watches (started with kopf, stopped at its cleanup)."""
    events_task: asyncio.Task[None] | None = None
    run_records_task: asyncio.Task[None] | None = None
    """The run recorder's writer, started with kopf and stopped at its cleanup."""
    playbook_generations: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(namespace, name) -> the last generation of each Playbook seen."""
    breaker: Breaker | None = None
    """The circuit breaker and storm guard every incident loop reserves its mutating slots with."""
    retention_task: asyncio.Task[None] | None = None
    """The retention pass's loop (config `retention`), started with kopf (on the leader only)."""
    reports_task: asyncio.Task[None] | None = None
    """The monthly report deliveries' loop (config `reports.deliver`), started with kopf (leader only)."""
    oncall: OnCallKeeper | None = None
    """Keeps the OnCallSchedules' status true (`handlers.oncall_schedule_changed`), on the leader only."""
    schedules: ScheduleBook | None = None
    """The watched schedules (the keeper's bodies) as escalation and roles read them."""
    handoffs: Handoffs | None = None
    """Announces each schedule's handoffs once (`handlers.oncall_schedule_changed`)."""

    @classmethod
    def build(
        cls,
        config: OperatorConfig,
        kube: Kube,
        outbound: Outbound,
        intake: Intake,
        liveness: Liveness | None = None,
    ) -> RuntimeContext:
        recheck = config.file.access.recheckSeconds
        built = cls(
            config=config,
            kube=kube,
            outbound=outbound,
            intake=intake,
            notifier=Notifier(kube, outbound, config.file.notifications, config.file.statusPage),
            run_records=RunRecorder(kube),
            access_reviews=AccessReviews(kube, denied_ttl=max(1.0, recheck / 2)),
            events=EventQueue(kube),
            liveness=liveness or Liveness(),
        )
        built.schedules = ScheduleBook(lambda: built.oncall.bodies if built.oncall is not None else {})
        people = People(
            kube,
            outbound,
            config.file.oncall,
            config.file.notifications,
            built.schedules,
            secret=built.notifier.secret,
        )
        built.notifier.people = people
        built.handoffs = Handoffs(kube, people)
        built.breaker = Breaker(
            kube,
            config.file.automation,
            config.own_namespace,
            in_flight=automation.in_flight_from(built.open_ranks.of),
        )
        return built


def context(memo: Any) -> RuntimeContext:
    """The run's context, from any handler's memo."""
    return cast(RuntimeContext, memo.ctx)
