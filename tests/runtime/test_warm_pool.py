"""The local runtime's warm pool, end to end: real sandboxes with Jupyter started ahead of creates.

What must hold: a create of a pooled image and flavor becomes one ready member (its id, its token, its
sandbox) and is RUNNING without starting Jupyter; the member is the instance's alone (its token opens no
other member, its host uid and limits are the instance's); the pool refills; a create of another flavor
starts anew; the instance then lives like any other (stop, start, delete keep or remove its work); members
of a process that is gone are ended by the next one, which rebuilds the pool; a stopping nbfleet ends the
members no create took.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from .. import notebook_http
from ..jupyter_client import execute, start_kernel
from ..procs import ServeProcess, SignedClient
from .local_helpers import delete_every_instance, marked_roots
from .test_server_local import jupyter_processes, local_server, notebook_base

# runtime_only: the pool is the local runtime's; its store work (a create's transaction, the start-up
# lookup of ids) is the API's and the reconciler's ordinary work, which the PostgreSQL pass covers elsewhere.
pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]

IMAGE = "notebook-python3.11"
POOLED = "modelarts.vm.cpu.2u"
TARGET = 2
POOL_ENV = {"NBFLEET_WARM_POOL": f'["{IMAGE}@{POOLED}={TARGET}"]', "NBFLEET_CLAIM_SECONDS": "5"}


def warm_ids(data_dir: Path) -> set[str]:
    """The members' ids, from their records."""
    folder = data_dir / "warm"
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def pool_state(proc: ServeProcess) -> dict:
    health = httpx.get(f"{proc.endpoint}/health", timeout=10).json()
    (pool,) = health["warm_pool"]["pools"]
    return pool


def wait_full(proc: ServeProcess, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        pool = pool_state(proc)
        if pool["ready"] == TARGET and len(warm_ids(proc.data_dir)) >= TARGET:
            return pool
        assert time.monotonic() < deadline, f"the pool did not fill: {pool}\n{proc.log()}"
        time.sleep(0.2)


def member_answers(data_dir: Path, member_id: str, token: str) -> int:
    """The status a member's Jupyter gives ``token`` on its own socket."""
    socket = data_dir / "instances" / member_id / "run" / "jupyter.sock"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=10) as http:
        return http.get("http://member/api/status", headers={"Authorization": f"token {token}"}).status_code


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with local_server(tmp_path_factory.mktemp("warm"), POOL_ENV) as running:
        yield running


def test_a_create_takes_over_a_ready_member_and_the_pool_refills(server):
    proc, client = server
    pool = wait_full(proc)
    assert len(pool["rss_mib"]) == TARGET and all(rss and rss > 20 for rss in pool["rss_mib"]), pool
    members = warm_ids(proc.data_dir)

    nb = client.create("from-the-pool")
    assert nb["id"] in members  # the member's id is the instance's: its directory, uid and groups already are
    nb = client.wait_status(nb["id"], "RUNNING", timeout=30)
    server_pid = {p.pid for p in jupyter_processes(proc.data_dir, instance_id=nb["id"])}
    assert len(server_pid) == 1  # the member's own server, not a second one

    # It works like any instance, with the token the API gave its owner, and only with it.
    base = notebook_base(nb)
    assert notebook_http.get(f"{base}/api/status", headers={"Authorization": f"token {nb['token']}"}).status_code == 200
    assert notebook_http.get(f"{base}/api/status").status_code == 403
    kernel = start_kernel(base, nb["token"])
    assert execute(base, nb["token"], kernel, "import os; os.getcwd()") == "'/home/ma-user/work'"
    steps = {s["step"]: s["status"] for s in nb["action_progress"]}
    assert steps == {1: "COMPLETED", 2: "COMPLETED", 3: "COMPLETED", 4: "COMPLETED"}
    events = client.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]
    kinds = [e["type"] for e in events]
    assert "warm pool" in kinds and "limits" in kinds and "sandbox" in kinds

    # Its record is gone: no other create can claim it. The pool refills with members of their own.
    assert nb["id"] not in warm_ids(proc.data_dir)
    wait_full(proc)
    others = warm_ids(proc.data_dir)
    assert nb["id"] not in others and len(others) == TARGET
    for member in others:  # the instance's token opens no other member
        assert member_answers(proc.data_dir, member, nb["token"]) == 403

    if os.geteuid() == 0:  # root mode: the sandbox runs as the instance's own recorded host uid
        recorded = int((proc.data_dir / "instances" / nb["id"] / "uid").read_text())
        assert {root.uids().real for root in marked_roots(proc.data_dir, nb["id"])} == {recorded}
        assert all(
            int((proc.data_dir / "instances" / m / "uid").read_text()) != recorded for m in others
        )  # and every member has a uid of its own


