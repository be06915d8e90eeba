"""The observer: watching RUNNING instances, and what the reconciler does about what it sees.

Liveness (``runtime.observe``; ``runtime.adopt`` once after a restart), idle auto-stop (``runtime.activity``
judged by the idle policy) and expired TIMING leases. ``culler.py`` holds the decisions; this module looks
and acts. Looking needs no claim (it is cheap, and every replica may look); acting does, and a row that
changed since it was read (stopped, restarted elsewhere, lease renewed) is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from ..domain.instances import Placement
from ..domain.lease import lease_of
from ..domain.model import TRANSITIONAL, Status
from ..domain.transitions import Event
from ..observability import lifecycle as observe
from ..runtime.base import InStore, RuntimeFailure
from ..store import notebook_repo as repo
from ..store.db import store_unavailable
from .claims import Row
from .culler import lease_decision

if TYPE_CHECKING:
    from .reconciler import Reconciler

log = logging.getLogger("nbfleet.reconciler")
LIVE = (Status.RUNNING, Status.SNAPSHOTTING, Status.ERROR)
OBSERVE_CONCURRENCY = 16  # instances probed at once by an observation (each probe is bounded by the runtime)


class Observer:
    def __init__(self, reconciler: Reconciler):
        self.r = reconciler

    async def recover(self) -> None:
        """After a restart: end orphan processes and mounts, adopt what still runs, mark what died.

        Runtimes that run nothing (simulated) have nothing to adopt, so a large store costs nothing at start.
        """
        r = self.r
        if not r.runtime.observes:
            return
        reaped = await r.runtime.reap_orphans(self.in_store)
        for notebook_id in reaped:
            log.warning("removed what was left of instance %s, which is not live in the store", notebook_id)
        rows = await r.db_read(repo.get_many, [s.value for s in (*LIVE, *TRANSITIONAL)])
        storage = r.runtime.storage
        if storage is not None:
            try:
                for notebook_id in await storage.reap({row["id"] for row in rows}):
                    log.warning("unmounted what was left mounted for instance %s, which is not running", notebook_id)
            except RuntimeFailure as failure:
                log.warning("unmounting the dynamic storage of unknown instances failed: %s", failure.reason)
        for row in rows:
            if row["status"] == Status.RUNNING:
                await self.check_alive(row, adopting=True)

    async def in_store(self, ids: set[str]) -> InStore:
        """The runtime's orphan check: which of ``ids`` are live, which are stored at all."""
        statuses = await self.r.db_read(repo.statuses_of, ids)
        live_statuses = {s.value for s in (*LIVE, *TRANSITIONAL)}
        return InStore(
            live=frozenset(i for i, status in statuses.items() if status in live_statuses),
            stored=frozenset(statuses),
        )

    async def observe_running(self) -> None:
        """Auto-stop expired and idle instances; for runtimes that run something, check liveness.

        Expired TIMING leases are found in SQL, so a store with many RUNNING rows (the simulated
        runtime at scale) costs one indexed query, not a scan in Python. Idle checks run when the runtime
        observes or reports activity anyway (``Runtime.reports_activity``), liveness checks only when it
        observes: a runtime that runs nothing has nothing that could die.
        """
        r = self.r
        inflight = r.claims.inflight
        now = r.clock.now_ms()
        # Claimed in the query itself, so of replicas sweeping together exactly one stops each instance.
        for row in await r.db_call(repo.claim_expired_timing, r.replica_id, now, r.claims.until(), list(inflight)):
            observe.auto_stop("lease")
            r.claims.dispatch(row, r.lifecycle.auto_stop, lease_decision(lease_of(row), now).reason)
        if r.runtime.observes or r.runtime.reports_activity:
            idle = [
                row
                for row in await r.db_read(repo.running_with_idle_lease)
                if row["id"] not in inflight and row["placement"]
            ]
            await self._each(idle, self.check_idle)
        if not r.runtime.observes:
            return
        running = [row for row in await r.db_read(repo.get_many, [Status.RUNNING.value]) if row["id"] not in inflight]
        await self._each(running, self.check_alive)

    async def _each(self, rows: Iterable[Row], check: Callable[[Row], Awaitable[None]]) -> None:
        """``check(row)`` for every row, a few at once: instances answer (or stall) on their own, and one
        instance's failure is logged, never the whole observation's (an outage of the store still is)."""
        slots = asyncio.Semaphore(OBSERVE_CONCURRENCY)

        async def one(row: Row) -> None:
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

    async def check_idle(self, row: Row) -> None:
        r = self.r
        placement = Placement.from_column(row["placement"])
        # A row without a placement goes to the runtime as it is (the simulated runtime ignores it).
        activity = await r.runtime.activity(r.spec_of(row), placement)  # type: ignore[arg-type]
        decision = r.idle_policy.decide(lease_of(row), activity, row["update_at"], r.clock.now_ms())
        if decision.stop:
            fresh = await r.claims.claim_unchanged(row)
            if fresh is not None:
                observe.auto_stop("idle")
                r.claims.dispatch(fresh, r.lifecycle.auto_stop, decision.reason)

    async def check_alive(self, row: Row, *, adopting: bool = False) -> None:
        r = self.r
        spec = r.spec_of(row)
        placement = Placement.from_column(row["placement"])
        if adopting:
            alive, reason = await r.runtime.adopt(spec, placement), None
            if not alive:
                # What ended it, where the runtime can tell (a pod OOM-killed while nbfleet was down).
                seen = await r.runtime.observe(spec, placement)
                survived = "the Jupyter process did not survive the restart of nbfleet"
                reason = (not seen.alive and seen.reason) or survived
        else:
            observation = await r.runtime.observe(spec, placement)
            alive, reason = observation.alive, observation.reason
        if alive:
            return
        # Observed without a claim (cheap, and every replica may look); acting on it needs one, and a
        # row that changed meanwhile (stopped, restarted elsewhere) is not this observation's business.
        fresh = await r.claims.claim_unchanged(row)
        if fresh is None:
            return
        try:
            reason = reason or "the instance stopped unexpectedly"
            try:
                await r.runtime.stop(spec, placement)  # leave nothing half-alive behind
            except RuntimeFailure as failure:
                reason = f"{reason}; stopping its remains failed too: {failure.reason}"
            await r.lifecycle.unmount_all(spec)
            await r.lifecycle.set(
                fresh,
                Event.LOST,
                {"fail_reason": reason, "placement": None, "ip": None},
                note=("failed", f"Instance lost: {reason}"),
                also=r.lifecycle.mounts_kept(fresh),
            )
        finally:
            await r.claims.release(row["id"])
