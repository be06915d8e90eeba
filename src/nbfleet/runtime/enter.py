"""Run one command inside a running instance's sandbox: its namespaces, its cgroups, as ma-user.

Started by nbfleet (``sessions.py``) as ``python -I -S enter.py '<json>'`` with a pidfd of a process
inside the sandbox on a file descriptor; it imports nothing but the standard library, so no file outside
the interpreter is read. Steps, in this order because each needs what the one before leaves:

1. join the instance's cgroups (host paths, while still on the host) so its limits apply to the session,
   and take the entered process's resource limits and CPU affinity (the flavor's limits when they are
   rlimits rather than cgroups); they are read before ``setns``, which then proves that the pid still
   named the pidfd's process when they were read;
2. drop supplementary groups (root) and set no_new_privs: nothing run later can gain privileges;
3. ``setns(pidfd, …)``: all namespaces of that process at once. A pidfd names one process for its whole
   life, so a pid recycled between finding and entering cannot send the session elsewhere;
4. fork (a new PID namespace applies to children only); the child becomes ma-user (no capabilities
   remain), changes to the work directory *as ma-user*, and executes the command with the given
   environment. The parent stays outside the sandbox's PID namespace, invisible from inside, and only
   waits, passing on termination signals and the exit status.

When the sandbox's first process exits, the kernel kills everything in its PID namespace, the command
included; this process then exits too, which ends the SSH channel.
"""

import ctypes
import fcntl  # imported here: after setns the host's modules are out of reach
import json
import os
import resource
import signal
import socket
import struct
import sys
from typing import Any, NoReturn

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
TIOCSCTTY = 0x540E
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
# The per-process limits a session takes from the instance (its kernels inherit the same from Jupyter), by
# their names in /proc/<pid>/limits: readable without CAP_SYS_RESOURCE, which prlimit() on another
# process needs.
LIMITS = {
    "Max cpu time": "RLIMIT_CPU",
    "Max file size": "RLIMIT_FSIZE",
    "Max data size": "RLIMIT_DATA",
    "Max stack size": "RLIMIT_STACK",
    "Max core file size": "RLIMIT_CORE",
    "Max processes": "RLIMIT_NPROC",
    "Max open files": "RLIMIT_NOFILE",
    "Max locked memory": "RLIMIT_MEMLOCK",
    "Max address space": "RLIMIT_AS",
}


def fail(message: str, code: int = 126) -> NoReturn:
    os.write(2, f"nbfleet: {message}\n".encode())
    os._exit(code)


def main() -> None:
    spec = json.loads(sys.argv[1])
    # Only stdin, stdout, stderr and what this needs go in: an event loop may hand down duplicates of
    # its pipes (uvloop does), and nothing of nbfleet's may reach the sandbox.
    keep = {0, 1, 2, spec["pidfd"]} | ({spec["tty"]} if spec["tty"] is not None else set())
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    libc = ctypes.CDLL(None, use_errno=True)
    for group in spec["groups"]:
        fd = os.open(os.path.join(group, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
    limits = instance_limits(spec.get("pid"))
    if os.geteuid() == 0:
        os.setgroups([])
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
    if libc.setns(spec["pidfd"], spec["flags"]) != 0:
        fail(f"the instance is not running ({os.strerror(ctypes.get_errno())})")
    os.close(spec["pidfd"])
    child = os.fork()
    if child == 0:
        run(spec, libc, limits)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda number, frame: os.kill(child, number))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # died of a signal: die of the same one, so the channel reports it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def instance_limits(pid: int | None) -> tuple[dict[str, tuple[int, int]], set[int]]:
    """The resource limits and CPU affinity of ``pid`` (the process the pidfd names), or fail."""
    if pid is None:
        fail("the instance is not running")
    limits: dict[str, tuple[int, int]] = {}
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                for label, name in LIMITS.items():
                    if line.startswith(label + " "):
                        soft, hard = line[len(label) :].split()[:2]
                        limits[name] = (_limit(soft), _limit(hard))
        cpus = os.sched_getaffinity(pid)
    except (OSError, ValueError) as exc:
        fail(f"the instance is not running ({exc})")
    if len(limits) != len(LIMITS):
        fail("the instance's limits cannot be read")
    return limits, cpus


def _limit(text: str) -> int:
    return resource.RLIM_INFINITY if text == "unlimited" else int(text)


def apply_limits(limits: tuple[dict[str, tuple[int, int]], set[int]]) -> None:
    values, cpus = limits
    for name, (soft, hard) in values.items():
        which = getattr(resource, name)
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError):
            # Higher than this process's own: then its own (lower) limit stays, which binds more.
            current = resource.getrlimit(which)
            if not _at_most(current[1], hard):
                fail(f"cannot apply the instance's {name}")
            resource.setrlimit(which, (min_limit(soft, current[1]), current[1]))
    os.sched_setaffinity(0, cpus)


def _at_most(a: int, b: int) -> bool:
    return b == resource.RLIM_INFINITY or (a != resource.RLIM_INFINITY and a <= b)


def min_limit(a: int, b: int) -> int:
    return a if _at_most(a, b) else b


def run(spec: dict[str, Any], libc: ctypes.CDLL, limits: tuple[dict[str, tuple[int, int]], set[int]]) -> NoReturn:
    try:
        apply_limits(limits)
        os.setsid()
        os.setresgid(spec["gid"], spec["gid"], spec["gid"])
        os.setresuid(spec["uid"], spec["uid"], spec["uid"])
        if spec["tty"] is not None:
            terminal(spec["tty"])
        # Changing the uid cleared any earlier setting; the session ends with whoever waits for it.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.chdir(spec["cwd"])
        os.umask(0o022)
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        fail(f"cannot start {spec['argv'][0]}: {exc.strerror}", 127)


def terminal(channel: int) -> None:
    """A terminal of the sandbox's own devpts, made as ma-user, so that programs inside find it by name
    (``tty``); its other side goes back to nbfleet over ``channel`` and the command runs on this one."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR)  # no path lookup: the peer of this very master
    with socket.socket(fileno=channel) as sock:
        socket.send_fds(sock, [b"t"], [master])
    os.close(master)
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


if __name__ == "__main__":
    main()
