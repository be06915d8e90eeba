"""Commands run inside a running local instance, for SSH sessions: how to find its sandbox and enter it.

The session is the instance's own: the sandbox's namespaces (its mounts, its processes, its network with
only its own loopback), its cgroups (the flavor's limits count the session too), ``ma-user`` without
capabilities and with no_new_privs, the environment its kernels get, and ``/home/ma-user/work``. Nothing is
read from inside the sandbox to get there: the process to enter is found from the host's side (below the
process nbfleet started, see ``processes.py``), the environment is computed from what nbfleet recorded at
start, and the launcher (``enter.py``) changes into the work directory only after it became ma-user.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .processes import in_own_namespace

ENTER = Path(__file__).with_name("enter.py")

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = {
    "user": CLONE_NEWUSER,
    "mnt": CLONE_NEWNS,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "cgroup": CLONE_NEWCGROUP,
}


class SessionRefused(Exception):
    """No session can be opened in this instance; the message can be shown to the SSH client."""


@dataclass
class SessionEntry:
    """How to start commands in one instance. ``pidfd`` is open until ``close``."""

    pidfd: int
    flags: int
    env: dict[str, str]
    groups: list[str] = field(default_factory=list)
    uid: int = 1000
    gid: int = 100
    cwd: str = "/home/ma-user/work"
    pid: int | None = None  # the process ``pidfd`` names, whose limits the session takes

    # The terminal is made inside (and comes back over a socket), as sessions of the sandbox need.
    terminal_inside = True

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.pidfd,)

    @property
    def private_network(self) -> bool:
        """Whether the instance has a loopback of its own (else forwarding would reach the host's)."""
        return bool(self.flags & CLONE_NEWNET)

    @property
    def python(self) -> str:
        return os.path.join(self.env["VIRTUAL_ENV"], "bin", "python")

    @property
    def launch_env(self) -> dict[str, str]:
        """The launcher's own environment: nothing of nbfleet's (its secrets) reaches it."""
        return {}

    def argv(self, command: list[str], *, tty: int | None = None, env: dict[str, str] | None = None) -> list[str]:
        """The host command line that runs ``command`` in the instance (pass ``pass_fds=(pidfd,)``).

        ``tty``: a Unix socket (also passed) over which the command's terminal comes back."""
        spec = {
            "pidfd": self.pidfd,
            "pid": self.pid,
            "flags": self.flags,
            "groups": self.groups,
            "uid": self.uid,
            "gid": self.gid,
            "cwd": self.cwd,
            "argv": command,
            "env": {**self.env, **(env or {})},
            "tty": tty,
        }
        return [sys.executable, "-I", "-S", str(ENTER), json.dumps(spec)]

    def close(self) -> None:
        try:
            os.close(self.pidfd)
        except OSError:
            pass


@dataclass
class ContainerEntry:
    """How to start commands in an instance's container: an exec through the Docker Engine API
    (``docker_exec.py``), on a terminal nbfleet makes on the host for the exec's own terminal."""

    container: str
    docker_host: str | None
    env: dict[str, str]
    private_network: bool
    user: str = "1000:100"
    cwd: str = "/home/ma-user/work"
    python: str = "python"
    terminal_inside = False
    pass_fds: tuple[int, ...] = ()

    def argv(self, command: list[str], *, tty: bool = False, env: dict[str, str] | None = None) -> list[str]:
        spec = {
            "container": self.container,
            "docker_host": self.docker_host,
            "argv": command,
            "tty": bool(tty),
            "env": {**self.env, **(env or {})},
            "user": self.user,
            "cwd": self.cwd,
        }
        # -I: the helper imports nothing from the current directory or PYTHON* variables
        return [sys.executable, "-I", "-m", "nbfleet.runtime.docker_exec", json.dumps(spec)]

    @property
    def launch_env(self) -> dict[str, str]:
        """Only what the helper needs to reach the engine: nothing else of nbfleet's (its secrets)."""
        return {k: v for k, v in os.environ.items() if k == "PATH" or k.startswith("DOCKER_")}

    def close(self) -> None:
        pass


def sandbox_process(root: psutil.Process) -> psutil.Process | None:
    """A process inside the sandbox below ``root`` (the process nbfleet started): the first child of the
    sandbox's PID 1. The outer bwrap and PID 1 itself are in user namespaces of their own (the sandbox
    nests one more so that nothing inside can make new ones); only their children are in all of the
    sandbox's namespaces."""
    try:
        members = [p for p in root.children(recursive=True) if not in_own_namespace(p.pid)]
    except psutil.Error:
        return None
    inits = {p.pid for p in members if _ns_pid(p.pid) == 1}
    candidates = sorted(
        (p for p in members if p.pid not in inits and _ppid(p) in inits), key=lambda p: _ns_pid(p.pid) or 1 << 30
    )
    return candidates[0] if candidates else None


def open_entry(root: psutil.Process, env: dict[str, str], groups: list[str]) -> SessionEntry:
    """A pidfd on the sandbox's process below ``root``, checked again once open (the pid names the
    same process from then on, or entering fails)."""
    target = sandbox_process(root)
    if target is None:
        raise SessionRefused("the instance is not running")
    try:
        pidfd = os.pidfd_open(target.pid)
    except OSError:
        raise SessionRefused("the instance is not running") from None
    again = sandbox_process(root)
    if again is None or again.pid != target.pid:
        os.close(pidfd)
        raise SessionRefused("the instance is not running")
    flags = 0
    for name, flag in NAMESPACES.items():
        try:
            if os.readlink(f"/proc/{target.pid}/ns/{name}") != os.readlink(f"/proc/self/ns/{name}"):
                flags |= flag
        except OSError:
            pass
    if not flags & CLONE_NEWUSER or not flags & CLONE_NEWPID or not flags & CLONE_NEWNS:
        os.close(pidfd)  # not a sandbox: a session there would run on the host
        raise SessionRefused("the instance has no sandbox to open a session in")
    return SessionEntry(pidfd=pidfd, flags=flags, env=env, groups=groups, pid=target.pid)


def _ns_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def _ppid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:
        return None
