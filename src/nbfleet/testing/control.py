"""What a server started for testing lets a test do: move its clock, script failures, seed instances.

This is the server's side (it runs on the server's event loop, next to the reconciler); ``emulator.py`` is
the test's side, which reaches it over HTTP (``api/testing.py``), so a test can drive a server in its own
process or in another one alike.

Moving the clock is a small discrete-event simulation. Whatever the reconciler is doing waits either on the
store or on the clock (the simulated runtime's steps sleep on it); ``settle`` lets every such piece of work run
until all of it waits on the clock again, with a sweep after each change so that new work (a stop the API
asked for, a lease that ran out) is picked up. ``advance`` then moves the clock from one deadline to the
next — the end of a simulated step, a TIMING lease's expiry, an idle window's end — and settles at each, so
that two hours pass "exactly as if they had passed": a lease that ends after one hour stops the instance at
that hour, and the stop itself completes a step later.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from ..auth.principal import Principal
from ..clock import ControlledClock
from ..domain.lease import Lease, idle_window
from ..domain.model import LeaseType, Status, StepStatus
from ..runtime.base import Activity, Placement
from ..runtime.simulated import FailureRule, ScriptedFailure, SimulatedRuntime
from ..services.notebook_view import initial_progress
from ..store import notebook_repo

# What ``seed`` may put instances in: the stable statuses, and CREATING (an ordinary create).
SEEDABLE = ("RUNNING", "STOPPED", "CREATING", "CREATE_FAILED", "START_FAILED", "ERROR", "FROZEN")
SETTLE_TIMEOUT = 30.0  # seconds of real time a settle may take before the test hears about it
MAX_EVENTS_PER_ADVANCE = 10_000


class SettleTimeout(Exception):
    """Work that waits on neither the clock nor anything else a test could move (a bug, or a hung store)."""


class TestControl:
    __test__ = False  # pytest: not a test class

    def __init__(self, clock: ControlledClock, runtime: SimulatedRuntime, reconciler, notebooks, identity):
        self.clock = clock
        self.runtime = runtime
        self.reconciler = reconciler
        self.notebooks = notebooks
        self.identity = identity
        self._lock = asyncio.Lock()  # one advance at a time: each settles the whole server
        # Every progress step written when it happens: what a test reads after moving the clock is current.
        reconciler.progress_flush_seconds = 0

    # --- time ------------------------------------------------------------------------------------------
    def clock_state(self) -> dict:
        return {"now_ms": self.clock.now_ms(), "frozen": self.clock.frozen}

    async def set_frozen(self, frozen: bool) -> dict:
        async with self._lock:
            if frozen:
                self.clock.freeze()
            else:
                self.clock.unfreeze()
            await self.settle()
        return self.clock_state()

    async def advance(self, ms: int) -> dict:
        """Move the clock ``ms`` forward, letting everything due on the way happen at its time.

        The clock stands still while it is moved (and runs on from the target after, if it ran before): each
        event then happens at its own instant, not at that instant plus however long the settling took."""
        async with self._lock, self._standing_still():
            target = self.clock.now_ms() + ms
            await self.settle()
            for _ in range(MAX_EVENTS_PER_ADVANCE):
                due = self._next_event(await self._next_lease_event())
                if due is None or due > target:
                    break
                self.clock.jump_to(due)
                await self.settle(observe=True)
            self.clock.jump_to(target)
            await self.settle(observe=True)
        return self.clock_state()

    @contextlib.asynccontextmanager
    async def _standing_still(self):
        running = not self.clock.frozen
        self.clock.freeze()
        try:
            yield
        finally:
            if running:
                self.clock.unfreeze()

    async def run_pending(self, limit_ms: int = 3_600_000) -> dict:
        """Move the clock just as far as the work in progress needs to finish (at most ``limit_ms``): every
        transition that is under way completes, and nothing that is merely scheduled (a lease) is reached."""
        async with self._lock, self._standing_still():
            start = self.clock.now_ms()
            await self.settle()
            for _ in range(MAX_EVENTS_PER_ADVANCE):
                due = self.clock.next_deadline()
                if due is None or due > start + limit_ms:
                    break
                self.clock.jump_to(due)
                await self.settle()
        return self.clock_state()

    def _next_event(self, lease_event: int | None) -> int | None:
        candidates = [t for t in (self.clock.next_deadline(), lease_event) if t is not None]
        return min(candidates) if candidates else None

    async def _next_lease_event(self) -> int | None:
        """When the next RUNNING instance's TIMING lease runs out or IDLE window closes."""
        rows = await self.reconciler.db_read(notebook_repo.get_many, [Status.RUNNING.value])
        now = self.clock.now_ms()
        times = []
        for row in rows:
            lease = Lease(
                row["create_at"],
                row["lease_duration"],
                bool(row["lease_enable"]),
                LeaseType(row["lease_type"]),
                row["lease_update_at"],
            )
            expires = lease.expires_at()
            if expires is not None:
                times.append(expires)
            window = idle_window(lease)
            if window is not None and self.runtime.reports_activity:
                activity = self.runtime.activity_of.get(row["id"])
                if activity is None or not activity.busy:
                    last = max((activity.last_activity_ms if activity else None) or 0, row["update_at"])
                    times.append(last + window)
        # Something already due is acted on by the settle at the current time, not scheduled again.
        later = [t for t in times if t > now]
        return min(later) if later else None

    async def settle(self, *, observe: bool = False, timeout: float = SETTLE_TIMEOUT) -> None:
        """Sweep and let the work run until all of it waits on the clock (or is done) and a further sweep
        finds nothing new. ``observe`` makes the first sweep check leases and liveness too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if observe:
            self.reconciler.observe_next_sweep()
        before: set[asyncio.Task] | None = None
        while True:
            await self._one_sweep(deadline)
            await self._quiet(deadline)
            now_busy = set(self._tasks())
            if now_busy == before:
                return
            before = now_busy

    def _tasks(self) -> list[asyncio.Task]:
        return [t for t in self.reconciler.work_in_progress() if not t.done()]

    async def _quiet(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while any(t not in self.clock.parked for t in self._tasks()):
            if loop.time() > deadline:
                raise SettleTimeout("the server's work did not come to rest; see its log")
            await asyncio.sleep(0.001)

    async def _one_sweep(self, deadline: float) -> None:
        """Wait for a sweep that began after this call (the reconciler's loop does the sweeping)."""
        loop = asyncio.get_running_loop()
        started = self.reconciler.sweeps_started
        self.reconciler.wake()
        # A sweep may wait on the clock itself (an observation stops a dead instance inline): then it is as
        # far as it can get at this time.
        while self.reconciler.sweeps_finished <= started and not (
            self.reconciler.sweeps_started > started and self.reconciler.sweeping_task() in self.clock.parked
        ):
            if loop.time() > deadline:
                raise SettleTimeout("the reconciler did not sweep; see the server's log")
            await asyncio.sleep(0.001)

    # --- failures ----------------------------------------------------------------------------------------
    def fail_next(self, op: str, reason: str, *, name: str = "*", step: int = 4, count: int = 1) -> None:
        self.runtime.scripted.append(ScriptedFailure(op=op, reason=reason, name=name, step=step, count=count))

    def add_rule(self, text: str) -> None:
        self.runtime.rules.append(FailureRule.parse(text))

    def clear_failures(self) -> None:
        self.runtime.scripted.clear()
        self.runtime.rules.clear()

    def crash(self, notebook_id: str, reason: str) -> None:
        """The instance dies as if its process had: the next observation finds it gone (ERROR)."""
        self.runtime.crashed[notebook_id] = reason

    def set_activity(self, notebook_id: str, *, busy: bool, last_activity_ms: int | None) -> None:
        self.runtime.activity_of[notebook_id] = Activity(
            last_activity_ms=last_activity_ms, busy=busy, detail="set by a test"
        )

    # --- users and instances ------------------------------------------------------------------------
    def user(self, project_id: str, name: str, *, quota: int | None = None) -> dict:
        """A user of the project with an access key (created if missing; a new key each call)."""
        from ..store import identity_repo

        with self.identity.db.read() as conn:
            existing = identity_repo.find_user_by_name(conn, name)
        if existing is None:
            user_id = self.identity.create_user(name, project_id).user_id
        else:
            user_id = existing["id"]
            self.identity.add_member(user_id, project_id)
        if quota is not None:
            self.identity.set_quota(user_id, quota)
        ak, sk = self.identity.create_access_key(user_id)
        return {"user_id": user_id, "user_name": name, "project_id": project_id, "ak": ak, "sk": sk}

    def seed(self, owner: Principal, *, count: int, status: str, name_prefix: str, body: dict) -> list[str]:
        """``count`` instances of ``owner`` in ``status``, through the same checks as a create."""
        if status not in SEEDABLE:
            raise ValueError(f"status must be one of {', '.join(SEEDABLE)}")
        now = self.clock.now_ms()
        initial = _initial_values(Status(status), now)
        ids = []
        for i in range(count):
            request = dict(body, name=f"{name_prefix}{i + 1}" if count > 1 else name_prefix)
            ids.append(self.notebooks.create(owner, request, initial=initial, check_quota=False)["id"])
        return ids

    async def reset(self) -> None:
        """Back to an empty server at the wall clock's time: every instance gone, no scripted failures."""
        async with self._lock:
            sweeping = self.reconciler.sweeping_task()
            work = [t for t in self.reconciler.work_in_progress() if t is not sweeping]
            for task in work:  # work on instances about to vanish: nothing of it may land afterwards
                task.cancel()
            await asyncio.gather(*work, return_exceptions=True)
            self.clear_failures()
            self.runtime.crashed.clear()
            self.runtime.activity_of.clear()
            self.clock.wake_all()  # a sweep waiting on the clock finishes now, before the rows go
            deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT
            while self.reconciler.sweeping_task() is not None:
                if asyncio.get_running_loop().time() > deadline:
                    raise SettleTimeout("the reconciler's sweep did not end; see the server's log")
                await asyncio.sleep(0.001)
            await self.reconciler.db_call(_delete_all_instances)
            self.clock.reset()


def _initial_values(status: Status, now: int) -> dict:
    if status is Status.CREATING:
        return {}
    progress = None
    placement = None
    fail_reason = None
    if status is Status.RUNNING:
        progress = [dict(step, status=StepStatus.COMPLETED.value) for step in initial_progress()]
        placement = Placement(host="127.0.0.1", details={"runtime": "simulated"}).to_json()
    elif status in (Status.CREATE_FAILED, Status.START_FAILED, Status.ERROR):
        fail_reason = f"seeded in {status.value} by a test"
    return {
        "status": status.value,
        "desired": Status.RUNNING.value if status is Status.RUNNING else Status.STOPPED.value,
        "action_progress": orjson.dumps(progress).decode() if progress is not None else None,
        "placement": orjson.dumps(placement).decode() if placement is not None else None,
        "ip": "127.0.0.1" if placement is not None else None,
        "fail_reason": fail_reason,
        "last_activity_at": now if status is Status.RUNNING else None,
    }


def _delete_all_instances(conn) -> None:
    from sqlalchemy import delete

    from ..store.tables import dynamic_storages, events, notebook_tags, notebooks

    for table in (dynamic_storages, notebook_tags, events, notebooks):  # children first (SQLite may not cascade)
        conn.execute(delete(table))
