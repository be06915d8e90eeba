"""ResourceLimiter against the real kernel: cgroup v1/v2 where the host allows, rlimit always."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from nbfleet.runtime.base import FlavorLimits
from nbfleet.runtime.limits import ResourceLimiter

pytestmark = pytest.mark.runtime_only  # no store at all: the same on SQLite and PostgreSQL (.ci/run runs it once)

ALLOCATE_300_MIB = "b = bytearray(300 * 1024 * 1024); print('survived', len(b))"

cgroup_limiter = ResourceLimiter()
needs_cgroups = pytest.mark.skipif(
    not cgroup_limiter.mechanism.startswith("cgroup"), reason="no writable cgroup hierarchy on this host"
)


@pytest.fixture
def instance_id():
    return f"t-limits-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cleanup():
    """Processes and groups a test made, ended and removed even when the test fails."""
    procs: list[subprocess.Popen] = []
    releases: list[tuple[ResourceLimiter, str]] = []
    yield procs, releases
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)
    for limiter, iid in releases:
        limiter.release(iid)


def run_limited(plan, code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], preexec_fn=plan.preexec, capture_output=True, text=True, timeout=timeout
    )


@needs_cgroups
def test_cgroup_memory_limit_kills_a_process_that_allocates_too_much(instance_id, cleanup):
    _, releases = cleanup
    releases.append((cgroup_limiter, instance_id))
    plan = cgroup_limiter.prepare(instance_id, FlavorLimits("tiny", vcpus=1, memory_mb=64))

    result = run_limited(plan, ALLOCATE_300_MIB)

    assert plan.mechanism == cgroup_limiter.mechanism
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stdout, result.stderr)
    assert "survived" not in result.stdout
    assert plan.describe().startswith(("cgroup v1: memory 64 MiB", "cgroup v2: memory 64 MiB"))


@needs_cgroups
def test_cgroup_memory_limit_leaves_a_process_within_it_alone(instance_id, cleanup):
    _, releases = cleanup
    releases.append((cgroup_limiter, instance_id))
    plan = cgroup_limiter.prepare(instance_id, FlavorLimits("small", vcpus=1, memory_mb=512))

    result = run_limited(plan, ALLOCATE_300_MIB)

    assert result.returncode == 0, result.stderr
    assert "survived" in result.stdout


@needs_cgroups
def test_cgroup_groups_hold_the_child_and_carry_the_flavor(instance_id, cleanup):
    procs, releases = cleanup
    releases.append((cgroup_limiter, instance_id))
    plan = cgroup_limiter.prepare(instance_id, FlavorLimits("f", vcpus=2, memory_mb=1024))
    child = subprocess.Popen(["sleep", "30"], preexec_fn=plan.preexec)
    procs.append(child)

    groups = cgroup_limiter.group_dirs(instance_id)
    assert groups and all(g.name == instance_id and g.parent.name == "nbfleet" for g in groups)
    for group in groups:
        assert str(child.pid) in (group / "cgroup.procs").read_text().split()
    if plan.mechanism == "cgroup-v1":
        mem = next(g for g in groups if "memory" in g.parts)
        assert int((mem / "memory.limit_in_bytes").read_text()) == 1024 * 1024 * 1024
        cpu = next((g for g in groups if (g / "cpu.cfs_quota_us").exists()), None)
        if cpu is not None:
            assert int((cpu / "cpu.cfs_quota_us").read_text()) == 2 * int((cpu / "cpu.cfs_period_us").read_text())
    # The child's own view agrees: it sits in a group named after the instance.
    assert f"/nbfleet/{instance_id}" in Path(f"/proc/{child.pid}/cgroup").read_text()


@needs_cgroups
def test_cgroup_cpu_quota_caps_cpu_time(instance_id, cleanup):
    procs, releases = cleanup
    releases.append((cgroup_limiter, instance_id))
    plan = cgroup_limiter.prepare(instance_id, FlavorLimits("one", vcpus=1, memory_mb=256))
    if plan.cpus is None and not any(
        (g / "cpu.cfs_quota_us").exists() or (g / "cpu.max").exists() for g in plan.groups
    ):
        pytest.skip("no cpu controller")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("a single CPU cannot show a 1-vCPU cap")

    # Two busy processes under a 1-vCPU quota get at most one CPU-second per second between them
    # (on an idle 2-CPU host they would get two).
    children = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=plan.preexec) for _ in range(2)]
    procs.extend(children)  # the cleanup fixture ends them
    busy = [psutil.Process(c.pid) for c in children]
    time.sleep(0.2)  # past interpreter start-up
    start_cpu = sum(sum(p.cpu_times()[:2]) for p in busy)
    started = time.monotonic()
    time.sleep(1.0)
    used = sum(sum(p.cpu_times()[:2]) for p in busy) - start_cpu
    wall = time.monotonic() - started
    assert used <= wall * 1.15, f"{used:.2f} CPU-s in {wall:.2f} s"


@needs_cgroups
def test_release_kills_leftovers_and_removes_the_groups(instance_id, cleanup):
    procs, releases = cleanup
    releases.append((cgroup_limiter, instance_id))
    plan = cgroup_limiter.prepare(instance_id, FlavorLimits("f", vcpus=1, memory_mb=256))
    # A grandchild in a session of its own: only the group still knows it belongs to the instance.
    child = subprocess.Popen(["setsid", "sleep", "60"], preexec_fn=plan.preexec)
    procs.append(child)
    groups = cgroup_limiter.group_dirs(instance_id)
    assert groups

    cgroup_limiter.release(instance_id)

    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not any(g.exists() for g in groups)
    cgroup_limiter.release(instance_id)  # again: nothing left is fine


@needs_cgroups
def test_release_finds_the_groups_through_the_process(instance_id, cleanup):
    """nbfleet restarted in another cgroup finds the old groups through the process living in them."""
    procs, releases = cleanup
    releases.append((cgroup_limiter, instance_id))
    plan = cgroup_limiter.prepare(instance_id, FlavorLimits("f", vcpus=1, memory_mb=256))
    child = subprocess.Popen(["sleep", "60"], preexec_fn=plan.preexec)
    procs.append(child)
    memory_group = next(g for g in plan.groups if (g / "memory.limit_in_bytes").exists() or (g / "memory.max").exists())
    elsewhere = memory_group.parent.parent / f"t-elsewhere-{uuid.uuid4().hex[:8]}"
    elsewhere.mkdir()
    try:
        script = (
            "import os, sys\n"
            f"open({str(elsewhere / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
            "from nbfleet.runtime.limits import ResourceLimiter\n"
            "limiter = ResourceLimiter()\n"
            f"own = limiter.group_dirs({instance_id!r})\n"
            f"found = limiter.group_dirs({instance_id!r}, pid={child.pid})\n"
            f"limiter.release({instance_id!r}, pid={child.pid})\n"
            "print(len(own), len(found))\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    finally:
        for _ in range(50):
            try:
                elsewhere.rmdir()
                break
            except OSError:
                time.sleep(0.02)
    assert result.returncode == 0, result.stderr
    own, found = map(int, result.stdout.split())
    assert found == len(plan.groups) and own < found
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not any(g.exists() for g in plan.groups)


@needs_cgroups
def test_sweep_removes_only_old_empty_groups_of_unknown_instances(cleanup):
    procs, releases = cleanup
    stale, busy, known, fresh = (
        f"t-sweep-{name}-{uuid.uuid4().hex[:6]}" for name in ("stale", "busy", "known", "fresh")
    )
    for iid in (stale, busy, known, fresh):
        releases.append((cgroup_limiter, iid))
        cgroup_limiter.prepare(iid, FlavorLimits("f", 1, 128))
    busy_plan = cgroup_limiter.prepare(busy, FlavorLimits("f", 1, 128))
    procs.append(subprocess.Popen(["sleep", "30"], preexec_fn=busy_plan.preexec))
    old = time.time() - 3600
    for iid in (stale, busy, known):
        for group in cgroup_limiter.group_dirs(iid):
            os.utime(group, (old, old))

    removed = cgroup_limiter.sweep({known}, min_age=60)

    assert stale in removed and not cgroup_limiter.group_dirs(stale)
    for kept in (busy, known, fresh):
        assert kept not in removed and cgroup_limiter.group_dirs(kept)
    assert procs[0].poll() is None  # sweeping never kills


def test_rlimit_fallback_gives_memory_error(instance_id):
    limiter = ResourceLimiter(use_cgroups=False)
    plan = limiter.prepare(instance_id, FlavorLimits("tiny", vcpus=1, memory_mb=64))

    result = run_limited(plan, ALLOCATE_300_MIB)

    assert limiter.mechanism == "rlimit" and plan.mechanism == "rlimit"
    assert plan.groups == ()
    assert result.returncode == 1
    assert "MemoryError" in result.stderr
    assert plan.describe().startswith("rlimit: address space 64 MiB")
    limiter.release(instance_id)  # no groups: nothing to do, no error


def test_rlimit_fallback_pins_cpus(instance_id):
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        pytest.skip("needs two CPUs to see pinning")
    plan = ResourceLimiter(use_cgroups=False).prepare(instance_id, FlavorLimits("one", vcpus=1, memory_mb=1024))

    result = run_limited(plan, "import os; print(sorted(os.sched_getaffinity(0)))")

    pinned = eval(result.stdout)
    assert len(pinned) == 1 and set(pinned) <= available
    assert f"pinned to {pinned[0]}" in plan.describe()


def test_rlimit_fallback_does_not_pin_a_flavor_as_large_as_the_host(instance_id):
    plan = ResourceLimiter(use_cgroups=False).prepare(
        instance_id, FlavorLimits("big", vcpus=len(os.sched_getaffinity(0)), memory_mb=1024)
    )
    assert plan.cpus is None
    assert "all host CPUs" in plan.describe()


def test_ids_that_would_escape_the_group_are_refused():
    limiter = ResourceLimiter(use_cgroups=False)
    for bad in ("", "..", "a/b", "."):
        with pytest.raises(ValueError):
            limiter.prepare(bad, FlavorLimits("f", 1, 64))


def test_release_of_an_unknown_instance_is_fine():
    cgroup_limiter.release(f"never-made-{uuid.uuid4().hex[:8]}")
    ResourceLimiter(use_cgroups=False).release("never-made")
