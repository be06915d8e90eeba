"""Enforce a flavor's CPU and memory on the process tree of one notebook instance.

Three mechanisms, best first:

- ``cgroup-v2``: one group ``<mount>/<own path>/nbfleet/<instance id>`` with ``memory.max``,
  ``memory.swap.max``, ``cpu.max`` and ``pids.max``.
- ``cgroup-v1``: the same path under each v1 controller mount (memory, cpu, pids) with
  ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes``), ``cpu.cfs_quota_us``/``cpu.cfs_period_us``
  and ``pids.max``.
- ``rlimit``: ``RLIMIT_AS`` and a CPU affinity mask. Weaker: the address-space limit applies per process
  (not to the tree) and counts reserved, not used, memory; the affinity pins instead of sharing.

Groups are created below the cgroup this process itself sits in, because that is the only place
we may be allowed to write to (a container or a delegated systemd unit), and because it keeps
the instances accounted to whoever runs nbfleet.

The child joins its groups in ``LimitPlan.preexec`` (between fork and exec), so nothing the
Jupyter server forks can escape them.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..domain.instances import FlavorLimits

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
# Threads count as tasks for pids.max; a Jupyter server is ~10, each kernel ~10, a terminal a few.
DEFAULT_PIDS_MAX = 4096
V1_CONTROLLERS = ("memory", "cpu", "pids")


@dataclass
class LimitPlan:
    """What was prepared for one instance, and how the child applies it."""

    instance_id: str
    mechanism: str  # "cgroup-v2" | "cgroup-v1" | "rlimit" | "none"
    memory_bytes: int | None = None
    vcpus: int | None = None
    pids_max: int | None = None
    # cgroup directories the child must join (one per v1 hierarchy, or the single v2 group).
    groups: tuple[Path, ...] = ()
    # rlimit fallback; also used for the CPU part when no cpu controller is available.
    rlimit_as: int | None = None
    cpus: frozenset[int] | None = None
    notes: list[str] = field(default_factory=list)

    def preexec(self) -> None:
        """Run in the forked child before exec: join the groups, set rlimits and affinity.

        Kept to plain syscalls because the parent may have other threads at fork time.
        """
        if self.groups:
            pid = str(os.getpid()).encode()
            for group in self.groups:
                fd = os.open(str(group / "cgroup.procs"), os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
        if self.rlimit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (self.rlimit_as, self.rlimit_as))
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def describe(self) -> str:
        """One line for the instance's event log, e.g. ``cgroup v1: memory 8192 MiB, cpu 2 vCPU``."""
        parts: list[str] = []
        if self.memory_bytes is not None:
            mib = self.memory_bytes // (1024 * 1024)
            parts.append(f"address space {mib} MiB per process" if self.rlimit_as is not None else f"memory {mib} MiB")
        if self.vcpus is not None:
            if self.cpus:
                parts.append(f"cpu {self.vcpus} vCPU pinned to {_cpu_list(self.cpus)}")
            elif self.mechanism.startswith("cgroup"):
                parts.append(f"cpu {self.vcpus} vCPU")
            else:
                parts.append(f"cpu {self.vcpus} vCPU (all host CPUs)")
        if self.pids_max is not None:
            parts.append(f"pids {self.pids_max}")
        parts.extend(self.notes)
        head = {"cgroup-v1": "cgroup v1", "cgroup-v2": "cgroup v2"}.get(self.mechanism, self.mechanism)
        return f"{head}: {', '.join(parts)}" if parts else f"{head}: no limits"


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


@dataclass(frozen=True)
class _CgroupLayout:
    version: int
    # controller -> directory under which instance groups are created (".../<own path>/nbfleet")
    bases: dict[str, Path]


