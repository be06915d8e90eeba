"""Image groups in process: what a group is, its stable id, counts, paging, guide text and tags, deletion."""

from __future__ import annotations

import uuid

import pytest

from nbfleet.domain.images import group_id

from .test_image_api import dedicated, register


def groups(api, creds=None, **query) -> dict:
    return api.ok("GET", "/images/group", query, creds=creds)


def by_name(page: dict) -> dict[str, dict]:
    return {g["name"]: g for g in page["data"]}


def test_the_group_route_is_not_taken_for_an_image_id(api):
    page = groups(api)
    assert set(page) >= {"current", "data", "pages", "size", "total", "is_swr_enterprise"}
    assert page["is_swr_enterprise"] is False


def test_a_group_is_one_owners_images_of_one_name(api):
    one = register(api, "swr.example.com/team/app:1", description="first")
    two = register(api, "other.example.com/team/app:2", description="second")
    register(api, "swr.example.com/team/tool:1")
    bob = api.new_user("bob-groups")
    register(api, "swr.example.com/team/app:1", creds=bob)
    mine = by_name(groups(api, type="DEDICATED"))
    assert set(mine) == {"app", "tool"}
    app = mine["app"]
    assert app["version_count"] == 2 and app["namespace"] == "team" and app["type"] == "DEDICATED"
    assert app["create_at"] == one["create_at"] and app["update_at"] >= two["update_at"]
    assert app["description"] == "second"  # the newest image's
    assert (app["read_me"], app["tags"], app["swr_instance_id"], app["swr_instance_name"]) == ("", [], None, None)
    # the id is derived from what the group is: the same on every replica, after every restart
    assert app["id"] == group_id(api.creds.project_id, api.creds.user_id, "team", "app")
    assert by_name(groups(api, type="DEDICATED"))["app"]["id"] == app["id"]
    bobs = by_name(groups(api, creds=bob, type="DEDICATED"))
    assert set(bobs) == {"app"} and bobs["app"]["id"] != app["id"] and bobs["app"]["version_count"] == 1


def test_built_in_images_form_groups_too(api):
    builtin = by_name(groups(api, type="BUILD_IN"))
    assert {"notebook-python3.11", "notebook-scipy", "notebook-cuda", "ssh-devbox"} <= set(builtin)
    assert all(g["version_count"] == 1 and g["type"] == "BUILD_IN" for g in builtin.values())
    assert builtin["notebook-scipy"]["id"] == group_id(None, None, "nbfleet", "notebook-scipy")


def test_filters_and_paging(api):
    for name in ("alpha", "beta", "gamma"):
        register(api, f"swr.example.com/team/{name}:1")
    register(api, "swr.example.com/other/alpha:1")
    assert {g["name"] for g in groups(api, name="alph")["data"]} == {"alpha"}
    assert groups(api, name="alph")["total"] == 2  # team/alpha and other/alpha
    assert groups(api, name="alph", name_fuzzy_match="false")["total"] == 0
    assert groups(api, name="alpha", name_fuzzy_match="false", namespace="other")["total"] == 1
    page = groups(api, type="DEDICATED", limit=2, offset=2)
    assert (page["total"], page["size"], page["pages"], page["current"], len(page["data"])) == (4, 2, 2, 2, 2)
    everything = groups(api)
    assert everything["total"] == 4 + len(groups(api, type="BUILD_IN")["data"])
    assert groups(api, swr_instance_id="enterprise-1")["total"] == 0
    assert groups(api, workspace_id="f" * 32)["total"] == 0


@pytest.mark.parametrize(
    "query",
    [
        {"type": "MINE"},
        {"name_fuzzy_match": "maybe"},
        {"limit": "-1"},
        {"offset": "x"},
        {"workspace_id": "bad workspace"},
    ],
)
def test_list_refusals(api, query):
    assert api.error("GET", "/images/group", query) == (400, "ModelArts.0104")


