"""The reconciler: the only caller of runtimes and the only writer of final statuses.

It is level-triggered: every sweep reads the store, and for each instance in a transitional
status it claims the row and does what the status asks (bring up, stop, delete). It never trusts
memory across a restart: on start it releases stale claims, adopts what still runs and reaps the
rest. Slow database calls run in threads; runtime calls are async.

Several replicas (PostgreSQL) each run one. The store decides who acts: a worker acts on an
instance only while it holds the row's claim (``claim_owner``/``claim_until``), renews it every
third of ``claim_seconds`` while the work lasts, and writes results with a compare-and-set that
also requires the claim. A replica that dies stops renewing, so after ``claim_seconds`` another one
claims the row and redoes the (idempotent) work. ``inflight`` only keeps one replica from starting
a second task for a row it already works on; it decides nothing between replicas.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import orjson

from ..auth.secrets import SecretBox
from ..domain.lease import Lease
from ..domain.model import TRANSITIONAL, LeaseType, Status, StepStatus
from ..domain.transitions import Event, after
from ..runtime.base import ImageRef, InstanceSpec, Placement, RuntimeFailure
from ..services.catalog import FlavorCatalog
from ..services.images import ImageCatalog
from ..services.notebook_view import initial_progress
from ..store import notebook_repo as repo
from ..store import storage_repo
from ..store.db import Database, store_unavailable
from .culler import KernelIdlePolicy, lease_decision
from .image_work import ImageWork
from .retries import RetrySchedule
from .storage_work import StorageWork

log = logging.getLogger("nbfleet.reconciler")
_LIVE = (Status.RUNNING, Status.SNAPSHOTTING, Status.ERROR)
OBSERVE_CONCURRENCY = 16   # instances probed at once by an observation (each probe is bounded by the runtime)


def _lease_of(row) -> Lease:
    return Lease(row["create_at"], row["lease_duration"], bool(row["lease_enable"]), LeaseType(row["lease_type"]),
                 row["lease_update_at"])


class ProgressReporter:
    """Writes action_progress steps and runtime events for one bring-up.

    Steps that follow each other within ``FLUSH_SECONDS`` are written together: a fast runtime reports
    eight steps in a millisecond, and eight write transactions for them would queue every API write
    behind this one start. The first change is written at once (so a poll sees the start begin), later
    ones at the end of the window; the final status write carries all steps anyway (``close``).
    """

    FLUSH_SECONDS = 0.1

    def __init__(self, reconciler: Reconciler, row):
        self.r = reconciler
        self.row = row
        self.steps = orjson.loads(row["action_progress"]) if row["action_progress"] else initial_progress()
        self._last_write = float("-inf")
        self._pending: asyncio.Task | None = None

    async def step(self, number: int, status: StepStatus, description: str | None = None) -> None:
        for step in self.steps:
            if step["step"] == number:
                step["status"] = StepStatus(status).value
                if description:
                    step["description"] = description
        if self._pending is not None:
            return  # the scheduled write will carry this change too
        wait = self._last_write + self.FLUSH_SECONDS - asyncio.get_running_loop().time()
        if wait <= 0:
            await self._write()
        else:
            self._pending = asyncio.create_task(self._write_after(wait))

    async def _write_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._pending = None
        await self._write()

    async def _write(self) -> None:
        self._last_write = asyncio.get_running_loop().time()
        payload = orjson.dumps(self.steps).decode()
        await self.r.db_call(repo.update_if_status, self.row["id"], self.row["status"],
                             {"action_progress": payload})

    async def close(self) -> None:
        """Drop a scheduled write: the caller writes the final steps with the status change."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pending
            self._pending = None

    async def event(self, kind: str, message: str) -> None:
        log.info("instance %s: %s: %s", self.row["id"], kind, message)
        await self.r.record(self.row, kind, message)


