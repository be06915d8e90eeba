"""Every error row of spec notebooks.md §1.1; a refused create leaves nothing behind."""

from __future__ import annotations

import asyncssh
import pytest

BASE = {"name": "ok-name", "flavor": "modelarts.vm.cpu.2u", "volume": {"category": "EVS", "ownership": "MANAGED"}}


def body(api, **changes):
    data = {**BASE, "image_id": api.image_id()}
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def assert_refused(api, data, code, status=400):
    before = api.ok("GET", "/notebooks/all", {"limit": 50})["total"]
    assert api.error("POST", "/notebooks", body=data) == (status, code)
    assert api.ok("GET", "/notebooks/all", {"limit": 50})["total"] == before


def test_body_not_json_or_not_object(api):
    assert api.error("POST", "/notebooks", raw_body=b"{not json") == (400, "ModelArts.6400")
    assert api.error("POST", "/notebooks", raw_body=b"[1, 2]") == (400, "ModelArts.6400")
    assert api.error("POST", "/notebooks", raw_body=b"") == (400, "ModelArts.6400")


@pytest.mark.parametrize("missing", ["name", "image_id", "flavor"])
def test_required_members(api, missing):
    assert_refused(api, body(api, **{missing: ...}), "ModelArts.6335")


def test_volume_missing_is_6316(api):
    assert_refused(api, body(api, volume=...), "ModelArts.6316")


@pytest.mark.parametrize(
    "member,value",
    [
        ("name", 5),
        ("duration", "3600000"),
        ("duration", True),
        ("volume", "EVS"),
        ("endpoints", {}),
        ("lease", []),
        ("description", ["x"]),
    ],
)
def test_wrong_json_types_are_6332(api, member, value):
    assert_refused(api, body(api, **{member: value}), "ModelArts.6332")


def test_nested_wrong_type_is_6332(api):
    assert_refused(
        api, body(api, volume={"category": "EVS", "ownership": "MANAGED", "capacity": "5"}), "ModelArts.6332"
    )


@pytest.mark.parametrize("name", ["x" * 129, "has space", "semi;colon", ""])
def test_bad_names_are_6336(api, name):
    data = body(api, name=name)
    code = "ModelArts.6335" if name == "" else "ModelArts.6336"
    if name == "":
        data["name"] = ""
        code = "ModelArts.6336"
    assert_refused(api, data, code)


def test_cjk_and_long_valid_names_are_accepted(api):
    nb = api.ok("POST", "/notebooks", body=body(api, name="笔记本_1-a"))
    assert nb["name"] == "笔记本_1-a"


@pytest.mark.parametrize("char", list("&<>\"'/"))
def test_description_forbidden_characters_are_6334(api, char):
    assert_refused(api, body(api, description=f"a{char}b"), "ModelArts.6334")


def test_description_too_long_is_6336(api):
    assert_refused(api, body(api, description="d" * 513), "ModelArts.6336")


def test_feature_must_be_default_or_notebook(api):
    assert_refused(api, body(api, feature="OTHER"), "ModelArts.6336")


def test_second_default_instance_is_6301(api):
    free = body(api, feature="default", flavor="modelarts.vm.cpu.free")
    api.ok("POST", "/notebooks", body=free)
    assert_refused(api, free, "ModelArts.6301")


def test_unknown_workspace_is_0102(api):
    assert_refused(api, body(api, workspace_id="a" * 32), "ModelArts.0102")


def test_flavor_errors(api):
    assert_refused(api, body(api, flavor="modelarts.vm.cpu.99u"), "ModelArts.6323")
    assert_refused(api, body(api, flavor="modelarts.vm.cpu.free"), "ModelArts.6870")
    assert_refused(api, body(api, feature="DEFAULT"), "ModelArts.6870")


def test_pool_id_unknown_is_6336(api):
    assert_refused(api, body(api, pool_id="pool-abc"), "ModelArts.6336")


def test_image_errors(api):
    assert_refused(api, body(api, image_id="00000000-0000-0000-0000-000000000000"), "ModelArts.6797")
    gpu_only = api.image_id("notebook-cuda")
    assert_refused(api, body(api, image_id=gpu_only), "ModelArts.6330")
    ssh_only = api.image_id("ssh-devbox")
    assert_refused(api, body(api, image_id=ssh_only), "ModelArts.6768")


@pytest.mark.parametrize(
    "volume,code",
    [
        ({"category": "NFS", "ownership": "MANAGED"}, "ModelArts.6336"),
        ({"category": "EVS", "ownership": "MINE"}, "ModelArts.6336"),
        ({"category": "EVS", "ownership": "DEDICATED"}, "ModelArts.6336"),
        ({"category": "EVS", "ownership": "MANAGED", "capacity": 4}, "ModelArts.6331"),
        ({"category": "EVS", "ownership": "MANAGED", "capacity": 4097}, "ModelArts.6331"),
        ({"category": "OBS", "ownership": "MANAGED", "dew_secret_name": "s"}, "ModelArts.6317"),
        (
            {"category": "OBS", "ownership": "MANAGED", "uri": "obs://bucket/dir", "dew_secret_name": "s"},
            "ModelArts.6318",
        ),
        ({"category": "OBS", "ownership": "MANAGED", "uri": "obs://bucket/", "dew_secret_name": "s"}, "ModelArts.6358"),
        ({"category": "OBS", "ownership": "MANAGED", "uri": "obs://bucket/dir/"}, "ModelArts.6335"),
    ],
)
def test_volume_rules(api, volume, code):
    assert_refused(api, body(api, volume=volume), code)


