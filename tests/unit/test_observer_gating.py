"""Which checks the observer runs for which runtime: idle checks when the runtime observes or reports
activity, liveness checks only when it observes; and every runtime declares what the protocol asks."""

import asyncio
from types import SimpleNamespace

import pytest

from nbfleet.controller.observer import Observer
from nbfleet.runtime.base import Runtime
from nbfleet.runtime.docker import DockerRuntime
from nbfleet.runtime.local import LocalRuntime
from nbfleet.runtime.simulated import SimulatedRuntime

ROW = {"id": "a" * 32, "placement": '{"host": "127.0.0.1"}'}


def observer_for(observes: bool, reports_activity: bool):
    async def db_call(fn, *args):
        return []  # no expired TIMING leases

    async def db_read(fn, *args):
        return [dict(ROW)]  # one RUNNING instance with an idle lease

    runtime = SimpleNamespace(observes=observes, reports_activity=reports_activity)
    r = SimpleNamespace(
        runtime=runtime,
        db_call=db_call,
        db_read=db_read,
        replica_id="r",
        clock=SimpleNamespace(now_ms=lambda: 0),
        claims=SimpleNamespace(inflight={}, until=lambda: 0),
    )
    observer = Observer(r)
    checked = []

    async def check_idle(row):
        checked.append("idle")

    async def check_alive(row):
        checked.append("alive")

    observer.check_idle, observer.check_alive = check_idle, check_alive
    return observer, checked


@pytest.mark.parametrize(
    "observes, reports_activity, expected",
    [
        (True, False, ["idle", "alive"]),
        (False, True, ["idle"]),
        (False, False, []),
        (True, True, ["idle", "alive"]),
    ],
)
def test_idle_checks_need_observes_or_reports_activity_liveness_needs_observes(observes, reports_activity, expected):
    observer, checked = observer_for(observes, reports_activity)
    asyncio.run(observer.observe_running())
    assert checked == expected


@pytest.mark.parametrize("cls", [SimulatedRuntime, LocalRuntime, DockerRuntime])
def test_every_runtime_declares_the_protocols_attributes(cls):
    for name in ("name", "observes", "reports_activity"):
        assert hasattr(cls, name), name
    assert cls.reports_activity is False
    assert callable(cls.adopt)
    for name in Runtime.__annotations__:
        # images and storage are set per instance (in __init__) where they are not class attributes
        assert hasattr(cls, name) or name in ("images", "storage"), name


def test_simulated_runtime_has_images_and_storage_attributes():
    rt = SimulatedRuntime(delay=0)
    assert rt.images is not None and rt.storage is not None
    assert rt.observes is False and rt.reports_activity is False
    assert asyncio.run(rt.storage.reap(set())) == []
