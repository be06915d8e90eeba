"""nbfleet with ``--runtime docker``, end to end through the official SDK and nbfleet's one port."""

from __future__ import annotations

import json
import time

import pytest
from huaweicloudsdkmodelarts.v1 import (
    CreateNotebookRequest,
    DeleteNotebookRequest,
    ListImageRequest,
    NotebookCreateRequest,
    ShowNotebookRequest,
    StartNotebookRequest,
    StopNotebookRequest,
    VolumeMountRequest,
)
from sqlalchemy import create_engine, text

from .. import notebook_http
from ..jupyter_client import execute, start_kernel
from ..procs import ServeProcess
from ..sdk.conftest import make_client
from .conftest import owned

# runtime_only: the engine's containers are what is checked; the store work is the API's ordinary work,
# which the other tiers check on PostgreSQL (.ci/run runs this tier once).
pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]


def sdk(server: ServeProcess):
    c = server.creds
    return make_client(server.endpoint, c["ak"], c["sk"], c["project_id"])


def create(client, name: str, flavor: str = "modelarts.vm.cpu.2u", image: str = "notebook-python3.11") -> str:
    image_id = next(i.id for i in client.list_image(ListImageRequest()).data if i.name == image)
    return client.create_notebook(
        CreateNotebookRequest(
            body=NotebookCreateRequest(
                name=name,
                image_id=image_id,
                flavor=flavor,
                volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
            )
        )
    ).id


