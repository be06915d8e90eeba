"""Bounds every request meets at the edge: integers, nesting, free-form members, control characters;
and rows stored before those bounds that must not fail the pages showing them."""

from __future__ import annotations

import json

import orjson
import pytest
from sqlalchemy import update

from nbfleet.store.tables import notebooks

HUGE = "1" + "0" * 30


def _deep(levels: int):
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _count(api) -> int:
    return api.ok("GET", "/notebooks/all", {"limit": 50})["total"]


@pytest.fixture
def nb(api):
    return api.create("bounds")


# --- integers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,query",
    [
        ("/notebooks", {"offset": HUGE}),
        ("/notebooks", {"limit": HUGE}),
        ("/notebooks/all", {"offset": HUGE}),
        ("/notebooks/all", {"offset": "-" + HUGE}),
        ("/notebooks/flavors", {"offset": HUGE}),
        ("/notebooks/flavors", {"limit": HUGE}),
        ("/images", {"offset": HUGE}),
        ("/images", {"limit": HUGE}),
        ("/notebooks", {"offset": "9" * 5000}),
    ],
)
def test_integer_query_parameters_out_of_range_are_0104(api, path, query):
    assert api.error("GET", path, query) == (400, "ModelArts.0104")


@pytest.mark.parametrize(
    "method,suffix,query",
    [
        ("GET", "/events", {"offset": HUGE}),
        ("GET", "/events", {"limit": HUGE}),
        ("GET", "/flavors", {"offset": HUGE}),
        ("POST", "/start", {"duration": HUGE}),
        ("PATCH", "/lease", {"duration": HUGE}),
    ],
)
def test_integer_query_parameters_of_one_instance_are_bounded(api, nb, method, suffix, query):
    assert api.error(method, f"/notebooks/{nb['id']}{suffix}", query) == (400, "ModelArts.0104")


def test_the_largest_offset_is_an_empty_page(api, nb):
    page = api.ok("GET", "/notebooks", {"offset": str(2**31 - 1)})
    assert page["data"] == [] and page["total"] == 1


# --- nesting and free-form members -------------------------------------------------------------------


@pytest.mark.parametrize(
    "member,value",
    [
        ("affinity", _deep(254)),
        ("affinity", _deep(9)),
        ("custom_spec", {"cpu": 1, "x": _deep(9)}),
        ("user_vpc", {"vpc_id": "v", "extra": _deep(12)}),
        ("affinity", {"blob": "x" * 20_000}),
    ],
)
def test_free_form_members_beyond_the_bounds_are_refused(api, member, value):
    before = _count(api)
    body = {
        "name": "deep",
        "image_id": api.image_id(),
        "flavor": "modelarts.vm.cpu.2u",
        "volume": {"category": "EVS", "ownership": "MANAGED"},
        member: value,
    }
    status, code = api.error("POST", "/notebooks", body=body)
    assert (status, code) in ((400, "ModelArts.6336"), (400, "ModelArts.6400"))
    assert _count(api) == before


def test_a_free_form_member_within_the_bounds_is_kept(api):
    affinity = {
        "required_during_scheduling_ignored_during_execution": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]}
        ],
        "x": _deep(5),
    }
    nb = api.create("shallow", affinity=affinity)
    assert nb["affinity"] == affinity


def test_a_body_nested_beyond_the_api_is_6400(api, nb):
    assert api.error("PUT", f"/notebooks/{nb['id']}", body={"hooks": _deep(40)}) == (400, "ModelArts.6400")


# --- rows that cannot be rendered --------------------------------------------------------------------


def _store_spec(api, notebook_id: str, spec_document: str) -> None:
    with api.services.notebooks.db.write() as conn:
        conn.execute(update(notebooks).where(notebooks.c.id == notebook_id).values(spec=spec_document))


