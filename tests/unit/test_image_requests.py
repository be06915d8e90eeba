"""Image references and the image API's bodies (spec images-flavors-tags-storage.md §2.2, §2.5, §2.6)."""

from __future__ import annotations

import pytest

from nbfleet.domain import errors as E
from nbfleet.domain.image_requests import check_group_update, check_registration, check_save, force_flag
from nbfleet.domain.images import ImageAddress, group_id, parse_swr_path, saved_image_address


@pytest.mark.parametrize(
    "text,parts",
    [
        ("swr.example.com/team/app:1.0", ("swr.example.com", "team", "app", "1.0")),
        ("registry.local:5000/team/app:latest", ("registry.local:5000", "team", "app", "latest")),
        ("localhost:5000/team/my_app.v2:2024-01", ("localhost:5000", "team", "my_app.v2", "2024-01")),
        ("team-a/the-app:V1_rc.2", (None, "team-a", "the-app", "V1_rc.2")),
    ],
)
def test_references_taken_apart(text, parts):
    address = parse_swr_path(text)
    assert (address.registry, address.namespace, address.name, address.tag) == parts
    assert str(address) == text


@pytest.mark.parametrize(
    "text",
    [
        "team/app:1",  # shorter than 16
        "x" * 2040 + "/team/a:1",  # longer than 2048
        "swr.example.com/team/app",  # no tag
        "swr.example.com/team/app:",  # empty tag
        "swr.example.com:5000/team/app",  # the port is no tag
        "swr.example.com/team/app@sha256:abcdef0123",  # digests
        "swr.example.com/team/sub/app:1",  # nested namespaces
        "swr.example.com/Team/app:1",
        "swr.example.com/1team/app:1",
        "swr.example.com/team/App:1",
        "swr.example.com/team/-app:1",
        "swr.example.com/team/app-:1",
        "swr.example.com/team/app:v 1",
        "-bad-.example.com/team/app:1",
        "swr.example.com//app:1",
    ],
)
def test_malformed_references_are_6336(text):
    with pytest.raises(E.InvalidProperty) as info:
        parse_swr_path(text)
    assert info.value.code == "ModelArts.6336" and "swr_path" in info.value.message


def test_saved_images_go_to_nbfleets_registry():
    assert str(saved_image_address("team", "app", "v1")) == "registry.nbfleet.local/team/app:v1"
    assert isinstance(saved_image_address("team", "app", "v1"), ImageAddress)


def test_group_ids_are_derived_from_what_the_group_is():
    assert group_id("p", "u", "team", "app") == group_id("p", "u", "team", "app")
    others = {
        group_id("p", "u", "team", "other"),
        group_id("p", "u2", "team", "app"),
        group_id("p2", "u", "team", "app"),
        group_id(None, None, "team", "app"),
    }
    assert group_id("p", "u", "team", "app") not in others and len(others) == 4


def test_registration_defaults_and_case():
    reg = check_registration(
        {
            "swr_path": "swr.example.com/team/app:1",
            "arch": "aarch64",
            "resource_category": ["gpu", "GPU", "cpu"],
            "tags": ["a=1", {"key": "b"}],
        }
    )
    assert reg.arch == "AARCH64" and reg.resource_categories == ("GPU", "CPU")
    assert reg.services == ("NOTEBOOK", "SSH") and reg.visibility == "PRIVATE" and reg.origin == "CUSTOMIZE"
    assert reg.tags == [{"key": "a", "value": "1"}, {"key": "b", "value": ""}]
    assert reg.workspace_id == "0" and reg.read_me is None


def test_save_defaults():
    request = check_save({"name": "app", "namespace": "team"}, now_ms=1_700_000_000_000)
    assert request.tag == "20231114221320" and request.workspace_id == "0" and request.description == ""
    assert check_save({"name": "app", "namespace": "team", "tag": ""}, 0).tag == "19700101000000"


def test_group_update():
    assert check_group_update(None) == check_group_update({})
    change = check_group_update({"read_me": "r", "tags": [{"key": "k", "value": "v"}]})
    assert change.read_me == "r" and change.tags == [{"key": "k", "value": "v"}]


@pytest.mark.parametrize(
    "body,query,expected",
    [
        (None, None, False),
        ({}, None, False),
        ({"is_force": True}, None, True),
        (None, "TRUE", True),
        ({"is_force": False}, "true", False),  # the body wins (spec A16)
        ({}, "false", False),
    ],
)
def test_force_flag(body, query, expected):
    assert force_flag(body, query) is expected


def test_force_flag_refusals():
    with pytest.raises(E.WrongType):
        force_flag({"is_force": "true"}, None)
    with pytest.raises(E.InvalidParameter):
        force_flag(None, "1")
