"""Finding and ending the processes of local instances.

Every process of an instance carries ``NBFLEET_INSTANCE_ID`` and ``NBFLEET_DATA_DIR`` in its
environment (kernels and terminals inherit them), so they are found even after nbfleet restarted and
even when jupyter_client put kernels in sessions of their own.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

ENV_INSTANCE = "NBFLEET_INSTANCE_ID"
ENV_DATA_DIR = "NBFLEET_DATA_DIR"


def marked_processes(data_dir: Path, instance_id: str | None = None) -> list[tuple[str, psutil.Process]]:
    """(instance id, process) for every live process this runtime's data dir started."""
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
        if iid and env.get(ENV_DATA_DIR) == str(data_dir) and instance_id in (None, iid):
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
    return env.get(ENV_INSTANCE) == instance_id and env.get(ENV_DATA_DIR) == str(data_dir)


def describe_rc(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
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