def test_a_stored_253_deep_affinity_does_not_fail_the_lists(api):
    deep = api.create("deep-stored")
    fine = api.create("fine")
    spec = orjson.loads(json.dumps(api.ok("GET", f"/notebooks/{deep['id']}")))  # a copy to take the image from
    stored = {
        "volume": {
            "category": "EVS",
            "ownership": "MANAGED",
            "capacity": 5,
            "read_only": False,
            "mount_path": "/home/ma-user/work/",
        },
        "data_volumes": [],
        "endpoints": [],
        "image": spec["image"],
        "affinity": _deep(253),
    }
    _store_spec(api, deep["id"], json.dumps(stored))
    for path in ("/notebooks", "/notebooks/all"):
        page = api.ok("GET", path, {"limit": 50})
        shown = {n["id"]: n for n in page["data"]}
        assert set(shown) == {deep["id"], fine["id"]} and page["total"] == 2
        assert shown[deep["id"]]["affinity"] is None
        assert shown[deep["id"]]["image"]["id"] == spec["image"]["id"]
    assert api.ok("GET", f"/notebooks/{deep['id']}")["affinity"] is None


def test_a_stored_row_that_does_not_parse_is_listed_degraded(api):
    broken = api.create("broken")
    _store_spec(api, broken["id"], "{not json")
    page = api.ok("GET", "/notebooks/all", {"limit": 50})
    [item] = [n for n in page["data"] if n["id"] == broken["id"]]
    assert (item["name"], item["status"], item["image"]) == ("broken", "RUNNING", None)
    assert api.ok("GET", f"/notebooks/{broken['id']}")["name"] == "broken"
    assert api.ok("DELETE", f"/notebooks/{broken['id']}")["status"] == "DELETING"


# --- control characters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"description": "a\x00b"},
        {"name": "a\x00"},
        {"username": "\x00"},
        {"tags": "k|\x00"},
        {"sort_key": "name\x00"},
        {"description": "line\x01"},
        {"swr_path": "\x7f"},
    ],
)
def test_control_characters_in_list_filters_are_0104(api, query):
    assert api.error("GET", "/notebooks", query) == (400, "ModelArts.0104")


def test_nul_in_a_path_id_is_0104(api, nb):
    assert api.error("GET", "/notebooks/%00" + nb["id"]) == (400, "ModelArts.0104")
    assert api.error("DELETE", f"/notebooks/{nb['id']}%00") == (400, "ModelArts.0104")
    assert api.error("GET", "/images/ab%00cd") == (400, "ModelArts.0104")


@pytest.mark.parametrize(
    "member,value",
    [
        ("description", "a\x00b"),
        ("image_id", "\x00"),
        ("name", "nb\x00"),
        ("volume", {"category": "EVS", "ownership": "MANAGED", "dew_secret_name": "s\x00"}),
        ("affinity", {"k\x00": "v"}),
        ("description", "bell\x07"),
    ],
)
def test_control_characters_in_a_create_body_are_refused_and_change_nothing(api, member, value):
    before = _count(api)
    body = {
        "name": "ctl",
        "image_id": api.image_id(),
        "flavor": "modelarts.vm.cpu.2u",
        "volume": {"category": "EVS", "ownership": "MANAGED"},
        member: value,
    }
    assert api.error("POST", "/notebooks", body=body) == (400, "ModelArts.6336")
    assert _count(api) == before


def test_control_characters_in_update_and_tag_bodies_are_refused(api, nb):
    assert api.error("PUT", f"/notebooks/{nb['id']}", body={"description": "x\x00"}) == (400, "ModelArts.6336")
    assert api.error("POST", f"/notebooks/{nb['id']}/tags/create", body={"tags": [{"key": "k", "value": "\x00"}]}) == (
        400,
        "ModelArts.6336",
    )
    shown = api.ok("GET", f"/notebooks/{nb['id']}")
    assert shown["description"] == nb["description"] and shown["tags"] == []


def test_nul_in_a_token_request_is_refused(api):
    body = {
        "auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin\x00", "password": "x"}}}}
    }
    response = api.client.post("/v3/auth/tokens", json=body)
    assert response.status_code == 400 and response.json()["error_code"] == "ModelArts.6336"
