"""Two replicas with the local runtime on one host, one data dir and one PostgreSQL database: real Jupyter
servers created and stopped through alternating replicas, reached through either replica's proxy."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from .. import notebook_http
from ..runtime.local_helpers import instance_servers
from .conftest import check_converged, wait_settled


def jupyter_servers(data_dir: Path) -> dict[str, int]:
    """Instance id -> pid of the jupyter-server processes started for ``data_dir``."""
    return instance_servers(data_dir)


def through(endpoint: str, nb: dict, path: str = "api/status") -> int:
    """The status of a request for the instance through the replica at ``endpoint`` (its port)."""
    port = endpoint.rsplit(":", 1)[1]
    return notebook_http.get(
        f"http://{nb['id']}.nb.localhost:{port}/{path}", headers={"Authorization": f"token {nb['token']}"}
    ).status_code


def test_local_runtime_on_two_replicas(pg_db, fleet_factory):
    fleet = fleet_factory(pg_db.url, 2, runtime="local", shared_data_dir=True)
    data_dir = fleet.replicas[0].data_dir
    clients = [fleet.client(0), fleet.client(1)]
    endpoints = [r.endpoint for r in fleet.replicas]
    try:
        ids = [clients[i % 2].create(f"local-{i}")["id"] for i in range(3)]
        nbs = [clients[(i + 1) % 2].wait_status(nid, "RUNNING", timeout=90) for i, nid in enumerate(ids)]
        assert set(jupyter_servers(data_dir)) == set(ids)
        for nb in nbs:  # every instance answers through both replicas' proxies
            assert [through(e, nb) for e in endpoints] == [200, 200], nb["id"]

        # Stop through the replica that did not create it; the process goes, both proxies refuse.
        clients[1].ok("POST", f"/notebooks/{ids[0]}/stop")
        clients[0].wait_status(ids[0], "STOPPED", timeout=30)
        assert ids[0] not in jupyter_servers(data_dir)
        assert [through(e, nbs[0]) for e in endpoints] == [404, 404]

        # Start again through the other one; the new server (new token) answers through both.
        clients[0].ok("POST", f"/notebooks/{ids[0]}/start")
        restarted = clients[1].wait_status(ids[0], "RUNNING", timeout=90)
        assert [through(e, restarted) for e in endpoints] == [200, 200]
        assert through(endpoints[1], nbs[0]) == 403  # the old token is gone with the old server

        # Delete through alternating replicas; nothing keeps running.
        for i, nid in enumerate(ids):
            clients[i % 2].ok("DELETE", f"/notebooks/{nid}")
        wait_settled(pg_db, timeout=60)
        deadline = time.monotonic() + 10
        while jupyter_servers(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert jupyter_servers(data_dir) == {}
        assert not any((data_dir / "instances" / nid).exists() for nid in ids)
        check_converged(pg_db, max_schedules=1)
    finally:
        for client in clients:
            client.close()
        fleet.stop()
        for pid in jupyter_servers(data_dir).values():  # only ours: marked with this test's data dir
            psutil.Process(pid).kill()
