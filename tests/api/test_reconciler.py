"""The reconciler with the simulated runtime: progress, failure injection, compare-and-set races."""

from __future__ import annotations

import json
import threading

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app

from ..conftest import make_settings
from ..support import Api, Creds


@pytest.fixture
def failing(tmp_path):
    settings = make_settings(
        tmp_path,
        simulated_fail=[
            "name=fail-create*;step=3;op=create",
            "name=fail-start*;step=4;op=start",
            "name=fail-delete*;op=delete",
        ],
    )
    app = create_app(settings, announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)


def test_create_failure_at_step_three(failing):
    nb = failing.create("fail-create-1")
    assert nb["status"] == "CREATE_FAILED"
    assert "step 3" in nb["fail_reason"]
    steps = {s["step"]: s["status"] for s in nb["action_progress"]}
    assert steps == {1: "COMPLETED", 2: "COMPLETED", 3: "FAILED", 4: "WAITING"}
    assert failing.error("POST", f"/notebooks/{nb['id']}/start") == (400, "ModelArts.6357")
    events = [e["type"] for e in failing.ok("GET", f"/notebooks/{nb['id']}/events")["data"]]
    assert "failed" in events
    failing.ok("DELETE", f"/notebooks/{nb['id']}")


def test_start_failure_then_retry_state(failing):
    nb = failing.create("fail-start-1")
    assert nb["status"] == "RUNNING"
    failing.ok("POST", f"/notebooks/{nb['id']}/stop")
    failing.wait_status(nb["id"], "STOPPED")
    failing.ok("POST", f"/notebooks/{nb['id']}/start")
    failed = failing.wait_status(nb["id"], "START_FAILED")
    assert "step 4" in failed["fail_reason"]
    # START_FAILED may be started again, updated, or deleted (spec §6.3)
    assert failing.ok("PUT", f"/notebooks/{nb['id']}", body={"description": "retry"})["description"] == "retry"
    assert failing.ok("POST", f"/notebooks/{nb['id']}/start")["status"] == "STARTING"


def test_delete_failure_is_delete_failed_and_can_be_retried(failing):
    nb = failing.create("fail-delete-1")
    failing.ok("DELETE", f"/notebooks/{nb['id']}")
    failed = failing.wait_status(nb["id"], "DELETE_FAILED")
    assert failed["fail_reason"]
    assert failing.error("POST", f"/notebooks/{nb['id']}/start") == (400, "ModelArts.6357")
    assert failing.ok("DELETE", f"/notebooks/{nb['id']}")["status"] == "DELETING"


def test_concurrent_starts_exactly_one_wins(api):
    nb = api.create("race")
    for _round in range(5):
        api.ok("POST", f"/notebooks/{nb['id']}/stop")
        api.wait_status(nb["id"], "STOPPED")
        barrier = threading.Barrier(2)
        results = []

        def start(barrier: threading.Barrier, results: list) -> None:
            barrier.wait()
            response = api.call("POST", f"/notebooks/{nb['id']}/start")
            results.append((response.status_code, response.json().get("error_code")))

        threads = [threading.Thread(target=start, args=(barrier, results)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r[0] for r in results) == [200, 400], results
        assert [r[1] for r in results if r[0] == 400][0] in ("ModelArts.6306", "ModelArts.6305")
        api.wait_status(nb["id"], "RUNNING")
    started = api.services.reconciler.runtime.started[nb["id"]]
    assert started == 6  # the create plus one start per round, never two


@pytest.fixture
def slow(tmp_path):
    """Each runtime step takes 0.2 s, so transitional statuses last long enough to race against."""
    settings = make_settings(tmp_path, simulated_delay=0.2)
    app = create_app(settings, announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)


def test_stop_and_delete_race(slow):
    api = slow
    nb = api.create("race2")
    barrier = threading.Barrier(2)
    results = {}

    def call(method, path, key):
        barrier.wait()
        results[key] = api.call(method, path).status_code

    threads = [
        threading.Thread(target=call, args=("POST", f"/notebooks/{nb['id']}/stop", "stop")),
        threading.Thread(target=call, args=("DELETE", f"/notebooks/{nb['id']}", "delete")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [200, 400]


def test_restart_finishes_transitions_left_in_flight(tmp_path):
    """A store left with instances mid-transition (as after kill -9) converges on the next start."""
    settings = make_settings(tmp_path, simulated_delay=30.0)  # slow enough that nothing finishes
    app = create_app(settings, announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)
        creating = api.create("in-flight", wait=False)
        assert creating["status"] == "CREATING"
    fast = settings.model_copy(update={"simulated_delay": 0.0})  # same store, not a fresh one
    app2 = create_app(fast, announce=lambda _t: None)
    with TestClient(app2) as client2:
        api2 = Api(client2, api.creds, app2.state.services)
        assert api2.wait_status(creating["id"], "RUNNING")["status"] == "RUNNING"


def test_a_wake_up_during_a_sweep_is_not_lost(tmp_path):
    """With no periodic sweeps at all, every create must still be picked up by its own wake-up."""
    settings = make_settings(tmp_path, reconcile_interval=3600, observe_interval=3600)
    app = create_app(settings, announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)
        api.services.identity.set_quota(api.creds.user_id, -1)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:  # concurrent calls land while a sweep is running
            made = list(pool.map(lambda i: api.create(f"burst-{i}", wait=False)["id"], range(40)))
        for notebook_id in made:
            assert api.wait_status(notebook_id, "RUNNING", timeout=10)["status"] == "RUNNING"


def test_the_final_status_write_gives_up_the_claim_without_a_separate_release(api, monkeypatch):
    from nbfleet.store import notebook_repo

    released = []
    original = notebook_repo.release

    def counting_release(conn, notebook_id, owner):
        released.append(notebook_id)
        return original(conn, notebook_id, owner)

    monkeypatch.setattr(notebook_repo, "release", counting_release)
    nb = api.create("claim-folded")
    assert nb["status"] == "RUNNING"
    with api.services.notebooks.db.read() as conn:
        row = notebook_repo.get(conn, nb["id"])
    assert (row["claim_owner"], row["claim_until"]) == (None, None)
    assert nb["id"] not in released
