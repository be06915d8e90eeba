"""list_notebooks / list_all_notebooks: every filter of the SDK request, sorting, paging, scope."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from huaweicloudsdkmodelarts.v1 import (
    ListAllNotebooksRequest,
    ListNotebooksRequest,
    NotebookUpdateRequest,
    ShowNotebookRequest,
    UpdateNotebookRequest,
)

from .conftest import DEFAULT_IMAGE, create_notebook, expect_error, stop_and_wait, wait_status


@dataclass
class Fleet:
    user: object  # the non-admin owner of the instances below
    workspace_id: str
    a: object  # "Alpha1-box"  STOPPED  python3.11  cpu.2u
    b: object  # "alpha2-BOX"  RUNNING  scipy       cpu.4u
    c: object  # "Aardvark"    RUNNING  python3.11  cpu.8u
    d: object  # "gamma"       RUNNING  in workspace_id
    e: object  # "codelab"     RUNNING  feature DEFAULT
    order_created: list  # ids of a, b, c in creation order
    order_updated: list  # ids of a, b, c in order of their last change


@pytest.fixture(scope="module")
def fleet(server, image_ids) -> Fleet:
    user = server.create_user("lister")
    c = user.client
    py, scipy = image_ids[DEFAULT_IMAGE], image_ids["notebook-scipy"]
    workspace = server.cli("create-workspace", "--project", user.project_id, "--name", "ws-list")["workspace_id"]

    created = []
    for name, image, flavor, extra in (
        ("Alpha1-box", py, "modelarts.vm.cpu.2u", {}),
        ("alpha2-BOX", scipy, "modelarts.vm.cpu.4u", {}),
        ("Aardvark", py, "modelarts.vm.cpu.8u", {}),
        ("gamma", py, "modelarts.vm.cpu.2u", {"workspace_id": workspace}),
        ("codelab", py, "modelarts.vm.cpu.free", {"feature": "DEFAULT"}),
    ):
        created.append(create_notebook(c, image, name, wait=False, flavor=flavor, **extra))
        time.sleep(0.01)  # distinct create_at values
    ids = [nb.id for nb in created]
    for nb_id in ids:
        wait_status(c, nb_id, "RUNNING")
    stop_and_wait(c, ids[0])
    # Give a, b, c their final descriptions in a known order (b, c, a), which fixes the update_at order.
    descriptions = {ids[1]: "second box", ids[2]: "third one", ids[0]: "first box"}
    for nb_id, text in descriptions.items():
        time.sleep(0.01)
        c.update_notebook(UpdateNotebookRequest(id=nb_id, body=NotebookUpdateRequest(description=text)))
    fresh = [c.show_notebook(ShowNotebookRequest(id=i)) for i in ids]
    return Fleet(user, workspace, *fresh, order_created=ids[:3], order_updated=[ids[1], ids[2], ids[0]])


def ids_of(page) -> list[str]:
    return [nb.id for nb in page.data]


def listed(fleet: Fleet, **query) -> set[str]:
    page = fleet.user.client.list_notebooks(ListNotebooksRequest(**query))
    assert page.total == len(page.data)
    return set(ids_of(page))


def assert_empty_page(page, size: int = 10):
    assert page.data == []
    assert (page.total, page.pages, page.size, page.current) == (0, 0, size, 0)


def test_default_list_is_own_notebooks_newest_first(fleet):
    page = fleet.user.client.list_notebooks(ListNotebooksRequest())
    assert ids_of(page) == list(reversed(fleet.order_created))
    assert (page.total, page.pages, page.size, page.current) == (3, 1, 10, 0)
    statuses = {nb.id: nb.status for nb in page.data}
    assert statuses == {fleet.a.id: "STOPPED", fleet.b.id: "RUNNING", fleet.c.id: "RUNNING"}
    assert all(nb.lease.enable is True for nb in page.data)


def test_name_filter_is_fuzzy_and_case_insensitive(fleet):
    assert listed(fleet, name="ALPHA") == {fleet.a.id, fleet.b.id}
    assert listed(fleet, name="box") == {fleet.a.id, fleet.b.id}
    assert listed(fleet, name="pha2") == {fleet.b.id}
    assert listed(fleet, name="ARDV") == {fleet.c.id}
    assert listed(fleet, name="zzz") == set()


def test_status_filter(fleet):
    assert listed(fleet, status="RUNNING") == {fleet.b.id, fleet.c.id}
    assert listed(fleet, status="STOPPED") == {fleet.a.id}
    assert listed(fleet, status="stopped") == {fleet.a.id}
    assert_empty_page(fleet.user.client.list_notebooks(ListNotebooksRequest(status="DELETED")))
    expect_error(
        lambda: fleet.user.client.list_notebooks(ListNotebooksRequest(status="SLEEPING")), 400, "ModelArts.0104"
    )


def test_feature_filter_defaults_to_notebook(fleet):
    assert listed(fleet, feature="DEFAULT") == {fleet.e.id}
    assert listed(fleet, feature="NOTEBOOK") == {fleet.a.id, fleet.b.id, fleet.c.id}
    assert fleet.e.id not in listed(fleet)
    assert fleet.e.feature == "DEFAULT" and fleet.e.flavor == "modelarts.vm.cpu.free"


def test_workspace_filter(fleet):
    assert listed(fleet, workspace_id=fleet.workspace_id) == {fleet.d.id}
    assert listed(fleet, workspace_id="0") == {fleet.a.id, fleet.b.id, fleet.c.id}
    assert fleet.d.workspace_id == fleet.workspace_id
    assert_empty_page(fleet.user.client.list_notebooks(ListNotebooksRequest(workspace_id="f" * 32)))


def test_flavor_image_and_id_filters(fleet, image_ids):
    assert listed(fleet, flavor="cpu.4u") == {fleet.b.id}
    assert listed(fleet, flavor="modelarts.vm.cpu") == {fleet.a.id, fleet.b.id, fleet.c.id}
    assert listed(fleet, flavor="gpu") == set()
    assert listed(fleet, image_id=image_ids["notebook-scipy"]) == {fleet.b.id}
    assert listed(fleet, image_id=image_ids[DEFAULT_IMAGE]) == {fleet.a.id, fleet.c.id}
    assert listed(fleet, id=fleet.c.id) == {fleet.c.id}
    assert listed(fleet, id=fleet.d.id) == set()  # exists, but not in workspace "0"
    expect_error(lambda: fleet.user.client.list_notebooks(ListNotebooksRequest(id="not-a-uuid")), 400, "ModelArts.0104")


def test_billing_filter(fleet):
    assert listed(fleet, billing="COMPUTE") == {fleet.b.id, fleet.c.id}
    assert listed(fleet, billing="STORAGE") == {fleet.a.id, fleet.b.id, fleet.c.id}
    assert listed(fleet, billing="ALL") == {fleet.a.id, fleet.b.id, fleet.c.id}
    expect_error(lambda: fleet.user.client.list_notebooks(ListNotebooksRequest(billing="FREE")), 400, "ModelArts.0104")


def test_tags_filter_matching_nothing_gives_the_empty_page(fleet):
    assert_empty_page(fleet.user.client.list_notebooks(ListNotebooksRequest(tags="env|prod")))
    assert_empty_page(
        fleet.user.client.list_notebooks(ListNotebooksRequest(tags="env|prod,team|ml", limit=20)), size=20
    )
    assert_empty_page(fleet.user.client.list_notebooks(ListNotebooksRequest(tags="owner")))
    expect_error(
        lambda: fleet.user.client.list_notebooks(ListNotebooksRequest(tags=",env|prod")), 400, "ModelArts.0104"
    )


def test_swr_path_description_ip_and_username_filters(fleet):
    assert "notebook-scipy" in fleet.b.image.swr_path
    assert listed(fleet, swr_path="notebook-scipy") == {fleet.b.id}
    assert listed(fleet, swr_path=fleet.a.image.swr_path) == {fleet.a.id, fleet.c.id}
    assert listed(fleet, description="BOX") == {fleet.a.id, fleet.b.id}
    assert listed(fleet, description="third") == {fleet.c.id}
    with_ip = {nb.id for nb in (fleet.a, fleet.b, fleet.c) if nb.ip == "127.0.0.1"}
    assert {fleet.b.id, fleet.c.id} <= with_ip
    assert listed(fleet, ip="127.0.0.1") == with_ip
    assert listed(fleet, ip="10.9.9.9") == set()
    assert listed(fleet, username=fleet.user.name.upper()) == {fleet.a.id, fleet.b.id, fleet.c.id}
    assert listed(fleet, username="nobody-at-all") == set()


def test_pool_filters_match_nothing_without_pools(fleet):
    assert_empty_page(fleet.user.client.list_notebooks(ListNotebooksRequest(pool_id="pool-abc1")))
    assert_empty_page(fleet.user.client.list_notebooks(ListNotebooksRequest(pool_name="mypool")))
    expect_error(lambda: fleet.user.client.list_notebooks(ListNotebooksRequest(pool_id="X")), 400, "ModelArts.0104")


def test_owner_filter_is_for_admins_only(fleet, admin):
    own = {fleet.a.id, fleet.b.id, fleet.c.id}
    # a non-admin's owner is ignored: still only their own
    assert listed(fleet, owner=admin.user_id) == own
    as_admin = admin.client.list_notebooks(ListNotebooksRequest(owner=fleet.user.user_id, limit=50))
    assert set(ids_of(as_admin)) == own and as_admin.total == 3
    assert all(nb.user_id == fleet.user.user_id for nb in as_admin.data)
    admin_own = admin.client.list_notebooks(ListNotebooksRequest(limit=50))
    assert not own & set(ids_of(admin_own))


@pytest.mark.parametrize("sort_key", ["name", "status,name", "update_at", "create_at"])
@pytest.mark.parametrize("sort_dir", ["ASC", "DESC"])
def test_sort_keys_and_directions(fleet, sort_key, sort_dir):
    page = fleet.user.client.list_notebooks(ListNotebooksRequest(sort_key=sort_key, sort_dir=sort_dir))
    a, b, c = fleet.a.id, fleet.b.id, fleet.c.id
    # the four ascending orders are pairwise different, so a key that is ignored cannot pass
    ascending = {
        "name": [c, a, b],  # Aardvark < Alpha1-box < alpha2-BOX (any letter case)
        "status,name": [c, b, a],  # RUNNING (Aardvark, alpha2-BOX) < STOPPED (Alpha1-box)
        "update_at": fleet.order_updated,  # b, c, a
        "create_at": fleet.order_created,  # a, b, c
    }[sort_key]
    expected = ascending if sort_dir == "ASC" else list(reversed(ascending))
    assert ids_of(page) == expected
    assert page.total == 3


def test_sort_dir_alone_reverses_the_default_order(fleet):
    page = fleet.user.client.list_notebooks(ListNotebooksRequest(sort_dir="ASC"))
    assert ids_of(page) == fleet.order_created


def test_unsupported_sort_key_and_bad_sort_dir(fleet):
    c = fleet.user.client
    for key in ("size", "name,bogus", "owner"):
        expect_error(lambda key=key: c.list_notebooks(ListNotebooksRequest(sort_key=key)), 400, "ModelArts.6303")
    expect_error(lambda: c.list_notebooks(ListNotebooksRequest(sort_dir="UP")), 400, "ModelArts.0104")


@pytest.mark.parametrize("limit", [0, 51, -1])
def test_limit_out_of_range_is_0104(fleet, limit):
    expect_error(lambda: fleet.user.client.list_notebooks(ListNotebooksRequest(limit=limit)), 400, "ModelArts.0104")


def test_offset_limit_paging_envelope(fleet):
    c = fleet.user.client
    order = list(reversed(fleet.order_created))  # default order: create_at DESC
    cases = [
        # offset, limit, expected ids, pages, current
        (0, 2, order[0:2], 2, 0),
        (1, 2, order[1:3], 2, 0),
        (2, 2, order[2:3], 2, 1),
        (3, 2, [], 2, 1),
        (0, 1, order[0:1], 3, 0),
        (2, 1, order[2:3], 3, 2),
        (1, 50, order[1:], 1, 0),
        (10, 10, [], 1, 1),
    ]
    for offset, limit, expected, pages, current in cases:
        page = c.list_notebooks(ListNotebooksRequest(offset=offset, limit=limit))
        got = (ids_of(page), page.total, page.pages, page.size, page.current)
        assert got == (expected, 3, pages, limit, current), (offset, limit, got)
    walked = []
    for offset in range(0, 3):
        walked += ids_of(c.list_notebooks(ListNotebooksRequest(offset=offset, limit=1)))
    assert walked == order
    expect_error(lambda: c.list_notebooks(ListNotebooksRequest(offset=-1)), 400, "ModelArts.0104")


def _all_ids(client, **query) -> tuple[set[str], int]:
    seen: list[str] = []
    total = None
    for _ in range(100):
        page = client.list_all_notebooks(ListAllNotebooksRequest(offset=len(seen), limit=50, **query))
        total = page.total if total is None else total
        if not page.data:
            break
        seen += ids_of(page)
    assert len(seen) == len(set(seen)) == total
    return set(seen), total


def test_list_all_scope_admin_versus_user(server, fleet, admin, alice, image_ids):
    own = {fleet.a.id, fleet.b.id, fleet.c.id}
    mine = create_notebook(alice.client, image_ids[DEFAULT_IMAGE], "alices-own", wait=False)
    everyone, _ = _all_ids(admin.client)
    assert own | {mine.id} <= everyone
    assert fleet.d.id not in everyone  # other workspace
    lister_only, total = _all_ids(fleet.user.client)
    assert lister_only == own and total == 3
    alice_only, _ = _all_ids(alice.client)
    assert mine.id in alice_only and not alice_only & own
    # admin's /all can still be narrowed by owner and by username
    by_owner, n = _all_ids(admin.client, owner=fleet.user.user_id)
    assert by_owner == own and n == 3
    by_name, _ = _all_ids(admin.client, username=fleet.user.name)
    assert by_name == own
    wait_status(alice.client, mine.id, "RUNNING")
