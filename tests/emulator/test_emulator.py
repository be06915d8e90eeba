"""nbfleet.testing: the emulated server's clock, failures, seeding and reset, as a user's tests meet them
(official SDK for the API, the Emulator for what a test does to the server)."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import (
    DeleteNotebookRequest,
    ListAllNotebooksRequest,
    ListNotebooksRequest,
    ShowNotebookRequest,
    StartNotebookRequest,
    StopNotebookRequest,
)

from nbfleet.testing import EmulatorError, emulator

from .test_lease_guard import create

HOUR_MS = 3_600_000


def shown(client, notebook_id: str):
    return client.show_notebook(ShowNotebookRequest(id=notebook_id))


def events(env, notebook_id: str) -> list[dict]:
    """The instance's events, oldest first (an nbfleet extension of the API)."""
    page = env.api().request("GET", f"/notebooks/{notebook_id}/events", {"limit": 50})
    return sorted(page["data"], key=lambda e: e["id"])


def error_code(call) -> str:
    with pytest.raises(ClientRequestException) as caught:
        call()
    return caught.value.error_code


@pytest.mark.nbfleet(frozen=True)
def test_a_frozen_clock_moves_only_when_told(nbfleet_server, modelarts_client):
    env, c = nbfleet_server, modelarts_client
    nb = create(c, "frozen")
    time.sleep(0.3)  # real time passes; the emulated clock does not
    assert [s.status for s in shown(c, nb.id).action_progress] == ["PROCESSING", "WAITING", "WAITING", "WAITING"]
    env.clock.advance(seconds=2)  # one step of 2 s
    assert [s.status for s in shown(c, nb.id).action_progress] == ["COMPLETED", "PROCESSING", "WAITING", "WAITING"]
    env.clock.advance(seconds=5.9)  # 7.9 s: the fourth step still runs
    assert shown(c, nb.id).status == "CREATING"
    env.clock.advance(milliseconds=100)
    assert shown(c, nb.id).status == "RUNNING"


def test_timestamps_and_leases_follow_the_clock(nbfleet_server, modelarts_client):
    env, c = nbfleet_server, modelarts_client
    later = env.clock.advance(days=3)
    nb = create(c, "later")
    assert abs(nb.lease.create_at - int(later.timestamp() * 1000)) < 5_000
    env.clock.run_pending()
    env.clock.advance(hours=5)  # the one-hour lease ran out four hours ago
    history = [(e["type"], e["create_at"]) for e in events(env, nb.id)]
    kinds = [kind for kind, _ in history]
    assert kinds[-2:] == ["auto_stopped", "stopped"]
    lease = shown(c, nb.id).lease
    expired_at = history[-2][1]
    assert expired_at == lease.create_at + lease.duration  # exactly when the lease said
    assert history[-1][1] == expired_at + 2_000  # and the stop took its one step


@pytest.mark.nbfleet(step_seconds=1)
def test_idle_instances_stop_and_busy_ones_do_not(nbfleet_server):
    env = nbfleet_server
    busy, idle = env.seed(2, status="RUNNING", name_prefix="idle-", lease={"type": "IDLE", "duration": HOUR_MS})
    c = env.client()
    env.set_activity(busy, busy=True)
    env.clock.advance(minutes=59)
    assert (shown(c, busy).status, shown(c, idle).status) == ("RUNNING", "RUNNING")
    env.set_activity(idle, last_activity=env.clock.now())  # someone used it: the window starts again
    env.clock.advance(minutes=59)
    assert shown(c, idle).status == "RUNNING"
    env.clock.advance(minutes=2)
    assert (shown(c, busy).status, shown(c, idle).status) == ("RUNNING", "STOPPED")
    assert "idle since" in events(env, idle)[-1]["message"]


def test_scripted_failures(nbfleet_server, modelarts_client):
    env, c = nbfleet_server, modelarts_client
    env.fail_next("create", reason="pool exhausted", step=2, name="gpu-*")
    plain, gpu = create(c, "plain"), create(c, "gpu-1")
    env.clock.run_pending()
    assert shown(c, plain.id).status == "RUNNING"
    failed = shown(c, gpu.id)
    assert failed.status == "CREATE_FAILED"
    assert [(s.status, s.description) for s in failed.action_progress][:2] == [
        ("COMPLETED", "Prepare storage"),
        ("FAILED", "pool exhausted"),
    ]

    env.fail_next("stop", reason="agent unreachable")
    c.stop_notebook(StopNotebookRequest(id=plain.id))
    env.clock.run_pending()
    assert shown(c, plain.id).status == "ERROR"

    env.fail_next("start", count=2)  # the next two starts fail, the third runs
    for expected in ("START_FAILED", "START_FAILED", "RUNNING"):
        c.start_notebook(StartNotebookRequest(id=plain.id))
        env.clock.run_pending()
        assert shown(c, plain.id).status == expected

    env.fail_next("delete", reason="volume busy")
    c.delete_notebook(DeleteNotebookRequest(id=gpu.id))
    env.clock.run_pending()
    assert shown(c, gpu.id).status == "DELETE_FAILED"

    env.add_failure_rule("name=plain;op=stop")  # a standing rule, in the simulated runtime's syntax
    c.stop_notebook(StopNotebookRequest(id=plain.id))
    env.clock.run_pending()
    assert shown(c, plain.id).status == "ERROR"
    env.clear_failures()
    c.start_notebook(StartNotebookRequest(id=plain.id))
    env.clock.run_pending()
    assert shown(c, plain.id).status == "RUNNING"


