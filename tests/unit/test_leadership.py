"""Leader election decisions with a clock the test moves: expiry on the local clock, one winner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from incident_operator.core.leadership import (
    LeaseRecord,
    Verdict,
    claimed,
    expired,
    must_step_down,
    observe,
    released,
    verdict,
)
from incident_operator.settings.config import LeaderElection

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)


def held_by(holder: str | None, renewed: datetime = T0, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder, 15, renewed, renewed, transitions)


def test_no_lease_means_take_it() -> None:
    assert verdict(None, "a", T0) is Verdict.TAKE
    record = claimed(None, "a", 15, T0)
    assert (record.holder, record.duration_seconds, record.acquire_time, record.transitions) == (
        "a",
        15,
        T0,
        0,
    )


def test_a_live_lease_of_another_replica_is_followed_until_it_stops_changing_for_its_duration() -> None:
    seen = observe(None, held_by("a"), T0)
    assert verdict(seen, "b", T0 + timedelta(seconds=14)) is Verdict.FOLLOW
    # The holder renews: the record changes, so the observation restarts.
    seen = observe(seen, held_by("a", T0 + timedelta(seconds=10)), T0 + timedelta(seconds=12))
    assert verdict(seen, "b", T0 + timedelta(seconds=20)) is Verdict.FOLLOW
    assert verdict(seen, "b", T0 + timedelta(seconds=27)) is Verdict.TAKE


def test_expiry_ignores_the_holders_clock() -> None:
    # The holder's clock is decades behind: its renewTime looks ancient, yet it is live, because
    # this replica saw the record change just now.
    seen = observe(None, held_by("a", FAR_PAST), T0)
    assert not expired(seen, T0 + timedelta(seconds=1))
    assert verdict(seen, "b", T0 + timedelta(seconds=1)) is Verdict.FOLLOW


def test_an_unchanged_record_keeps_its_first_observation_time() -> None:
    first = observe(None, held_by("a"), T0)
    again = observe(first, held_by("a"), T0 + timedelta(seconds=9))
    assert again.observed_at == T0


def test_the_holder_renews_and_keeps_its_acquire_time() -> None:
    seen = observe(None, held_by("a", transitions=3), T0)
    assert verdict(seen, "a", T0 + timedelta(seconds=100)) is Verdict.RENEW
    renewed = claimed(seen.record, "a", 15, T0 + timedelta(seconds=2))
    assert (renewed.acquire_time, renewed.renew_time, renewed.transitions) == (
        T0,
        T0 + timedelta(seconds=2),
        3,
    )


def test_taking_over_counts_a_transition() -> None:
    taken = claimed(held_by("a", transitions=3), "b", 15, T0)
    assert (taken.holder, taken.acquire_time, taken.transitions) == ("b", T0, 4)


def test_a_released_lease_is_free_at_once() -> None:
    free = released(held_by("a"), T0)
    assert free.holder is None
    assert verdict(observe(None, free, T0), "b", T0) is Verdict.TAKE


def test_a_leader_steps_down_at_its_renew_deadline() -> None:
    deadline = timedelta(seconds=10)
    assert not must_step_down(T0, deadline, T0 + timedelta(seconds=9))
    assert must_step_down(T0, deadline, T0 + timedelta(seconds=10))


def test_timings_must_leave_a_margin() -> None:
    defaults = LeaderElection()
    assert defaults.retryPeriodSeconds < defaults.renewDeadlineSeconds < defaults.leaseDurationSeconds
    # The documented failover bound: lease duration plus one retry period stays under 30 s.
    assert defaults.leaseDurationSeconds + defaults.retryPeriodSeconds <= 30
    with pytest.raises(ValidationError, match="renewDeadlineSeconds < leaseDurationSeconds"):
        LeaderElection(leaseDurationSeconds=10, renewDeadlineSeconds=10)