class ResourceLimiter:
    """Creates, applies and removes per-instance resource limits."""

    def __init__(
        self,
        *,
        use_cgroups: bool = True,
        cgroup_root: Path = CGROUP_ROOT,
        group_name: str = "nbfleet",
        pids_max: int | None = DEFAULT_PIDS_MAX,
    ):
        self.use_cgroups = use_cgroups
        self.cgroup_root = Path(cgroup_root)
        self.group_name = group_name
        self.pids_max = pids_max
        self._layout: _CgroupLayout | None | bool = False  # False = not probed yet

    # -- detection -------------------------------------------------------------------------

    @property
    def mechanism(self) -> str:
        """The mechanism ``prepare`` will use on this host."""
        layout = self._cgroups()
        if layout is None:
            return "rlimit"
        return f"cgroup-v{layout.version}"

    def _cgroups(self) -> _CgroupLayout | None:
        if self._layout is False:
            self._layout = self._probe() if self.use_cgroups else None
            if self._layout is None:
                log.info(
                    "resource limits: cgroups %s; using rlimit + affinity",
                    "disabled" if not self.use_cgroups else "not usable",
                )
        return self._layout  # type: ignore[return-value]

    def _probe(self) -> _CgroupLayout | None:
        try:
            mounts = _cgroup_mounts()
            own = _own_cgroups()
        except OSError:
            return None
        return self._probe_v2(mounts, own) or self._probe_v1(mounts, own)

    def _probe_v2(self, mounts: dict[str, Path], own: dict[str, str]) -> _CgroupLayout | None:
        mount = mounts.get("")
        if mount is None or "" not in own:
            return None
        parent = mount / own[""].lstrip("/")
        try:
            available = (parent / "cgroup.controllers").read_text().split()
        except OSError:
            return None
        if "memory" not in available:
            # e.g. hybrid hosts whose unified hierarchy carries only hugetlb.
            return None
        wanted: list[str] = [c for c in ("memory", "cpu", "pids") if c in available]
        base = parent / self.group_name
        try:
            base.mkdir(exist_ok=True)
            # Fails with EBUSY when our own group holds processes (the v2 "no internal processes"
            # rule); then we cannot delegate and fall back.
            _enable_controllers(parent, wanted)
            _enable_controllers(base, wanted)
        except OSError as exc:
            log.info("cgroup v2 not usable at %s: %s", parent, exc)
            return None
        return _CgroupLayout(2, {"": base})

    def _probe_v1(self, mounts: dict[str, Path], own: dict[str, str]) -> _CgroupLayout | None:
        bases: dict[str, Path] = {}
        for controller in V1_CONTROLLERS:
            mount = mounts.get(controller)
            if mount is None or controller not in own:
                continue
            base = mount / own[controller].lstrip("/") / self.group_name
            try:
                base.mkdir(exist_ok=True)
            except OSError as exc:
                log.info("cgroup v1 %s not writable at %s: %s", controller, base, exc)
                continue
            if os.access(base, os.W_OK):
                bases[controller] = base
        if "memory" not in bases:
            # Memory is the limit that matters (one runaway notebook must not take the host down);
            # without it a cgroup setup is not worth its complexity.
            return None
        return _CgroupLayout(1, bases)

    # -- lifecycle -------------------------------------------------------------------------

    def prepare(self, instance_id: str, flavor: FlavorLimits) -> LimitPlan:
        """Create the instance's groups (idempotent) and return how to put a child into them."""
        _check_id(instance_id)
        memory = flavor.memory_mb * 1024 * 1024 if flavor.memory_mb and flavor.memory_mb > 0 else None
        vcpus = flavor.vcpus if flavor.vcpus and flavor.vcpus > 0 else None
        layout = self._cgroups()
        if layout is not None:
            try:
                if layout.version == 2:
                    return self._prepare_v2(layout, instance_id, memory, vcpus)
                return self._prepare_v1(layout, instance_id, memory, vcpus)
            except OSError as exc:
                log.warning("cgroup setup for %s failed (%s); falling back to rlimit", instance_id, exc)
                self.release(instance_id)
        return LimitPlan(
            instance_id,
            "rlimit",
            memory_bytes=memory,
            vcpus=vcpus,
            rlimit_as=memory,
            cpus=_affinity_for(instance_id, vcpus),
        )

    def _prepare_v2(self, layout: _CgroupLayout, instance_id: str, memory: int | None, vcpus: int | None) -> LimitPlan:
        group = layout.bases[""] / instance_id
        group.mkdir(exist_ok=True)
        if memory is not None:
            _write(group / "memory.max", memory)
            if (group / "memory.swap.max").exists():
                _write(group / "memory.swap.max", 0)
        pids = self.pids_max if (group / "pids.max").exists() else None
        if pids is not None:
            _write(group / "pids.max", pids)
        cpus = None
        if vcpus is not None and (group / "cpu.max").exists():
            (group / "cpu.max").write_text(f"{vcpus * CFS_PERIOD_US} {CFS_PERIOD_US}")
        elif vcpus is not None:
            cpus = _affinity_for(instance_id, vcpus)
        return LimitPlan(
            instance_id, "cgroup-v2", memory_bytes=memory, vcpus=vcpus, pids_max=pids, groups=(group,), cpus=cpus
        )

    def _prepare_v1(self, layout: _CgroupLayout, instance_id: str, memory: int | None, vcpus: int | None) -> LimitPlan:
        groups: list[Path] = []
        for base in layout.bases.values():
            group = base / instance_id
            group.mkdir(exist_ok=True)
            groups.append(group)
        mem = layout.bases["memory"] / instance_id
        if memory is not None:
            # memsw must stay >= limit_in_bytes, so on a reused group lower memsw last / raise it first.
            memsw = mem / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                try:
                    _write(mem / "memory.limit_in_bytes", memory)
                    _write(memsw, memory)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    _write(memsw, memory)
                    _write(mem / "memory.limit_in_bytes", memory)
            else:
                _write(mem / "memory.limit_in_bytes", memory)
        cpus = None
        if vcpus is not None and "cpu" in layout.bases:
            cpu = layout.bases["cpu"] / instance_id
            _write(cpu / "cpu.cfs_period_us", CFS_PERIOD_US)
            _write(cpu / "cpu.cfs_quota_us", vcpus * CFS_PERIOD_US)
        elif vcpus is not None:
            cpus = _affinity_for(instance_id, vcpus)
        pids = None
        if self.pids_max is not None and "pids" in layout.bases:
            pids = self.pids_max
            _write(layout.bases["pids"] / instance_id / "pids.max", pids)
        return LimitPlan(
            instance_id, "cgroup-v1", memory_bytes=memory, vcpus=vcpus, pids_max=pids, groups=tuple(groups), cpus=cpus
        )

    def group_dirs(self, instance_id: str, pid: int | None = None) -> list[Path]:
        """The instance's existing group directories: under our own cgroup, and wherever ``pid`` sits.

        The second source matters after a restart of nbfleet into a different cgroup: the groups
        made by the previous process are then found through the process that lives in them.
        """
        _check_id(instance_id)
        dirs: list[Path] = []
        layout = self._cgroups()
        if layout is not None:
            dirs.extend(base / instance_id for base in layout.bases.values())
        if pid is not None and self.use_cgroups:
            dirs.extend(_groups_of_pid(pid, self.cgroup_root, self.group_name, instance_id))
        return [d for d in dict.fromkeys(dirs) if d.is_dir()]  # each once, in order

    def release(self, instance_id: str, pid: int | None = None, timeout: float = 3.0) -> None:
        """Kill whatever is left in the instance's groups and remove them; missing groups are fine."""
        for group in self.group_dirs(instance_id, pid):
            _empty_and_remove(group, timeout)

    def sweep(self, known_ids: Collection[str], min_age: float = 300.0) -> list[str]:
        """Remove empty groups of unknown instances, left when nobody stopped a dead instance.

        Only empty groups are touched (a running instance of another nbfleet sharing our cgroup
        keeps its groups busy), and only old ones: a fresh group may belong to a start that has
        not yet moved its process in.
        """
        layout = self._cgroups()
        if layout is None:
            return []
        removed: set[str] = set()
        now = time.time()
        for base in layout.bases.values():
            try:
                groups = [d for d in base.iterdir() if d.is_dir()]
            except OSError:
                continue
            for group in groups:
                if group.name in known_ids or _read_pids(group):
                    continue
                try:
                    if now - group.stat().st_mtime < min_age:
                        continue
                    group.rmdir()
                    removed.add(group.name)
                except OSError:
                    continue  # busy after all, or gone meanwhile
        if removed:
            log.info("removed stale cgroups of %s", ", ".join(sorted(removed)))
        return sorted(removed)


