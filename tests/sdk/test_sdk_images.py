"""Users' images through the official SDK against a server process (simulated runtime): register, show,
list, delete, sync, and image groups, with their error cases."""

from __future__ import annotations

import json
import uuid

import pytest
from huaweicloudsdkmodelarts.v1 import (
    DeleteImageGroupRequest,
    DeleteImageGroupRequestBody,
    DeleteImageRequest,
    DeleteImageRequestBody,
    ImageRegRequest,
    ListImageGroupRequest,
    ListImageRequest,
    RegisterImageRequest,
    ShowImageRequest,
    ShowNotebookRequest,
    SyncImageRequest,
    UpdateImageGroupRequest,
    UpdateImageGroupRequestBody,
    UpdateImageGroupRequestBodyTags,
)

from .conftest import Server, create_notebook, expect_error, next_signing_second

RULES = ["image=*/missing/*;op=pull", "image=*/headless/*;op=serve"]


@pytest.fixture(scope="module")
def images_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("sdk-images") / "data", env={"NBFLEET_SIMULATED_FAIL": json.dumps(RULES)})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def carol(images_server):
    user = images_server.create_user("carol")
    images_server.cli("set-quota", "--user", user.user_id, "--quota", "-1", as_json=False)
    return user


@pytest.fixture(scope="module")
def dave(images_server):
    return images_server.create_user("dave")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def register(client, swr_path: str, **extra):
    return client.register_image(RegisterImageRequest(body=ImageRegRequest(swr_path=swr_path, **extra)))


def builtin_id(client, name: str = "notebook-python3.11") -> str:
    return next(i.id for i in client.list_image(ListImageRequest(type="BUILD_IN")).data if i.name == name)


def test_register_show_list_and_delete(carol):
    c = carol.client
    name = unique("torch")
    path = f"swr.example.com/team/{name}:2.1"
    image = register(
        c,
        path,
        description="PyTorch",
        resource_category=["GPU"],
        services=["NOTEBOOK"],
        visibility="PRIVATE",
        tags=["team=ml"],
    )
    assert (image.namespace, image.name, image.tag, image.swr_path) == ("team", name, "2.1", path)
    assert (image.type, image.status, image.origin, image.visibility) == ("DEDICATED", "ACTIVE", "CUSTOMIZE", "PRIVATE")
    assert image.resource_categories == ["GPU"] and image.dev_services == ["NOTEBOOK"]
    assert type(image.size) is int and image.size > 0 and type(image.create_at) is int
    assert [(t.key, t.value) for t in image.tags] == [("team", "ml")]
    shown = c.show_image(ShowImageRequest(id=image.id))
    assert (shown.id, shown.swr_path, shown.size) == (image.id, path, image.size)
    listed = c.list_image(ListImageRequest(type="DEDICATED", name=name, name_fuzzy_match=False))
    assert [i.id for i in listed.data] == [image.id] and listed.total == 1
    deleted = c.delete_image(DeleteImageRequest(id=image.id, body=DeleteImageRequestBody(is_force=False)))
    assert deleted.id == image.id and deleted.status == "DELETED"
    expect_error(lambda: c.show_image(ShowImageRequest(id=image.id)), 400, "ModelArts.6404")
    expect_error(lambda: c.delete_image(DeleteImageRequest(id=image.id)), 400, "ModelArts.6404")
    assert c.list_image(ListImageRequest(type="DEDICATED", name=name)).total == 0


def test_register_errors(carol):
    c = carol.client
    expect_error(lambda: register(c, "not a reference"), 400, "ModelArts.6336")
    expect_error(lambda: register(c, "swr.example.com/team/notag"), 400, "ModelArts.6336")
    path = f"swr.example.com/team/{unique('dup')}:1"
    register(c, path)
    next_signing_second()  # the same signed call twice in one second would be a replay (401)
    expect_error(lambda: register(c, path), 400, "ModelArts.6737")
    exc = expect_error(lambda: register(c, f"swr.example.com/missing/{unique('gone')}:1"), 400, "ModelArts.6797")
    assert "cannot be found" in exc.error_msg
    exc = expect_error(lambda: register(c, f"swr.example.com/headless/{unique('x')}:1"), 400, "ModelArts.6336")
    assert "neither" in exc.error_msg
    expect_error(lambda: register(c, f"swr.example.com/team/{unique('a')}:1", arch="SPARC"), 400, "ModelArts.6336")


def test_delete_errors_and_who_may_delete(carol, dave):
    builtin = builtin_id(carol.client)
    expect_error(lambda: carol.client.delete_image(DeleteImageRequest(id=builtin)), 403, "ModelArts.0108")
    expect_error(lambda: carol.client.delete_image(DeleteImageRequest(id=str(uuid.uuid4()))), 400, "ModelArts.6404")
    public = register(dave.client, f"swr.example.com/dave/{unique('pub')}:1", visibility="PUBLIC")
    private = register(dave.client, f"swr.example.com/dave/{unique('priv')}:1")
    expect_error(lambda: carol.client.delete_image(DeleteImageRequest(id=public.id)), 403, "ModelArts.0108")
    expect_error(lambda: carol.client.delete_image(DeleteImageRequest(id=private.id)), 400, "ModelArts.6404")
    assert dave.client.show_image(ShowImageRequest(id=public.id)).status == "ACTIVE"
    assert carol.client.show_image(ShowImageRequest(id=public.id)).id == public.id  # PUBLIC: the project's


