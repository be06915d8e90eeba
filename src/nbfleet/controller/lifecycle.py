"""The lifecycle flows: what the reconciler does for an instance it has claimed.

Bring-up (create and start), stop, delete and auto-stop, each ending in one compare-and-set through the
transition table (``set``) that also requires the claim; its event row, and any write that belongs to
the change, go in the same transaction. ``ProgressReporter`` writes a bring-up's ``action_progress``.
Work that fails unexpectedly is retried with a growing pause (``RetrySchedule``), then the instance
settles in its failed status (``after_unexpected_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection

from ..domain.instances import InstanceSpec, Placement
from ..domain.model import TRANSITIONAL, Status, StepStatus
from ..domain.transitions import Event, after
from ..observability import lifecycle as observe
from ..runtime.base import RuntimeFailure
from ..services.notebook_view import initial_progress
from ..store import notebook_repo as repo
from ..store import storage_repo
from .claims import Row, first_line

if TYPE_CHECKING:
    from .reconciler import Reconciler

log = logging.getLogger("nbfleet.reconciler")

# The failed status a transitional one settles in when its work keeps failing, and what that work is.
_GIVE_UP = {
    Status.INIT: Event.PROVISION_FAILED,
    Status.CREATING: Event.PROVISION_FAILED,
    Status.STARTING: Event.START_FAILED,
    Status.STOPPING: Event.STOP_FAILED,
    Status.DELETING: Event.DELETE_FAILED,
    Status.SNAPSHOTTING: Event.SNAPSHOT_DONE,
}
_ACTIONS = {
    Event.PROVISION_FAILED: "Creating",
    Event.START_FAILED: "Starting",
    Event.STOP_FAILED: "Stopping",
    Event.DELETE_FAILED: "Deleting",
    Event.SNAPSHOT_DONE: "Saving as an image",
}


class ProgressReporter:
    """Writes action_progress steps and runtime events for one bring-up.

    Steps that follow each other within ``FLUSH_SECONDS`` are written together: a fast runtime reports
    eight steps in a millisecond, and eight write transactions for them would queue every API write
    behind this one start. The first change is written at once (so a poll sees the start begin), later
    ones at the end of the window; the final status write carries all steps anyway (``close``).
    """

    FLUSH_SECONDS = 0.1

    def __init__(self, reconciler: Reconciler, row: Row, *, flush_seconds: float = FLUSH_SECONDS):
        self.r = reconciler
        self.row = row
        self.flush_seconds = flush_seconds
        self.steps = orjson.loads(row["action_progress"]) if row["action_progress"] else initial_progress()
        self._last_write = float("-inf")
        self._pending: asyncio.Task[Any] | None = None

    async def step(self, number: int, status: StepStatus, description: str | None = None) -> None:
        for step in self.steps:
            if step["step"] == number:
                step["status"] = StepStatus(status).value
                if description:
                    step["description"] = description
        if self._pending is not None:
            return  # the scheduled write will carry this change too
        wait = self._last_write + self.flush_seconds - asyncio.get_running_loop().time()
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
        await self.r.db_call(repo.update_if_status, self.row["id"], self.row["status"], {"action_progress": payload})

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


class Lifecycle:
    def __init__(self, reconciler: Reconciler):
        self.r = reconciler

    async def handle(self, row: Row) -> None:
        status = Status(row["status"])
        if status in (Status.INIT, Status.CREATING):
            await self.bring_up(row, Event.PROVISIONED, Event.PROVISION_FAILED)
        elif status is Status.STARTING:
            await self.bring_up(row, Event.READY, Event.START_FAILED)
        elif status is Status.STOPPING:
            await self.finish_stop(row)
        elif status is Status.DELETING:
            await self.finish_delete(row)
        elif status is Status.SNAPSHOTTING:
            await self.r.image_work.save(row)

    async def set(
        self,
        row: Row,
        event: Event,
        values: dict[str, Any],
        note: tuple[str, str] | None = None,
        also: Callable[[Connection], Any] | None = None,
    ) -> bool:
        """Move the row along ``event`` if it is unchanged and still claimed by this replica; the
        event row ``note`` (kind, message) and ``also(conn)`` (a write that belongs to the change, e.g. the
        saved image's status) happen in the same transaction, so they exist exactly when the status
        change does."""
        target = after(row["status"], event)
        if target is None:
            return False
        now = self.r.clock.now_ms()
        values = {"status": target.value, "update_at": now, **values}
        # A stable status ends the work: the claim goes in the same write (one transaction fewer per
        # transition). A transitional one (AUTO_STOP -> STOPPING) keeps it for the work that follows.
        settles = target not in TRANSITIONAL
        if settles:
            values.update(claim_owner=None, claim_until=None)

        def change(conn: Connection) -> bool:
            version = row["version"]
            for _attempt in range(5):
                if repo.compare_and_set(conn, row["id"], version, values, True, owner=self.r.replica_id):
                    break
                # Writes that change no status (tags) move the version too; the transition still stands
                # then. Any change of status or intent, or of the claim, means this work is stale.
                fresh = repo.get(conn, row["id"])
                if (
                    fresh is None
                    or fresh["version"] == version
                    or fresh["claim_owner"] != self.r.replica_id
                    or (fresh["status"], fresh["desired"]) != (row["status"], row["desired"])
                ):
                    return False
                version = fresh["version"]
            else:
                return False
            if note is not None:
                repo.add_event(conn, row["id"], row["project_id"], now, *note)
            if also is not None:
                also(conn)
            return True

        changed: bool = await self.r.db_call(change)
        if changed:
            observe.transition(row, event, target, now)
            self.r.on_status(row["id"])
            if settles:
                self.r.claims.settled(row["id"])
        return changed

    async def bring_up(self, row: Row, ok: Event, failed: Event) -> None:
        spec = self.r.spec_of(row)
        await self.r.record(
            row, "scheduled", f"Scheduled on the {self.r.runtime.name} runtime (replica {self.r.short_id})"
        )
        reporter = ProgressReporter(self.r, row, flush_seconds=self.r.progress_flush_seconds)
        async with self.r._slots:
            try:
                # Whatever a crashed predecessor left half-started is ended first, so a start is always
                # clean; if that fails the start fails with it (starting next to the remains would not be).
                try:
                    await self.r.runtime.stop(spec, Placement.from_column(row["placement"]))
                except RuntimeFailure as failure:
                    raise RuntimeFailure(f"Could not clean up before starting: {failure.reason}") from failure
                try:
                    placement = await self.r.runtime.start(spec, reporter)
                finally:
                    await reporter.close()
            except RuntimeFailure as failure:
                for step in reporter.steps:
                    if failure.step is not None and step["step"] == failure.step:
                        step["status"] = StepStatus.FAILED.value
                        step["description"] = failure.reason
                await self.set(
                    row,
                    failed,
                    {
                        "fail_reason": failure.reason,
                        "placement": None,
                        "action_progress": orjson.dumps(reporter.steps).decode(),
                    },
                    note=("failed", failure.reason),
                )
                return
        now = self.r.clock.now_ms()
        for step in reporter.steps:
            step["status"] = StepStatus.COMPLETED.value
        values = {
            "placement": placement.to_column(),
            "ip": placement.host or None,
            "fail_reason": None,
            "last_activity_at": now,
            "action_progress": orjson.dumps(reporter.steps).decode(),
        }
        note = ("started" if ok is Event.READY else "ready", "Jupyter is ready")
        # The instance's dynamic mounts are mounted again once it runs (MOUNTING, in the same transaction).
        if not await self.set(
            row, ok, values, note=note, also=lambda conn: storage_repo.instance_started(conn, row["id"], now)
        ):
            # The intent changed, or this replica lost its claim, while we worked: leave no process
            # nobody wants (a new owner starts from a clean slate anyway).
            try:
                await self.r.runtime.stop(spec, placement)
            except RuntimeFailure as failure:
                log.warning("instance %s: stopping an unwanted start failed: %s", row["id"], failure.reason)

    async def finish_stop(self, row: Row, reason: str | None = None) -> None:
        spec = self.r.spec_of(row)
        placement = Placement.from_column(row["placement"])
        try:
            await self.r.runtime.stop(spec, placement)
        except RuntimeFailure as failure:
            await self.set(
                row,
                Event.STOP_FAILED,
                {"fail_reason": failure.reason},
                note=("failed", f"Stop failed: {failure.reason}"),
            )
            return
        await self.unmount_all(spec)
        await self.set(
            row,
            Event.STOPPED,
            {"placement": None, "ip": None, "action_progress": None},
            note=("stopped", reason or "Instance stopped"),
            also=self.mounts_kept(row),
        )

    async def unmount_all(self, spec: InstanceSpec) -> bool:
        """Nothing of the instance stays mounted on the host (its processes are gone); False if that failed,
        which is logged: the mounts are made again (or found made) at the next start, and a delete retries."""
        try:
            await self.r.storage_work.instance_stopping(spec)
            return True
        except (TimeoutError, RuntimeFailure) as failure:
            log.warning(
                "instance %s: unmounting its dynamic storage failed: %s",
                spec.id,
                getattr(failure, "reason", None) or "timed out",
            )
            return False

    def mounts_kept(self, row: Row) -> Callable[[Connection], Any]:
        """In the stop's transaction: the mounts wait for the next start as UNMOUNTED, detaches are done."""
        return lambda conn: storage_repo.instance_stopped(conn, row["id"], self.r.clock.now_ms())

    async def finish_delete(self, row: Row) -> None:
        spec = self.r.spec_of(row)
        placement = Placement.from_column(row["placement"])
        try:
            # Mounts go before the instance's directories do: removing a directory that still holds a
            # mount would remove what the mount shows (a shared file system's files).
            if not await self.unmount_all(spec):
                raise RuntimeFailure("could not unmount the instance's dynamic storage")
            await self.r.runtime.delete(spec, placement)
        except RuntimeFailure as failure:
            await self.set(
                row,
                Event.DELETE_FAILED,
                {"fail_reason": failure.reason},
                note=("failed", f"Delete failed: {failure.reason}"),
            )
            return

        def remove(conn: Connection) -> None:
            if repo.remove(conn, row["id"], row["version"]):
                repo.add_event(
                    conn,
                    row["id"],
                    row["project_id"],
                    self.r.clock.now_ms(),
                    "deleted",
                    "Instance and its storage deleted",
                )

        await self.r.db_call(remove)
        observe.deleted(row, self.r.clock.now_ms())
        self.r.on_status(row["id"])

    async def stop_row(self, row: Row, reason: str, note: tuple[str, str] | None = None) -> None:
        """Move a live instance this replica has claimed to STOPPING (auto-stop, shutdown) and finish the stop."""
        # Nobody asked for this stop: the request id of the instance's last intent does not go with it.
        if not await self.set(row, Event.AUTO_STOP, {"desired": Status.STOPPED.value, "request_id": None}, note=note):
            return
        fresh = await self.r.db_read(repo.get, row["id"])
        await self.finish_stop(fresh, reason)

    async def auto_stop(self, row: Row, reason: str) -> None:
        await self.stop_row(row, reason=f"Auto-stopped: {reason}", note=("auto_stopped", f"Auto-stopped: {reason}"))

    async def after_unexpected_failure(self, row: Row) -> None:
        """Schedule the next attempt later each time (doubling); after ``RETRY_LIMIT`` attempts settle the
        instance in its failed status, so a failure that repeats cannot keep it transitional for ever."""
        attempts = self.r._retries.failed(row["id"], asyncio.get_running_loop().time())
        if attempts is None:
            return
        event = _GIVE_UP.get(Status(row["status"]))
        try:
            fresh = await self.r.db_read(repo.get, row["id"])
            if event is None or fresh is None or fresh["status"] != row["status"]:
                return
            reason = f"{_ACTIONS[event]} failed {attempts} times with an internal error; see the server log"
            if event is Event.SNAPSHOT_DONE:  # the image fails; the instance itself runs on
                await self.r.image_work.give_up(fresh, reason)
                return
            values: dict[str, Any] = {"fail_reason": reason}
            if event in (Event.PROVISION_FAILED, Event.START_FAILED):
                values["placement"] = None
            await self.set(fresh, event, values, note=("failed", reason))
        except Exception as exc:  # the store went away meanwhile: the next attempt settles it
            log.warning("instance %s: could not record the failure: %s", row["id"], first_line(exc))
