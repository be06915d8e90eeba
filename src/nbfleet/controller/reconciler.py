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

The parts: ``claims.py`` (claiming, renewing, releasing, the store's threads; the invariant above in
detail), ``lifecycle.py`` (bring-up, stop, delete, auto-stop, and the final status writes),
``observer.py`` (liveness, adoption after a restart, idle and lease auto-stop), ``image_work.py`` and
``storage_work.py``. This module keeps the loop (``start``/``stop``/``sweep``/``recover``/``wake``),
what the parts share (``spec_of``, ``record``) and the names the parts and the app call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection

from ..auth.secrets import SecretBox
from ..domain.instances import FlavorLimits, ImageRef, InstanceSpec
from ..domain.model import TRANSITIONAL, Status
from ..domain.transitions import Event
from ..observability import metrics
from ..runtime.base import Runtime
from ..services.catalog import FlavorCatalog
from ..services.images import ImageCatalog
from ..store import notebook_repo as repo
from ..store import storage_repo
from ..store.db import Database, store_unavailable
from .claims import Claims, Row, first_line
from .culler import KernelIdlePolicy
from .image_work import ImageWork
from .lifecycle import Lifecycle
from .observer import LIVE, Observer
from .retries import RetrySchedule
from .storage_work import StorageWork

if TYPE_CHECKING:
    from ..clock import SystemClock
    from ..settings import Settings

log = logging.getLogger("nbfleet.reconciler")


