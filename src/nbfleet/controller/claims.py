"""Claims: which instances this replica may work on, and the bookkeeping that keeps that true.

The invariant, which everything in this file serves: **a replica acts on an instance only while the store
says it holds the row's claim** (``claim_owner`` is its ``replica_id`` and ``claim_until`` lies ahead).
Memory decides nothing between replicas; the store does.

- A row is claimed in the store (a query that sets ``claim_owner``/``claim_until`` on rows nobody holds or
  whose claim ran out) *before* work on it begins: ``dispatch`` only ever gets rows already claimed. Every
  result is written with a compare-and-set that also requires the claim (``Lifecycle.set``), so work whose
  claim was lost writes nothing.
- While the work lasts, the heartbeat renews the claims of everything in ``inflight`` every third of
  ``claim_seconds``, so a slow start is not taken over. Work whose claim ran out anyway (this replica was
  stalled) and that another replica claimed is cancelled here: the other one redoes it (work is idempotent).
- ``inflight`` (id -> task) only keeps this replica from starting a second task for a row it already works
  on, and keeps those rows out of its next claim query. It is not a lock.
- The claim is given up when the work ends (``release``). A final status write gives it up in its own
  transaction (one write fewer) and notes the id in ``_released``, so the release that follows writes
  nothing.
- At stop, tasks are cancelled, but a store call runs in a thread that cannot be interrupted: a claim query
  of a cancelled sweep may still commit. ``stop`` therefore waits for every store thread (``wait_for_threads``)
  before releasing all of this replica's claims, or a late claim would outlive the release and hold the row
  for ``claim_seconds``. A replica that dies releases nothing: its claims run out after ``claim_seconds``
  (on SQLite, where one process owns the store, every claim left is released at start).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ..observability import lifecycle as observe
from ..store import notebook_repo as repo
from ..store.db import store_unavailable

if TYPE_CHECKING:
    from .reconciler import Reconciler

log = logging.getLogger("nbfleet.reconciler")

# A ``notebooks`` (or ``dynamic_storages``, ``images``) row as the store returns it.
Row: TypeAlias = Mapping[str, Any]


def first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class Claims:
    def __init__(self, reconciler: Reconciler):
        self.r = reconciler
        self.inflight: dict[str, asyncio.Task[Any]] = {}
        self._released: set[str] = set()  # claims the final status write already gave up
        self._db_threads: set[asyncio.Future[Any]] = set()

    # --- store calls in threads ----------------------------------------------------------------------
    async def db_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with self.r.db.write() as conn:
                return fn(conn, *args)

        return await self._in_thread(run)

    async def db_read(self, fn: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with self.r.db.read() as conn:
                return fn(conn, *args)

        return await self._in_thread(run)

    async def _in_thread(self, run: Callable[[], Any]) -> Any:
        """Run a blocking store call in a thread. A thread cannot be interrupted, so a task cancelled at
        stop leaves its statement running; ``stop`` waits for these before releasing its claims, or a
        claim committed late by a cancelled sweep would outlive the release."""
        future = asyncio.ensure_future(asyncio.to_thread(run))
        self._db_threads.add(future)
        future.add_done_callback(self._forget_thread)
        return await asyncio.shield(future)

    def _forget_thread(self, future: asyncio.Future[Any]) -> None:
        self._db_threads.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved: a failure is reported by whoever awaited it, if anyone still does

    async def wait_for_threads(self) -> None:
        await asyncio.gather(*self._db_threads, return_exceptions=True)

    # --- claiming, renewing, releasing -----------------------------------------------------------------
    def until(self) -> int:
        """When a claim taken or renewed now runs out."""
        return self.r.clock.now_ms() + int(self.r.settings.claim_seconds * 1000)

    async def claim_unchanged(self, row: Row) -> Row | None:
        """Claim ``row`` and return it if nothing changed since it was read (same version and lease),
        else release it and return None (another replica acted, or the user renewed the lease)."""
        fresh: Row | None = await self.db_call(
            repo.claim_row, row["id"], self.r.replica_id, self.r.clock.now_ms(), self.until()
        )
        if fresh is None:
            return None
        if (fresh["version"], fresh["lease_update_at"]) == (row["version"], row["lease_update_at"]):
            return fresh
        await self.db_call(repo.release, row["id"], self.r.replica_id)
        return None

    def settled(self, notebook_id: str) -> None:
        """The final status write gave the claim up in its own transaction."""
        self._released.add(notebook_id)

    async def release(self, notebook_id: str) -> None:
        if notebook_id in self._released:
            self._released.discard(notebook_id)  # the final status write gave the claim up already
        else:
            await self.db_call(repo.release, notebook_id, self.r.replica_id)

    def release_all_owned(self) -> None:
        """Blocking: every claim of this replica, at stop (after ``wait_for_threads``)."""
        with self.r.db.write() as conn:
            repo.release_owned(conn, self.r.replica_id)

    async def heartbeat(self) -> None:
        """Renew the claims of the work in progress, so a slow start is not taken over; give up work
        whose claim expired anyway (this replica was stalled) and was taken by another one."""
        interval = self.r.settings.claim_seconds / 3
        while not self.r.stopping:
            await asyncio.sleep(interval)
            ids = list(self.inflight)
            try:
                await self.r.storage_work.renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing claims on mounts failed: %s", first_line(exc))
            if not ids:
                continue
            try:
                taken = await self.db_call(repo.renew, ids, self.r.replica_id, self.until())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing claims failed: %s", first_line(exc))
                continue
            for notebook_id in taken:
                task = self.inflight.get(notebook_id)
                if task is not None and not task.done():
                    log.warning(
                        "instance %s: claim expired and another replica took the work over; abandoning it here",
                        notebook_id,
                    )
                    task.cancel()

    # --- work on claimed rows ----------------------------------------------------------------------
    def dispatch(self, row: Row, work: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``work(row, *args)`` for a row this replica has just claimed; release the claim after."""
        task = asyncio.create_task(self._claimed(row, work, *args), name=f"reconcile-{row['id']}")
        self.inflight[row["id"]] = task
        task.add_done_callback(functools.partial(self._done, row["id"]))

    def _done(self, notebook_id: str, task: asyncio.Task[Any]) -> None:
        self.inflight.pop(notebook_id, None)
        if not task.cancelled() and task.result():
            # Room for more work now. Not after a failure: that waits for the next periodic sweep,
            # so an instance that keeps failing is not retried in a tight loop.
            self.r._wake.set()

    async def _claimed(self, row: Row, work: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run the work, then release the claim; True when the work ran through."""
        observe.work_taken(row)
        try:
            await work(row, *args)
            self.r._retries.succeeded(row["id"])
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the row keeps its status; a later sweep retries
            if store_unavailable(exc):
                log.warning("reconciling instance %s: store unavailable, will retry: %s", row["id"], first_line(exc))
            else:
                log.exception("reconciling instance %s failed", row["id"])
                await self.r.lifecycle.after_unexpected_failure(row)
            return False
        finally:
            try:
                await self.release(row["id"])
            except Exception as exc:  # unreleased, the claim expires after claim_seconds
                log.warning("releasing claim of %s failed: %s", row["id"], first_line(exc))

    async def cancel_all(self) -> None:
        """Cancel the work in progress and wait for it to end (its store threads may run on)."""
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
