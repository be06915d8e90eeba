"""Injected time, so that leases, idle stops and simulated work are testable without sleeping.

Every service and the reconciler read the time from a clock; the simulated runtime also waits on it
(``sleep``). ``SystemClock`` is the wall clock. ``ControlledClock`` is the one ``nbfleet.testing`` hands to a
server started for testing: it runs with the wall clock shifted by an offset, or stands still (frozen), and
``advance`` moves it forward, waking whatever waits on it in the order its deadlines fall.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock(SystemClock):
    """A clock that moves only when told to (in-process tests that call the services directly)."""

    def __init__(self, start_ms: int | None = None):
        self._ms = start_ms if start_ms is not None else int(time.time() * 1000)

    def now_ms(self) -> int:
        return self._ms

    def advance(self, ms: int) -> None:
        self._ms += ms


class ControlledClock(SystemClock):
    """A clock that tests move: the wall clock plus an offset, or a frozen instant.

    ``sleep`` waits until this clock reaches the deadline: in real time while the clock runs (a step of the
    simulated runtime still takes its seconds), never while it is frozen; either way ``jump_to`` wakes every
    sleeper whose deadline it passes. Sleepers are kept by deadline so that the caller can move the clock
    from one deadline to the next (``next_deadline``) and let each wake-up have its consequences at the
    right time. All methods run on the event loop that sleeps on the clock, except ``now_ms``.
    """

    def __init__(self, *, frozen: bool = False, start_ms: int | None = None):
        wall = int(time.time() * 1000)
        self._offset = (start_ms - wall) if start_ms is not None else 0
        self._frozen_at: int | None = (start_ms if start_ms is not None else wall) if frozen else None
        self._sleepers: list[tuple[int, int, asyncio.Future]] = []  # (deadline ms, tie-breaker, future)
        self._order = itertools.count()
        self.parked: set[asyncio.Task] = set()  # tasks waiting in ``sleep`` now: the rest of them is done

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def now_ms(self) -> int:
        if self._frozen_at is not None:
            return self._frozen_at
        return int(time.time() * 1000) + self._offset

    def freeze(self) -> None:
        if self._frozen_at is None:
            self._frozen_at = self.now_ms()

    def unfreeze(self) -> None:
        """Run on from the frozen instant (the offset keeps the time the clock was moved by)."""
        if self._frozen_at is not None:
            self._offset = self._frozen_at - int(time.time() * 1000)
            self._frozen_at = None
            self._wake_due()

    def reset(self) -> None:
        """Back to the wall clock's time (frozen there if it was frozen). Only for a server with no work
        in progress: a sleeper's deadline is not moved with the clock."""
        self._offset = 0
        if self._frozen_at is not None:
            self._frozen_at = int(time.time() * 1000)
        self._wake_due()

    def wake_all(self) -> None:
        """End every sleep now, whatever its deadline (a reset drops the work that waited)."""
        while self._sleepers:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def jump_to(self, at_ms: int) -> None:
        """Move the clock to ``at_ms`` (never backwards) and wake the sleepers it passed."""
        now = self.now_ms()
        if at_ms > now:
            if self._frozen_at is not None:
                self._frozen_at = at_ms
            else:
                self._offset += at_ms - now
        self._wake_due()

    def next_deadline(self) -> int | None:
        """The earliest deadline anyone sleeps until, if anyone does."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # woken by real time, or its sleeper was cancelled
        return self._sleepers[0][0] if self._sleepers else None

    def _wake_due(self) -> None:
        now = self.now_ms()
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        deadline = self.now_ms() + max(0, int(seconds * 1000))
        if deadline <= self.now_ms():
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        task = asyncio.current_task()
        if task is not None:
            self.parked.add(task)
        try:
            while not future.done():
                if self._frozen_at is not None:
                    await asyncio.shield(future)
                    continue
                # Running: real time may reach the deadline first. The wait is re-measured each time
                # round, since a freeze or a jump may have come in between.
                remaining = (deadline - self.now_ms()) / 1000
                if remaining <= 0:
                    self._wake_due()
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout=min(remaining, 1.0))
                except TimeoutError:
                    pass
        finally:
            if task is not None:
                self.parked.discard(task)
            if not future.done():
                future.cancel()