def test_a_pooled_instance_keeps_its_work_across_stop_and_start_and_delete_removes_it(server):
    proc, client = server
    wait_full(proc)
    nb = client.wait_status(client.create("kept")["id"], "RUNNING", timeout=30)
    base = notebook_base(nb)
    auth = {"Authorization": f"token {nb['token']}"}
    put = notebook_http.put(
        f"{base}/api/contents/kept.txt", json={"type": "file", "format": "text", "content": "still here"}, headers=auth
    )
    assert put.status_code in (200, 201), put.text
    client.ok("POST", f"/notebooks/{nb['id']}/stop")
    client.wait_status(nb["id"], "STOPPED", timeout=30)
    assert not jupyter_processes(proc.data_dir, instance_id=nb["id"])
    client.ok("POST", f"/notebooks/{nb['id']}/start")
    again = client.wait_status(nb["id"], "RUNNING", timeout=60)
    got = notebook_http.get(f"{base}/api/contents/kept.txt", headers={"Authorization": f"token {again['token']}"})
    assert got.status_code == 200 and got.json()["content"] == "still here"
    client.ok("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + 30
    while client.call("GET", f"/notebooks/{nb['id']}").status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert not (proc.data_dir / "instances" / nb["id"]).exists()
    assert not jupyter_processes(proc.data_dir, instance_id=nb["id"])


def test_a_flavor_not_pooled_starts_anew(server):
    proc, client = server
    members = warm_ids(proc.data_dir)
    nb = client.create("not-pooled", flavor="modelarts.vm.cpu.4u")
    assert nb["id"] not in members
    nb = client.wait_status(nb["id"], "RUNNING", timeout=60)
    kinds = [e["type"] for e in client.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]]
    assert "warm pool" not in kinds and "limits" in kinds
    assert warm_ids(proc.data_dir) >= members - {nb["id"]}  # the pool was not touched
    client.ok("DELETE", f"/notebooks/{nb['id']}")


def test_members_of_a_gone_process_are_ended_and_a_stopping_one_ends_its_own(tmp_path):
    proc = ServeProcess(tmp_path / "data", runtime="local", env=POOL_ENV).start()
    try:
        wait_full(proc)
        left = warm_ids(proc.data_dir)
        proc.kill()  # a crash: the members keep running, as instances do
        assert {iid for iid in left if jupyter_processes(proc.data_dir, instance_id=iid)} == left

        proc.start()
        wait_full(proc)
        # The dead owner's members are gone, processes and directories; the new ones are new.
        for iid in left:
            assert not marked_roots(proc.data_dir, iid), iid
            assert not (proc.data_dir / "instances" / iid).exists(), iid
        fresh = warm_ids(proc.data_dir)
        assert not fresh & left and len(fresh) == TARGET
        # A create after the restart is served from the rebuilt pool.
        client = SignedClient(proc.endpoint, proc.admin_creds())
        nb = client.create("after-restart")
        assert nb["id"] in fresh
        client.wait_status(nb["id"], "RUNNING", timeout=30)
        delete_every_instance(client)
        client.close()

        proc.terminate()  # a stopping nbfleet ends the members no create took: they would be nobody's
        rest = warm_ids(proc.data_dir)
        assert not rest, rest
        assert not marked_roots(proc.data_dir), [p.pid for p in marked_roots(proc.data_dir)]
        assert {p.name for p in (proc.data_dir / "instances").iterdir()} <= set()
    finally:
        proc.kill()
        for leftover in marked_roots(proc.data_dir):
            leftover.kill()


def starting_members(data_dir: Path) -> set[str]:
    """Members whose record says they are still starting (no process recorded yet)."""
    found = set()
    for path in (data_dir / "warm").glob("*.json") if (data_dir / "warm").is_dir() else ():
        try:
            if json.loads(path.read_text())["placement"]["pid"] is None:
                found.add(path.stem)
        except (OSError, ValueError, KeyError):
            continue
    return found


def test_a_member_still_starting_when_nbfleet_dies_is_removed_by_the_next_process(tmp_path):
    proc = ServeProcess(tmp_path / "data", runtime="local", env=POOL_ENV).start()
    try:
        # A member is recorded from before its start: a crash while it starts leaves the record behind.
        deadline = time.monotonic() + 60
        while not (starting := starting_members(proc.data_dir)):
            assert time.monotonic() < deadline, "no member was seen starting"
            time.sleep(0.01)
        proc.kill()
        proc.start()
        wait_full(proc)
        for iid in starting:
            assert not marked_roots(proc.data_dir, iid), iid
            assert not (proc.data_dir / "instances" / iid).exists(), iid
            assert iid not in warm_ids(proc.data_dir)
    finally:
        proc.kill()
        for leftover in marked_roots(proc.data_dir):
            leftover.kill()
