"""LocalRuntime with real, sandboxed jupyter-server processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import time
from pathlib import Path

import pytest
import pytest_asyncio

from nbfleet.domain.model import StepStatus
from nbfleet.runtime.base import FlavorLimits, RuntimeFailure
from nbfleet.runtime.limits import ResourceLimiter
from nbfleet.runtime.local import LocalRuntime

from ..images import make_reachable, shared_environments
from ..support import NOTHING_STORED, store_lookup
from .local_helpers import BARE_SERVER, FLAVOR, Jupyter, RecordingReporter, in_sandbox, make_spec, marked

# No store at all: the same on SQLite and PostgreSQL (.ci/run runs it once).
pytestmark = [pytest.mark.slow, pytest.mark.runtime_only, pytest.mark.asyncio(loop_scope="module")]


def local_runtime(data_dir: Path, **kwargs) -> LocalRuntime:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return LocalRuntime(make_reachable(data_dir), environments=shared_environments(), **kwargs)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("local-runtime")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(data_dir):
    rt = local_runtime(data_dir, ready_timeout=60)
    yield rt
    # Whatever a failing test left running in this data dir ends here.
    await rt.reap_orphans(NOTHING_STORED)
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
        rt = local_runtime(tmp_path / "data", **kwargs)
        runtimes.append(rt)
        return rt

    yield make
    for rt in runtimes:
        await rt.reap_orphans(NOTHING_STORED)
        await rt.close()
    assert not marked(tmp_path / "data")
    # A test that failed half-way may have left the limit groups of a dead instance.
    instances = tmp_path / "data" / "instances"
    for iid in (p.name for p in instances.iterdir()) if instances.is_dir() else ():
        ResourceLimiter().release(iid)


# -- the shared instance ---------------------------------------------------------------------


async def test_start_reports_four_steps_the_limits_and_the_sandbox(running, data_dir):
    spec, placement, reporter = running
    completed = [(n, s) for n, s, _ in reporter.steps if s == StepStatus.COMPLETED]
    assert completed == [
        (1, StepStatus.COMPLETED),
        (2, StepStatus.COMPLETED),
        (3, StepStatus.COMPLETED),
        (4, StepStatus.COMPLETED),
    ]
    assert [n for n, s, _ in reporter.steps if s == StepStatus.PROCESSING] == [1, 2, 3, 4]
    kinds = dict(reporter.events)
    assert "4096 MiB" in kinds["limits"]
    assert "bubblewrap" in kinds["sandbox"] and "ma-user" in kinds["sandbox"]
    # What users read names no host path, port or group.
    for _, _, text in reporter.steps:
        assert str(data_dir) not in (text or "") and "127.0.0.1" not in (text or "")
    assert placement.details["limits"] in ("cgroup-v1", "cgroup-v2", "rlimit")
    assert placement.socket == str(data_dir.resolve() / "instances" / spec.id / "run" / "jupyter.sock")
    assert not placement.port
    root = data_dir.resolve() / "instances" / spec.id
    assert (root / "work").is_dir() and (root / "jupyter.log").is_file()
    # Nothing of Jupyter's own lands in the volume; its runtime files stay in the sandbox's /tmp.
    assert not any(p.name.startswith("jpserver") for p in (root / "work").rglob("*"))


async def test_status_needs_the_token(running):
    spec, placement, _ = running
    jupyter = Jupyter(spec, placement)
    assert (await jupyter.request("GET", "api/status")).status_code == 200
    assert (await jupyter.request("GET", "api/status", token=False)).status_code == 403
    wrong = Jupyter(dataclasses.replace(spec, token="wrong"), placement)
    assert (await wrong.request("GET", "api/status")).status_code == 403
    lab = await jupyter.request("GET", "lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text


async def test_kernel_runs_as_ma_user_in_the_work_dir_from_the_image(running):
    spec, placement, _ = running
    printed = await Jupyter(spec, placement).run(
        "import os, pwd, sys; print(os.getcwd(), os.getuid(), pwd.getpwuid(os.getuid()).pw_name, "
        "os.environ['HOME'], sys.prefix)"
    )
    cwd, uid, user, home, prefix = printed.split()
    assert (cwd, uid, user, home) == ("/home/ma-user/work", "1000", "ma-user", "/home/ma-user")
    assert prefix == str(shared_environments().find("notebook-python3.11", _declared("notebook-python3.11")).path)


async def test_a_terminal_is_a_shell_in_the_sandbox(running):
    spec, placement, _ = running
    # The mark is computed, so the echo of the typed command cannot end the wait.
    out = await Jupyter(spec, placement).terminal(
        "echo id=$(id -u)-$(id -un) py=$(command -v python) home=$HOME pwd=$PWD mark=END$((6*7))", until="END42"
    )
    printed = re.search(r"id=(\S+) py=(\S+) home=(\S+) pwd=(\S+) mark=END42", out)
    assert printed, out
    who, python, home, pwd = printed.groups()
    assert (who, home, pwd) == ("1000-ma-user", "/home/ma-user", "/home/ma-user/work")
    assert Path(python).parent.parent.parent == shared_environments().root


def _declared(name):
    from nbfleet.runtime.environments import EnvironmentSpec

    from ..images import catalogue_environment

    return EnvironmentSpec.from_json(catalogue_environment(name))


async def test_activity_reports_busy_while_code_runs_then_idle(running, runtime):
    spec, placement, _ = running
    jupyter = Jupyter(spec, placement)
    kernel = await jupyter.new_kernel()
    await jupyter.execute(kernel, "1")  # kernel is up
    idle = await runtime.activity(spec, placement)
    assert idle is not None and idle.busy is False and idle.last_activity_ms is not None

    sleeper = asyncio.create_task(jupyter.execute(kernel, "import time; time.sleep(3)"))
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
    restarted = local_runtime(data_dir)
    try:
        assert await restarted.adopt(spec, placement)
        elsewhere = dataclasses.replace(placement, socket=placement.socket + ".nothing")
        assert not await restarted.adopt(spec, elsewhere)
        assert not await restarted.adopt(spec, dataclasses.replace(placement, socket=None))
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
    assert await runtime.reap_orphans(store_lookup(live=[spec.id])) == []
    foreign = local_runtime(tmp_path / "other-data-dir")
    assert await foreign.reap_orphans(NOTHING_STORED) == []
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
    jupyter = Jupyter(spec, placement)
    r = await jupyter.request(
        "PUT", "api/contents/kept.txt", json={"type": "file", "format": "text", "content": "still here"}
    )
    assert r.status_code == 201, r.text
    await jupyter.run("1")
    assert len(in_sandbox(marked(data_dir, spec.id))) >= 3  # first process, server, kernel

    started = time.monotonic()
    await rt.stop(spec, placement)
    stop_seconds = time.monotonic() - started
    assert not marked(data_dir, spec.id)
    assert not (await rt.observe(spec, placement)).alive
    assert (data_dir / "instances" / spec.id / "work" / "kept.txt").read_text() == "still here"
    assert stop_seconds < 5, stop_seconds  # SIGTERM is enough; nothing waited for the SIGKILL deadline
    await rt.stop(spec, placement)  # idempotent

    # Started again by a runtime using the rlimit fallback: same volume, new process.
    rt2 = scratch(limiter=ResourceLimiter(use_cgroups=False))
    again = await rt2.start(spec, RecordingReporter())
    assert again.details["limits"] == "rlimit" and again.pid != placement.pid
    r = await Jupyter(spec, again).request("GET", "api/contents/kept.txt")
    assert r.status_code == 200 and r.json()["content"] == "still here"

    await rt2.delete(spec, again)
    assert not (data_dir / "instances" / spec.id).exists()
    assert not marked(data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)
    await rt2.delete(spec, again)  # idempotent
    await rt.stop(spec, None)


async def test_observe_reports_a_crashed_server(scratch):
    rt = scratch()
    spec = make_spec("killed")
    placement = await rt.start(spec, RecordingReporter())
    server = next(p for p in in_sandbox(marked(rt.data_dir, spec.id)) if "jupyter_server" in " ".join(p.cmdline()))
    server.send_signal(signal.SIGKILL)

    observation = None
    async with asyncio.timeout(5):
        while observation is None or observation.alive:
            observation = await rt.observe(spec, placement)
            await asyncio.sleep(0.02)
    assert "Jupyter exited" in observation.reason and "SIGKILL" in observation.reason
    assert not await rt.adopt(spec, placement)
    await rt.stop(spec, placement)
    assert not marked(rt.data_dir, spec.id)


@pytest.mark.parametrize("victim", ["outer shell", "bwrap"])
async def test_killing_the_sandboxs_host_processes_ends_everything_in_it(scratch, victim):
    rt = scratch(limiter=ResourceLimiter(use_cgroups=False))  # no cgroup to sweep up what is left
    spec = make_spec("outer")
    placement = await rt.start(spec, RecordingReporter())
    await Jupyter(spec, placement).run("1")
    processes = marked(rt.data_dir, spec.id)
    inside = in_sandbox(processes)
    assert len(inside) >= 3
    target = (
        next(p for p in processes if p.pid == placement.pid)
        if victim == "outer shell"
        else next(p for p in processes if p.name() == "bwrap" and p not in inside)
    )
    target.send_signal(signal.SIGKILL)
    async with asyncio.timeout(5):
        while any(p.is_running() and p.status() != "zombie" for p in inside):
            await asyncio.sleep(0.02)
    assert not (await rt.observe(spec, placement)).alive
    await rt.stop(spec, placement)


async def test_reap_orphans_ends_unknown_instances(scratch):
    rt = scratch()
    spec = make_spec("orphan")
    placement = await rt.start(spec, RecordingReporter())
    await Jupyter(spec, placement).new_kernel()
    assert marked(rt.data_dir, spec.id)

    # A restarted nbfleet whose store does not know the instance.
    restarted = scratch()
    assert await restarted.reap_orphans(store_lookup(live=["some-other-id"])) == [spec.id]
    assert not marked(rt.data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)
    assert not (await rt.observe(spec, placement)).alive


async def test_a_server_that_exits_at_once_fails_step_4_with_its_output(scratch):
    rt = scratch(jupyter_command=["{python}", "-c", "import sys; print('no jupyter today'); sys.exit(3)"])
    spec = make_spec("exits")
    reporter = RecordingReporter()
    with pytest.raises(RuntimeFailure) as failure:
        await rt.start(spec, reporter)
    assert failure.value.step == 4
    assert "exit code 3" in failure.value.reason and "no jupyter today" in failure.value.reason
    assert reporter.steps[-1][:2] == (4, StepStatus.FAILED)
    assert not marked(rt.data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)


async def test_an_image_without_an_environment_fails_step_2(scratch):
    rt = scratch()
    spec = make_spec("noenv", image="registry.example/other:1", environment=None)
    reporter = RecordingReporter()
    with pytest.raises(RuntimeFailure) as failure:
        await rt.start(spec, reporter)
    assert failure.value.step == 2 and "declares no environment" in failure.value.reason
    assert reporter.steps[-1][:2] == (2, StepStatus.FAILED)


async def test_readiness_timeout_fails_step_4_and_ends_the_server(scratch):
    rt = scratch(ready_timeout=0.3, extra_args=BARE_SERVER)
    spec = make_spec("slow")
    with pytest.raises(RuntimeFailure) as failure:
        await rt.start(spec, RecordingReporter())
    assert failure.value.step == 4
    assert "not ready" in failure.value.reason and "0.3 s" in failure.value.reason
    assert not marked(rt.data_dir, spec.id)
    assert not ResourceLimiter().group_dirs(spec.id)
