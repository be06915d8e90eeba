"""The reconciler's work on images: saving SNAPSHOTTING instances as images, and removing the content
of images deleted with ``force`` once nothing uses it any more.

A save is claimed like any work in flight (the notebook row in SNAPSHOTTING). The image the notebook
becomes is found by its ``source_notebook_id``; it moves INIT -> CREATING before the engine is asked,
and ACTIVE or CREATE_FAILED in the same transaction that brings the notebook back to RUNNING. After a
crash the next claimant finds the image CREATING and saves again: ``ImageEngine.commit`` writes the
same address, so a redone save is the same save.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection

from ..domain.instances import Placement
from ..domain.transitions import Event, ImageEvent, image_after
from ..runtime.base import EngineImage, RuntimeFailure
from ..store import image_repo
from ..store.db import store_unavailable
from .claims import Row

if TYPE_CHECKING:
    from .reconciler import Reconciler

log = logging.getLogger("nbfleet.reconciler")


class ImageWork:
    def __init__(self, reconciler: Reconciler):
        self.r = reconciler
        self._purge: asyncio.Task[Any] | None = None
        self.purge_requested = True  # look once after a start: a crash may have left removals undone

    # --- save an instance as an image ---------------------------------------------------------------
    async def save(self, row: Row) -> None:
        """Save the claimed SNAPSHOTTING instance as its image, then bring it back to RUNNING."""
        r = self.r
        image = await r.db_read(image_repo.saving_for, row["id"])
        if image is None:  # nothing left to save (cannot happen through the API): the instance runs on
            await r._set(row, Event.SNAPSHOT_DONE, {}, note=("image_save_failed", "No image to save it as"))
            return
        engine = r.runtime.images
        placement = Placement.from_column(row["placement"])
        if engine is None or placement is None:
            why = (
                f"the {r.runtime.name} runtime cannot save instances as images"
                if engine is None
                else "the instance has no placement to save"
            )
            await self.finish(row, image, None, why)
            return
        if not await r.db_call(_mark_saving, image["id"], r.clock.now_ms()):
            return  # the image moved on meanwhile; the next sweep looks again
        await r.record(
            row,
            "scheduled",
            f"Saving as image {image['swr_path']} on the {r.runtime.name} runtime (replica {r.short_id})",
        )
        async with r._slots:  # as heavy as a start on a real engine
            try:
                saved = await engine.commit(r.spec_of(row), placement, image["swr_path"])
            except RuntimeFailure as failure:
                await self.finish(row, image, None, failure.reason)
                return
        await self.finish(row, image, saved, None)

    async def finish(self, row: Row, image: Row, saved: EngineImage | None, reason: str | None) -> bool:
        """The image ACTIVE (``saved``) or CREATE_FAILED (``reason``), and the instance back to RUNNING, in
        one transaction, and only while this replica still holds the instance's claim."""
        r = self.r
        now = r.clock.now_ms()
        event = ImageEvent.SAVED if saved is not None else ImageEvent.SAVE_FAILED

        def write_image(conn: Connection) -> None:
            current = image_repo.get(conn, image["id"])
            target = image_after(current["status"], event) if current is not None else None
            if target is None:
                return
            doc = orjson.loads(current["doc"])
            doc["status_message"] = "" if saved is not None else reason
            if saved is not None:
                doc["size"] = saved.size_kb or 0
            image_repo.change_status(
                conn,
                image["id"],
                current["status"],
                {"status": target.value, "update_at": now, "doc": orjson.dumps(doc).decode()},
            )

        note = (
            ("image_saved", f"Saved as image {image['swr_path']}")
            if saved is not None
            else ("image_save_failed", f"Saving as image {image['swr_path']} failed: {reason}")
        )
        return await r._set(row, Event.SNAPSHOT_DONE, {}, note=note, also=write_image)

    async def give_up(self, row: Row, reason: str) -> None:
        """After repeated unexpected failures: the image CREATE_FAILED, the instance RUNNING again."""
        image = await self.r.db_read(image_repo.saving_for, row["id"])
        if image is None:
            await self.r._set(row, Event.SNAPSHOT_DONE, {}, note=("image_save_failed", reason))
        else:
            await self.finish(row, image, None, reason)

    # --- remove the content of deleted images -----------------------------------------------------
    def purge_task(self) -> asyncio.Task[Any] | None:
        """The removal of deleted images' content, while it runs."""
        return self._purge if self._purge is not None and not self._purge.done() else None

    def start_purge(self) -> None:
        """Remove deleted images' content in the background, one round at a time."""
        if self.r.runtime.images is None:
            return  # nothing to remove on this runtime; a runtime with an engine will do it
        if self._purge is not None and not self._purge.done():
            return
        self.purge_requested = False
        self._purge = asyncio.create_task(self._purge_round(), name="nbfleet-image-purge")

    async def _purge_round(self) -> None:
        # Unclaimed: every replica may run rounds, and two removing the same content cost the engine one
        # call more (``ImageEngine.remove`` accepts content that is gone already).
        r = self.r
        images = r.runtime.images
        assert images is not None  # start_purge starts no round on a runtime without an engine
        try:
            for swr_path in await r.db_read(image_repo.pending_purges):
                # Content still used (a live image at that address, an instance created from it) waits: those
                # instances keep running from it and must be able to start again.
                if await r.db_read(image_repo.content_in_use, swr_path):
                    continue
                try:
                    await images.remove(swr_path)
                except RuntimeFailure as failure:  # tried again in the next round
                    log.warning("removing the content of deleted image %s failed: %s", swr_path, failure.reason)
                    continue
                await r.db_call(image_repo.purged, swr_path)
                log.info("removed the content of deleted image %s", swr_path)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next round tries again
            if store_unavailable(exc):
                log.warning("removing deleted images' content: store unavailable, will retry")
            else:
                log.exception("removing deleted images' content failed")

    async def stop(self) -> None:
        if self._purge is not None:
            self._purge.cancel()
            await asyncio.gather(self._purge, return_exceptions=True)


def _mark_saving(conn: Connection, image_id: str, now: int) -> bool:
    """INIT -> CREATING (a redo after a crash finds it CREATING: still fine); False if it moved on."""
    current = image_repo.get(conn, image_id)
    target = image_after(current["status"], ImageEvent.SAVING) if current is not None else None
    if target is None:
        return False
    if current["status"] == target:
        return True
    return image_repo.change_status(conn, image_id, current["status"], {"status": target.value, "update_at": now})
