"""Lease expiry with an injected clock: no test sleeps for an hour."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.clock import ManualClock

from ..conftest import make_settings
from ..support import Api, Creds

HOUR = 3_600_000


@pytest.fixture
def timed(tmp_path):
    clock = ManualClock()
    settings = make_settings(tmp_path, observe_interval=0.05)
    app = create_app(settings, clock=clock, announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services), clock


def wait_for(api, notebook_id, status):
    return api.wait_status(notebook_id, status, timeout=10)


def test_timing_lease_expires_and_records_why(timed):
    api, clock = timed
    nb = api.create("short")
    clock.advance(HOUR - 1)
    api.services.reconciler.wake()
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"
    clock.advance(1)
    stopped = wait_for(api, nb["id"], "STOPPED")
    assert stopped["lease"]["duration"] == HOUR
    events = api.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]
    auto = [e for e in events if e["type"] == "auto_stopped"]
    assert len(auto) == 1 and "lease expired at" in auto[0]["message"]


def test_renew_moves_expiry_to_now_plus_d(timed):
    api, clock = timed
    nb = api.create("renewed")
    clock.advance(HOUR - 60_000)
    lease = api.ok("PATCH", f"/notebooks/{nb['id']}/lease", {"duration": 2 * HOUR})
    assert lease["duration"] == (HOUR - 60_000) + 2 * HOUR and lease["enable"] is True
    assert api.ok("GET", f"/notebooks/{nb['id']}/lease") == lease
    clock.advance(2 * HOUR - 1)
    api.services.reconciler.wake()
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"
    clock.advance(1)
    wait_for(api, nb["id"], "STOPPED")


def test_renew_body_and_type(timed):
    api, clock = timed
    nb = api.create("bodied")
    lease = api.ok("PATCH", f"/notebooks/{nb['id']}/lease", body={"duration": 900_000, "type": "idle"})
    assert lease["type"] == "IDLE" and lease["duration"] == 900_000
    assert api.error("PATCH", f"/notebooks/{nb['id']}/lease", body={"duration": 10}) == (400, "ModelArts.6349")
    default = api.ok("PATCH", f"/notebooks/{nb['id']}/lease")
    assert default["type"] == "TIMING" and default["duration"] == HOUR


def test_start_recomputes_lease_from_create_at(timed):
    api, clock = timed
    nb = api.create("restart", duration=-1)
    assert nb["lease"]["enable"] is False
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    wait_for(api, nb["id"], "STOPPED")
    clock.advance(5 * HOUR)
    started = api.ok("POST", f"/notebooks/{nb['id']}/start", {"duration": 2 * HOUR})
    assert started["lease"]["duration"] == 5 * HOUR + 2 * HOUR and started["lease"]["enable"] is True
    wait_for(api, nb["id"], "RUNNING")
    assert api.error("POST", f"/notebooks/{nb['id']}/start", {"duration": 5}) == (400, "ModelArts.6349")


def test_disabled_lease_never_auto_stops(timed):
    api, clock = timed
    nb = api.create("forever", duration=-1)
    clock.advance(1000 * HOUR)
    api.services.reconciler.wake()
    import time

    time.sleep(0.3)
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"