def test_a_deleted_image_keeps_its_instances_and_refuses_new_ones(carol):
    c = carol.client
    image = register(c, f"swr.example.com/team/{unique('keep')}:1")
    nb = create_notebook(c, image.id, unique("uses-"))
    assert nb.status == "RUNNING" and nb.image.id == image.id
    c.delete_image(DeleteImageRequest(id=image.id, body=DeleteImageRequestBody(is_force=True)))
    assert c.show_notebook(ShowNotebookRequest(id=nb.id)).status == "RUNNING"
    expect_error(lambda: create_notebook(c, image.id, unique("late-"), wait=False), 400, "ModelArts.6797")


def test_sync(carol, dave):
    c = carol.client
    image = register(c, f"swr.example.com/team/{unique('sync')}:1")
    synced = c.sync_image(SyncImageRequest(image_id=image.id))
    assert (synced.id, synced.status, synced.size) == (image.id, "ACTIVE", image.size)
    assert type(synced.update_at) is int and synced.update_at >= image.update_at
    expect_error(lambda: c.sync_image(SyncImageRequest(image_id=builtin_id(c))), 403, "ModelArts.0108")
    expect_error(lambda: c.sync_image(SyncImageRequest(image_id=str(uuid.uuid4()))), 400, "ModelArts.6404")
    expect_error(lambda: dave.client.sync_image(SyncImageRequest(image_id=image.id)), 400, "ModelArts.6404")


def test_image_groups(carol, dave):
    c = carol.client
    namespace = unique("grp")
    one = register(c, f"swr.example.com/{namespace}/app:1")
    register(c, f"swr.example.com/{namespace}/app:2")
    register(c, f"swr.example.com/{namespace}/tool:1")
    page = c.list_image_group(ListImageGroupRequest(type="DEDICATED", namespace=namespace))
    assert page.is_swr_enterprise is False and page.total == 2 and page.current == 1
    groups = {g.name: g for g in page.data}
    app = groups["app"]
    assert app.version_count == 2 and app.namespace == namespace and app.create_at == one.create_at
    assert type(app.update_at) is int and app.read_me == "" and app.swr_instance_id is None
    again = c.list_image_group(ListImageGroupRequest(type="DEDICATED", namespace=namespace, limit=1, offset=1))
    assert (again.total, again.size, again.pages, again.current, len(again.data)) == (2, 1, 2, 2, 1)
    assert {g.id for g in c.list_image_group(ListImageGroupRequest(namespace=namespace)).data} == {
        g.id for g in page.data
    }  # stable ids
    builtins = c.list_image_group(ListImageGroupRequest(type="BUILD_IN"))
    assert {"notebook-python3.11", "ssh-devbox"} <= {g.name for g in builtins.data}

    updated = c.update_image_group(
        UpdateImageGroupRequest(
            id=app.id,
            body=UpdateImageGroupRequestBody(
                read_me="# Use me", tags=[UpdateImageGroupRequestBodyTags(key="team", value="ml")]
            ),
        )
    )
    assert updated.body["read_me"] == "# Use me" and updated.body["tags"] == [{"key": "team", "value": "ml"}]
    listed = {g.name: g for g in c.list_image_group(ListImageGroupRequest(namespace=namespace)).data}
    assert listed["app"].read_me == "# Use me"

    builtin_group = builtins.data[0].id
    expect_error(
        lambda: c.update_image_group(
            UpdateImageGroupRequest(id=builtin_group, body=UpdateImageGroupRequestBody(read_me="mine"))
        ),
        403,
        "ModelArts.0108",
    )
    expect_error(
        lambda: c.update_image_group(
            UpdateImageGroupRequest(id=str(uuid.uuid4()), body=UpdateImageGroupRequestBody(read_me="x"))
        ),
        400,
        "ModelArts.6404",
    )
    expect_error(
        lambda: dave.client.update_image_group(
            UpdateImageGroupRequest(id=app.id, body=UpdateImageGroupRequestBody(read_me="x"))
        ),
        400,
        "ModelArts.6404",
    )
    expect_error(lambda: c.delete_image_group(DeleteImageGroupRequest(id=builtin_group)), 403, "ModelArts.0108")
    expect_error(lambda: c.delete_image_group(DeleteImageGroupRequest(id=str(uuid.uuid4()))), 400, "ModelArts.6404")

    c.delete_image_group(DeleteImageGroupRequest(id=app.id, body=DeleteImageGroupRequestBody(is_force=True)))
    left = c.list_image_group(ListImageGroupRequest(namespace=namespace))
    assert [g.name for g in left.data] == ["tool"]
    expect_error(lambda: c.show_image(ShowImageRequest(id=one.id)), 400, "ModelArts.6404")
    expect_error(lambda: c.delete_image_group(DeleteImageGroupRequest(id=app.id)), 400, "ModelArts.6404")
