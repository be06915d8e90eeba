"""Notebook tags: add (upsert), remove, tags in use, and the list API's `tags` filter."""

from __future__ import annotations


def test_tags_round_trip_and_filter(api):
    a = api.create("tagged-a")
    b = api.create("tagged-b")
    assert (
        api.call(
            "POST",
            f"/notebooks/{a['id']}/tags/create",
            body={"tags": [{"key": "team", "value": "ml"}, {"key": "env", "value": "dev"}]},
        ).status_code
        == 204
    )
    assert (
        api.call(
            "POST", f"/notebooks/{b['id']}/tags/create", body={"tags": [{"key": "team", "value": "ops"}]}
        ).status_code
        == 204
    )
    assert (
        api.call(
            "POST", f"/notebooks/{a['id']}/tags/create", body={"tags": [{"key": "env", "value": "prod"}]}
        ).status_code
        == 204
    )
    shown = api.ok("GET", f"/notebooks/{a['id']}")["tags"]
    assert shown == [{"key": "env", "value": "prod"}, {"key": "team", "value": "ml"}]
    assert [n["name"] for n in api.ok("GET", "/notebooks", {"tags": "team|ml"})["data"]] == ["tagged-a"]
    assert {n["name"] for n in api.ok("GET", "/notebooks", {"tags": "team"})["data"]} == {"tagged-a", "tagged-b"}
    assert api.ok("GET", "/notebooks", {"tags": "team|ml,env|dev"})["total"] == 0
    assert api.ok("GET", "/notebooks", {"tags": "team|ml,env|prod"})["total"] == 1
    in_use = api.ok("GET", "/notebooks/tags")["tags"]
    assert in_use == [{"key": "env", "values": ["prod"]}, {"key": "team", "values": ["ml", "ops"]}]
    assert (
        api.call(
            "DELETE",
            f"/notebooks/{a['id']}/tags/delete",
            body={"tags": [{"key": "team", "value": "wrong"}, {"key": "env"}, {"key": "absent"}]},
        ).status_code
        == 204
    )
    assert api.ok("GET", f"/notebooks/{a['id']}")["tags"] == [{"key": "team", "value": "ml"}]


def test_tag_errors(api):
    nb = api.create("tag-errors")
    assert api.error("POST", f"/notebooks/{nb['id']}/tags/create", body={}) == (400, "ModelArts.6335")
    assert api.error(
        "POST", f"/notebooks/{nb['id']}/tags/create", body={"tags": [{"key": "_sys_x", "value": "1"}]}
    ) == (400, "ModelArts.6336")
    many = {"tags": [{"key": f"k{i}", "value": "v"} for i in range(21)]}
    assert api.error("POST", f"/notebooks/{nb['id']}/tags/create", body=many) == (400, "ModelArts.6336")
    assert api.ok("GET", f"/notebooks/{nb['id']}")["tags"] == []
    assert api.error(
        "POST",
        "/notebooks/00000000-0000-0000-0000-000000000000/tags/create",
        body={"tags": [{"key": "a", "value": "b"}]},
    ) == (400, "ModelArts.6309")


def test_the_tags_filter_takes_at_most_20_pairs(api):
    nb = api.create("many-pairs")
    tags = [{"key": f"k{i}", "value": f"v{i}"} for i in range(20)]
    assert api.call("POST", f"/notebooks/{nb['id']}/tags/create", body={"tags": tags}).status_code == 204
    twenty = ",".join(f"k{i}|v{i}" for i in range(20))
    assert api.ok("GET", "/notebooks", {"tags": twenty})["total"] == 1
    assert api.error("GET", "/notebooks", {"tags": twenty + ",k0"}) == (400, "ModelArts.0104")
    assert api.error("GET", "/notebooks/all", {"tags": ",".join(["k|v"] * 200)}) == (400, "ModelArts.0104")


def test_tags_filter_pairs_are_all_required_whatever_their_mix(api):
    a = api.create("mix-a")
    b = api.create("mix-b")
    api.call(
        "POST",
        f"/notebooks/{a['id']}/tags/create",
        body={"tags": [{"key": "team", "value": "ml"}, {"key": "env", "value": ""}]},
    )
    api.call("POST", f"/notebooks/{b['id']}/tags/create", body={"tags": [{"key": "team", "value": "ops"}]})
    names = lambda tags: sorted(n["name"] for n in api.ok("GET", "/notebooks", {"tags": tags})["data"])  # noqa: E731
    assert names("team|ml,team") == ["mix-a"]  # a pair and the bare key of the same tag
    assert names("team|ml,team|ml") == ["mix-a"]  # a repeated pair counts once
    assert names("team|ml,team|ops") == []  # one key cannot have two values
    assert names("team,env") == ["mix-a"]
    assert names("env|") == ["mix-a"]  # an empty value is a value
    assert names("team") == ["mix-a", "mix-b"]
