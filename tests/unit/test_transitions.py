"""The whole status x operation table of spec README §6.3, cell by cell."""

from __future__ import annotations

import pytest

from nbfleet.domain.errors import IllegalTransition, ImageBeingSaved
from nbfleet.domain.model import Status
from nbfleet.domain.transitions import EVENTS, Event, ImageEvent, ImageOp, Op, after, check, check_image, image_after

# The spec's table, transcribed independently of the implementation: ✓ = allowed.
SPEC = """
status        start stop delete updA updB updC run
INIT          6357  6357 6357   6357 6357 6357 6327
CREATING      6357  6357 6357   6357 6357 6357 6327
STARTING      6306  6306 6306   6306 6306 6306 6327
RUNNING       6305  ✓    ✓      ✓    6347 ✓    ✓
SNAPSHOTTING  6357  6357 6357   6357 6357 6357 6357
STOPPING      6308  6308 6308   6308 6308 6308 6327
STOPPED       ✓     6357 ✓      ✓    ✓    6327 6327
CREATE_FAILED 6357  6357 ✓      6357 6357 6357 6327
START_FAILED  ✓     6357 ✓      ✓    ✓    6327 6327
ERROR         ✓     ✓    ✓      ✓    6347 6327 6327
DELETING      6357  6357 6357   6357 6357 6357 6357
DELETE_FAILED 6357  6357 ✓      6357 6357 6357 6327
FROZEN        6326  6326 ✓      6326 6326 6326 6326
"""
OPS = [Op.START, Op.STOP, Op.DELETE, Op.UPDATE_A, Op.UPDATE_B, Op.UPDATE_C, Op.RUN_ONLY]
TARGETS = {Op.START: Status.STARTING, Op.STOP: Status.STOPPING, Op.DELETE: Status.DELETING}
CELLS = [
    (line.split()[0], op, cell)
    for line in SPEC.strip().splitlines()[1:]
    for op, cell in zip(OPS, line.split()[1:], strict=True)
]


def test_table_covers_every_status_but_deleted():
    assert {status for status, _, _ in CELLS} == {s.value for s in Status} - {"DELETED"}


@pytest.mark.parametrize("status,op,cell", CELLS)
def test_cell(status, op, cell):
    if cell == "✓":
        assert check(status, op) == TARGETS.get(op)
    else:
        with pytest.raises(IllegalTransition) as info:
            check(status, op)
        assert info.value.code == f"ModelArts.{cell}"
        assert info.value.http_status == 400


def test_strict_delete_refuses_running_with_6304():
    with pytest.raises(IllegalTransition) as info:
        check("RUNNING", Op.DELETE, strict_delete=True)
    assert info.value.code == "ModelArts.6304"
    assert check("STOPPED", Op.DELETE, strict_delete=True) == Status.DELETING


@pytest.mark.parametrize(
    "start,event,end",
    [
        ("CREATING", Event.PROVISIONED, "RUNNING"),
        ("CREATING", Event.PROVISION_FAILED, "CREATE_FAILED"),
        ("STARTING", Event.READY, "RUNNING"),
        ("STARTING", Event.START_FAILED, "START_FAILED"),
        ("STOPPING", Event.STOPPED, "STOPPED"),
        ("RUNNING", Event.LOST, "ERROR"),
        ("RUNNING", Event.AUTO_STOP, "STOPPING"),
        ("DELETING", Event.DELETED, "DELETED"),
        ("DELETING", Event.DELETE_FAILED, "DELETE_FAILED"),
    ],
)
def test_reconciler_events(start, event, end):
    assert after(start, event) == end


def test_events_do_not_apply_from_other_statuses():
    assert after("STOPPED", Event.READY) is None
    assert after("STOPPED", Event.AUTO_STOP) is None
    assert after("DELETING", Event.LOST) is None
    assert all(isinstance(k[1], Event) for k in EVENTS)


# create-image is one of the spec's Run-only operations (§6.3), and the one that moves the status (§6.2).
@pytest.mark.parametrize("status,cell", [(status, cell) for status, op, cell in CELLS if op is Op.RUN_ONLY])
def test_create_image_is_run_only_and_moves_running_to_snapshotting(status, cell):
    if cell == "✓":
        assert check(status, Op.SAVE_IMAGE) == Status.SNAPSHOTTING
    else:
        with pytest.raises(IllegalTransition) as info:
            check(status, Op.SAVE_IMAGE)
        assert info.value.code == f"ModelArts.{cell}"


def test_a_finished_save_brings_the_instance_back_to_running():
    assert after("SNAPSHOTTING", Event.SNAPSHOT_DONE) == "RUNNING"
    assert after("RUNNING", Event.SNAPSHOT_DONE) is None


# Images (spec images-flavors-tags-storage.md §2.5: INIT -> CREATING -> ACTIVE | CREATE_FAILED).
@pytest.mark.parametrize(
    "start,event,end",
    [
        ("INIT", ImageEvent.SAVING, "CREATING"),
        ("CREATING", ImageEvent.SAVING, "CREATING"),
        ("CREATING", ImageEvent.SAVED, "ACTIVE"),
        ("CREATING", ImageEvent.SAVE_FAILED, "CREATE_FAILED"),
        ("INIT", ImageEvent.SAVE_FAILED, "CREATE_FAILED"),
        ("ACTIVE", ImageEvent.MISSING, "ERROR"),
        ("ERROR", ImageEvent.FOUND, "ACTIVE"),
        ("ACTIVE", ImageEvent.FOUND, "ACTIVE"),
    ],
)
def test_image_events(start, event, end):
    assert image_after(start, event) == end


@pytest.mark.parametrize(
    "start,event",
    [
        ("INIT", ImageEvent.SAVED),
        ("ACTIVE", ImageEvent.SAVED),
        ("CREATE_FAILED", ImageEvent.SAVED),
        ("ACTIVE", ImageEvent.SAVING),
        ("CREATING", ImageEvent.MISSING),
        ("DELETED", ImageEvent.FOUND),
    ],
)
def test_image_events_that_do_not_apply(start, event):
    assert image_after(start, event) is None


def test_image_operations():
    for saving in ("INIT", "CREATING"):
        with pytest.raises(ImageBeingSaved) as info:
            check_image(saving, ImageOp.DELETE, "img")
        assert info.value.code == "ModelArts.6357"
        assert check_image(saving, ImageOp.SYNC, "img").reads_engine is False
    for settled in ("ACTIVE", "CREATE_FAILED", "ERROR"):
        assert check_image(settled, ImageOp.DELETE, "img").target == "DELETED"
    assert check_image("ACTIVE", ImageOp.SYNC, "img").reads_engine is True
    assert check_image("ERROR", ImageOp.SYNC, "img").reads_engine is True
    assert check_image("CREATE_FAILED", ImageOp.SYNC, "img").reads_engine is False
