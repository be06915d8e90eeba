"""Injected time, so that leases and idle stops are testable without sleeping."""
from __future__ import annotations

import time
from datetime import UTC, datetime


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock(SystemClock):
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ms: int | None = None):
        self._ms = start_ms if start_ms is not None else int(time.time() * 1000)

    def now_ms(self) -> int:
        return self._ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._ms / 1000, UTC)

    def advance(self, ms: int) -> None:
        self._ms += ms
