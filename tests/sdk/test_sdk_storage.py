"""Dynamic storage through the official SDK (attach, list, show, detach) against a server process (simulated
runtime), its errors as the SDK raises them, and ``kill -9`` of the server while mounts are in flight."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from huaweicloudsdkmodelarts.v1 import (
    AttachDynamicStorageRequest,
    DataVolumesReq,
    DetachDynamicStorageRequest,
    ListDynamicStoragesRequest,
    ShowDynamicStorageRequest,
    ShowNotebookRequest,
    StartNotebookRequest,
)

from ..procs import ServeProcess
from .conftest import Server, User, create_notebook, expect_error, stop_and_wait, wait_status

EFS_ID = "0a1b2c3d-0000-4000-8000-00000000abcd"
SECRET = "sdk-test-secret-never-shown"
TIMEOUT = 30.0


def storage_env(tmp_path, delay: str) -> dict:
    (tmp_path / "efs" / "team").mkdir(parents=True, exist_ok=True)
    return {
        "NBFLEET_SIMULATED_DELAY": delay,
        "NBFLEET_CLAIM_SECONDS": "3",
        "NBFLEET_STORAGE__EFS": json.dumps({EFS_ID: {"path": str(tmp_path / "efs"), "projects": ["*"]}}),
        "NBFLEET_STORAGE__OBS__ENDPOINT": "http://127.0.0.1:9",
        "NBFLEET_STORAGE__OBS__ACCESS_KEY": "AK",
        "NBFLEET_STORAGE__OBS__SECRET_KEY": SECRET,
        "NBFLEET_STORAGE__OBS__BUCKETS": json.dumps({"team-bucket": ["*"]}),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdk-storage")
    srv = Server(root / "data", env=storage_env(root, "0.1"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def admin(server) -> User:
    c = server.creds
    return User(c["user_id"], c["project_id"], c["ak"], c["sk"], server.endpoint)


def builtin(client) -> str:
    from huaweicloudsdkmodelarts.v1 import ListImageRequest

    return next(
        i.id for i in client.list_image(ListImageRequest(type="BUILD_IN")).data if i.name == "notebook-python3.11"
    )


def attach(client, nb_id, **body):
    return client.attach_dynamic_storage(AttachDynamicStorageRequest(instance_id=nb_id, body=DataVolumesReq(**body)))


def wait_mount(client, nb_id, mount_id, *statuses, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        m = client.show_dynamic_storage(ShowDynamicStorageRequest(instance_id=nb_id, storage_id=mount_id))
        if m.status in statuses:
            return m
        assert time.monotonic() < deadline, f"mount stayed {m.status}, wanted {statuses}"
        time.sleep(0.05)


def wait_detached(client, nb_id, mount_id, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.show_dynamic_storage(ShowDynamicStorageRequest(instance_id=nb_id, storage_id=mount_id))
        except Exception as exc:  # ClientRequestException 6404 once gone
            assert getattr(exc, "error_code", None) == "ModelArts.6404", exc
            return
        assert time.monotonic() < deadline, "the mount was never removed"
        time.sleep(0.05)


OBS = dict(category="OBS", mount_path="/data/bucket/", uri="obs://team-bucket/dir/")
EFS = dict(category="EFS", mount_path="/data/shared/", uri="0a1b2c3d.sfsturbo.internal:/team", efs_id=EFS_ID)


def test_the_four_methods(admin):
    c = admin.client
    nb = create_notebook(c, builtin(c), "sdk-mounts")
    a = attach(c, nb.id, **OBS)
    assert (a.status, a.mount_type, a.category, a.mount_path, a.uri) == (
        "MOUNTING",
        "DYNAMIC",
        "OBS",
        "/data/bucket/",
        "obs://team-bucket/dir/",
    )
    b = attach(c, nb.id, **EFS)
    assert b.efs_id == EFS_ID
    assert wait_mount(c, nb.id, a.id, "MOUNTED").failure_reason is None
    wait_mount(c, nb.id, b.id, "MOUNTED")
    page = c.list_dynamic_storages(ListDynamicStoragesRequest(instance_id=nb.id))
    assert (page.total, page.size, page.current, page.pages) == (2, 2, 1, 1)
    assert [m.id for m in page.data] == [a.id, b.id]
    shown = c.show_notebook(ShowNotebookRequest(id=nb.id))
    assert [(v.mount_path, v.mount_type, v.status) for v in shown.data_volumes] == [
        ("/data/bucket/", "DYNAMIC", "MOUNTED"),
        ("/data/shared/", "DYNAMIC", "MOUNTED"),
    ]
    assert SECRET not in str(page.to_dict()) and SECRET not in str(shown.to_dict())
    d = c.detach_dynamic_storage(DetachDynamicStorageRequest(instance_id=nb.id, storage_id=a.id))
    assert d.status == "UNMOUNTING"
    wait_detached(c, nb.id, a.id)
    assert [m.id for m in c.list_dynamic_storages(ListDynamicStoragesRequest(instance_id=nb.id)).data] == [b.id]


def test_errors_through_the_sdk(admin):
    c = admin.client
    nb = create_notebook(c, builtin(c), "sdk-mount-errors")
    expect_error(lambda: attach(c, nb.id, category="OBS", mount_path="/data/x/"), 400, "ModelArts.6335")
    expect_error(lambda: attach(c, nb.id, **{**OBS, "mount_path": "/data/../etc/"}), 400, "ModelArts.6336")
    expect_error(lambda: attach(c, nb.id, **{**OBS, "mount_path": "/tmp/x/"}), 400, "ModelArts.6336")
    expect_error(lambda: attach(c, nb.id, **{**OBS, "uri": "obs://team-bucket/"}), 400, "ModelArts.6358")
    expect_error(lambda: attach(c, str(uuid.uuid4()), **OBS), 400, "ModelArts.6309")
    expect_error(
        lambda: c.list_dynamic_storages(ListDynamicStoragesRequest(instance_id=str(uuid.uuid4()))),
        400,
        "ModelArts.6309",
    )
    expect_error(
        lambda: c.show_dynamic_storage(ShowDynamicStorageRequest(instance_id=nb.id, storage_id=str(uuid.uuid4()))),
        400,
        "ModelArts.6404",
    )
    expect_error(
        lambda: c.detach_dynamic_storage(DetachDynamicStorageRequest(instance_id=nb.id, storage_id=str(uuid.uuid4()))),
        400,
        "ModelArts.6404",
    )
    kept = attach(c, nb.id, **OBS)
    wait_mount(c, nb.id, kept.id, "MOUNTED")
    stop_and_wait(c, nb.id)
    expect_error(lambda: attach(c, nb.id, **EFS), 400, "ModelArts.6327")
    expect_error(
        lambda: c.detach_dynamic_storage(DetachDynamicStorageRequest(instance_id=nb.id, storage_id=kept.id)),
        400,
        "ModelArts.6327",
    )
    assert (
        c.show_dynamic_storage(ShowDynamicStorageRequest(instance_id=nb.id, storage_id=kept.id)).status == "UNMOUNTED"
    )
    c.start_notebook(StartNotebookRequest(id=nb.id))
    wait_status(c, nb.id, "RUNNING")
    assert wait_mount(c, nb.id, kept.id, "MOUNTED").mount_path == "/data/bucket/"


def test_kill_minus_nine_with_mounts_in_flight_leaves_nothing_stuck(tmp_path):
    # Each simulated step takes 2 s: a mount and an unmount are in flight long enough to kill the server.
    env = storage_env(tmp_path, "2")
    first = ServeProcess(tmp_path / "data", env={**env, "NBFLEET_SIMULATED_DELAY": "0.05"}).start()
    c = User(
        first.creds["user_id"], first.creds["project_id"], first.creds["ak"], first.creds["sk"], first.endpoint
    ).client
    nb = create_notebook(c, builtin(c), "crash-mounts")
    leaving = attach(c, nb.id, **EFS)
    wait_mount(c, nb.id, leaving.id, "MOUNTED")
    first.terminate()
    second = ServeProcess(first.data_dir, env=env, port=first.port).start()  # slow from here
    try:
        coming = attach(c, nb.id, **OBS)
        c.detach_dynamic_storage(DetachDynamicStorageRequest(instance_id=nb.id, storage_id=leaving.id))
        time.sleep(0.5)  # both claimed by the reconciler, their work under way
        assert wait_mount(c, nb.id, coming.id, "MOUNTING").status == "MOUNTING"
        assert wait_mount(c, nb.id, leaving.id, "UNMOUNTING").status == "UNMOUNTING"
        second.kill()
        third = ServeProcess(first.data_dir, env=env, port=first.port).start()
        try:
            assert wait_mount(c, nb.id, coming.id, "MOUNTED", "MOUNT_FAILED").status == "MOUNTED"
            wait_detached(c, nb.id, leaving.id)
            assert c.show_notebook(ShowNotebookRequest(id=nb.id)).status == "RUNNING"
        finally:
            third.terminate()
    finally:
        second.terminate()
