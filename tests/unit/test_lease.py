"""Lease arithmetic of spec README §7: duration counted from create_at."""

from __future__ import annotations

import pytest

from nbfleet.controller.culler import KernelIdlePolicy, lease_decision
from nbfleet.domain.errors import DurationOutOfRange
from nbfleet.domain.lease import Lease, LeaseLimits, grant, idle_window
from nbfleet.domain.model import LeaseType
from nbfleet.runtime.base import Activity

LIMITS = LeaseLimits()
CREATED = 1_638_841_744_515


def test_reference_example_start_one_hour_later():
    restarted = 1_638_844_471_727
    lease = grant(CREATED, restarted, 3_600_000, LeaseType.TIMING, LIMITS)
    assert lease.duration == 6_327_212 and lease.enable and lease.update_at == restarted
    assert lease.expires_at() == restarted + 3_600_000


def test_create_lease_is_d_from_creation():
    lease = grant(CREATED, CREATED, 3_600_000, LeaseType.TIMING, LIMITS)
    assert lease.duration == 3_600_000 and lease.create_at == CREATED


def test_minus_one_disables_and_keeps_previous_duration():
    previous = grant(CREATED, CREATED, 7_200_000, LeaseType.TIMING, LIMITS)
    lease = grant(CREATED, CREATED + 10, -1, LeaseType.TIMING, LIMITS, previous)
    assert not lease.enable and lease.duration == 7_200_000 and lease.expires_at() is None


@pytest.mark.parametrize(
    "d,kind",
    [
        (3_599_999, LeaseType.TIMING),
        (259_200_001, LeaseType.TIMING),
        (0, LeaseType.TIMING),
        (-2, LeaseType.TIMING),
        (899_999, LeaseType.IDLE),
    ],
)
def test_out_of_range_is_6349(d, kind):
    with pytest.raises(DurationOutOfRange) as info:
        grant(CREATED, CREATED, d, kind, LIMITS)
    assert info.value.code == "ModelArts.6349"


@pytest.mark.parametrize(
    "d,kind", [(3_600_000, LeaseType.TIMING), (259_200_000, LeaseType.TIMING), (900_000, LeaseType.IDLE)]
)
def test_bounds_are_inclusive(d, kind):
    assert grant(CREATED, CREATED, d, kind, LIMITS).enable


def test_timing_decision_at_expiry():
    lease = grant(CREATED, CREATED, 3_600_000, LeaseType.TIMING, LIMITS)
    assert not lease_decision(lease, CREATED + 3_599_999).stop
    decision = lease_decision(lease, CREATED + 3_600_000)
    assert decision.stop and "lease expired" in decision.reason


def test_idle_window_and_policy():
    granted = CREATED + 5_000
    lease = grant(CREATED, granted, 900_000, LeaseType.IDLE, LIMITS)
    assert idle_window(lease) == 900_000
    assert lease_decision(lease, granted + 10**9).stop is False  # IDLE leases never expire by time
    policy = KernelIdlePolicy()
    idle = Activity(last_activity_ms=granted + 1000, busy=False)
    assert not policy.decide(lease, idle, granted, granted + 1000 + 899_999).stop
    decision = policy.decide(lease, idle, granted, granted + 1000 + 900_000)
    assert decision.stop and "idle since" in decision.reason
    busy = Activity(last_activity_ms=granted, busy=True)
    assert not policy.decide(lease, busy, granted, granted + 10**8).stop
    assert not policy.decide(lease, None, granted, granted + 10**8).stop


def test_disabled_lease_never_stops():
    lease = Lease(CREATED, 3_600_000, False, LeaseType.TIMING, CREATED)
    assert not lease_decision(lease, CREATED + 10**9).stop
