"""Leader election on a `coordination.k8s.io/v1` Lease: the pure decisions.

Owns what a replica may do given the Lease it last read and its own clock; `election` does the
reading and writing. The rules are client-go's:

- Expiry is judged on the *local* clock: a replica notes when it last saw the Lease's record change
  (`Observation.observed_at`) and treats the holder as gone only when `leaseDurationSeconds` pass
  on its own clock without a change. Clocks of different machines are never compared.
- Writes use optimistic concurrency (the Lease's resourceVersion), so of two replicas that try to
  take an expired Lease at once, exactly one succeeds.
- A leader that cannot renew within `renew_deadline` (shorter than the lease duration) stops acting
  before any other replica may consider the Lease expired.

Pure: no kopf, no Kubernetes client, no I/O; time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease's spec that election reads and writes."""

    holder: str | None
    duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int = 0


@dataclass(frozen=True)
class Observation:
    """A Lease record and when (on this replica's clock) it was first seen in this form."""

    record: LeaseRecord
    observed_at: datetime


class Verdict(Enum):
    FOLLOW = "follow"
    """Someone else holds a live lease: stay on standby."""
    TAKE = "take"
    """The lease is free or expired: try to take it (a conflict means someone was quicker)."""
    RENEW = "renew"
    """We hold it: renew it."""


def observe(previous: Observation | None, record: LeaseRecord, now: datetime) -> Observation:
    """Keep the old observation time while the record is unchanged; restart it on any change."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def expired(observation: Observation, now: datetime) -> bool:
    return now >= observation.observed_at + timedelta(seconds=observation.record.duration_seconds)


def verdict(observation: Observation | None, me: str, now: datetime) -> Verdict:
    """What replica `me` should do about the Lease it observed (None: there is no Lease yet)."""
    if observation is None:
        return Verdict.TAKE
    holder = observation.record.holder
    if holder == me:
        return Verdict.RENEW
    if not holder or expired(observation, now):
        return Verdict.TAKE
    return Verdict.FOLLOW


def claimed(current: LeaseRecord | None, me: str, duration_seconds: int, now: datetime) -> LeaseRecord:
    """The record `me` writes to take or renew the Lease."""
    if current is not None and current.holder == me:
        return LeaseRecord(me, duration_seconds, current.acquire_time or now, now, current.transitions)
    transitions = 0 if current is None else current.transitions + 1
    return LeaseRecord(me, duration_seconds, now, now, transitions)


def released(current: LeaseRecord, now: datetime) -> LeaseRecord:
    """The record a leader writes when it steps down on purpose, so a standby takes over at once."""
    return LeaseRecord(None, 1, current.acquire_time, now, current.transitions)


def must_step_down(last_renewed: datetime, renew_deadline: timedelta, now: datetime) -> bool:
    """A leader that has not renewed for `renew_deadline` stops acting (the lease may be lost)."""
    return now >= last_renewed + renew_deadline
