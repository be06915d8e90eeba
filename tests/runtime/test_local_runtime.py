"""LocalRuntime with real jupyter-server processes on 127.0.0.1."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import pytest_asyncio
import websockets

from nbfleet.domain.model import StepStatus
from nbfleet.runtime.base import FlavorLimits, InstanceSpec, Placement, RuntimeFailure
from nbfleet.runtime.limits import ResourceLimiter
from nbfleet.runtime.local import LocalRuntime

# No store at all: the same on SQLite and PostgreSQL (.ci/run runs it once).
pytestmark = [pytest.mark.slow, pytest.mark.runtime_only, pytest.mark.asyncio(loop_scope="module")]

FLAVOR = FlavorLimits("modelarts.vm.cpu.2u", vcpus=2, memory_mb=4096)
# For tests that only need the server to get as far as binding its port: skips ~1-2 s of extension loading.
BARE_SERVER = ["--ServerApp.jpserver_extensions={'jupyterlab': False, 'jupyter_lsp': False, "
               "'notebook_shim': False, 'jupyter_server_terminals': False}"]


class RecordingReporter:
    def __init__(self):
        self.steps: list[tuple[int, StepStatus, str | None]] = []
        self.events: list[tuple[str, str]] = []

    async def step(self, number, status, description=None):
        self.steps.append((number, status, description))

    async def event(self, kind, message):
        self.events.append((kind, message))


def make_spec(name: str = "nb") -> InstanceSpec:
    return InstanceSpec(id=f"t-{name}-{uuid.uuid4().hex[:8]}", name=name, token=secrets.token_hex(16),
                        flavor=FLAVOR, image_swr_path="swr/test:latest", owner_id="u", project_id="p")


def marked(data_dir: Path, instance_id: str | None = None) -> list[psutil.Process]:
    """Live processes carrying the runtime's marker for ``data_dir`` (and ``instance_id``)."""
    found = []
    for p in psutil.process_iter():
        try:
            env = p.environ()
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if env.get("NBFLEET_DATA_DIR") == str(data_dir.resolve()) and instance_id in (None, env.get("NBFLEET_INSTANCE_ID")):
            found.append(p)
    return found


def base(placement: Placement, spec: InstanceSpec) -> str:
    return f"http://127.0.0.1:{placement.port}/notebooks/{spec.id}/"


def auth(spec: InstanceSpec) -> dict[str, str]:
    return {"Authorization": f"token {spec.token}"}


async def execute(ws_url: str, code: str, *, headers=None, timeout: float = 30) -> dict:
    """Run ``code`` on a kernel channel; returns {"result", "stream", "states"} once the reply came."""
    session = uuid.uuid4().hex
    msg_id = uuid.uuid4().hex
    out = {"result": None, "stream": "", "states": []}
    async with websockets.connect(ws_url, additional_headers=headers or [], max_size=None, proxy=None,
                                  open_timeout=10) as ws:
        await ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": session, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "execute_result":
                    out["result"] = msg["content"]["data"]["text/plain"]
                elif kind == "stream":
                    out["stream"] += msg["content"]["text"]
                elif kind == "error":
                    raise AssertionError(f"kernel error: {msg['content']['ename']}")
                elif kind == "status":
                    out["states"].append(msg["content"]["execution_state"])
                elif kind == "execute_reply":
                    return out


async def new_kernel(placement: Placement, spec: InstanceSpec) -> str:
    async with httpx.AsyncClient() as c:
        r = await c.post(base(placement, spec) + "api/kernels", json={"name": "python3"}, headers=auth(spec))
        assert r.status_code == 201, r.text
        return r.json()["id"]


