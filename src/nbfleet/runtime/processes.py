"""Finding and ending the processes of local instances.

The process nbfleet starts for an instance (the sandbox's outer ``bwrap``, or the Jupyter server itself in
single-user mode) carries ``NBFLEET_INSTANCE_ID`` and ``NBFLEET_DATA_DIR`` in its environment, so it is found
even after nbfleet restarted. Only processes in nbfleet's own PID namespace count: whatever runs inside a
sandbox lives in a namespace of its own and can write anything into its environment, so a marker there
proves nothing. The sandbox's processes are reached as descendants of its outer process, and die together
with its namespace's first process.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

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


def marked_processes(data_dir: Path, instance_id: str | None = None) -> list[tuple[str, psutil.Process]]:
    """(instance id, process) for every live process this runtime's data dir started (outside sandboxes)."""
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
        if iid and env.get(ENV_DATA_DIR) == str(data_dir) and instance_id in (None, iid) \
                and in_own_namespace(proc.pid):
            found.append((iid, proc))
    return found


def belongs(proc: psutil.Process, data_dir: Path, instance_id: str) -> bool | None:
    """Whether ``proc`` carries this instance's marker; None when its environment is unreadable."""
    try:
        env = proc.environ()
    except (psutil.Error, OSError):
        return None
    if not env:
        return None  # an exiting process has no memory left to read the environment from
    return (env.get(ENV_INSTANCE) == instance_id and env.get(ENV_DATA_DIR) == str(data_dir)
            and in_own_namespace(proc.pid))


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