# -- helpers -------------------------------------------------------------------------------


def _check_id(instance_id: str) -> None:
    # The id becomes a directory name; refuse anything that could walk the tree.
    if not instance_id or "/" in instance_id or instance_id in (".", "..") or "\0" in instance_id:
        raise ValueError(f"unusable instance id for a cgroup name: {instance_id!r}")


def _write(path: Path, value: int | str) -> None:
    with open(path, "w") as fh:
        fh.write(str(value))


def _enable_controllers(group: Path, controllers: list[str]) -> None:
    control = group / "cgroup.subtree_control"
    enabled = set(control.read_text().split())
    missing = [c for c in controllers if c not in enabled]
    if missing:
        control.write_text(" ".join(f"+{c}" for c in missing))


def _cgroup_mounts() -> dict[str, Path]:
    """Controller name -> mount point; the v2 hierarchy is keyed by ``""``."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 4:
                continue
            where, fstype, options = fields[1], fields[2], fields[3].split(",")
            if fstype == "cgroup2":
                mounts.setdefault("", Path(where))
            elif fstype == "cgroup":
                for option in options:
                    if option in V1_CONTROLLERS:
                        mounts.setdefault(option, Path(where))
    return mounts


def _own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """Controller name -> cgroup path of a process; the v2 entry is keyed by ``""``."""
    result: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            hierarchy, controllers, path = parts
            if hierarchy == "0" and controllers == "":
                result[""] = path
                continue
            for controller in controllers.split(","):
                result[controller] = path
    return result


def _groups_of_pid(pid: int, root: Path, group_name: str, instance_id: str) -> list[Path]:
    try:
        mounts = _cgroup_mounts()
        paths = _own_cgroups(pid)
    except OSError:
        return []
    suffix = f"/{group_name}/{instance_id}"
    found = []
    for controller, path in paths.items():
        mount = mounts.get(controller)
        if mount is not None and path.endswith(suffix) and mount.is_relative_to(root):
            found.append(mount / path.lstrip("/"))
    return found


def _read_pids(group: Path) -> list[int]:
    try:
        return [int(x) for x in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _empty_and_remove(group: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    me = os.getpid()
    while True:
        for pid in _read_pids(group):
            if pid != me:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # EBUSY while killed tasks are still exiting.
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                log.warning("could not remove cgroup %s: %s", group, exc)
                return
        time.sleep(0.02)


def _affinity_for(instance_id: str, vcpus: int | None) -> frozenset[int] | None:
    """A stable set of ``vcpus`` CPUs for the instance, or None when it may use them all.

    Starting at a CPU chosen from the id spreads instances over the host instead of stacking
    every pinned instance on CPU 0.
    """
    try:
        available = sorted(os.sched_getaffinity(0))
    except OSError:
        return None
    if vcpus is None or vcpus >= len(available):
        return None
    start = zlib.crc32(instance_id.encode()) % len(available)
    return frozenset(available[(start + i) % len(available)] for i in range(vcpus))