class Reconciler:
    # Work that fails with something other than a RuntimeFailure (a bug, an OSError) is retried this many
    # times in all, each after a longer pause, then the instance is given its failed status.
    RETRY_LIMIT = 5
    RETRY_MAX_SECONDS = 60.0

    def __init__(self, db: Database, runtime, clock, settings, flavors: FlavorCatalog, images: ImageCatalog, *,
                 secrets: SecretBox, idle_policy=None, replica_id: str | None = None,
                 on_status=lambda notebook_id: None):
        """``on_status(id)`` is told of every status this reconciler writes (the proxy forgets its route)."""
        self.db = db
        self.secrets = secrets   # opens the sealed notebook tokens the runtime needs
        self.runtime = runtime
        self.clock = clock
        self.settings = settings
        self.flavors = flavors
        self.images = images
        self.on_status = on_status
        self.idle_policy = idle_policy or KernelIdlePolicy()
        self.replica_id = replica_id or uuid.uuid4().hex
        self.inflight: dict[str, asyncio.Task] = {}
        self._released: set[str] = set()   # claims the final status write already gave up
        self._retries = RetrySchedule(self.RETRY_LIMIT, settings.reconcile_interval, self.RETRY_MAX_SECONDS)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._heartbeat_task: asyncio.Task | None = None
        self._db_threads: set[asyncio.Future] = set()
        self._slots = asyncio.Semaphore(settings.max_concurrent_starts)
        self._last_observe = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.image_work = ImageWork(self)
        self.storage_work = StorageWork(self)

    # --- plumbing ----------------------------------------------------------------------------------
    async def db_call(self, fn, *args):
        def run():
            with self.db.write() as conn:
                return fn(conn, *args)
        return await self._in_thread(run)

    async def db_read(self, fn, *args):
        def run():
            with self.db.read() as conn:
                return fn(conn, *args)
        return await self._in_thread(run)

    async def _in_thread(self, run):
        """Run a blocking store call in a thread. A thread cannot be interrupted, so a task cancelled at
        stop leaves its statement running; ``stop`` waits for these before releasing its claims, or a
        claim committed late by a cancelled sweep would outlive the release."""
        future = asyncio.ensure_future(asyncio.to_thread(run))
        self._db_threads.add(future)
        future.add_done_callback(self._forget_thread)
        return await asyncio.shield(future)

    def _forget_thread(self, future: asyncio.Future) -> None:
        self._db_threads.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved: a failure is reported by whoever awaited it, if anyone still does

    @property
    def short_id(self) -> str:
        return self.replica_id[:8]

    def _claim_until(self) -> int:
        return self.clock.now_ms() + int(self.settings.claim_seconds * 1000)

    async def record(self, row, kind: str, message: str) -> None:
        await self.db_call(repo.add_event, row["id"], row["project_id"], self.clock.now_ms(), kind, message)

    def wake(self) -> None:
        """Ask for a sweep now (thread-safe: API calls run in worker threads)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def purge_images(self) -> None:
        """Ask for deleted images' content to be removed now, not at the next observation (thread-safe)."""
        self.image_work.purge_requested = True
        self.wake()

    def spec_of(self, row) -> InstanceSpec:
        flavor = self.flavors.get(row["flavor"])
        limits = flavor.limits() if flavor else None
        if limits is None:
            from ..runtime.base import FlavorLimits
            limits = FlavorLimits(row["flavor"], 1, 1024)
        image_name, environment = self.images.environment(row["swr_path"])
        return InstanceSpec(id=row["id"], name=row["name"], token=self.secrets.open(row["token"]), flavor=limits,
                            image=ImageRef(image_name, row["swr_path"], environment,
                                           serves_jupyter=self.images.serves_jupyter(row["swr_path"])),
                            owner_id=row["user_id"], project_id=row["project_id"],
                            first_start=row["status"] in (Status.INIT, Status.CREATING))

    # --- lifecycle of the loop -------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.recover()
        log.info("reconciler %s started (claims last %g s)", self.replica_id, self.settings.claim_seconds)
        self._task = asyncio.create_task(self._run(), name="nbfleet-reconciler")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="nbfleet-claim-heartbeat")

    async def stop(self, *, stop_notebooks: bool = False) -> None:
        self.stopping = True
        for loop_task in (self._task, self._heartbeat_task):
            if loop_task is not None:
                loop_task.cancel()
                try:
                    await loop_task
                except asyncio.CancelledError:
                    pass
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        await self.image_work.stop()
        await self.storage_work.stop()
        try:
            if stop_notebooks:
                rows = await self.db_read(repo.get_many, [s.value for s in _LIVE])
                for row in rows:
                    fresh = await self.db_call(repo.claim_row, row["id"], self.replica_id, self.clock.now_ms(),
                                               self._claim_until())
                    if fresh is not None and fresh["status"] in _LIVE:
                        await self._stop_row(fresh, reason="nbfleet is shutting down")
            await asyncio.gather(*self._db_threads, return_exceptions=True)
            await asyncio.to_thread(self._release_claims)
        except Exception as exc:  # the store is away: the claims expire by themselves after claim_seconds
            if not store_unavailable(exc):
                raise
            log.warning("could not release this replica's claims (store unavailable): %s", _first_line(exc))

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
            await self.db_call(storage_repo.release_all)
        if not getattr(self.runtime, "observes", True):
            return
        rows = await self.db_read(repo.get_many, [s.value for s in (*_LIVE, *TRANSITIONAL)])
        reaped = await self.runtime.reap_orphans({row["id"] for row in rows})
        for notebook_id in reaped:
            log.warning("ended orphan process of unknown instance %s", notebook_id)
        storage = getattr(self.runtime, "storage", None)
        if storage is not None and hasattr(storage, "reap"):
            try:
                for notebook_id in await storage.reap({row["id"] for row in rows}):
                    log.warning("unmounted what was left mounted for instance %s, which is not running", notebook_id)
            except RuntimeFailure as failure:
                log.warning("unmounting the dynamic storage of unknown instances failed: %s", failure.reason)
        for row in rows:
            if row["status"] == Status.RUNNING:
                await self._check_alive(row, adopting=True)

    async def _run(self) -> None:
        down_since: float | None = None  # loop time the store became unreachable, while it is
        while not self.stopping:
            # Clear before sweeping: a wake-up that arrives during the sweep must cause another sweep.
            self._wake.clear()
            interval = self.settings.reconcile_interval
            try:
                await self.sweep()
                if down_since is not None:
                    log.warning("store reachable again after %.1f s; reconciling", self._loop.time() - down_since)
                    down_since = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sweep must never kill the loop; the next one retries
                if not store_unavailable(exc):
                    log.exception("reconciler sweep failed")
                elif down_since is None:  # once per outage, not once per retry
                    down_since = self._loop.time()
                    log.warning("store unavailable, retrying every %.1f s: %s", max(interval, 0.5), _first_line(exc))
                if down_since is not None:
                    interval = max(interval, 0.5)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass

    async def _heartbeat(self) -> None:
        """Renew the claims of the work in progress, so a slow start is not taken over; give up work
        whose claim expired anyway (this replica was stalled) and was taken by another one."""
        interval = self.settings.claim_seconds / 3
        while not self.stopping:
            await asyncio.sleep(interval)
            ids = list(self.inflight)
            try:
                await self.storage_work.renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing claims on mounts failed: %s", _first_line(exc))
            if not ids:
                continue
            try:
                taken = await self.db_call(repo.renew, ids, self.replica_id, self._claim_until())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing claims failed: %s", _first_line(exc))
                continue
            for notebook_id in taken:
                task = self.inflight.get(notebook_id)
                if task is not None and not task.done():
                    log.warning("instance %s: claim expired and another replica took the work over; "
                                "abandoning it here", notebook_id)
                    task.cancel()

    def _dispatch(self, row, work, *args) -> None:
        """Run ``work(row, *args)`` for a row this replica has just claimed; release the claim after."""
        task = asyncio.create_task(self._claimed(row, work, *args), name=f"reconcile-{row['id']}")
        self.inflight[row["id"]] = task
        task.add_done_callback(lambda done, nid=row["id"]: self._done(nid, done))

    def _done(self, notebook_id: str, task: asyncio.Task) -> None:
        self.inflight.pop(notebook_id, None)
        if not task.cancelled() and task.result():
            # Room for more work now. Not after a failure: that waits for the next periodic sweep,
            # so an instance that keeps failing is not retried in a tight loop.
            self._wake.set()

    async def sweep(self) -> None:
        room = self.settings.max_concurrent_starts * 4 - len(self.inflight)
        loop_now = asyncio.get_running_loop().time()
        if room > 0:
            rows = await self.db_call(repo.claim_in_status, [s.value for s in TRANSITIONAL], self.replica_id,
                                      self.clock.now_ms(), self._claim_until(),
                                      [*self.inflight, *self._retries.waiting(loop_now)], room)
            for row in rows:
                self._dispatch(row, self._handle)
        await self.storage_work.sweep()
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_observe >= self.settings.observe_interval:
            self._last_observe = loop_time
            self.image_work.purge_requested = True
            await self.observe_running()
        if self.image_work.purge_requested:
            self.image_work.start_purge()

    # --- work on one instance --------------------------------------------------------------------
    async def _claimed(self, row, work, *args) -> bool:
        """Run the work, then release the claim; True when the work ran through."""
        try:
            await work(row, *args)
            self._retries.succeeded(row["id"])
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the row keeps its status; a later sweep retries
            if store_unavailable(exc):
                log.warning("reconciling instance %s: store unavailable, will retry: %s", row["id"],
                            _first_line(exc))
            else:
                log.exception("reconciling instance %s failed", row["id"])
                await self._after_unexpected_failure(row)
            return False
        finally:
            try:
                await self._release(row["id"])
            except Exception as exc:  # unreleased, the claim expires after claim_seconds
                log.warning("releasing claim of %s failed: %s", row["id"], _first_line(exc))

    async def _after_unexpected_failure(self, row) -> None:
        """Schedule the next attempt later each time (doubling); after ``RETRY_LIMIT`` attempts settle the
        instance in its failed status, so a failure that repeats cannot keep it transitional for ever."""
        attempts = self._retries.failed(row["id"], asyncio.get_running_loop().time())
        if attempts is None:
            return
        event = _GIVE_UP.get(Status(row["status"]))
        try:
            fresh = await self.db_read(repo.get, row["id"])
            if event is None or fresh is None or fresh["status"] != row["status"]:
                return
            reason = f"{_ACTIONS[event]} failed {attempts} times with an internal error; see the server log"
            if event is Event.SNAPSHOT_DONE:   # the image fails; the instance itself runs on
                await self.image_work.give_up(fresh, reason)
                return
            values = {"fail_reason": reason}
            if event in (Event.PROVISION_FAILED, Event.START_FAILED):
                values["placement"] = None
            await self._set(fresh, event, values, note=("failed", reason))
        except Exception as exc:  # the store went away meanwhile: the next attempt settles it
            log.warning("instance %s: could not record the failure: %s", row["id"], _first_line(exc))

    async def _release(self, notebook_id: str) -> None:
        if notebook_id in self._released:
            self._released.discard(notebook_id)   # the final status write gave the claim up already
        else:
            await self.db_call(repo.release, notebook_id, self.replica_id)

    async def _handle(self, row) -> None:
        status = Status(row["status"])
        if status in (Status.INIT, Status.CREATING):
            await self._bring_up(row, Event.PROVISIONED, Event.PROVISION_FAILED)
        elif status is Status.STARTING:
            await self._bring_up(row, Event.READY, Event.START_FAILED)
        elif status is Status.STOPPING:
            await self._finish_stop(row)
        elif status is Status.DELETING:
            await self._finish_delete(row)
        elif status is Status.SNAPSHOTTING:
            await self.image_work.save(row)

    async def _set(self, row, event: Event, values: dict, note: tuple[str, str] | None = None,
                   also=None) -> bool:
        """Move the row along ``event`` if it is unchanged and still claimed by this replica; the
        event row ``note`` (kind, message) and ``also(conn)`` (a write that belongs to the change, e.g. the
        saved image's status) happen in the same transaction, so they exist exactly when the status
        change does."""
        target = after(row["status"], event)
        if target is None:
            return False
        now = self.clock.now_ms()
        values = {"status": target.value, "update_at": now, **values}
        # A stable status ends the work: the claim goes in the same write (one transaction fewer per
        # transition). A transitional one (AUTO_STOP -> STOPPING) keeps it for the work that follows.
        settles = target not in TRANSITIONAL
        if settles:
            values.update(claim_owner=None, claim_until=None)

        def change(conn) -> bool:
            version = row["version"]
            for _attempt in range(5):
                if repo.compare_and_set(conn, row["id"], version, values, True, owner=self.replica_id):
                    break
                # Writes that change no status (tags) move the version too; the transition still stands
                # then. Any change of status or intent, or of the claim, means this work is stale.
                fresh = repo.get(conn, row["id"])
                if (fresh is None or fresh["version"] == version or fresh["claim_owner"] != self.replica_id
                        or (fresh["status"], fresh["desired"]) != (row["status"], row["desired"])):
                    return False
                version = fresh["version"]
            else:
                return False
            if note is not None:
                repo.add_event(conn, row["id"], row["project_id"], now, *note)
            if also is not None:
                also(conn)
            return True

        changed = await self.db_call(change)
        if changed:
            self.on_status(row["id"])
            if settles:
                self._released.add(row["id"])
        return changed

    async def _bring_up(self, row, ok: Event, failed: Event) -> None:
        spec = self.spec_of(row)
        await self.record(row, "scheduled",
                          f"Scheduled on the {self.runtime.name} runtime (replica {self.short_id})")
        reporter = ProgressReporter(self, row)
        async with self._slots:
            try:
                # Whatever a crashed predecessor left half-started is ended first, so a start is always
                # clean; if that fails the start fails with it (starting next to the remains would not be).
                try:
                    await self.runtime.stop(spec, Placement.from_json(orjson.loads(row["placement"]))
                                            if row["placement"] else None)
                except RuntimeFailure as failure:
                    raise RuntimeFailure(f"Could not clean up before starting: {failure.reason}") from failure
                try:
                    placement = await self.runtime.start(spec, reporter)
                finally:
                    await reporter.close()
            except RuntimeFailure as failure:
                for step in reporter.steps:
                    if failure.step is not None and step["step"] == failure.step:
                        step["status"] = StepStatus.FAILED.value
                        step["description"] = failure.reason
                await self._set(row, failed, {"fail_reason": failure.reason, "placement": None,
                                              "action_progress": orjson.dumps(reporter.steps).decode()},
                                note=("failed", failure.reason))
                return
        now = self.clock.now_ms()
        for step in reporter.steps:
            step["status"] = StepStatus.COMPLETED.value
        values = {"placement": orjson.dumps(placement.to_json()).decode(), "ip": placement.host or None,
                  "fail_reason": None, "last_activity_at": now,
                  "action_progress": orjson.dumps(reporter.steps).decode()}
        note = ("started" if ok is Event.READY else "ready", "Jupyter is ready")
        # The instance's dynamic mounts are mounted again once it runs (MOUNTING, in the same transaction).
        if not await self._set(row, ok, values, note=note,
                               also=lambda conn: storage_repo.instance_started(conn, row["id"], now)):
            # The intent changed, or this replica lost its claim, while we worked: leave no process
            # nobody wants (a new owner starts from a clean slate anyway).
            try:
                await self.runtime.stop(spec, placement)
            except RuntimeFailure as failure:
                log.warning("instance %s: stopping an unwanted start failed: %s", row["id"], failure.reason)

    async def _finish_stop(self, row, reason: str | None = None) -> None:
        spec = self.spec_of(row)
        placement = Placement.from_json(orjson.loads(row["placement"])) if row["placement"] else None
        try:
            await self.runtime.stop(spec, placement)
        except RuntimeFailure as failure:
            await self._set(row, Event.STOP_FAILED, {"fail_reason": failure.reason},
                            note=("failed", f"Stop failed: {failure.reason}"))
            return
        await self._unmount_all(spec)
        await self._set(row, Event.STOPPED, {"placement": None, "ip": None, "action_progress": None},
                        note=("stopped", reason or "Instance stopped"), also=self._mounts_kept(row))

    async def _unmount_all(self, spec) -> bool:
        """Nothing of the instance stays mounted on the host (its processes are gone); False if that failed,
        which is logged: the mounts are made again (or found made) at the next start, and a delete retries."""
        try:
            await self.storage_work.instance_stopping(spec)
            return True
        except (TimeoutError, RuntimeFailure) as failure:
            log.warning("instance %s: unmounting its dynamic storage failed: %s", spec.id,
                        getattr(failure, "reason", None) or "timed out")
            return False

    def _mounts_kept(self, row):
        """In the stop's transaction: the mounts wait for the next start as UNMOUNTED, detaches are done."""
        return lambda conn: storage_repo.instance_stopped(conn, row["id"], self.clock.now_ms())

    async def _finish_delete(self, row) -> None:
        spec = self.spec_of(row)
        placement = Placement.from_json(orjson.loads(row["placement"])) if row["placement"] else None
        try:
            # Mounts go before the instance's directories do: removing a directory that still holds a
            # mount would remove what the mount shows (a shared file system's files).
            if not await self._unmount_all(spec):
                raise RuntimeFailure("could not unmount the instance's dynamic storage")
            await self.runtime.delete(spec, placement)
        except RuntimeFailure as failure:
            await self._set(row, Event.DELETE_FAILED, {"fail_reason": failure.reason},
                            note=("failed", f"Delete failed: {failure.reason}"))
            return

        def remove(conn) -> None:
            if repo.remove(conn, row["id"], row["version"]):
                repo.add_event(conn, row["id"], row["project_id"], self.clock.now_ms(), "deleted",
                               "Instance and its storage deleted")

        await self.db_call(remove)
        self.on_status(row["id"])

    async def _stop_row(self, row, reason: str, note: tuple[str, str] | None = None) -> None:
        """Move a live instance this replica has claimed to STOPPING (auto-stop, shutdown) and finish the stop."""
        if not await self._set(row, Event.AUTO_STOP, {"desired": Status.STOPPED.value}, note=note):
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
        # Claimed in the query itself, so of replicas sweeping together exactly one stops each instance.
        for row in await self.db_call(repo.claim_expired_timing, self.replica_id, now, self._claim_until(),
                                      list(self.inflight)):
            self._dispatch(row, self._auto_stop, lease_decision(_lease_of(row), now).reason)
        if not getattr(self.runtime, "observes", True):
            return
        idle = [r for r in await self.db_read(repo.running_with_idle_lease)
                if r["id"] not in self.inflight and r["placement"]]
        await self._each(idle, self._check_idle)
        running = [r for r in await self.db_read(repo.get_many, [Status.RUNNING.value]) if r["id"] not in self.inflight]
        await self._each(running, self._check_alive)

    async def _each(self, rows, check) -> None:
        """``check(row)`` for every row, a few at once: instances answer (or stall) on their own, and one
        instance's failure is logged, never the whole observation's (an outage of the store still is)."""
        slots = asyncio.Semaphore(OBSERVE_CONCURRENCY)

        async def one(row) -> None:
            async with slots:
                try:
                    await check(row)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if store_unavailable(exc):
                        raise
                    log.exception("observing instance %s failed", row["id"])

        await asyncio.gather(*(one(row) for row in rows))

    async def _check_idle(self, row) -> None:
        placement = Placement.from_json(orjson.loads(row["placement"]))
        activity = await self.runtime.activity(self.spec_of(row), placement)
        decision = self.idle_policy.decide(_lease_of(row), activity, row["update_at"], self.clock.now_ms())
        if decision.stop:
            fresh = await self._claim_unchanged(row)
            if fresh is not None:
                self._dispatch(fresh, self._auto_stop, decision.reason)

    async def _claim_unchanged(self, row):
        """Claim ``row`` and return it if nothing changed since it was read (same version and lease),
        else release it and return None (another replica acted, or the user renewed the lease)."""
        fresh = await self.db_call(repo.claim_row, row["id"], self.replica_id, self.clock.now_ms(),
                                   self._claim_until())
        if fresh is None:
            return None
        if (fresh["version"], fresh["lease_update_at"]) == (row["version"], row["lease_update_at"]):
            return fresh
        await self.db_call(repo.release, row["id"], self.replica_id)
        return None

    async def _auto_stop(self, row, reason: str) -> None:
        await self._stop_row(row, reason=f"Auto-stopped: {reason}", note=("auto_stopped", f"Auto-stopped: {reason}"))

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
        # Observed without a claim (cheap, and every replica may look); acting on it needs one, and a
        # row that changed meanwhile (stopped, restarted elsewhere) is not this observation's business.
        fresh = await self._claim_unchanged(row)
        if fresh is None:
            return
        try:
            reason = reason or "the instance stopped unexpectedly"
            try:
                await self.runtime.stop(spec, placement)  # leave nothing half-alive behind
            except RuntimeFailure as failure:
                reason = f"{reason}; stopping its remains failed too: {failure.reason}"
            await self._unmount_all(spec)
            await self._set(fresh, Event.LOST, {"fail_reason": reason, "placement": None, "ip": None},
                            note=("failed", f"Instance lost: {reason}"), also=self._mounts_kept(fresh))
        finally:
            await self._release(row["id"])


# The failed status a transitional one settles in when its work keeps failing, and what that work is.
_GIVE_UP = {Status.INIT: Event.PROVISION_FAILED, Status.CREATING: Event.PROVISION_FAILED,
            Status.STARTING: Event.START_FAILED, Status.STOPPING: Event.STOP_FAILED,
            Status.DELETING: Event.DELETE_FAILED, Status.SNAPSHOTTING: Event.SNAPSHOT_DONE}
_ACTIONS = {Event.PROVISION_FAILED: "Creating", Event.START_FAILED: "Starting", Event.STOP_FAILED: "Stopping",
            Event.DELETE_FAILED: "Deleting", Event.SNAPSHOT_DONE: "Saving as an image"}


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
