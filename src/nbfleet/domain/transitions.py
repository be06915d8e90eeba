"""THE status x operation table of nbfleet (spec README §6.2 and §6.3).

Every status change in nbfleet — by a user's call or by the reconciler — is looked up here: whether an
operation is allowed in a status (and which error refuses it), and where an event leads. Other modules do
compare statuses, but only to find or show things, never to allow a change: which rows the reconciler works
on or watches (``TRANSITIONAL``, RUNNING), where the proxy and the SSH gateway may route (RUNNING,
SNAPSHOTTING), what the console and the CLI display, which mounts follow a running instance. A new rule
about what may happen in which status belongs in this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import IllegalTransition, ImageBeingSaved
from .images import ImageStatus as I
from .model import Status as S


class Op(StrEnum):
    """Operations a user may ask for; each either moves the status or is refused with a code."""

    START = "start"
    STOP = "stop"
    DELETE = "delete"
    UPDATE_A = "update"  # name, description, hooks, dew_secret_name, public_network_config
    UPDATE_B = "update-spec"  # flavor, image_id, endpoints
    UPDATE_C = "update-storage"  # storage_new_size
    RUN_ONLY = "run-only"  # renew lease, attach/detach storage
    SAVE_IMAGE = "create-image"  # a RUN_ONLY operation that moves RUNNING to SNAPSHOTTING


class Event(StrEnum):
    """Outcomes the reconciler observes; each moves the status along §6.2."""

    SCHEDULED = "scheduled"  # INIT -> CREATING
    PROVISIONED = "provisioned"  # CREATING -> RUNNING
    PROVISION_FAILED = "provision_failed"
    READY = "ready"  # STARTING -> RUNNING
    START_FAILED = "start_failed"
    STOPPED = "stopped"  # STOPPING -> STOPPED
    STOP_FAILED = "stop_failed"  # STOPPING -> ERROR
    LOST = "lost"  # RUNNING -> ERROR (process died)
    AUTO_STOP = "auto_stop"  # RUNNING -> STOPPING (lease expired or idle)
    DELETED = "deleted"  # DELETING -> DELETED (row removed)
    DELETE_FAILED = "delete_failed"  # DELETING -> DELETE_FAILED
    SNAPSHOT_DONE = "snapshot_done"  # SNAPSHOTTING -> RUNNING (the image was saved, or its save failed)
    RECOVERED = "recovered"  # ERROR -> RUNNING (process found alive again)


@dataclass(frozen=True)
class Allowed:
    target: S | None  # None: allowed, status unchanged (updates, renew)


_: None = None  # allowed, no status change
OK_START = Allowed(S.STARTING)
OK_STOP = Allowed(S.STOPPING)
OK_DELETE = Allowed(S.DELETING)
OK_SAVE = Allowed(S.SNAPSHOTTING)
OK = Allowed(_)

# rows: status; columns: START, STOP, DELETE, UPDATE_A, UPDATE_B, UPDATE_C, RUN_ONLY, SAVE_IMAGE.
# A string is the ModelArts code of the refusal (all HTTP 400).
_COLUMNS = (Op.START, Op.STOP, Op.DELETE, Op.UPDATE_A, Op.UPDATE_B, Op.UPDATE_C, Op.RUN_ONLY, Op.SAVE_IMAGE)
_TABLE: dict[S, tuple[Allowed | str, ...]] = {
    S.INIT: ("6357", "6357", "6357", "6357", "6357", "6357", "6327", "6327"),
    S.CREATING: ("6357", "6357", "6357", "6357", "6357", "6357", "6327", "6327"),
    S.STARTING: ("6306", "6306", "6306", "6306", "6306", "6306", "6327", "6327"),
    S.RUNNING: ("6305", OK_STOP, OK_DELETE, OK, "6347", OK, OK, OK_SAVE),
    S.SNAPSHOTTING: ("6357", "6357", "6357", "6357", "6357", "6357", "6357", "6357"),
    S.STOPPING: ("6308", "6308", "6308", "6308", "6308", "6308", "6327", "6327"),
    S.STOPPED: (OK_START, "6357", OK_DELETE, OK, OK, "6327", "6327", "6327"),
    S.CREATE_FAILED: ("6357", "6357", OK_DELETE, "6357", "6357", "6357", "6327", "6327"),
    S.START_FAILED: (OK_START, "6357", OK_DELETE, OK, OK, "6327", "6327", "6327"),
    S.ERROR: (OK_START, OK_STOP, OK_DELETE, OK, "6347", "6327", "6327", "6327"),
    S.DELETING: ("6357", "6357", "6357", "6357", "6357", "6357", "6357", "6357"),
    S.DELETE_FAILED: ("6357", "6357", OK_DELETE, "6357", "6357", "6357", "6327", "6327"),
    S.FROZEN: ("6326", "6326", OK_DELETE, "6326", "6326", "6326", "6326", "6326"),
}
OPERATIONS: dict[tuple[S, Op], Allowed | str] = {
    (status, op): cell for status, row in _TABLE.items() for op, cell in zip(_COLUMNS, row, strict=True)
}

# §6.2: what each reconciler event does from which status.
EVENTS: dict[tuple[S, Event], S] = {
    (S.INIT, Event.SCHEDULED): S.CREATING,
    (S.INIT, Event.PROVISIONED): S.RUNNING,
    (S.INIT, Event.PROVISION_FAILED): S.CREATE_FAILED,
    (S.CREATING, Event.PROVISIONED): S.RUNNING,
    (S.CREATING, Event.PROVISION_FAILED): S.CREATE_FAILED,
    (S.STARTING, Event.READY): S.RUNNING,
    (S.STARTING, Event.START_FAILED): S.START_FAILED,
    (S.STOPPING, Event.STOPPED): S.STOPPED,
    (S.STOPPING, Event.STOP_FAILED): S.ERROR,
    (S.RUNNING, Event.LOST): S.ERROR,
    (S.RUNNING, Event.AUTO_STOP): S.STOPPING,
    (S.DELETING, Event.DELETED): S.DELETED,
    (S.DELETING, Event.DELETE_FAILED): S.DELETE_FAILED,
    (S.SNAPSHOTTING, Event.SNAPSHOT_DONE): S.RUNNING,
    (S.ERROR, Event.RECOVERED): S.RUNNING,
}


def check(status: str, op: Op, *, strict_delete: bool = False) -> S | None:
    """Return the status ``op`` moves to (None = unchanged) or raise the refusal for ``status``."""
    status = S(status)
    if strict_delete and op is Op.DELETE and status is S.RUNNING:
        raise IllegalTransition("ModelArts.6304", status, op)
    cell = OPERATIONS[(status, op)]
    if isinstance(cell, str):
        raise IllegalTransition(f"ModelArts.{cell}", status, op)
    return cell.target


def after(status: str, event: Event) -> S | None:
    """Return the status that ``event`` leads to from ``status``, or None if it does not apply."""
    return EVENTS.get((S(status), event))


# --- images (spec images-flavors-tags-storage.md §2) ------------------------------------------------------


class ImageOp(StrEnum):
    """What a user may ask of an image."""

    DELETE = "delete"
    SYNC = "sync"


class ImageEvent(StrEnum):
    """What the reconciler (saves) or a sync observes; each moves the image's status."""

    SAVING = "saving"  # INIT -> CREATING: the engine is writing it
    SAVED = "saved"  # CREATING -> ACTIVE
    SAVE_FAILED = "save_failed"  # INIT/CREATING -> CREATE_FAILED
    FOUND = "found"  # ACTIVE/ERROR -> ACTIVE: the engine has it
    MISSING = "missing"  # ACTIVE/ERROR -> ERROR: the engine does not have it (any more)


