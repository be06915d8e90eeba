"""Runtime failures at any step of a bring-up end in a stable failed status with its reason.

A failure must never leave an instance in a transitional status for ever: that costs an event and a
traceback per sweep, refuses stop and delete, and fills the admission queue until every create is 429.
"""

from __future__ import annotations

import json
import time

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.runtime.simulated import FailureRule, SimulatedRuntime

from ..conftest import make_settings
from ..support import Api, Creds


def _api(app, settings, client) -> Api:
    c = json.loads((settings.data_dir / "credentials.json").read_text())
    return Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)


def _events(api: Api, notebook_id: str) -> list[dict]:
    return api.ok("GET", f"/notebooks/{notebook_id}/events", {"limit": 50})["data"]


def _wait_gone(api: Api, notebook_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while api.call("GET", f"/notebooks/{notebook_id}").status_code == 200:
        assert time.monotonic() < deadline, f"{notebook_id} was not deleted"
        time.sleep(0.02)


@pytest.fixture
def stopfail(tmp_path):
    settings = make_settings(tmp_path, simulated_fail=["name=stopfail-*;op=stop"], max_pending_starts=2)
    app = create_app(settings, announce=lambda _t: None)
    with TestClient(app) as client:
        yield _api(app, settings, client)


def test_a_stop_failure_before_the_start_ends_in_create_failed(stopfail):
    api = stopfail
    nb = api.create("stopfail-1")
    assert nb["status"] == "CREATE_FAILED"
    assert "stop" in nb["fail_reason"]
    events = _events(api, nb["id"])
    assert [e["type"] for e in events].count("failed") == 1
    time.sleep(0.5)  # ten sweeps: none of them may touch a settled instance again
    assert len(_events(api, nb["id"])) == len(events)
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "CREATE_FAILED"
    assert api.ok("DELETE", f"/notebooks/{nb['id']}")["status"] == "DELETING"
    _wait_gone(api, nb["id"])


def test_failed_bring_ups_do_not_fill_the_admission_queue(stopfail):
    api = stopfail
    for i in range(3):  # more than max_pending_starts
        assert api.create(f"stopfail-{i}")["status"] == "CREATE_FAILED"
    assert api.create("healthy")["status"] == "RUNNING"


def test_a_stop_failure_before_a_restart_ends_in_start_failed(tmp_path):
    runtime = SimulatedRuntime(delay=0.0)
    settings = make_settings(tmp_path)
    app = create_app(settings, runtime=runtime, announce=lambda _t: None)
    with TestClient(app) as client:
        api = _api(app, settings, client)
        nb = api.create("restart-me")
        api.ok("POST", f"/notebooks/{nb['id']}/stop")
        api.wait_status(nb["id"], "STOPPED")
        runtime.rules = [FailureRule.parse("name=restart-*;op=stop")]  # the clean-up before the start fails
        api.ok("POST", f"/notebooks/{nb['id']}/start")
        failed = api.wait_status(nb["id"], "START_FAILED")
        assert "stop" in failed["fail_reason"]


class CrashingRuntime(SimulatedRuntime):
    """A runtime whose start raises something other than a RuntimeFailure (a bug, an OSError)."""

    def __init__(self):
        super().__init__(delay=0.0)
        self.attempts = 0

    async def start(self, spec, reporter):
        self.attempts += 1
        raise OSError("no free port")


def test_an_unexpected_runtime_error_is_retried_with_backoff_then_fails(tmp_path):
    runtime = CrashingRuntime()
    settings = make_settings(tmp_path, reconcile_interval=0.01)
    app = create_app(settings, runtime=runtime, announce=lambda _t: None)
    with TestClient(app) as client:
        api = _api(app, settings, client)
        nb = api.create("crashes", wait=False)
        failed = api.wait_status(nb["id"], "CREATE_FAILED", timeout=30)
        assert failed["fail_reason"]
        attempts = runtime.attempts
        assert 1 < attempts <= app.state.services.reconciler.RETRY_LIMIT
        events = _events(api, nb["id"])
        assert [e["type"] for e in events].count("scheduled") == attempts
        time.sleep(0.3)
        assert runtime.attempts == attempts
        assert len(_events(api, nb["id"])) == len(events)