def test_volume_defaults(api):
    nb = api.ok("POST", "/notebooks", body=body(api, volume={"category": "evs", "ownership": "managed"}))
    assert nb["volume"] == {
        "category": "EVS",
        "ownership": "MANAGED",
        "read_only": False,
        "capacity": 5,
        "mount_path": "/home/ma-user/work/",
    }


@pytest.mark.parametrize(
    "extra",
    [
        {"duration": 3_599_999},
        {"duration": 0},
        {"duration": 259_200_001},
        {"lease": {"duration": 100, "type": "TIMING"}},
        {"lease": {"duration": 899_999, "type": "IDLE"}},
    ],
)
def test_duration_out_of_range_is_6349(api, extra):
    assert_refused(api, body(api, **extra), "ModelArts.6349")


def test_duration_minus_one_disables_auto_stop(api):
    nb = api.ok("POST", "/notebooks", body=body(api, duration=-1))
    assert nb["lease"]["enable"] is False


def test_top_level_duration_overrides_lease_and_forces_timing(api):
    nb = api.ok("POST", "/notebooks", body=body(api, duration=7_200_000, lease={"duration": 900_000, "type": "idle"}))
    assert nb["lease"]["type"] == "TIMING" and nb["lease"]["duration"] == 7_200_000


def test_endpoint_ip_whitelist_rules(api):
    six = [f"1.2.3.{i}" for i in range(6)]
    assert_refused(api, body(api, endpoints=[{"service": "SSH", "allowed_access_ips": six}]), "ModelArts.6336")
    for bad in ("not-ip", "10.0.0.1/8", "::1", "10.0.0.0/33", "1.2.3.4 "):
        assert_refused(api, body(api, endpoints=[{"service": "SSH", "allowed_access_ips": [bad]}]), "ModelArts.6336")
    assert_refused(api, body(api, endpoints=[{"service": "SSH", "allowed_access_ips": [167772161]}]), "ModelArts.6332")
    # an address, or a network in CIDR form
    nb = api.ok(
        "POST",
        "/notebooks",
        body=body(api, endpoints=[{"service": "SSH", "allowed_access_ips": ["203.0.113.7", "198.51.100.0/24"]}]),
    )
    ssh = [e for e in nb["endpoints"] if e["service"] == "SSH"][0]
    assert ssh["allowed_access_ips"] == ["203.0.113.7", "198.51.100.0/24"]


def test_unknown_key_pair_is_6789(api):
    assert_refused(api, body(api, endpoints=[{"service": "SSH", "key_pair_names": ["nope"]}]), "ModelArts.6789")


def test_known_key_pair_is_accepted(api):
    public_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    api.services.identity.add_keypair(api.creds.user_id, "laptop", public_key)
    nb = api.ok("POST", "/notebooks", body=body(api, endpoints=[{"service": "ssh", "key_pair_names": ["laptop"]}]))
    ssh = [e for e in nb["endpoints"] if e["service"] == "SSH"][0]
    assert ssh["key_pair_names"] == ["laptop"] and ssh["ssh_keys"] == ["laptop"]


def test_instance_quota_is_6302_and_can_be_lifted(api):
    user = api.new_user("quota-user")
    api.services.identity.set_quota(user.user_id, 2)
    for i in range(2):
        api.ok("POST", "/notebooks", body=body(api, name=f"q{i}"), creds=user)
    assert api.error("POST", "/notebooks", body=body(api, name="q3"), creds=user) == (400, "ModelArts.6302")
    api.services.identity.set_quota(user.user_id, -1)
    api.ok("POST", "/notebooks", body=body(api, name="q3"), creds=user)
    feature = api.ok("GET", "/authoring/features/NOTEBOOK", creds=user)
    assert feature["quota"] == -1 and feature["used"] == 3


def test_default_quota_is_ten(api):
    user = api.new_user("ten")
    for i in range(10):
        api.ok("POST", "/notebooks", body=body(api, name=f"n{i}"), creds=user)
    assert api.error("POST", "/notebooks", body=body(api, name="n10"), creds=user) == (400, "ModelArts.6302")


@pytest.mark.parametrize("member,value", [("name", "trailing\n"), ("workspace_id", "0\n")])
def test_a_trailing_newline_is_not_accepted(api, member, value):
    assert_refused(api, body(api, **{member: value}), "ModelArts.6336")
