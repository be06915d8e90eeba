"""Finding and ending the processes of local instances.

The process nbfleet starts for an instance (the sandbox's outer ``bwrap``, or the Jupyter server itself in
single-user mode) carries ``NBFLEET_INSTANCE_ID`` and ``NBFLEET_DATA_DIR`` in its environment, so it is found
even after nbfleet restarted. Only processes in nbfleet's own PID namespace count: whatever runs inside a
sandbox lives in a namespace of its own and can write anything into its environment, so a marker there
proves nothing. The sandbox's processes are reached as descendants of its outer process, and die together
with its namespace's first process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

ENV_INSTANCE = "NBFLEET_INSTANCE_ID"
ENV_DATA_DIR = "NBFLEET_DATA_DIR"


def _pid_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


_OWN_NAMESPACE = _pid_namespace("self")


def in_own_namespace(pid: int) -> bool:
    """Whether ``pid`` lives in nbfleet's PID namespace (not inside some sandbox)."""
    return _OWN_NAMESPACE is not None and _pid_namespace(pid) == _OWN_NAMESPACE


def marked_processes(
    data_dir: Path, instance_id: str | None = None, owner: Callable[[int], bool] | None = None
) -> list[tuple[str, psutil.Process]]:
    """(instance id, process) for every live process this runtime's data dir started (outside sandboxes).

    ``owner(uid)``: whether a process of that real uid can be one nbfleet started; any local user can put
    the markers into a process of their own."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue  # gone, zombie, or a kernel thread
        iid = env.get(ENV_INSTANCE)
        if (
            iid
            and env.get(ENV_DATA_DIR) == str(data_dir)
            and instance_id in (None, iid)
            and in_own_namespace(proc.pid)
            and (owner is None or _owned(proc, owner))
        ):
            found.append((iid, proc))
    return found


def _owned(proc: psutil.Process, owner: Callable[[int], bool]) -> bool:
    try:
        return owner(proc.uids().real)
    except psutil.Error:
        return False


def belongs(proc: psutil.Process, data_dir: Path, instance_id: str) -> bool | None:
    """Whether ``proc`` carries this instance's marker; None when its environment is unreadable."""
    try:
        env = proc.environ()
    except (psutil.Error, OSError):
        return None
    if not env:
        return None  # an exiting process has no memory left to read the environment from
    return (
        env.get(ENV_INSTANCE) == instance_id and env.get(ENV_DATA_DIR) == str(data_dir) and in_own_namespace(proc.pid)
    )


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def describe_rc(rc: int) -> str:
    """``rc`` as Popen reports it; a shell or sandbox reports death by signal N as 128+N."""
    signum = -rc if rc < 0 else rc - 128 if 128 < rc < 128 + 65 else None
    if signum is not None:
        try:
            return f"signal {signal.Signals(signum).name}"
        except ValueError:
            return f"signal {signum}"
    return f"exit code {rc}"


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid``, or only ``pid`` if it leads none (never our own group)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        if pgid == pid and pgid != os.getpgrp():
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def reap(pid: int) -> int | None:
    """Collect a zombie child's exit status; None when it is not our child."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if got != pid:
        return None
    return os.waitstatus_to_exitcode(status)


class InstanceProcesses:
    """The host processes of one data dir's local instances: the ones this process started (to collect
    their exit status) and, through their markers, those an earlier nbfleet started."""

    def __init__(self, data_dir: Path, owner: Callable[[int], bool] | None = None):
        """``owner(uid)``: whether a process of that real uid may be an instance's (see ``marked_processes``)."""
        self.data_dir = data_dir
        self.owner = owner
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # started here, to reap them

    def marked(self, instance_id: str | None = None) -> list[tuple[str, psutil.Process]]:
        return marked_processes(self.data_dir, instance_id, self.owner)

    def track(self, instance_id: str, proc: subprocess.Popen[bytes]) -> None:
        self._children[instance_id] = proc

    async def terminate(self, instance_id: str, grace: float) -> None:
        """SIGTERM the instance's Jupyter server (it shuts its kernels down itself), SIGKILL what is left
        after ``grace`` seconds."""
        roots = [p for _, p in self.marked(instance_id)]
        for root in roots:
            _signal_server(root, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while roots and time.monotonic() < deadline:
            self._poll(instance_id)
            roots = [p for p in roots if alive(p)]
            if roots:
                await asyncio.sleep(0.02)
        if roots:
            log.warning("instance %s: the server ignored SIGTERM for %.1f s; killing", instance_id, grace)
        await asyncio.to_thread(self.kill_now, instance_id)  # it waits for the ends: not on the event loop

    def kill_now(self, instance_id: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        """SIGKILL everything of the instance, synchronously (also while a task is being cancelled)."""
        roots = [p for _, p in self.marked(instance_id)]
        if proc is not None and proc.poll() is None and all(r.pid != proc.pid for r in roots):
            try:
                roots.append(psutil.Process(proc.pid))
            except psutil.Error:
                pass
        for root in roots:
            # The sandbox's first process takes its whole PID namespace with it; single-user servers
            # and kernels are found by their markers.
            for process in descendants(root):
                try:
                    process.kill()
                except psutil.Error:
                    pass
            signal_group(root.pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            self._poll(instance_id)
            if not self.marked(instance_id):
                break
            time.sleep(0.01)
        child = self._children.get(instance_id)
        if child is not None and child.poll() is not None:
            del self._children[instance_id]

    def exit_code(self, pid: int) -> int | None:
        """Exit status of an ended server we can still collect (our own child), else None."""
        child = self._child(pid)
        return child.poll() if child is not None else reap(pid)

    async def wait_exit_code(self, pid: int, timeout: float = 1.0) -> int | None:
        """The exit status of an ending server, waiting briefly if it is our child.

        A multi-threaded leader shows as a zombie before its other threads are gone, and only
        becomes collectable after them."""
        child = self._child(pid)
        if child is None:
            return reap(pid)
        deadline = time.monotonic() + timeout
        while child.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return child.returncode

    def _child(self, pid: int) -> subprocess.Popen[bytes] | None:
        return next((c for c in self._children.values() if c.pid == pid), None)

    def _poll(self, instance_id: str) -> None:
        child = self._children.get(instance_id)
        if child is not None:
            child.poll()


def _signal_server(root: psutil.Process, sig: int) -> None:
    """Ask the instance to end: signal its processes inside the sandbox (the sandbox's first process
    ends by itself once they are gone), or, unsandboxed, ``root`` (the Jupyter server) and its group."""
    members = [p for p in descendants(root) if not in_own_namespace(p.pid)]
    if not members:
        signal_group(root.pid, sig)
        return
    for process in members:
        if not _namespace_init(process.pid):
            try:
                process.send_signal(sig)
            except psutil.Error:
                pass


def _namespace_init(pid: int) -> bool:
    """Whether ``pid`` is the first process (PID 1) of its PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return line.split()[-1] == "1"
    except OSError:
        pass
    return False
