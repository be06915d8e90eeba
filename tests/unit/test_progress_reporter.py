"""ProgressReporter: quick successive steps are written together, and nothing is written after close."""

from __future__ import annotations

import asyncio

import orjson

from nbfleet.controller.lifecycle import ProgressReporter
from nbfleet.domain.model import StepStatus


class RecordingReconciler:
    """Stands in for the reconciler's store calls: keeps the action_progress payload of each write."""

    def __init__(self):
        self.writes: list[list[dict]] = []

    async def db_call(self, fn, notebook_id, status, values):
        assert fn.__name__ == "update_if_status" and status == "CREATING"
        self.writes.append(orjson.loads(values["action_progress"]))
        return True


ROW = {"id": "nb-1", "status": "CREATING", "action_progress": None}


def statuses(steps: list[dict]) -> dict[int, str]:
    return {s["step"]: s["status"] for s in steps}


async def test_a_burst_of_steps_is_one_write_now_and_one_at_the_end_of_the_window():
    rec = RecordingReconciler()
    reporter = ProgressReporter(rec, ROW)
    for n in (1, 2, 3, 4):
        await reporter.step(n, StepStatus.PROCESSING)
        await reporter.step(n, StepStatus.COMPLETED)
    assert [statuses(w) for w in rec.writes] == [{1: "PROCESSING", 2: "WAITING", 3: "WAITING", 4: "WAITING"}]
    await asyncio.sleep(ProgressReporter.FLUSH_SECONDS * 2)
    assert len(rec.writes) == 2
    assert statuses(rec.writes[1]) == {1: "COMPLETED", 2: "COMPLETED", 3: "COMPLETED", 4: "COMPLETED"}


async def test_steps_further_apart_than_the_window_are_each_written():
    rec = RecordingReconciler()
    reporter = ProgressReporter(rec, ROW)
    await reporter.step(1, StepStatus.PROCESSING)
    await asyncio.sleep(ProgressReporter.FLUSH_SECONDS * 1.5)
    await reporter.step(1, StepStatus.COMPLETED, "Work directory ready")
    assert [statuses(w)[1] for w in rec.writes] == ["PROCESSING", "COMPLETED"]
    assert rec.writes[1][0]["description"] == "Work directory ready"


async def test_close_drops_the_scheduled_write():
    rec = RecordingReconciler()
    reporter = ProgressReporter(rec, ROW)
    await reporter.step(1, StepStatus.PROCESSING)
    await reporter.step(1, StepStatus.COMPLETED)  # scheduled, not written
    await reporter.close()  # the status write carries it instead
    await asyncio.sleep(ProgressReporter.FLUSH_SECONDS * 2)
    assert len(rec.writes) == 1
    assert statuses(reporter.steps)[1] == "COMPLETED"
