"""``nbfleet serve --workers N``: N serving processes behind one listening socket.

Why processes: a request's Python (routing, signature check, rendering) runs under one GIL, so one process
uses one core however many connections it serves (docs/benchmarks.md). N processes on one PostgreSQL
database are N replicas (docs/operations.md), which already share all work safely; this only saves
running them by hand behind a load balancer on one host.

The parent binds the address (so a port in use is one clear error), one socket per worker, then starts
each worker as ``nbfleet serve`` with the same arguments and environment plus ``--listen-fd``: the kernel
spreads new connections over the workers' sockets. Only the first worker runs the SSH gateway (one port).
A worker that dies is started again (after a second; longer, up to a minute, while it keeps dying at
once); SIGTERM or SIGINT to the parent stops every worker gracefully (SIGKILL only after two minutes) and
then the parent.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("nbfleet.workers")

RESTART_DELAY_S = 1.0  # doubled for each quick death in a row, up to RESTART_MAX_S
RESTART_MAX_S = 60.0
STEADY_S = 60.0  # a worker that ran this long before it died starts again after RESTART_DELAY_S
# A worker's shutdown ends its connections within 10 s, then stops its reconciler, warm pool and store,
# which may take longer (stop_notebooks_on_exit stops every notebook); only a worker still alive after this
# is killed.
STOP_GRACE_S = 120.0


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker, all on the address (SO_REUSEPORT): the kernel spreads new
    connections over them. One socket shared by all would not: the first worker woken accepts every
    connection waiting (asyncio takes up to a hundred per wake-up), so a burst of connections (a client's
    pool) would all land on one worker. SO_REUSEPORT lets only processes of the same user share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # the others join the first one's port (port 0: the one it got)
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def worker_argv(argv: Sequence[str], fd: int) -> list[str]:
    """The worker's command: this ``nbfleet serve`` again, on the inherited socket."""
    return [sys.executable, "-m", "nbfleet.cli.main", *argv, "--listen-fd", str(fd)]


class Workers:
    def __init__(self, argv: Sequence[str], sockets: list[socket.socket]):
        self.argv = list(argv)
        self.count = len(sockets)
        # Worker i listens on sockets[i]; the parent keeps them open, so connections the kernel gives a
        # worker's socket while that worker is being replaced wait for the new one.
        self.sockets = sockets
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.deaths: dict[int, int] = {}  # quick deaths in a row, per worker
        self.stopping = False

    def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        if index > 0:
            env["NBFLEET_SSH_PORT"] = "0"  # one SSH gateway: the first worker's
        fd = self.sockets[index].fileno()
        parent = os.getpid()
        self.procs[index] = subprocess.Popen(
            worker_argv(self.argv, fd), env=env, pass_fds=(fd,), preexec_fn=lambda: _end_with_parent(parent)
        )
        self.started[index] = time.monotonic()
        log.info("worker %d started (process %d)", index, self.procs[index].pid)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.count):
            self._spawn(index)
        restart_at: dict[int, float] = {}
        while not self.stopping:
            for index, proc in list(self.procs.items()):
                if index in restart_at or proc.poll() is None:
                    continue
                quick = time.monotonic() - self.started[index] < STEADY_S
                self.deaths[index] = self.deaths.get(index, 0) + 1 if quick else 1
                delay = min(RESTART_MAX_S, RESTART_DELAY_S * 2 ** (self.deaths[index] - 1))
                code = proc.returncode
                log.warning(
                    "worker %d (process %d) exited with %s; starting it again in %.0f s", index, proc.pid, code, delay
                )
                restart_at[index] = time.monotonic() + delay
            for index, at in list(restart_at.items()):
                if time.monotonic() >= at and not self.stopping:
                    del restart_at[index]
                    self._spawn(index)
            time.sleep(0.2)
        return self._shutdown()

    def _shutdown(self) -> int:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        codes = []
        for proc in self.procs.values():
            try:
                codes.append(proc.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        for sock in self.sockets:
            sock.close()
        # uvicorn ends a server stopped by SIGTERM by raising that signal again once it shut down cleanly
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def _end_with_parent(parent: int) -> None:
    """In the worker, before it runs: SIGTERM when the parent dies, however it dies (a SIGKILL included).
    A parent that died before this was set cannot signal any more: then the worker does not run at all."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def run_workers(argv: Sequence[str], host: str, port: int, count: int) -> int:
    try:
        sockets = listening_sockets(host, port, count)
    except OSError as exc:
        raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return Workers(argv, sockets).run()
