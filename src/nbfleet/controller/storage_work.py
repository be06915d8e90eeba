"""The reconciler's work on dynamic mounts (spec images-flavors-tags-storage.md §4).

Level-triggered like the rest of the reconciler: every sweep claims the mounts in flight (MOUNTING of a
RUNNING instance, any UNMOUNTING) and asks the runtime to mount or unmount; the result is written with a
compare-and-set that also requires the claim. After a crash the next claimant does the same work again,
and the runtime's calls are idempotent, so a half-made mount is finished and a half-undone one removed.

The instance's own transitions carry the mounts along: a stop (or delete, or loss) unmounts everything on
the host and keeps the mounts as UNMOUNTED (finishing detaches in flight); a start makes them MOUNTING again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ..domain.instances import InstanceSpec, MountSpec
from ..domain.model import Status
from ..domain.storage import MountStatus
from ..runtime.base import DynamicStorage, RuntimeFailure
from ..store import notebook_repo as repo
from ..store import storage_repo
from ..store.db import store_unavailable
from .claims import Row

if TYPE_CHECKING:
    from .reconciler import Reconciler

log = logging.getLogger("nbfleet.reconciler")


def mount_spec(row: Row) -> MountSpec:
    parts = tuple(row["mount_path"].strip("/").split("/")[1:])
    return MountSpec(
        id=row["id"],
        category=row["category"],
        parts=parts,
        uri=row["uri"],
        efs_id=row["efs_id"],
        project_id=row["project_id"],
    )


class StorageWork:
    def __init__(self, reconciler: Reconciler):
        self.r = reconciler
        self.inflight: dict[str, asyncio.Task[Any]] = {}

    @property
    def storage(self) -> DynamicStorage | None:
        return self.r.runtime.storage

    def _timeout(self) -> float:
        return self.r.settings.storage.mount_timeout

    # --- the sweep ---------------------------------------------------------------------------------------
    async def sweep(self) -> None:
        r = self.r
        # A read first: mounts in flight are rare, and a write transaction every sweep would queue API writes.
        if not await r.db_read(storage_repo.any_in_flight, list(self.inflight)):
            return
        rows = await r.db_call(
            storage_repo.claim_work, r.replica_id, r.clock.now_ms(), r._claim_until(), list(self.inflight), 32
        )
        for row in rows:
            task = asyncio.create_task(self._claimed(row), name=f"storage-{row['id']}")
            self.inflight[row["id"]] = task
            task.add_done_callback(functools.partial(self._forget, row["id"]))

    def _forget(self, mount_id: str, _task: asyncio.Task[Any]) -> None:
        self.inflight.pop(mount_id, None)

    async def renew(self) -> None:
        await self.r.db_call(storage_repo.renew, list(self.inflight), self.r.replica_id, self.r._claim_until())

    async def _claimed(self, row: Row) -> None:
        try:
            if row["status"] == MountStatus.MOUNTING:
                await self._mount(row)
            elif row["status"] == MountStatus.UNMOUNTING:
                await self._unmount(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the row keeps its status; the next sweep tries again
            if store_unavailable(exc):
                log.warning("mount %s: store unavailable, will retry", row["id"])
            else:
                log.exception("mount %s failed unexpectedly; will retry", row["id"])
        finally:
            try:
                await self.r.db_call(storage_repo.release, row["id"], self.r.replica_id)
            except Exception as exc:  # unreleased, the claim runs out after claim_seconds
                log.warning("releasing the claim of mount %s failed: %s", row["id"], exc)

    async def _mount(self, row: Row) -> None:
        r = self.r
        notebook = await r.db_read(repo.get, row["notebook_id"])
        if notebook is None or notebook["status"] != Status.RUNNING:
            return  # mounted once the instance runs (instance_started)
        spec = r.spec_of(notebook)
        reason = None
        if self.storage is None:
            reason = f"the {r.runtime.name} runtime cannot mount storage"
        else:
            try:
                await asyncio.wait_for(self.storage.attach(spec, mount_spec(row)), self._timeout())
            except RuntimeFailure as failure:
                reason = failure.reason
            except TimeoutError:
                reason = f"mounting took longer than {self._timeout():g} s"
                await self._undo(spec, row)
        values = {
            "status": (MountStatus.MOUNT_FAILED if reason else MountStatus.MOUNTED).value,
            "failure_reason": reason,
            "update_at": r.clock.now_ms(),
        }
        note = f"Mounting {row['mount_path']} failed: {reason}" if reason else f"Mounted {row['mount_path']}"

        def finish(conn: Connection) -> bool:
            if not storage_repo.change(conn, row["id"], row["version"], values, owner=r.replica_id):
                return False
            repo.add_event(conn, row["notebook_id"], row["project_id"], r.clock.now_ms(), "storage", note)
            return True

        written = await r.db_call(finish)
        if reason is None:
            # Detached or stopped while it was being mounted: what is mounted now is nobody's, take it away
            # (a detach is then finished by the next sweep, a stop's mounts were already marked UNMOUNTED).
            fresh = await r.db_read(repo.get, row["notebook_id"])
            if not written or fresh is None or fresh["status"] != Status.RUNNING:
                current = await r.db_read(storage_repo.get, row["id"])
                if (
                    current is None
                    or current["status"] != MountStatus.MOUNTED
                    or fresh is None
                    or fresh["status"] != Status.RUNNING
                ):
                    await self._undo(spec, row)

    async def _undo(self, spec: InstanceSpec, row: Row) -> None:
        # Bounded like the mount: after a timed-out mount it waits for that mount's thread to let go.
        storage = self.storage
        assert storage is not None  # reached only after a mount through it
        try:
            await asyncio.wait_for(storage.detach(spec, mount_spec(row)), self._timeout())
        except RuntimeFailure as failure:
            log.warning("mount %s: undoing a mount nobody wants failed: %s", row["id"], failure.reason)
        except TimeoutError:
            log.warning("mount %s: undoing a mount nobody wants took longer than %g s", row["id"], self._timeout())

    async def _unmount(self, row: Row) -> None:
        r = self.r
        notebook = await r.db_read(repo.get, row["notebook_id"])
        reason = None
        if notebook is not None and self.storage is not None:
            try:
                await asyncio.wait_for(self.storage.detach(r.spec_of(notebook), mount_spec(row)), self._timeout())
            except RuntimeFailure as failure:
                reason = failure.reason
            except TimeoutError:
                reason = f"unmounting took longer than {self._timeout():g} s"

        def finish(conn: Connection) -> None:
            if reason is None:
                done = storage_repo.remove(conn, row["id"], row["version"], owner=r.replica_id)
                note = f"Unmounted {row['mount_path']}"
            else:
                done = storage_repo.change(
                    conn,
                    row["id"],
                    row["version"],
                    {
                        "status": MountStatus.UNMOUNT_FAILED.value,
                        "failure_reason": reason,
                        "update_at": r.clock.now_ms(),
                    },
                    owner=r.replica_id,
                )
                note = f"Unmounting {row['mount_path']} failed: {reason}"
            if done and notebook is not None:
                repo.add_event(conn, row["notebook_id"], row["project_id"], r.clock.now_ms(), "storage", note)

        await r.db_call(finish)

    # --- carried along by the instance's transitions ---------------------------------------------------------
    async def instance_stopping(self, spec: InstanceSpec) -> None:
        """Before an instance's stop (or delete, or after its loss) is written: nothing of it stays mounted.
        ``RuntimeFailure`` if that fails (a delete must not remove directories that still hold mounts)."""
        for mid, task in list(self.inflight.items()):  # a mount being made for it now would come back after
            if not task.done():
                row = await self.r.db_read(storage_repo.get, mid)
                if row is not None and row["notebook_id"] == spec.id:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        if self.storage is not None:
            await asyncio.wait_for(self.storage.detach_all(spec), self._timeout())

    async def instance_stopped(self, notebook_id: str) -> None:
        await self.r.db_call(storage_repo.instance_stopped, notebook_id, self.r.clock.now_ms())

    async def instance_started(self, notebook_id: str) -> None:
        await self.r.db_call(storage_repo.instance_started, notebook_id, self.r.clock.now_ms())
        self.r.wake()

    async def stop(self) -> None:
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
