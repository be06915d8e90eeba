"""Run one command inside a running instance's sandbox: its namespaces, its cgroups, as ma-user.

Started by nbfleet (``sessions.py``) as ``python -I -S enter.py '<json>'`` with a pidfd of a process
inside the sandbox on a file descriptor; it imports nothing but the standard library, so no file outside
the interpreter is read. Steps, in this order because each needs what the one before leaves:

1. join the instance's cgroups (host paths, while still on the host) so its limits apply to the session;
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
import fcntl   # imported here: after setns the host's modules are out of reach
import json
import os
import signal
import socket
import struct
import sys

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
TIOCSCTTY = 0x540E
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def fail(message, code=126):
    os.write(2, f"nbfleet: {message}\n".encode())
    os._exit(code)


def main():
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
    if os.geteuid() == 0:
        os.setgroups([])
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
    if libc.setns(spec["pidfd"], spec["flags"]) != 0:
        fail(f"the instance is not running ({os.strerror(ctypes.get_errno())})")
    os.close(spec["pidfd"])
    child = os.fork()
    if child == 0:
        run(spec, libc)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda number, frame: os.kill(child, number))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:   # died of a signal: die of the same one, so the channel reports it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def run(spec, libc):
    try:
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


def terminal(channel):
    """A terminal of the sandbox's own devpts, made as ma-user, so that programs inside find it by name
    (``tty``); its other side goes back to nbfleet over ``channel`` and the command runs on this one."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR)   # no path lookup: the peer of this very master
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