def wait(client, notebook_id: str, *statuses: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        nb = client.show_notebook(ShowNotebookRequest(id=notebook_id))
        if nb.status in statuses:
            return nb
        assert time.monotonic() < deadline, f"{notebook_id} stayed {nb.status}: {nb.fail_reason}"
        time.sleep(0.1)


def base(nb) -> str:
    return nb.url.rsplit("/lab", 1)[0]


def run(nb, code: str) -> str:
    return execute(base(nb), nb.token, start_kernel(base(nb), nb.token), code)


def test_a_notebook_runs_in_a_container_of_its_own(engine, docker_server):
    server = docker_server()
    client = sdk(server)
    nb = wait(client, create(client, "boxed"), "RUNNING")
    assert run(nb, "6*7") == "42"
    [container], [volume] = owned(engine, server.data_dir)
    assert container.labels["nbfleet.instance"] == nb.id and volume.name == f"nbfleet-{nb.id}-work"
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["NetworkMode"] == "none" and host["Memory"] == 8192 * 2**20 and host["NanoCpus"] == 2 * 10**9
    assert container.attrs["Config"]["User"] == "1000:100"
    assert json.loads(notebook_http.get(f"{server.endpoint}/health").text)["isolation"]["mechanism"] == "docker"


def test_work_survives_stop_and_start_and_delete_removes_container_and_volume(engine, docker_server):
    server = docker_server()
    client = sdk(server)
    nb = wait(client, create(client, "persist"), "RUNNING")
    run(nb, "open('kept.txt', 'w').write('still here')")
    client.stop_notebook(StopNotebookRequest(id=nb.id))
    wait(client, nb.id, "STOPPED")
    containers, volumes = owned(engine, server.data_dir)
    assert containers == [] and len(volumes) == 1  # the container goes with the stop, the volume stays
    client.start_notebook(StartNotebookRequest(id=nb.id))
    nb = wait(client, nb.id, "RUNNING")
    assert run(nb, "print(open('kept.txt').read())").strip() == "still here"
    client.delete_notebook(DeleteNotebookRequest(id=nb.id))
    deadline = time.monotonic() + 60
    while any(owned(engine, server.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owned(engine, server.data_dir) == ([], [])
    assert not (server.data_dir / "instances" / nb.id).exists()


def test_the_flavor_memory_limit_kills_an_allocation_above_it_and_the_server_lives(engine, docker_server, tmp_path):
    flavors = tmp_path / "flavors.json"
    flavors.write_text(
        json.dumps(
            [
                {
                    "id": "tiny.512m",
                    "name": "tiny",
                    "description": "test",
                    "arch": "x86_64",
                    "category": "CPU",
                    "feature": "NOTEBOOK",
                    "free": False,
                    "vcpus": 1,
                    "memory_gb": 0.5,
                }
            ]
        )
    )
    server = docker_server(NBFLEET_FLAVORS_FILE=str(flavors))
    client = sdk(server)
    nb = wait(client, create(client, "tiny", flavor="tiny.512m"), "RUNNING")
    with pytest.raises(Exception):  # noqa: B017 - the kernel's death surfaces as a closed socket, a timeout or an error, as timing has it
        run(nb, "b = bytearray(1536 * 2**20); b[::4096] = b'x' * len(b[::4096]); 1")
    status = notebook_http.get(f"{base(nb)}/api/status", headers={"Authorization": f"token {nb.token}"})
    assert status.status_code == 200
    assert client.show_notebook(ShowNotebookRequest(id=nb.id)).status == "RUNNING"


def test_a_container_reaches_nothing_of_nbfleet_or_of_other_instances(engine, docker_server):
    server = docker_server()
    client = sdk(server)
    first = wait(client, create(client, "first"), "RUNNING")
    other = wait(client, create(client, "other"), "RUNNING")
    run(other, "open('other-secret.txt', 'w').write('x')")
    data = server.data_dir.resolve()
    probe = f"""
import json, os, socket
out = {{}}
for path in {
        json.dumps([str(data), str(data / "secret.key"), str(data / "nbfleet.db"), str(data / "instances" / other.id)])
    }:
    try:
        os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read(1)
        out[path] = 'read'
    except OSError as exc:
        out[path] = type(exc).__name__
found = [os.path.join(d, f) for d, _, fs in os.walk('/') if not d.startswith(('/proc', '/sys')) for f in fs
         if f in ('other-secret.txt', 'secret.key', 'nbfleet.db')]
try:
    os.kill({server.proc.pid}, 0)
    out['kill'] = 'ok'
except OSError as exc:
    out['kill'] = type(exc).__name__
try:
    socket.create_connection(('127.0.0.1', {server.port}), timeout=2)
    out['nbfleet port'] = 'connected'
except OSError as exc:
    out['nbfleet port'] = type(exc).__name__
out['found'] = found
out['uid'] = os.getuid()
print(json.dumps(out))
"""
    out = json.loads(run(first, probe).strip().splitlines()[-1])
    assert out.pop("found") == [] and out.pop("uid") == 1000
    assert out.pop("nbfleet port") != "connected"  # no network at all
    assert out.pop("kill") in ("ProcessLookupError", "PermissionError")
    assert all(v != "read" for v in out.values()), out


def test_links_a_container_leaves_in_its_socket_directory_lead_nbfleet_nowhere(engine, docker_server, tmp_path):
    """The socket's directory is the container's to write; nbfleet, as root, must not follow what it left
    there at the next start (the token once went through a name in it)."""
    canary = tmp_path / "canary"
    canary.write_text("untouched")
    before = canary.stat()
    server = docker_server()
    client = sdk(server)
    nb = wait(client, create(client, "planter"), "RUNNING")
    run(
        nb,
        f"import os\nfor name in ('token', 'jupyter.sock.old', 'planted'):\n"
        f"    os.symlink({str(canary)!r}, '/run/nbfleet/' + name)",
    )
    client.stop_notebook(StopNotebookRequest(id=nb.id))
    wait(client, nb.id, "STOPPED")
    client.start_notebook(StartNotebookRequest(id=nb.id))
    nb = wait(client, nb.id, "RUNNING")
    assert run(nb, "6*7") == "42"
    after = canary.stat()
    assert canary.read_text() == "untouched" and (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)
    assert sorted(p.name for p in (server.data_dir / "instances" / nb.id / "run").iterdir()) == ["jupyter.sock"]


@pytest.mark.parametrize("moment", ["create", "start"])
def test_kill_minus_nine_mid_transition_is_finished_after_restart_without_orphans(engine, docker_server, moment):
    first = docker_server()
    client = sdk(first)
    notebook_id = create(client, f"crash-{moment}")
    if moment == "start":
        wait(client, notebook_id, "RUNNING")
        client.stop_notebook(StopNotebookRequest(id=notebook_id))
        wait(client, notebook_id, "STOPPED")
        client.start_notebook(StartNotebookRequest(id=notebook_id))
    time.sleep(0.3)  # into the middle of the work
    first.kill()
    second = docker_server()
    client = sdk(second)
    nb = wait(client, notebook_id, "RUNNING", "CREATE_FAILED", "START_FAILED")
    assert nb.status == "RUNNING", nb.fail_reason
    assert run(nb, "6*7") == "42"
    containers, volumes = owned(engine, second.data_dir)
    assert len(containers) == 1 and len(volumes) == 1


def test_orphans_are_removed_at_start(engine, docker_server):
    first = docker_server()
    client = sdk(first)
    nb = wait(client, create(client, "forgotten"), "RUNNING")
    first.kill()
    # The store forgets the instance while nbfleet is down (as if restored from an older backup).
    database = create_engine(first.database_url or f"sqlite:///{first.data_dir / 'nbfleet.db'}")
    with database.begin() as conn:
        conn.execute(text("DELETE FROM notebooks WHERE id = :id"), {"id": nb.id})
    database.dispose()
    assert owned(engine, first.data_dir) != ([], [])
    docker_server()
    deadline = time.monotonic() + 30
    while owned(engine, first.data_dir) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owned(engine, first.data_dir) == ([], [])


def test_a_stopped_instances_work_survives_a_restart_of_nbfleet(engine, docker_server):
    """The restart's orphan sweep removes what runs for instances that are not live, but the volume of one
    that is only STOPPED is the user's work (it once went with the sweep)."""
    first = docker_server()
    client = sdk(first)
    nb = wait(client, create(client, "kept-while-stopped"), "RUNNING")
    assert run(nb, "open('/home/ma-user/work/keep.txt', 'w').write('still here')") == "10"
    client.stop_notebook(StopNotebookRequest(id=nb.id))
    wait(client, nb.id, "STOPPED")
    first.kill()
    second = docker_server()
    client = sdk(second)
    assert len(owned(engine, second.data_dir)[1]) == 1
    client.start_notebook(StartNotebookRequest(id=nb.id))
    nb = wait(client, nb.id, "RUNNING", "START_FAILED")
    assert nb.status == "RUNNING", nb.fail_reason
    assert run(nb, "open('/home/ma-user/work/keep.txt').read()") == "'still here'"


def test_an_image_the_engine_does_not_have_fails_the_create_with_a_reason(engine, docker_server, tmp_path):
    images = tmp_path / "images.json"
    images.write_text(
        json.dumps(
            [
                {
                    "name": "nowhere",
                    "namespace": "test",
                    "tag": "1",
                    "description": "missing",
                    "swr_path": "registry.invalid/test/nowhere:1",
                    "resource_categories": ["CPU"],
                    "dev_services": ["NOTEBOOK"],
                    "service_type": "DEV",
                }
            ]
        )
    )
    server = docker_server(NBFLEET_IMAGES_FILE=str(images))
    client = sdk(server)
    nb = wait(client, create(client, "no-image", image="nowhere"), "CREATE_FAILED")
    assert "registry.invalid/test/nowhere:1" in nb.fail_reason
    assert [s.status for s in nb.action_progress][:2] == ["COMPLETED", "FAILED"]
    assert owned(engine, server.data_dir)[0] == []


def test_a_container_whose_jupyter_exits_fails_the_create_with_its_log(engine, docker_server, tmp_path):
    base = next(tag for image in engine.images.list("nbfleet/base") for tag in image.tags)
    images = tmp_path / "images.json"
    images.write_text(
        json.dumps(
            [
                {
                    "name": "bare-debian",
                    "namespace": "test",
                    "tag": "1",
                    "swr_path": base,
                    "description": "no Jupyter in it",
                    "resource_categories": ["CPU"],
                    "dev_services": ["NOTEBOOK"],
                    "service_type": "DEV",
                }
            ]
        )
    )
    server = docker_server(NBFLEET_IMAGES_FILE=str(images))
    client = sdk(server)
    nb = wait(client, create(client, "no-jupyter", image="bare-debian"), "CREATE_FAILED")
    assert "Jupyter exited" in nb.fail_reason and "exit code" in nb.fail_reason, nb.fail_reason
    assert [s.status for s in nb.action_progress] == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    assert owned(engine, server.data_dir)[0] == []  # no container left behind


def test_an_idle_instance_is_stopped_and_its_container_goes(engine, docker_server):
    server = docker_server(NBFLEET_LEASE__IDLE_MIN_MS="2000")
    client = sdk(server)
    from huaweicloudsdkmodelarts.v1 import LeaseReq

    image_id = next(i.id for i in client.list_image(ListImageRequest()).data if i.name == "notebook-python3.11")
    nb = client.create_notebook(
        CreateNotebookRequest(
            body=NotebookCreateRequest(
                name="idle",
                image_id=image_id,
                flavor="modelarts.vm.cpu.2u",
                lease=LeaseReq(type="IDLE", duration=3000),
                volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
            )
        )
    )
    wait(client, nb.id, "RUNNING")
    wait(client, nb.id, "STOPPED", timeout=60)
    assert owned(engine, server.data_dir)[0] == []
