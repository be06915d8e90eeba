"""The reconciler: the only caller of runtimes and the only writer of final statuses.

It is level-triggered: every sweep reads the store, and for each instance in a transitional
status it claims the row and does what the status asks (bring up, stop, delete). It never trusts
memory across a restart: on start it releases stale claims, adopts what still runs and reaps the
rest. Slow database calls run in threads; runtime calls are async.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

import orjson

from ..domain.lease import Lease
from ..domain.model import TRANSITIONAL, LeaseType, Status, StepStatus
from ..domain.transitions import Event, after
from ..runtime.base import InstanceSpec, Placement, RuntimeFailure
from ..services.catalog import FlavorCatalog
from ..services.notebook_view import initial_progress
from ..store import notebook_repo as repo
from ..store.db import Database
from .culler import KernelIdlePolicy, lease_decision

log = logging.getLogger("nbfleet.reconciler")
_LIVE = (Status.RUNNING, Status.SNAPSHOTTING, Status.ERROR)


def _lease_of(row) -> Lease:
    return Lease(row["create_at"], row["lease_duration"], bool(row["lease_enable"]), LeaseType(row["lease_type"]),
                 row["lease_update_at"])


class ProgressReporter:
    """Writes action_progress steps and runtime events for one bring-up."""

    def __init__(self, reconciler: "Reconciler", row):
        self.r = reconciler
        self.row = row
        self.steps = orjson.loads(row["action_progress"]) if row["action_progress"] else initial_progress()

    async def step(self, number: int, status: StepStatus, description: str | None = None) -> None:
        for step in self.steps:
            if step["step"] == number:
                step["status"] = StepStatus(status).value
                if description:
                    step["description"] = description
        payload = orjson.dumps(self.steps).decode()
        await self.r.db_call(repo.update_if_status, self.row["id"], self.row["status"],
                             {"action_progress": payload})

    async def event(self, kind: str, message: str) -> None:
        log.info("instance %s: %s: %s", self.row["id"], kind, message)
        await self.r.record(self.row, kind, message)


class Reconciler:
    def __init__(self, db: Database, runtime, clock, settings, flavors: FlavorCatalog, *,
                 idle_policy=None, replica_id: str | None = None):
        self.db = db
        self.runtime = runtime
        self.clock = clock
        self.settings = settings
        self.flavors = flavors
        self.idle_policy = idle_policy or KernelIdlePolicy()
        self.replica_id = replica_id or uuid.uuid4().hex
        self.inflight: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrent_starts)
        self._last_observe = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False

    # --- plumbing ----------------------------------------------------------------------------------
    async def db_call(self, fn, *args):
        def run():
            with self.db.write() as conn:
                return fn(conn, *args)
        return await asyncio.to_thread(run)

    async def db_read(self, fn, *args):
        def run():
            with self.db.read() as conn:
                return fn(conn, *args)
        return await asyncio.to_thread(run)

    async def record(self, row, kind: str, message: str) -> None:
        await self.db_call(repo.add_event, row["id"], row["project_id"], self.clock.now_ms(), kind, message)

    def wake(self) -> None:
        """Ask for a sweep now (thread-safe: API calls run in worker threads)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def spec_of(self, row) -> InstanceSpec:
        flavor = self.flavors.get(row["flavor"])
        limits = flavor.limits() if flavor else None
        if limits is None:
            from ..runtime.base import FlavorLimits
            limits = FlavorLimits(row["flavor"], 1, 1024)
        return InstanceSpec(id=row["id"], name=row["name"], token=row["token"], flavor=limits,
                            image_swr_path=row["swr_path"], owner_id=row["user_id"], project_id=row["project_id"],
                            first_start=row["status"] in (Status.INIT, Status.CREATING))

    # --- lifecycle of the loop -------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.recover()
        self._task = asyncio.create_task(self._run(), name="nbfleet-reconciler")

    async def stop(self, *, stop_notebooks: bool = False) -> None:
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        if stop_notebooks:
            rows = await self.db_read(repo.get_many, [s.value for s in _LIVE])
            for row in rows:
                await self._stop_row(row, reason="nbfleet is shutting down")
        await asyncio.to_thread(self._release_claims)

    def _release_claims(self) -> None:
        with self.db.write() as conn:
            from sqlalchemy import update
            from ..store.tables import notebooks
            conn.execute(update(notebooks).where(notebooks.c.claim_owner == self.replica_id)
                         .values(claim_owner=None, claim_until=None))

    async def recover(self) -> None:
        """After a restart: free stale claims, adopt live instances, mark dead ones, reap orphans.

        Transitional rows need nothing here: the first sweep redoes their work. Runtimes that run
        nothing (simulated) have nothing to adopt, so a large store costs nothing at start.
        """
        if self.db.is_sqlite:  # one process owns a SQLite store, so any claim left is from a dead one
            await self.db_call(repo.release_all)
        if not getattr(self.runtime, "observes", True):
            return
        rows = await self.db_read(repo.get_many, [s.value for s in (*_LIVE, *TRANSITIONAL)])
        reaped = await self.runtime.reap_orphans({row["id"] for row in rows})
        for notebook_id in reaped:
            log.warning("ended orphan process of unknown instance %s", notebook_id)
        for row in rows:
            if row["status"] == Status.RUNNING:
                await self._check_alive(row, adopting=True)

    async def _run(self) -> None:
        while not self.stopping:
            # Clear before sweeping: a wake-up that arrives during the sweep must cause another sweep.
            self._wake.clear()
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # a sweep must never kill the loop; the next one retries
                log.exception("reconciler sweep failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.reconcile_interval)
            except asyncio.TimeoutError:
                pass

    async def sweep(self) -> None:
        rows = await self.db_read(repo.get_many, [s.value for s in TRANSITIONAL])
        for row in rows:
            if row["id"] in self.inflight:
                continue
            until = self.clock.now_ms() + int(self.settings.claim_seconds * 1000)
            if not await self.db_call(repo.claim, row["id"], self.replica_id, self.clock.now_ms(), until):
                continue
            task = asyncio.create_task(self._handle(row), name=f"reconcile-{row['id']}")
            self.inflight[row["id"]] = task
            task.add_done_callback(lambda _t, nid=row["id"]: self.inflight.pop(nid, None))
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_observe >= self.settings.observe_interval:
            self._last_observe = loop_time
            await self.observe_running()

    # --- work on one instance --------------------------------------------------------------------
    async def _handle(self, row) -> None:
        try:
            status = Status(row["status"])
            if status in (Status.INIT, Status.CREATING):
                await self._bring_up(row, Event.PROVISIONED, Event.PROVISION_FAILED)
            elif status is Status.STARTING:
                await self._bring_up(row, Event.READY, Event.START_FAILED)
            elif status is Status.STOPPING:
                await self._finish_stop(row)
            elif status is Status.DELETING:
                await self._finish_delete(row)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciling instance %s failed", row["id"])
        finally:
            try:
                await self.db_call(repo.release, row["id"], self.replica_id)
            except Exception:
                log.exception("releasing claim of %s failed", row["id"])

    async def _set(self, row, event: Event, values: dict) -> bool:
        target = after(row["status"], event)
        if target is None:
            return False
        values = {"status": target.value, "update_at": self.clock.now_ms(), **values}
        return await self.db_call(repo.compare_and_set, row["id"], row["version"], values, True)

    async def _bring_up(self, row, ok: Event, failed: Event) -> None:
        spec = self.spec_of(row)
        await self.record(row, "scheduled", f"Scheduled on the {self.runtime.name} runtime")
        reporter = ProgressReporter(self, row)
        async with self._slots:
            # Whatever a crashed predecessor left half-started is ended first, so a start is always clean.
            await self.runtime.stop(spec, Placement.from_json(orjson.loads(row["placement"]))
                                    if row["placement"] else None)
            try:
                placement = await self.runtime.start(spec, reporter)
            except RuntimeFailure as failure:
                for step in reporter.steps:
                    if failure.step is not None and step["step"] == failure.step:
                        step["status"] = StepStatus.FAILED.value
                        step["description"] = failure.reason
                await self._set(row, failed, {"fail_reason": failure.reason, "placement": None,
                                              "action_progress": orjson.dumps(reporter.steps).decode()})
                await self.record(row, "failed", failure.reason)
                return
        now = self.clock.now_ms()
        for step in reporter.steps:
            step["status"] = StepStatus.COMPLETED.value
        values = {"placement": orjson.dumps(placement.to_json()).decode(), "ip": placement.host,
                  "fail_reason": None, "last_activity_at": now,
                  "action_progress": orjson.dumps(reporter.steps).decode()}
        if await self._set(row, ok, values):
            await self.record(row, "started" if ok is Event.READY else "ready",
                              f"Jupyter is ready on {placement.host}:{placement.port}"
                              if placement.port else "Instance is running")
        else:  # the intent changed while we worked: do not leave a process nobody wants
            await self.runtime.stop(spec, placement)

    async def _finish_stop(self, row, reason: str | None = None) -> None:
        spec = self.spec_of(row)
        placement = Placement.from_json(orjson.loads(row["placement"])) if row["placement"] else None
        try:
            await self.runtime.stop(spec, placement)
        except RuntimeFailure as failure:
            await self._set(row, Event.STOP_FAILED, {"fail_reason": failure.reason})
            await self.record(row, "failed", f"Stop failed: {failure.reason}")
            return
        if await self._set(row, Event.STOPPED, {"placement": None, "ip": None, "action_progress": None}):
            await self.record(row, "stopped", reason or "Instance stopped")

    async def _finish_delete(self, row) -> None:
        spec = self.spec_of(row)
        placement = Placement.from_json(orjson.loads(row["placement"])) if row["placement"] else None
        try:
            await self.runtime.delete(spec, placement)
        except RuntimeFailure as failure:
            await self._set(row, Event.DELETE_FAILED, {"fail_reason": failure.reason})
            await self.record(row, "failed", f"Delete failed: {failure.reason}")
            return
        await self.record(row, "deleted", "Instance and its storage deleted")
        await self.db_call(repo.remove, row["id"], row["version"])

    async def _stop_row(self, row, reason: str) -> None:
        """Move a live instance to STOPPING (auto-stop, shutdown) and finish the stop."""
        if not await self._set(row, Event.AUTO_STOP, {"desired": Status.STOPPED.value}):
            return
        fresh = await self.db_read(repo.get, row["id"])
        await self._finish_stop(fresh, reason)

    # --- observation of running instances ----------------------------------------------------------
    async def observe_running(self) -> None:
        """Auto-stop expired and idle instances; for runtimes that run something, check liveness.

        Expired TIMING leases are found in SQL, so a store with many RUNNING rows (the simulated
        runtime at scale) costs one indexed query, not a scan in Python.
        """
        now = self.clock.now_ms()
        for row in await self.db_read(repo.expired_timing_leases, now):
            if row["id"] not in self.inflight:
                await self._auto_stop(row, lease_decision(_lease_of(row), now).reason)
        if not getattr(self.runtime, "observes", True):
            return
        for row in await self.db_read(repo.running_with_idle_lease):
            if row["id"] in self.inflight or not row["placement"]:
                continue
            placement = Placement.from_json(orjson.loads(row["placement"]))
            activity = await self.runtime.activity(self.spec_of(row), placement)
            decision = self.idle_policy.decide(_lease_of(row), activity, row["update_at"], self.clock.now_ms())
            if decision.stop:
                await self._auto_stop(row, decision.reason)
        for row in await self.db_read(repo.get_many, [Status.RUNNING.value]):
            if row["id"] not in self.inflight:
                await self._check_alive(row)

    async def _auto_stop(self, row, reason: str) -> None:
        await self.record(row, "auto_stopped", f"Auto-stopped: {reason}")
        await self._stop_row(row, reason=f"Auto-stopped: {reason}")

    async def _check_alive(self, row, *, adopting: bool = False) -> None:
        spec = self.spec_of(row)
        placement = Placement.from_json(orjson.loads(row["placement"])) if row["placement"] else None
        if adopting and hasattr(self.runtime, "adopt"):
            alive = await self.runtime.adopt(spec, placement)
            reason = None if alive else "the Jupyter process did not survive the restart of nbfleet"
        else:
            observation = await self.runtime.observe(spec, placement)
            alive, reason = observation.alive, observation.reason
        if alive:
            return
        await self.runtime.stop(spec, placement)  # leave nothing half-alive behind
        reason = reason or "the instance stopped unexpectedly"
        if await self._set(row, Event.LOST, {"fail_reason": reason, "placement": None, "ip": None}):
            await self.record(row, "failed", f"Instance lost: {reason}")