def test_update_replaces_the_guide_text_and_tags(api):
    register(api, "swr.example.com/team/app:1")
    gid = by_name(groups(api, type="DEDICATED"))["app"]["id"]
    updated = api.ok(
        "PUT",
        f"/images/group/{gid}",
        body={"read_me": "# How to use", "tags": [{"key": "team", "value": "ml"}, {"key": "stage"}]},
    )
    assert updated["read_me"] == "# How to use" and updated["id"] == gid
    assert updated["tags"] == [{"key": "team", "value": "ml"}, {"key": "stage", "value": ""}]
    assert by_name(groups(api))["app"]["read_me"] == "# How to use"
    only_tags = api.ok("PUT", f"/images/group/{gid}", body={"tags": []})
    assert only_tags["tags"] == [] and only_tags["read_me"] == "# How to use"
    assert api.ok("PUT", f"/images/group/{gid}")["read_me"] == "# How to use"  # no body: nothing changes
    # register's read_me and tags go to the group as well
    register(api, "swr.example.com/team/app:2", read_me="v2 notes", tags=["x=1"])
    group = by_name(groups(api))["app"]
    assert (group["read_me"], group["tags"], group["version_count"]) == ("v2 notes", [{"key": "x", "value": "1"}], 2)


def test_update_refusals_change_nothing(api):
    register(api, "swr.example.com/team/app:1")
    gid = by_name(groups(api, type="DEDICATED"))["app"]["id"]
    builtin = by_name(groups(api, type="BUILD_IN"))["notebook-scipy"]["id"]
    bob = api.new_user("bob-upd")
    cases = [
        (gid, {"read_me": "r" * 30001}, (400, "ModelArts.6336")),
        (gid, {"read_me": 5}, (400, "ModelArts.6332")),
        (gid, {"tags": "a=1"}, (400, "ModelArts.6332")),
        (gid, {"tags": [{"key": f"k{i}"} for i in range(21)]}, (400, "ModelArts.6336")),
        (gid, [], (400, "ModelArts.6400")),
        (builtin, {"read_me": "mine now"}, (403, "ModelArts.0108")),
        (str(uuid.uuid4()), {"read_me": "x"}, (400, "ModelArts.6404")),
    ]
    for target, body, expected in cases:
        assert api.error("PUT", f"/images/group/{target}", body=body) == expected, body
    assert api.error("PUT", f"/images/group/{gid}", body={"read_me": "bob's"}, creds=bob) == (400, "ModelArts.6404")
    assert by_name(groups(api))["app"]["read_me"] == ""
    assert by_name(groups(api, type="BUILD_IN"))["notebook-scipy"]["read_me"] == ""


def test_delete_takes_every_image_of_the_group(api):
    one = register(api, "swr.example.com/team/app:1")
    two = register(api, "swr.example.com/team/app:2")
    keep = register(api, "swr.example.com/team/tool:1")
    gid = by_name(groups(api))["app"]["id"]
    api.ok("PUT", f"/images/group/{gid}", body={"read_me": "old notes"})
    assert api.ok("DELETE", f"/images/group/{gid}", body={"is_force": False}) == {}
    for image in (one, two):
        assert api.error("GET", f"/images/{image['id']}") == (400, "ModelArts.6404")
    assert [i["id"] for i in dedicated(api)] == [keep["id"]]
    assert "app" not in by_name(groups(api))
    assert api.error("DELETE", f"/images/group/{gid}") == (400, "ModelArts.6404")
    assert api.error("PUT", f"/images/group/{gid}", body={"read_me": "x"}) == (400, "ModelArts.6404")
    again = register(api, "swr.example.com/team/app:1")
    group = by_name(groups(api))["app"]
    assert group["id"] == gid and group["version_count"] == 1 and group["read_me"] == ""  # a fresh start
    assert again["id"] != one["id"]


def test_delete_refusals(api):
    register(api, "swr.example.com/team/app:1")
    gid = by_name(groups(api))["app"]["id"]
    builtin = by_name(groups(api, type="BUILD_IN"))["notebook-scipy"]["id"]
    assert api.error("DELETE", f"/images/group/{builtin}") == (403, "ModelArts.0108")
    assert api.error("DELETE", f"/images/group/{uuid.uuid4()}") == (400, "ModelArts.6404")
    assert api.error("DELETE", f"/images/group/{gid}", body={"is_force": 1}) == (400, "ModelArts.6332")
    bob = api.new_user("bob-del")
    assert api.error("DELETE", f"/images/group/{gid}", creds=bob) == (400, "ModelArts.6404")
    assert by_name(groups(api))["app"]["version_count"] == 1
