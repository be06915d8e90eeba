"""One instance's answers cannot stop the observation of the others: a Jupyter that answers nonsense, or
a runtime call about it that fails, affects only that instance."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.clock import ManualClock
from nbfleet.runtime.base import Activity, Observation
from nbfleet.runtime.simulated import SimulatedRuntime

from ..conftest import make_settings
from ..support import Api, Creds

HOUR = 3_600_000


class WatchedRuntime(SimulatedRuntime):
    """A simulated runtime that is watched like a real one; ``broken-*`` instances fail every probe."""

    observes = True

    async def activity(self, spec, placement):
        if spec.name.startswith("broken"):
            raise AttributeError("'list' object has no attribute 'get'")  # what a hostile answer once caused
        return Activity(last_activity_ms=0, busy=False, detail="idle since the epoch")

    async def observe(self, spec, placement):
        if spec.name.startswith("broken"):
            raise OSError("the probe failed")
        return Observation(True)


def test_a_failing_instance_does_not_keep_the_others_from_being_stopped_when_idle(tmp_path):
    clock = ManualClock()
    settings = make_settings(tmp_path, observe_interval=0.05)
    app = create_app(settings, clock=clock, runtime=WatchedRuntime(delay=0.0), announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)
        broken = api.create("broken-one", lease={"type": "IDLE", "duration": HOUR})
        healthy = api.create("healthy", lease={"type": "IDLE", "duration": HOUR})
        clock.advance(2 * HOUR)
        api.services.reconciler.wake()
        assert api.wait_status(healthy["id"], "STOPPED", timeout=10)["status"] == "STOPPED"
        assert api.ok("GET", f"/notebooks/{broken['id']}")["status"] == "RUNNING"
