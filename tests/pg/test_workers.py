"""``nbfleet serve --workers N`` on PostgreSQL: N replicas on one port, started and watched by one parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import psutil

from ..procs import ServeProcess, SignedClient


def workers_of(parent: psutil.Process, timeout: float = 30, *, besides: set[int] = frozenset()) -> list[psutil.Process]:
    """The parent's two worker processes (``--listen-fd`` in their command line), once both run."""
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in parent.children() if "--listen-fd" in " ".join(p.cmdline())]
        if len(found) == 2 and not {p.pid for p in found} & besides:
            return found
        assert time.monotonic() < deadline, [p.cmdline() for p in parent.children()]
        time.sleep(0.1)


def holders(workers: list[psutil.Process], port: int) -> set[int]:
    """Which workers hold an established connection to the port (accepted it)."""
    held = set()
    for worker in workers:
        for conn in worker.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr and conn.laddr.port == port:
                held.add(worker.pid)
    return held


def test_workers_share_one_port_survive_a_dead_worker_and_stop_together(pg_db, tmp_path):
    proc = ServeProcess(tmp_path / "data", env={"NBFLEET_DATABASE_URL": pg_db.url}, args=["--workers", "2"]).start()
    try:
        parent = psutil.Process(proc.proc.pid)
        workers = workers_of(parent)
        # Both accept on the one port: connections held open land on either (bounded: 200 at most).
        clients: list[httpx.Client] = []
        try:
            while holders(workers, proc.port) != {w.pid for w in workers}:
                assert len(clients) < 200, "every connection went to one worker"
                client = httpx.Client(base_url=proc.endpoint, timeout=10)
                assert client.get("/health").status_code == 200
                clients.append(client)
        finally:
            for client in clients:
                client.close()

        # Either worker does all of the work: a create is carried out whichever accepted it.
        api = SignedClient(proc.endpoint, proc.admin_creds())
        nb = api.create("two-workers")
        assert api.wait_status(nb["id"], "RUNNING", timeout=30)["status"] == "RUNNING"

        # A worker that dies is started again; the other one answers meanwhile.
        victim = workers[1]
        victim.kill()
        for _ in range(20):
            assert httpx.get(f"{proc.endpoint}/health", timeout=10).status_code == 200
        replaced = workers_of(parent, besides={victim.pid})
        assert workers[0].pid in {w.pid for w in replaced}
        assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"
        api.close()

        # SIGTERM to the parent stops every worker, gracefully.
        assert proc.terminate() == 0
        gone, alive = psutil.wait_procs(replaced, timeout=10)
        assert not alive
    finally:
        proc.kill()


def test_more_than_one_worker_is_refused_on_sqlite(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nbfleet.cli.main", "serve", "--workers", "2", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("NBFLEET_")},
    )
    assert result.returncode != 0 and "needs PostgreSQL" in result.stderr, result.stderr


def test_workers_end_with_their_parent_however_it_ends(pg_db, tmp_path):
    proc = ServeProcess(tmp_path / "data", env={"NBFLEET_DATABASE_URL": pg_db.url}, args=["--workers", "2"]).start()
    try:
        workers = workers_of(psutil.Process(proc.proc.pid))
        proc.kill()  # SIGKILL: the parent cannot pass anything on
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, [p.pid for p in alive]
    finally:
        proc.kill()
