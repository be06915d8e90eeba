"""Every one of the 29 in-scope methods of the official SDK (spec README §1), driven in one walk through a
notebook's life against a server process (simulated runtime), each checked against what the spec says it
answers. The other SDK modules test each family in depth; this one makes sure none is missing."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from huaweicloudsdkmodelarts.v1 import (
    AttachDynamicStorageRequest,
    CreateImageRequest,
    CreateNotebookTagsRequest,
    CreateTmsTagsRequest,
    DataVolumesReq,
    DeleteImageGroupRequest,
    DeleteImageGroupRequestBody,
    DeleteImageRequest,
    DeleteNotebookRequest,
    DeleteNotebookTagsRequest,
    DeleteTmsTagsRequest,
    DetachDynamicStorageRequest,
    ImageCreateReq,
    ImageRegRequest,
    LeaseReq,
    ListAllNotebooksRequest,
    ListDynamicStoragesRequest,
    ListFeaturesRequest,
    ListFlavorsRequest,
    ListImageGroupRequest,
    ListImageRequest,
    ListNotebooksRequest,
    NotebookUpdateRequest,
    RegisterImageRequest,
    RenewLeaseRequest,
    ShowDynamicStorageRequest,
    ShowImageRequest,
    ShowLeaseRequest,
    ShowNotebookRequest,
    ShowNotebookTagsRequest,
    ShowSwitchableFlavorsRequest,
    StartNotebookRequest,
    SyncImageRequest,
    TmsTag,
    UpdateImageGroupRequest,
    UpdateImageGroupRequestBody,
    UpdateNotebookRequest,
)

from .conftest import (
    DEFAULT_FLAVOR,
    Server,
    User,
    create_notebook,
    expect_error,
    now_ms,
    stop_and_wait,
    wait_gone,
    wait_status,
)

HOUR = 3_600_000
EFS_ID = "5e0c2a9d-29a1-4c41-9d3e-000000000029"


@pytest.fixture(scope="module")
def walk_server(tmp_path_factory):
    """A server of its own: the walk needs a shared file system the operator offers (to every project)."""
    root = tmp_path_factory.mktemp("sdk-all-methods")
    (root / "efs" / "team").mkdir(parents=True)
    srv = Server(
        root / "data",
        env={
            "NBFLEET_SIMULATED_DELAY": "0.1",
            "NBFLEET_STORAGE__EFS": json.dumps({EFS_ID: {"path": str(root / "efs"), "projects": ["*"]}}),
        },
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def admin(walk_server) -> User:
    c = walk_server.creds
    return User(c["user_id"], c["project_id"], c["ak"], c["sk"], walk_server.endpoint, c["user_name"])


@pytest.fixture(scope="module")
def alice(walk_server) -> User:
    user = walk_server.create_user("alice")
    walk_server.cli("set-quota", "--user", user.user_id, "--quota", "-1", as_json=False)
    return user


@pytest.fixture(scope="module")
def image_ids(admin) -> dict[str, str]:
    return {img.name: img.id for img in admin.client.list_image(ListImageRequest(limit=200)).data}


def wait_image(client, image_id: str, *statuses: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        image = client.show_image(ShowImageRequest(id=image_id))
        if image.status in statuses:
            return image
        assert time.monotonic() < deadline, f"image {image_id} stayed {image.status}, wanted {statuses}"
        time.sleep(0.05)


def wait_mount(client, notebook_id: str, mount_id: str, *statuses: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        mount = client.show_dynamic_storage(ShowDynamicStorageRequest(instance_id=notebook_id, storage_id=mount_id))
        if mount.status in statuses:
            return mount
        assert time.monotonic() < deadline, f"mount {mount_id} stayed {mount.status}, wanted {statuses}"
        time.sleep(0.05)


def test_all_29_methods(admin, alice, image_ids):
    c = alice.client
    called: set[str] = set()

    def call(method: str, request):
        called.add(method)
        return getattr(c, method)(request)

    # catalogue and quota
    feature = call("list_features", ListFeaturesRequest(feature="NOTEBOOK"))
    assert feature.name == "NOTEBOOK" and feature.enabled is True and feature.user_id == alice.user_id
    flavors = call("list_flavors", ListFlavorsRequest())
    assert DEFAULT_FLAVOR in {f.id for f in flavors.flavors} and flavors.total == len(flavors.flavors)
    images = call("list_image", ListImageRequest(type="BUILD_IN", limit=100))
    assert images.total >= 2 and image_ids["notebook-python3.11"] in {i.id for i in images.data}

    # a notebook's life: create, read, lease, flavors, tags
    name = f"all29-{uuid.uuid4().hex[:8]}"
    called.add("create_notebook")
    nb = create_notebook(c, image_ids["notebook-python3.11"], name)
    assert nb.status == "RUNNING" and nb.name == name and nb.flavor == DEFAULT_FLAVOR
    shown = call("show_notebook", ShowNotebookRequest(id=nb.id))
    assert shown.id == nb.id and shown.lease.enable is True and shown.image.id == image_ids["notebook-python3.11"]
    page = call("list_notebooks", ListNotebooksRequest(name=name))
    assert (page.total, [n.id for n in page.data]) == (1, [nb.id])
    everyone = admin.client.list_all_notebooks(ListAllNotebooksRequest(name=name))
    called.add("list_all_notebooks")
    assert [n.id for n in everyone.data] == [nb.id] and everyone.data[0].user.id == alice.user_id
    own = c.list_all_notebooks(ListAllNotebooksRequest())  # a non-admin's "all" is its own list (spec A5)
    assert {n.user.id for n in own.data} == {alice.user_id}

    lease = call("show_lease", ShowLeaseRequest(id=nb.id))
    assert lease.enable is True and lease.duration >= HOUR
    renewed = call("renew_lease", RenewLeaseRequest(id=nb.id, body=LeaseReq(duration=2 * HOUR)))
    # the lease now ends two hours from now (spec: duration counts from the lease's create_at)
    assert abs(renewed.create_at + renewed.duration - (now_ms() + 2 * HOUR)) < 10_000
    switchable = call("show_switchable_flavors", ShowSwitchableFlavorsRequest(id=nb.id))
    assert switchable.flavors and all(f.id != "" for f in switchable.flavors)

    call(
        "create_notebook_tags",
        CreateNotebookTagsRequest(
            resource_id=nb.id, body=CreateTmsTagsRequest(tags=[TmsTag(key="team", value="all29")])
        ),
    )
    in_use = call("show_notebook_tags", ShowNotebookTagsRequest())
    assert any(t.key == "team" and "all29" in (t.values or []) for t in in_use.tags)
    call(
        "delete_notebook_tags",
        DeleteNotebookTagsRequest(
            resource_id=nb.id, body=DeleteTmsTagsRequest(tags=[TmsTag(key="team", value="all29")])
        ),
    )
    assert c.show_notebook(ShowNotebookRequest(id=nb.id)).tags in (None, [])

    # dynamic storage on the running notebook: attach, list, show, detach
    attached = call(
        "attach_dynamic_storage",
        AttachDynamicStorageRequest(
            instance_id=nb.id,
            body=DataVolumesReq(
                category="EFS", mount_path="/data/team/", uri=f"{EFS_ID}.sfsturbo.internal:/team", efs_id=EFS_ID
            ),
        ),
    )
    assert (attached.status, attached.category, attached.mount_type) == ("MOUNTING", "EFS", "DYNAMIC")
    assert wait_mount(c, nb.id, attached.id, "MOUNTED", "MOUNT_FAILED").status == "MOUNTED"
    mounts = call("list_dynamic_storages", ListDynamicStoragesRequest(instance_id=nb.id))
    assert (mounts.total, [m.id for m in mounts.data]) == (1, [attached.id])
    shown_mount = call("show_dynamic_storage", ShowDynamicStorageRequest(instance_id=nb.id, storage_id=attached.id))
    assert shown_mount.mount_path.rstrip("/") == "/data/team" and shown_mount.efs_id == EFS_ID
    assert any(v.mount_type == "DYNAMIC" for v in c.show_notebook(ShowNotebookRequest(id=nb.id)).data_volumes)
    detaching = call("detach_dynamic_storage", DetachDynamicStorageRequest(instance_id=nb.id, storage_id=attached.id))
    assert detaching.status == "UNMOUNTING"
    deadline = time.monotonic() + 30
    while c.list_dynamic_storages(ListDynamicStoragesRequest(instance_id=nb.id)).total:
        assert time.monotonic() < deadline, "the mount stayed after its detach"
        time.sleep(0.05)
    expect_error(
        lambda: c.show_dynamic_storage(ShowDynamicStorageRequest(instance_id=nb.id, storage_id=attached.id)),
        400,
        "ModelArts.6404",
    )

    # images: save the running notebook, register, show, sync, groups, delete
    saved = call(
        "create_image",
        CreateImageRequest(
            id=nb.id, body=ImageCreateReq(name=f"saved{uuid.uuid4().hex[:6]}", namespace="all29", tag="v1")
        ),
    )
    assert saved.status in ("INIT", "CREATING") and saved.origin == "IMAGE_SAVE"
    assert wait_image(c, saved.id, "ACTIVE", "ERROR").status == "ACTIVE"
    wait_status(c, nb.id, "RUNNING")
    namespace = f"reg{uuid.uuid4().hex[:8]}"
    registered = call(
        "register_image",
        RegisterImageRequest(
            body=ImageRegRequest(swr_path=f"swr.example.com/{namespace}/tool:1", description="registered")
        ),
    )
    assert registered.type == "DEDICATED" and registered.namespace == namespace
    assert call("show_image", ShowImageRequest(id=registered.id)).swr_path == registered.swr_path
    assert call("sync_image", SyncImageRequest(image_id=registered.id)).id == registered.id
    groups = call("list_image_group", ListImageGroupRequest(namespace=namespace))
    assert [g.name for g in groups.data] == ["tool"]
    updated = call(
        "update_image_group",
        UpdateImageGroupRequest(id=groups.data[0].id, body=UpdateImageGroupRequestBody(read_me="# tool")),
    )
    assert updated.body["read_me"] == "# tool"
    deleted = call("delete_image", DeleteImageRequest(id=saved.id))
    assert deleted.status == "DELETED"
    call(
        "delete_image_group",
        DeleteImageGroupRequest(id=groups.data[0].id, body=DeleteImageGroupRequestBody(is_force=True)),
    )
    expect_error(lambda: c.show_image(ShowImageRequest(id=registered.id)), 400, "ModelArts.6404")

    # stop, change the flavor while stopped, start again, delete
    called.add("stop_notebook")
    stop_and_wait(c, nb.id)
    other = next(f.id for f in switchable.flavors if f.id != DEFAULT_FLAVOR)
    changed = call("update_notebook", UpdateNotebookRequest(id=nb.id, body=NotebookUpdateRequest(flavor=other)))
    assert changed.flavor == other
    started = call("start_notebook", StartNotebookRequest(id=nb.id))
    assert started.status == "STARTING"
    assert wait_status(c, nb.id, "RUNNING").flavor == other
    gone = call("delete_notebook", DeleteNotebookRequest(id=nb.id))
    assert gone.status == "DELETING"
    assert wait_gone(c, nb.id).error_code == "ModelArts.6309"

    assert len(called) == 29, sorted(called)