def kernel_ws(placement: Placement, spec: InstanceSpec, kernel_id: str) -> str:
    return f"ws://127.0.0.1:{placement.port}/notebooks/{spec.id}/api/kernels/{kernel_id}/channels?token={spec.token}"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("local-runtime")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(data_dir):
    rt = LocalRuntime(data_dir, ready_timeout=60)
    yield rt
    # Whatever a failing test left running in this data dir ends here.
    await rt.reap_orphans(set())
    await rt.close()
    assert not marked(data_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(runtime):
    """One instance shared by the read-only tests of this module."""
    spec = make_spec("shared")
    reporter = RecordingReporter()
    started = time.monotonic()
    placement = await runtime.start(spec, reporter)
    print(f"\nstart-to-ready: {time.monotonic() - started:.2f} s")
    yield spec, placement, reporter
    await runtime.delete(spec, placement)


@pytest_asyncio.fixture(loop_scope="module")
async def scratch(tmp_path):
    """A data dir of its own for tests that start (and break) instances; everything in it is ended."""
    runtimes: list[LocalRuntime] = []

    def make(**kwargs) -> LocalRuntime:
        rt = LocalRuntime(tmp_path / "data", **kwargs)
        runtimes.append(rt)
        return rt

    yield make
    for rt in runtimes:
        await rt.reap_orphans(set())
        await rt.close()
    assert not marked(tmp_path / "data")
    # A test that failed half-way may have left the limit groups of a dead instance.
    instances = tmp_path / "data" / "instances"
    for iid in (p.name for p in instances.iterdir()) if instances.is_dir() else ():
        ResourceLimiter().release(iid)


# -- the shared instance ---------------------------------------------------------------------


async def test_start_reports_four_steps_and_the_limits(running, data_dir):
    spec, placement, reporter = running
    completed = [(n, s) for n, s, _ in reporter.steps if s == StepStatus.COMPLETED]
    assert completed == [(1, StepStatus.COMPLETED), (2, StepStatus.COMPLETED),
                         (3, StepStatus.COMPLETED), (4, StepStatus.COMPLETED)]
    assert [n for n, s, _ in reporter.steps if s == StepStatus.PROCESSING] == [1, 2, 3, 4]
    kinds = dict(reporter.events)
    assert "4096 MiB" in kinds["limits"]
    assert placement.host == "127.0.0.1" and 20000 <= placement.port <= 29999
    assert placement.details["limits"] in ("cgroup-v1", "cgroup-v2", "rlimit")
    work = Path(placement.details["work_dir"])
    assert work == data_dir.resolve() / "instances" / spec.id / "work" and work.is_dir()
    # Jupyter's own files live beside the work dir, not in it.
    assert (work.parent / "jupyter.log").is_file()
    assert not any(p.name.startswith(".") for p in work.iterdir())


async def test_status_needs_the_token(running):
    spec, placement, _ = running
    url = base(placement, spec) + "api/status"
    # Fresh clients each time: a login cookie would otherwise authenticate the later requests.
    async with httpx.AsyncClient() as c:
        assert (await c.get(url, headers=auth(spec))).status_code == 200
    async with httpx.AsyncClient() as c:
        assert (await c.get(url)).status_code == 403
    async with httpx.AsyncClient() as c:
        assert (await c.get(url, headers={"Authorization": "token wrong"})).status_code == 403
    async with httpx.AsyncClient() as c:
        lab = await c.get(base(placement, spec) + "lab", headers=auth(spec))
        assert lab.status_code == 200 and "JupyterLab" in lab.text


async def test_kernel_runs_code_with_the_work_dir_as_cwd(running):
    spec, placement, _ = running
    kernel = await new_kernel(placement, spec)
    out = await execute(kernel_ws(placement, spec, kernel), "import os; print(os.getcwd()); 6*7")
    assert out["result"] == "42"
    assert out["stream"].strip() == placement.details["work_dir"]


async def test_activity_reports_busy_while_code_runs_then_idle(running, runtime):
    spec, placement, _ = running
    kernel = await new_kernel(placement, spec)
    ws_url = kernel_ws(placement, spec, kernel)
    await execute(ws_url, "1")  # kernel is up
    idle = await runtime.activity(spec, placement)
    assert idle is not None and idle.busy is False and idle.last_activity_ms is not None

    sleeper = asyncio.create_task(execute(ws_url, "import time; time.sleep(3)"))
    try:
        seen_busy = None
        async with asyncio.timeout(5):
            while seen_busy is None:
                act = await runtime.activity(spec, placement)
                if act is not None and act.busy:
                    seen_busy = act
                else:
                    await asyncio.sleep(0.05)
        assert "busy" in seen_busy.detail
        assert seen_busy.last_activity_ms >= idle.last_activity_ms
    finally:
        await sleeper

    after = await runtime.activity(spec, placement)
    assert after.busy is False
    # Polling activity must not count as activity, or nothing would ever be idle.
    await asyncio.sleep(0.3)
    again = await runtime.activity(spec, placement)
    assert again.last_activity_ms == after.last_activity_ms


async def test_observe_and_adopt_a_running_instance(running, runtime, data_dir):
    spec, placement, _ = running
    assert (await runtime.observe(spec, placement)).alive
    assert await runtime.adopt(spec, placement)
    # A restarted nbfleet (a new runtime object, the server is not its child) adopts it too.
    restarted = LocalRuntime(data_dir)
    try:
        assert await restarted.adopt(spec, placement)
        wrong_port = Placement(placement.host, placement.port + 1 if placement.port < 29999 else 20000,
                               placement.pid, placement.details)
        assert not await restarted.adopt(spec, wrong_port)
        other_token = dataclasses.replace(spec, token="not-the-token")
        assert not await restarted.adopt(other_token, placement)
        # The pid is ours but not this instance's: never adopted, never reported alive.
        stranger = make_spec("stranger")
        observation = await restarted.observe(stranger, placement)
        assert not observation.alive and "no longer" in observation.reason
    finally:
        await restarted.close()


async def test_reap_orphans_spares_known_and_foreign_instances(running, runtime, tmp_path):
    spec, placement, _ = running
    assert await runtime.reap_orphans({spec.id}) == []
    foreign = LocalRuntime(tmp_path / "other-data-dir")
    assert await foreign.reap_orphans(set()) == []
    await foreign.close()
    assert (await runtime.observe(spec, placement)).alive


async def test_has_capacity():
    rt = LocalRuntime(Path("/nonexistent-nbfleet"))
    assert rt.has_capacity(FLAVOR)
    gpu = FlavorLimits("gpu", vcpus=8, memory_mb=65536, gpus=1)
    assert rt.has_capacity(gpu) == os.path.exists("/dev/nvidia0")


# -- instances of their own ------------------------------------------------------------------


async def test_work_survives_stop_start_and_delete_removes_everything(scratch):
    rt = scratch()
    spec = make_spec("life")
    placement = await rt.start(spec, RecordingReporter())
    data_dir = rt.data_dir
    url = base(placement, spec)
    async with httpx.AsyncClient() as c:
        r = await c.put(url + "api/contents/kept.txt", headers=auth(spec),
                        json={"type": "file", "format": "text", "content": "still here"})
        assert r.status_code == 201, r.text
    kernel = await new_kernel(placement, spec)
    await execute(kernel_ws(placement, spec, kernel), "1")
    assert len(marked(data_dir, spec.id)) >= 2  # server + kernel

    started = time.monotonic()
    await rt.stop(spec, placement)
    stop_seconds = time.monotonic() - started
    assert not marked(data_dir, spec.id)
    assert not (await rt.observe(spec, placement)).alive
    assert (Path(placement.details["work_dir"]) / "kept.txt").read_text() == "still here"
    assert stop_seconds < 5, stop_seconds  # SIGTERM is enough; nothing waited for the SIGKILL deadline
    await rt.stop(spec, placement)  # idempotent

    # Started again by a runtime using the rlimit fallback: same work dir, new process.
    rt2 = scratch(limiter=ResourceLimiter(use_cgroups=False))
    again = await rt2.start(spec, RecordingReporter())
    assert again.details["limits"] == "rlimit" and again.pid != placement.pid
    async with httpx.AsyncClient() as c:
        r = await c.get(base(again, spec) + "api/contents/kept.txt", headers=auth(spec))
        assert r.status_code == 200 and r.json()["content"] == "still here"
    await new_kernel(again, spec)

    await rt2.delete(spec, again)
    assert not (data_dir / "instances" / spec.id).exists()
    assert not marked(data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)
    await rt2.delete(spec, again)  # idempotent
    await rt.stop(spec, None)


async def test_observe_reports_a_killed_server(scratch):
    rt = scratch()
    spec = make_spec("killed")
    placement = await rt.start(spec, RecordingReporter())
    os.kill(placement.pid, signal.SIGKILL)

    observation = None
    async with asyncio.timeout(5):
        while observation is None or observation.alive:
            observation = await rt.observe(spec, placement)
            await asyncio.sleep(0.02)
    assert f"jupyter process {placement.pid} exited" in observation.reason
    assert "SIGKILL" in observation.reason
    assert not await rt.adopt(spec, placement)
    await rt.stop(spec, placement)
    assert not marked(rt.data_dir, spec.id)


async def test_reap_orphans_ends_unknown_instances(scratch):
    rt = scratch()
    spec = make_spec("orphan")
    placement = await rt.start(spec, RecordingReporter())
    await new_kernel(placement, spec)
    assert marked(rt.data_dir, spec.id)

    # A restarted nbfleet whose store does not know the instance.
    restarted = scratch()
    assert await restarted.reap_orphans({"some-other-id"}) == [spec.id]
    assert not marked(rt.data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)
    assert not (await rt.observe(spec, placement)).alive


async def test_a_server_that_exits_at_once_fails_step_4_with_its_output(scratch):
    rt = scratch(jupyter_command=[sys.executable, "-c", "import sys; print('no jupyter today'); sys.exit(3)"])
    spec = make_spec("exits")
    reporter = RecordingReporter()
    with pytest.raises(RuntimeFailure) as failure:
        await rt.start(spec, reporter)
    assert failure.value.step == 4
    assert "exit code 3" in failure.value.reason and "no jupyter today" in failure.value.reason
    assert reporter.steps[-1][:2] == (4, StepStatus.FAILED)
    assert not marked(rt.data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)


async def test_no_free_port_fails_step_3(scratch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rt = scratch(port_range=(port, port))
        spec = make_spec("noport")
        reporter = RecordingReporter()
        with pytest.raises(RuntimeFailure) as failure:
            await rt.start(spec, reporter)
    assert failure.value.step == 3
    assert f"{port}-{port}" in failure.value.reason
    assert reporter.steps[-1][:2] == (3, StepStatus.FAILED)
    assert not marked(rt.data_dir, spec.id)


async def test_a_port_taken_after_allocation_fails_with_a_clear_reason(scratch, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rt = scratch(extra_args=BARE_SERVER)
        # Another program grabs the port between allocation and the server's bind.
        monkeypatch.setattr(rt, "_pick_port", lambda: port)
        spec = make_spec("raced")
        with pytest.raises(RuntimeFailure) as failure:
            await rt.start(spec, RecordingReporter())
    assert failure.value.step == 4
    assert f"port {port} is already in use" in failure.value.reason
    assert not marked(rt.data_dir, spec.id)


async def test_readiness_timeout_fails_step_4_and_ends_the_server(scratch):
    rt = scratch(ready_timeout=0.3, extra_args=BARE_SERVER)
    spec = make_spec("slow")
    with pytest.raises(RuntimeFailure) as failure:
        await rt.start(spec, RecordingReporter())
    assert failure.value.step == 4
    assert "not ready" in failure.value.reason and "0.3 s" in failure.value.reason
    assert not marked(rt.data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)
