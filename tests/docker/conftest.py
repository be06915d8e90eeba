"""The Docker tier: a real engine, the catalogue's image built offline, nbfleet with ``--runtime docker``.

The engine is the one ``DOCKER_HOST`` names (``.ci/run`` starts its own dockerd and sets it). Without a
reachable engine the tier is skipped, saying so, except where ``NBFLEET_REQUIRE_DOCKER=1`` (CI) makes
that a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ..procs import ServerRestarts, SignedClient

IMAGE = "notebook-python3.11"


def _engine_or_reason():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client, ""
    except Exception as exc:  # no SDK, no DOCKER_HOST, no daemon
        return None, f"no Docker engine answers ({type(exc).__name__}: {exc}); .ci/run starts one"


@pytest.fixture(scope="session")
def engine():
    client, why = _engine_or_reason()
    if client is None:
        if os.environ.get("NBFLEET_REQUIRE_DOCKER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    # The catalogue's image, built once per engine (a second build of the same inputs is instant).
    done = subprocess.run(
        [sys.executable, "-m", "nbfleet.cli.main", "images", "build", IMAGE, "--runtime", "docker", "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr
    yield client
    client.close()


def owned(client, data_dir) -> tuple[list, list]:
    """The containers and volumes nbfleet made for ``data_dir``'s instances."""
    labels = {"label": [f"nbfleet.data-dir={data_dir.resolve()}"]}
    return client.containers.list(all=True, filters=labels), client.volumes.list(filters=labels)


def delete_all(client: SignedClient, timeout: float = 60) -> None:
    for nb in client.ok("GET", "/notebooks/all", {"limit": 50})["data"]:
        client.call("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + timeout
    while client.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def docker_server(engine, tmp_path):
    """A ``nbfleet serve --runtime docker`` of its own; whatever it leaves behind is removed after."""
    restarts = ServerRestarts(
        tmp_path / "data", "docker", {"NBFLEET_CLAIM_SECONDS": "5", "NBFLEET_OBSERVE_INTERVAL": "0.3"}
    )
    yield restarts.start
    restarts.kill_all()
    containers, volumes = owned(engine, tmp_path / "data")
    for container in containers:
        container.remove(force=True)
    for volume in volumes:
        volume.remove(force=True)
