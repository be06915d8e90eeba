"""Dynamic storage on the docker runtime: a shared directory and a bucket directory (s3fs, local S3 server)
attached through the SDK to a RUNNING container, used by its kernel, detached, kept across stop/start."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from huaweicloudsdkmodelarts.v1 import (
    AttachDynamicStorageRequest,
    DataVolumesReq,
    DeleteNotebookRequest,
    DetachDynamicStorageRequest,
    ShowDynamicStorageRequest,
    StartNotebookRequest,
    StopNotebookRequest,
)

from ..procs import unmount_below
from ..s3_server import S3Server, storage_env
from .conftest import owned
from .test_docker_runtime import create, run, sdk, wait

pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]

EFS_ID = "7e2d3b0f-2222-4333-8444-0123456789ab"
BUCKET = "docker-bucket"


@pytest.fixture
def s3(tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or shutil.which("s3fs") is None:
        pytest.skip("mounting needs root, /dev/fuse and s3fs (apt-get install s3fs)")
    server = S3Server(tmp_path).start()
    yield server
    server.stop()
    assert unmount_below(tmp_path) == []  # nbfleet unmounted everything when the instance was deleted


def wait_mount(client, nb_id, mount_id, *statuses, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        m = client.show_dynamic_storage(ShowDynamicStorageRequest(instance_id=nb_id, storage_id=mount_id))
        if m.status in statuses:
            return m
        assert time.monotonic() < deadline, f"mount stayed {m.status}"
        time.sleep(0.1)


def test_mounts_reach_a_running_container_and_survive_a_restart(engine, docker_server, s3, tmp_path):
    efs = tmp_path / "efs"
    (efs / "team").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(efs / "team", 0o1777)
    (efs / "team" / "from-host.txt").write_text("shared\n")
    store = s3.client()
    store.create_bucket(Bucket=BUCKET)
    store.put_object(Bucket=BUCKET, Key="dir/from-s3.txt", Body=b"object\n")
    server = docker_server(**storage_env(s3, efs, EFS_ID, BUCKET))
    client = sdk(server)
    nb = wait(client, create(client, "docker-mounts"), "RUNNING")
    shared = client.attach_dynamic_storage(
        AttachDynamicStorageRequest(
            instance_id=nb.id,
            body=DataVolumesReq(
                category="EFS", mount_path="/data/shared/", uri="7e2d3b0f.sfsturbo.internal:/team", efs_id=EFS_ID
            ),
        )
    )
    bucket = client.attach_dynamic_storage(
        AttachDynamicStorageRequest(
            instance_id=nb.id,
            body=DataVolumesReq(category="OBS", mount_path="/data/bucket/", uri=f"obs://{BUCKET}/dir/"),
        )
    )
    for m in (shared, bucket):
        done = wait_mount(client, nb.id, m.id, "MOUNTED", "MOUNT_FAILED")
        assert done.status == "MOUNTED", done.failure_reason
    [container], _ = owned(engine, server.data_dir)
    [data] = [m for m in container.attrs["Mounts"] if m["Destination"] == "/data"]
    assert data["Propagation"] == "rslave"
    out = run(
        nb,
        "import os\nprint(sorted(os.listdir('/data')))\n"
        "print(open('/data/shared/from-host.txt').read().strip(), "
        "open('/data/bucket/from-s3.txt').read().strip())\n"
        "_ = open('/data/shared/k.txt', 'w').write('k')\n_ = open('/data/bucket/k.txt', 'w').write('k')\n",
    )
    assert out.strip().splitlines() == ["['bucket', 'shared']", "shared object"]
    assert (efs / "team" / "k.txt").read_text() == "k"
    assert store.get_object(Bucket=BUCKET, Key="dir/k.txt")["Body"].read() == b"k"

    client.detach_dynamic_storage(DetachDynamicStorageRequest(instance_id=nb.id, storage_id=shared.id))
    deadline = time.monotonic() + 60
    while "shared" in run(nb, "import os\nprint(os.listdir('/data'))"):
        assert time.monotonic() < deadline
        time.sleep(0.3)

    client.stop_notebook(StopNotebookRequest(id=nb.id))
    wait(client, nb.id, "STOPPED")
    assert wait_mount(client, nb.id, bucket.id, "UNMOUNTED").status == "UNMOUNTED"
    client.start_notebook(StartNotebookRequest(id=nb.id))
    nb = wait(client, nb.id, "RUNNING")
    assert wait_mount(client, nb.id, bucket.id, "MOUNTED", "MOUNT_FAILED").status == "MOUNTED"
    assert (
        run(nb, "import os\nprint(sorted(os.listdir('/data')), open('/data/bucket/k.txt').read())").strip()
        == "['bucket'] k"
    )
    client.delete_notebook(DeleteNotebookRequest(id=nb.id))
    deadline = time.monotonic() + 60
    while owned(engine, server.data_dir)[0] or (server.data_dir / "storage" / nb.id).exists():
        assert time.monotonic() < deadline, "the instance or its mounts outlived its deletion"
        time.sleep(0.2)