def test_a_crash_is_noticed_as_error(nbfleet_server, modelarts_client):
    env, c = nbfleet_server, modelarts_client
    [nb] = env.seed(1, status="RUNNING")
    env.crash(nb, reason="out of memory")
    lost = shown(c, nb)
    assert lost.status == "ERROR"
    assert "out of memory" in events(env, nb)[-1]["message"]


def test_quota_and_status_errors_are_the_apis(nbfleet_server):
    env = nbfleet_server
    carol = env.user("carol", quota=1)
    c = carol.client()
    nb = create(c, "only")
    assert error_code(lambda: create(c, "second")) == "ModelArts.6302"
    assert error_code(lambda: c.stop_notebook(StopNotebookRequest(id=nb.id))) != ""  # still CREATING
    env.clock.run_pending()
    c.stop_notebook(StopNotebookRequest(id=nb.id))
    env.clock.run_pending()
    code = error_code(lambda: c.stop_notebook(StopNotebookRequest(id=nb.id)))  # STOPPED already
    assert code.startswith("ModelArts.")


def test_seeding_owners_and_statuses(nbfleet_server):
    env = nbfleet_server
    ids = env.seed(12, status="STOPPED", owner="dave", flavor="modelarts.vm.cpu.4u")  # beyond dave's quota of 10
    failed = env.seed(2, status="START_FAILED", owner="dave")
    dave = env.user("dave").client()
    page = dave.list_notebooks(ListNotebooksRequest(limit=50))
    assert page.total == 14
    assert {n.id for n in page.data if n.status == "STOPPED"} == set(ids)
    assert {n.flavor for n in page.data if n.id in ids} == {"modelarts.vm.cpu.4u"}
    assert {n.id for n in page.data if n.status == "START_FAILED"} == set(failed)
    assert error_code(lambda: create(dave, "more")) == "ModelArts.6302"  # seeded ones count
    with pytest.raises(EmulatorError, match="ModelArts.6336"):
        env.seed(1, status="DELETING")
    everyone = env.client().list_all_notebooks(ListAllNotebooksRequest(limit=50))  # the admin's view
    assert {n.id for n in everyone.data} == set(ids) | set(failed)


def test_reset_empties_the_server(nbfleet_server, modelarts_client):
    env, c = nbfleet_server, modelarts_client
    env.seed(3, status="RUNNING")
    create(c, "in-flight")  # work under way when the reset comes
    env.fail_next("create")
    env.clock.advance(days=2)
    env.reset()
    assert c.list_notebooks(ListNotebooksRequest()).total == 0
    assert abs(env.clock.now_ms() - time.time() * 1000) < 5_000
    nb = create(c, "after")
    env.clock.run_pending()
    assert shown(c, nb.id).status == "RUNNING"  # the scripted failure went with the reset


def test_control_is_for_the_admin_of_a_testing_server_only(nbfleet_server, api):
    env = nbfleet_server
    outsider = env.user("eve")
    from nbfleet.cli.client import ApiClient, ApiError, Credentials

    with (
        ApiClient(Credentials(env.endpoint, env.project_id, outsider.ak, outsider.sk)) as eve,
        pytest.raises(ApiError) as refused,
    ):
        eve.request("POST", "/nbfleet/testing/clock", body={"advance_ms": 1})
    assert (refused.value.status, refused.value.code) == (403, "ModelArts.0108")
    with pytest.raises(EmulatorError, match="ModelArts.6336"):  # over HTTP: the server refuses
        env._control("POST", "/clock", {"advance_ms": -5})
    with pytest.raises(ValueError):  # in the client already
        env.clock.advance(timedelta(days=-1))
    # A server that was not started for testing has no such routes (the in-process app of tests/api).
    answer = api.call("GET", "/nbfleet/testing/clock")
    assert answer.status_code == 404 and "error_code" in answer.json()


def test_the_context_manager_and_the_decorator(tmp_path):
    with emulator(frozen=True, step_seconds=0.5) as env:
        assert env.clock.frozen and httpx.get(f"{env.endpoint}/health").status_code == 200
        endpoint = env.endpoint
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{endpoint}/health", timeout=2)

    @emulator()
    def uses(env, word):
        return env.project_id, word

    project_id, word = uses("hello")
    assert word == "hello" and project_id
