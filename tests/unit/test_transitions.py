"""The whole status x operation table of spec README §6.3, cell by cell."""
from __future__ import annotations

import pytest

from nbfleet.domain.errors import IllegalTransition
from nbfleet.domain.model import Status
from nbfleet.domain.transitions import EVENTS, Event, Op, after, check

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
CELLS = [(line.split()[0], op, cell) for line in SPEC.strip().splitlines()[1:]
         for op, cell in zip(OPS, line.split()[1:])]


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


@pytest.mark.parametrize("start,event,end", [
    ("CREATING", Event.PROVISIONED, "RUNNING"), ("CREATING", Event.PROVISION_FAILED, "CREATE_FAILED"),
    ("STARTING", Event.READY, "RUNNING"), ("STARTING", Event.START_FAILED, "START_FAILED"),
    ("STOPPING", Event.STOPPED, "STOPPED"), ("RUNNING", Event.LOST, "ERROR"),
    ("RUNNING", Event.AUTO_STOP, "STOPPING"), ("DELETING", Event.DELETED, "DELETED"),
    ("DELETING", Event.DELETE_FAILED, "DELETE_FAILED"),
])
def test_reconciler_events(start, event, end):
    assert after(start, event) == end


def test_events_do_not_apply_from_other_statuses():
    assert after("STOPPED", Event.READY) is None
    assert after("STOPPED", Event.AUTO_STOP) is None
    assert after("DELETING", Event.LOST) is None
    assert all(isinstance(k[1], Event) for k in EVENTS)