class Reconciler:
    # Work that fails with something other than a RuntimeFailure (a bug, an OSError) is retried this many
    # times in all, each after a longer pause, then the instance is given its failed status.
    RETRY_LIMIT = 5
    RETRY_MAX_SECONDS = 60.0

    def __init__(
        self,
        db: Database,
        runtime: Runtime,
        clock: SystemClock,
        settings: Settings,
        flavors: FlavorCatalog,
        images: ImageCatalog,
        *,
        secrets: SecretBox,
        idle_policy: KernelIdlePolicy | None = None,
        replica_id: str | None = None,
        on_status: Callable[[str], None] = lambda notebook_id: None,
    ):
        """``on_status(id)`` is told of every status this reconciler writes (the proxy forgets its route)."""
        self.db = db
        self.secrets = secrets  # opens the sealed notebook tokens the runtime needs
        self.runtime: Runtime = runtime
        self.clock = clock
        self.settings = settings
        self.flavors = flavors
        self.images = images
        self.on_status = on_status
        self.idle_policy = idle_policy or KernelIdlePolicy()
        self.replica_id = replica_id or uuid.uuid4().hex
        self._retries = RetrySchedule(self.RETRY_LIMIT, settings.reconcile_interval, self.RETRY_MAX_SECONDS)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._heartbeat_task: asyncio.Task[Any] | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrent_starts)
        self._last_observe = 0.0
        self.sweeps_started = 0  # sweeps begun and finished: a test's clock waits for one that began after
        self.sweeps_finished = 0  # it asked (nbfleet.testing)
        self.progress_flush_seconds = 0.1  # ProgressReporter's window; a test's server writes every step at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.claims = Claims(self)
        self.lifecycle = Lifecycle(self)
        self.observer = Observer(self)
        self.image_work = ImageWork(self)
        self.storage_work = StorageWork(self)

    # --- what the parts and the app call ----------------------------------------------------------
    @property
    def inflight(self) -> dict[str, asyncio.Task[Any]]:
        return self.claims.inflight

    async def db_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.claims.db_call(fn, *args)

    async def db_read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.claims.db_read(fn, *args)

    def _claim_until(self) -> int:
        return self.claims.until()

    async def _set(
        self,
        row: Row,
        event: Event,
        values: dict[str, Any],
        note: tuple[str, str] | None = None,
        also: Callable[[Connection], Any] | None = None,
    ) -> bool:
        return await self.lifecycle.set(row, event, values, note=note, also=also)

    @property
    def short_id(self) -> str:
        return self.replica_id[:8]

    async def record(self, row: Row, kind: str, message: str) -> None:
        await self.db_call(repo.add_event, row["id"], row["project_id"], self.clock.now_ms(), kind, message)

    def wake(self) -> None:
        """Ask for a sweep now (thread-safe: API calls run in worker threads)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def observe_next_sweep(self) -> None:
        """Make the next sweep check leases and liveness, however recently the last one did."""
        self._last_observe = float("-inf")

    def sweeping_task(self) -> asyncio.Task[Any] | None:
        """The loop's task while it is in a sweep."""
        return self._task if self._task is not None and self.sweeps_started != self.sweeps_finished else None

    def work_in_progress(self) -> list[asyncio.Task[Any]]:
        """The tasks doing work this replica claimed (instances, mounts, image removal), and the loop's own
        task while it sweeps (an observation stops instances inline)."""
        tasks = [*self.inflight.values(), *self.storage_work.inflight.values()]
        sweeping = self.sweeping_task()
        if sweeping is not None:
            tasks.append(sweeping)
        purge = self.image_work.purge_task()
        return tasks + ([purge] if purge is not None else [])

    def purge_images(self) -> None:
        """Ask for deleted images' content to be removed now, not at the next observation (thread-safe)."""
        self.image_work.purge_requested = True
        self.wake()

    def spec_of(self, row: Row) -> InstanceSpec:
        return self.spec_for(
            row["id"],
            row["flavor"],
            row["swr_path"],
            self.secrets.open(row["token"]),
            name=row["name"],
            owner_id=row["user_id"],
            project_id=row["project_id"],
            first_start=row["status"] in (Status.INIT, Status.CREATING),
            volume_gb=_volume_gb(row),
        )

    def spec_for(
        self, instance_id: str, flavor_id: str, swr_path: str, token: str, *, first_start: bool, **about: Any
    ) -> InstanceSpec:
        """The spec of an instance of this flavor and image (also of a warm-pool member, before it has a row)."""
        flavor = self.flavors.get(flavor_id)
        limits = flavor.limits() if flavor else None
        if limits is None:
            limits = FlavorLimits(flavor_id, 1, 1024)
        image_name, environment = self.images.environment(swr_path)
        return InstanceSpec(
            id=instance_id,
            token=token,
            flavor=limits,
            image=ImageRef(image_name, swr_path, environment, serves_jupyter=self.images.serves_jupyter(swr_path)),
            first_start=first_start,
            name=about.pop("name", ""),
            owner_id=about.pop("owner_id", ""),
            project_id=about.pop("project_id", ""),
            **about,
        )

    # --- lifecycle of the loop -------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.recover()
        log.info("reconciler %s started (claims last %g s)", self.replica_id, self.settings.claim_seconds)
        self._task = asyncio.create_task(self._run(), name="nbfleet-reconciler")
        self._heartbeat_task = asyncio.create_task(self.claims.heartbeat(), name="nbfleet-claim-heartbeat")

    async def stop(self, *, stop_notebooks: bool = False) -> None:
        self.stopping = True
        for loop_task in (self._task, self._heartbeat_task):
            if loop_task is not None:
                loop_task.cancel()
                try:
                    await loop_task
                except asyncio.CancelledError:
                    pass
        await self.claims.cancel_all()
        await self.image_work.stop()
        await self.storage_work.stop()
        try:
            if stop_notebooks:
                rows = await self.db_read(repo.get_many, [s.value for s in LIVE])
                for row in rows:
                    fresh = await self.db_call(
                        repo.claim_row, row["id"], self.replica_id, self.clock.now_ms(), self.claims.until()
                    )
                    if fresh is not None and fresh["status"] in LIVE:
                        await self.lifecycle.stop_row(fresh, reason="nbfleet is shutting down")
            # Statements of cancelled work may still commit claims: wait for them, then release (claims.py).
            await self.claims.wait_for_threads()
            await asyncio.to_thread(self.claims.release_all_owned)
        except Exception as exc:  # the store is away: the claims expire by themselves after claim_seconds
            if not store_unavailable(exc):
                raise
            log.warning("could not release this replica's claims (store unavailable): %s", first_line(exc))

    async def recover(self) -> None:
        """After a restart: free stale claims, adopt live instances, mark dead ones, reap orphans.

        Transitional rows need nothing here: the first sweep redoes their work.
        """
        if self.db.is_sqlite:  # one process owns a SQLite store, so any claim left is from a dead one
            await self.db_call(repo.release_all)
            await self.db_call(storage_repo.release_all)
        await self.observer.recover()

    async def _run(self) -> None:
        assert self._loop is not None  # start() set it before starting this task
        down_since: float | None = None  # loop time the store became unreachable, while it is
        while not self.stopping:
            # Clear before sweeping: a wake-up that arrives during the sweep must cause another sweep.
            self._wake.clear()
            interval = self.settings.reconcile_interval
            try:
                with metrics.sweep_timer():
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
                    log.warning("store unavailable, retrying every %.1f s: %s", max(interval, 0.5), first_line(exc))
                if down_since is not None:
                    interval = max(interval, 0.5)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass

    async def sweep(self) -> None:
        self.sweeps_started += 1
        number = self.sweeps_started
        try:
            await self._sweep()
        finally:
            self.sweeps_finished = number

    async def _sweep(self) -> None:
        room = self.settings.max_concurrent_starts * 4 - len(self.inflight)
        loop_now = asyncio.get_running_loop().time()
        if room > 0:
            rows = await self.db_call(
                repo.claim_in_status,
                [s.value for s in TRANSITIONAL],
                self.replica_id,
                self.clock.now_ms(),
                self._claim_until(),
                [*self.inflight, *self._retries.waiting(loop_now)],
                room,
            )
            for row in rows:
                self.claims.dispatch(row, self.lifecycle.handle)
        await self.storage_work.sweep()
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_observe >= self.settings.observe_interval:
            self._last_observe = loop_time
            self.image_work.purge_requested = True
            await self.observer.observe_running()
        if self.image_work.purge_requested:
            self.image_work.start_purge()


def _volume_gb(row: Row) -> int | None:
    """The capacity (GB) of the instance's EVS work volume as created, or None (another category, or not told)."""
    try:
        volume = orjson.loads(row["spec"]).get("volume") or {}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    capacity = volume.get("capacity") if isinstance(volume, dict) and volume.get("category") == "EVS" else None
    return capacity if isinstance(capacity, int) and capacity > 0 else None
