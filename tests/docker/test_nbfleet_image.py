"""nbfleet's own image (the Dockerfile at the root): built on the project's Debian base, as the machine has
no Docker Hub, and run as a cluster would run it (read-only root, the data dir and /tmp in memory, no
capabilities): `/health` answers, the Docker health check passes, it runs as uid 10001 with the
PostgreSQL driver installed.

The build goes through the engine's host network (the CI engine has no bridge; the build installs from the
package index) and is labelled with the digest of its inputs, like the catalogue's images: a second run of
unchanged inputs finds the image and does not build.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from nbfleet.runtime.docker_images import LABEL_RECIPE, DockerImageBuilder

from ..procs import free_port
from .conftest import _engine_or_reason

pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "nbfleet/server:test"
CA_DIR = Path("/usr/local/share/ca-certificates")
BUILD_TIMEOUT = 1800
READY_SECONDS = 60
HEALTHY_SECONDS = 60


@pytest.fixture(scope="module")
def client():
    engine, why = _engine_or_reason()
    if engine is None:
        if os.environ.get("NBFLEET_REQUIRE_DOCKER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    yield engine
    engine.close()


def context_files() -> dict[str, bytes]:
    """What .dockerignore lets through (pyproject.toml, README.md, src/, deploy/ca/), with the host's own
    certificate authorities added to deploy/ca/ so that the build trusts what the host trusts."""
    files = {name: (ROOT / name).read_bytes() for name in ("Dockerfile", "pyproject.toml", "README.md")}
    for top in ("src", "deploy/ca"):
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if path.is_file() and not any(p == "__pycache__" or p.endswith(".egg-info") for p in parts):
                files["/".join(parts)] = path.read_bytes()
    for pem in sorted(CA_DIR.glob("*.crt")) if CA_DIR.is_dir() else []:
        files[f"deploy/ca/host-{pem.name}"] = pem.read_bytes()
    return files


def tar_of(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def digest_of(files: dict[str, bytes], base_id: str) -> str:
    h = hashlib.sha256(base_id.encode())
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def build_image(client) -> tuple[str, float | None]:
    """The image's reference and the seconds its build took (None: found, inputs unchanged)."""
    from docker.errors import BuildError, ImageNotFound

    builder = DockerImageBuilder(
        client,
        base_image=os.environ.get("NBFLEET_DOCKER_BASE_IMAGE") or None,
        mirror=os.environ.get("NBFLEET_DOCKER_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
    )
    base = builder.base()  # debootstrapped once per engine (the docker tier builds the same)
    files = context_files()
    digest = digest_of(files, client.images.get(base).id)
    try:
        if (client.images.get(IMAGE).labels or {}).get(LABEL_RECIPE) == digest:
            return IMAGE, None
    except ImageNotFound:
        pass
    started = time.monotonic()
    try:
        client.images.build(
            fileobj=tar_of(files),
            custom_context=True,
            tag=IMAGE,
            buildargs={"BASE": base},
            network_mode="host",
            labels={LABEL_RECIPE: digest},
            rm=True,
            forcerm=True,
            timeout=BUILD_TIMEOUT,
        )
    except BuildError as exc:
        log = "".join(c.get("stream", "") for c in exc.build_log if isinstance(c, dict))
        pytest.fail(f"building nbfleet's image failed: {exc.msg}\n{log[-3000:]}")
    return IMAGE, time.monotonic() - started


def test_the_image_serves_health_as_a_cluster_runs_it(client):
    image, seconds = build_image(client)
    print("nbfleet image: " + ("unchanged, not rebuilt" if seconds is None else f"built in {seconds:.0f} s"))
    config = client.images.get(image).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["nbfleet", "serve"]
    assert "8080/tcp" in (config.get("ExposedPorts") or {})
    assert config["Healthcheck"]["Test"][0] == "CMD"

    port = free_port()
    container = client.containers.run(
        image,
        detach=True,
        name=f"nbfleet-image-test-{uuid.uuid4().hex[:8]}",
        network_mode="host",  # the CI engine has no bridge; the port is a free one of the host's
        environment={"NBFLEET_HOST": "127.0.0.1", "NBFLEET_PORT": str(port), "NBFLEET_RUNTIME": "simulated"},
        # As the manifests run it: read-only root, the data dir and /tmp writable (emptyDirs there).
        read_only=True,
        tmpfs={"/var/lib/nbfleet": "uid=10001,gid=10001,mode=0700", "/tmp": "mode=1777"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    try:
        deadline = time.monotonic() + READY_SECONDS
        health = None
        while time.monotonic() < deadline:
            container.reload()
            assert container.status in ("created", "running"), container.logs().decode()[-3000:]
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert health is not None and health.status_code == 200, container.logs().decode()[-3000:]
        assert health.json()["status"] == "ok"
        assert health.json()["runtime"] == "simulated"
        # Off without NBFLEET_METRICS_TOKEN, as everywhere.
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404

        uid = container.exec_run(["id", "-u"])
        assert uid.output.decode().strip() == "10001"
        driver = container.exec_run(["python3", "-c", "import psycopg; print(psycopg.__version__)"])
        assert driver.exit_code == 0, driver.output.decode()

        # The image's own HEALTHCHECK (Python, no curl) on the port the environment names.
        deadline = time.monotonic() + HEALTHY_SECONDS
        state: dict = {}
        while time.monotonic() < deadline:
            container.reload()
            state = container.attrs["State"].get("Health") or {}
            if state.get("Status") == "healthy":
                break
            time.sleep(1)
        assert state.get("Status") == "healthy", json.dumps(state)[-2000:]
    finally:
        container.remove(force=True)
