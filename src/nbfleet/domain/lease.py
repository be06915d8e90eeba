"""Lease (auto-stop) arithmetic of spec README §7.

``duration`` is always counted from the instance's ``create_at``: a running time ``d`` granted at
``now`` is stored as ``duration = now - create_at + d``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DurationOutOfRange, InvalidProperty
from .model import LeaseType

NO_AUTO_STOP = -1
DEFAULT_DURATION_MS = 3_600_000


@dataclass(frozen=True)
class LeaseLimits:
    """Allowed running times in ms; tests may shorten them through settings."""

    timing_min: int = 3_600_000
    timing_max: int = 259_200_000
    idle_min: int = 900_000
    idle_max: int = 259_200_000


@dataclass(frozen=True)
class Lease:
    create_at: int
    duration: int | None
    enable: bool
    type: LeaseType
    update_at: int

    def expires_at(self) -> int | None:
        """Wall time (ms) of the TIMING auto-stop, or None when it never auto-stops."""
        if not self.enable or self.duration is None or self.type is not LeaseType.TIMING:
            return None
        return self.create_at + self.duration

    def to_json(self) -> dict[str, Any]:
        return {
            "create_at": self.create_at,
            "duration": self.duration,
            "enable": self.enable,
            "type": self.type.value,
            "update_at": self.update_at,
        }


def lease_of(row: Mapping[str, Any]) -> Lease:
    """The lease of a ``notebooks`` row (its ``lease_*`` and ``create_at`` columns)."""
    return Lease(
        row["create_at"],
        row["lease_duration"],
        bool(row["lease_enable"]),
        LeaseType(row["lease_type"]),
        row["lease_update_at"],
    )


def lease_from_wire(lease: Mapping[str, Any]) -> Lease:
    """The lease of a notebook as the API shows it (``NotebookResp.lease``, see ``notebook_view.lease_json``)."""
    return Lease(
        lease["create_at"], lease["duration"], bool(lease["enable"]), LeaseType(lease["type"]), lease["update_at"]
    )


def parse_type(value: object, name: str = "type") -> LeaseType:
    """Lease type from user input, case-insensitive; unknown values are refused."""
    if value is None:
        return LeaseType.TIMING
    if not isinstance(value, str) or value.upper() not in LeaseType.__members__:
        raise InvalidProperty(name, "Allowed values: TIMING, IDLE.")
    return LeaseType(value.upper())


def check_duration(d: int, lease_type: LeaseType, limits: LeaseLimits) -> None:
    """Refuse a running time outside its range (−1 means no auto-stop and is always allowed)."""
    if d == NO_AUTO_STOP:
        return
    if lease_type is LeaseType.IDLE:
        low, high = limits.idle_min, limits.idle_max
    else:
        low, high = limits.timing_min, limits.timing_max
    if d < low or d > high:
        raise DurationOutOfRange(low, high)


def grant(
    create_at: int, now: int, d: int, lease_type: LeaseType, limits: LeaseLimits, previous: Lease | None = None
) -> Lease:
    """The lease after granting ``d`` ms of running time from ``now`` (start, renew, create)."""
    check_duration(d, lease_type, limits)
    if d == NO_AUTO_STOP:
        kept = previous.duration if previous is not None else None
        return Lease(create_at, kept, False, lease_type, now)
    return Lease(create_at, now - create_at + d, True, lease_type, now)


def idle_window(lease: Lease) -> int | None:
    """How long (ms) an IDLE-leased instance may stay idle, or None if idleness never stops it.

    An IDLE lease stores its window like a TIMING one (``duration = granted_at - create_at + d``), so
    the window is recovered from the grant time kept in ``update_at``.
    """
    if not lease.enable or lease.type is not LeaseType.IDLE or lease.duration is None:
        return None
    return lease.duration - (lease.update_at - lease.create_at)