@dataclass(frozen=True)
class ImageAllowed:
    target: I | None  # the status the operation sets (None: unchanged)
    reads_engine: bool = False  # sync: whether the engine is asked (else the image is answered as it is)


# rows: image status; columns: DELETE, SYNC. A string is the refusal's code. An image being saved is
# neither deleted (the save would write content nobody refers to) nor re-read (it has no content yet).
_IMAGE_COLUMNS = (ImageOp.DELETE, ImageOp.SYNC)
_IMAGE_TABLE: dict[I, tuple[ImageAllowed | str, ...]] = {
    I.INIT: ("6357", ImageAllowed(None)),
    I.CREATING: ("6357", ImageAllowed(None)),
    I.ACTIVE: (ImageAllowed(I.DELETED), ImageAllowed(None, reads_engine=True)),
    I.CREATE_FAILED: (ImageAllowed(I.DELETED), ImageAllowed(None)),
    I.ERROR: (ImageAllowed(I.DELETED), ImageAllowed(None, reads_engine=True)),
}
IMAGE_OPERATIONS: dict[tuple[I, ImageOp], ImageAllowed | str] = {
    (status, op): cell for status, row in _IMAGE_TABLE.items() for op, cell in zip(_IMAGE_COLUMNS, row, strict=True)
}

IMAGE_EVENTS: dict[tuple[I, ImageEvent], I] = {
    (I.INIT, ImageEvent.SAVING): I.CREATING,
    (I.CREATING, ImageEvent.SAVING): I.CREATING,  # a save redone after a crash
    (I.CREATING, ImageEvent.SAVED): I.ACTIVE,
    (I.INIT, ImageEvent.SAVE_FAILED): I.CREATE_FAILED,
    (I.CREATING, ImageEvent.SAVE_FAILED): I.CREATE_FAILED,
    (I.ACTIVE, ImageEvent.FOUND): I.ACTIVE,
    (I.ERROR, ImageEvent.FOUND): I.ACTIVE,
    (I.ACTIVE, ImageEvent.MISSING): I.ERROR,
    (I.ERROR, ImageEvent.MISSING): I.ERROR,
}


def check_image(status: str, op: ImageOp, image_id: str) -> ImageAllowed:
    """What ``op`` does to an image in ``status``, or raise its refusal (a DELETED image is never asked:
    it is not found)."""
    cell = IMAGE_OPERATIONS[(I(status), op)]
    if isinstance(cell, str):
        raise ImageBeingSaved(image_id)
    return cell


def image_after(status: str, event: ImageEvent) -> I | None:
    """The image status ``event`` leads to from ``status``, or None if it does not apply."""
    return IMAGE_EVENTS.get((I(status), event))
