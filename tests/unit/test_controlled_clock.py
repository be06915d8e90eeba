"""ControlledClock: the clock nbfleet.testing moves. Sleeps end when the clock passes their deadline, never
while it is frozen, and in real time while it runs."""

from __future__ import annotations

import asyncio
import time

from nbfleet.clock import ControlledClock


async def test_a_frozen_clock_wakes_sleepers_only_when_moved():
    clock = ControlledClock(frozen=True, start_ms=1_000_000)
    woke: list[int] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.now_ms())

    tasks = [asyncio.create_task(sleeper(s)) for s in (5, 1, 3)]
    await asyncio.sleep(0.05)
    assert woke == [] and clock.now_ms() == 1_000_000 and clock.next_deadline() == 1_001_000
    assert all(t in clock.parked for t in tasks)
    clock.jump_to(1_003_000)
    await asyncio.sleep(0.01)  # the woken tasks run
    assert sorted(woke) == [1_003_000, 1_003_000]  # the 1 s and 3 s sleeps; the 5 s one still waits
    assert clock.next_deadline() == 1_005_000
    clock.jump_to(1_002_000)  # never backwards
    assert clock.now_ms() == 1_003_000
    clock.wake_all()
    await asyncio.gather(*tasks)
    assert len(woke) == 3 and not clock.parked


async def test_a_running_clock_follows_real_time_and_jumps():
    clock = ControlledClock()
    assert abs(clock.now_ms() - time.time() * 1000) < 50
    started = time.monotonic()
    await clock.sleep(0.05)  # real time ends it
    assert time.monotonic() - started >= 0.04
    long = asyncio.create_task(clock.sleep(3600))
    await asyncio.sleep(0.01)
    clock.jump_to(clock.now_ms() + 3_600_000)  # an hour at once
    await asyncio.wait_for(long, 1)
    assert clock.now_ms() - time.time() * 1000 > 3_599_000


async def test_freezing_and_unfreezing_keep_the_time_moved_to():
    clock = ControlledClock()
    clock.jump_to(clock.now_ms() + 86_400_000)
    clock.freeze()
    frozen_at = clock.now_ms()
    await asyncio.sleep(0.02)
    assert clock.now_ms() == frozen_at
    clock.unfreeze()
    assert 0 <= clock.now_ms() - frozen_at < 50  # runs on from where it stood
    clock.reset()
    assert abs(clock.now_ms() - time.time() * 1000) < 50


async def test_a_cancelled_sleep_leaves_nothing_behind():
    clock = ControlledClock(frozen=True)
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert clock.next_deadline() is None and not clock.parked
