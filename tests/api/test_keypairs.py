"""SSH key pairs: registering public keys under names (``/v3/{project_id}/keypairs``), and what an
instance's SSH endpoint shows where no SSH gateway runs."""

from __future__ import annotations

import asyncssh
import pytest

from nbfleet.settings import Settings


def public_key(comment: str = "me@laptop") -> str:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    return key.export_public_key().decode().strip()


def path(api) -> str:
    return f"/v3/{api.creds.project_id}/keypairs"


def test_register_list_and_delete(api):
    key = public_key()
    made = api.ok("POST", path(api), body={"keypair": {"name": "laptop", "public_key": key + "\n"}})["keypair"]
    assert made["name"] == "laptop" and made["public_key"] == key and made["type"] == "ssh"
    assert made["fingerprint"].startswith("SHA256:")
    listed = api.ok("GET", path(api))["keypairs"]
    assert [k["keypair"]["name"] for k in listed] == ["laptop"]
    # the name is now usable on an instance
    nb = api.create("with-key", endpoints=[{"service": "SSH", "key_pair_names": ["laptop"]}])
    assert [e["key_pair_names"] for e in nb["endpoints"] if e["service"] == "SSH"] == [["laptop"]]
    assert api.ok("DELETE", f"{path(api)}/laptop") == {}
    assert api.ok("GET", path(api))["keypairs"] == []
    assert api.error("DELETE", f"{path(api)}/laptop") == (400, "ModelArts.6789")


def test_another_users_key_pairs_are_neither_seen_nor_usable(api):
    api.ok("POST", path(api), body={"keypair": {"name": "mine", "public_key": public_key()}})
    bob = api.new_user("bob")
    assert api.ok("GET", path(api), creds=bob)["keypairs"] == []
    assert api.error("DELETE", f"{path(api)}/mine", creds=bob) == (400, "ModelArts.6789")
    body = {
        "name": "b",
        "image_id": api.image_id(),
        "flavor": "modelarts.vm.cpu.2u",
        "volume": {"category": "EVS", "ownership": "MANAGED"},
        "endpoints": [{"service": "SSH", "key_pair_names": ["mine"]}],
    }
    assert api.error("POST", "/notebooks", body=body, creds=bob) == (400, "ModelArts.6789")
    assert [k["keypair"]["name"] for k in api.ok("GET", path(api))["keypairs"]] == ["mine"]


def huge_rsa_public_key(bits: int) -> str:
    """An RSA public key of ``bits`` bits, made from numbers (generating one would take minutes)."""
    import base64
    import struct

    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    def mpint(value: int) -> bytes:
        return string(value.to_bytes(value.bit_length() // 8 + 1, "big"))

    modulus = (1 << (bits - 1)) | 0xF1  # odd, exactly ``bits`` bits
    blob = string(b"ssh-rsa") + mpint(65537) + mpint(modulus)
    return "ssh-rsa " + base64.b64encode(blob).decode()


PRIVATE = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


@pytest.mark.parametrize(
    "keypair, code",
    [
        ({"name": "x"}, "ModelArts.6335"),
        ({"public_key": "k"}, "ModelArts.6335"),
        ({"name": "bad name", "public_key": public_key()}, "ModelArts.6336"),
        ({"name": "x" * 65, "public_key": public_key()}, "ModelArts.6336"),
        ({"name": 5, "public_key": public_key()}, "ModelArts.6336"),
        ({"name": "x", "public_key": PRIVATE}, "ModelArts.6336"),
        ({"name": "x", "public_key": "ssh-ed25519 AAAAC3Nz not-a-key"}, "ModelArts.6336"),
        ({"name": "x", "public_key": public_key() + "\n" + public_key()}, "ModelArts.6336"),
        ({"name": "x", "public_key": 'command="rm -rf ~" ' + public_key()}, "ModelArts.6336"),
        ({"name": "x", "public_key": ["ssh-ed25519"]}, "ModelArts.6336"),
        ({"name": "x\n", "public_key": public_key()}, "ModelArts.6336"),
        ({"name": "x", "public_key": huge_rsa_public_key(16392)}, "ModelArts.6336"),
    ],
)
def test_bad_key_pairs_are_refused_and_change_nothing(api, keypair, code):
    assert api.error("POST", path(api), body={"keypair": keypair}) == (400, code)
    assert api.ok("GET", path(api))["keypairs"] == []


@pytest.mark.parametrize("raw", [b"0", b"[]", b'"x"', b"null", b"{", b""])
def test_a_body_that_is_no_object_is_refused(api, raw):
    """Found by the fuzzing gate: a JSON body other than an object was a 500."""
    status, code = api.error("POST", path(api), raw_body=raw)
    assert status == 400 and code in ("ModelArts.6400", "ModelArts.6335")
    assert api.ok("GET", path(api))["keypairs"] == []


def test_a_user_has_at_most_100_key_pairs(api):
    from nbfleet.services.keypairs import MAX_KEYPAIRS

    key = public_key()
    for i in range(MAX_KEYPAIRS):
        api.ok("POST", path(api), body={"keypair": {"name": f"k{i}", "public_key": key}})
    assert api.error("POST", path(api), body={"keypair": {"name": "one-more", "public_key": key}}) == (
        400,
        "ModelArts.6336",
    )
    assert len(api.ok("GET", path(api))["keypairs"]) == MAX_KEYPAIRS
    api.ok("DELETE", f"{path(api)}/k0")  # room again once one is gone
    api.ok("POST", path(api), body={"keypair": {"name": "one-more", "public_key": key}})


def test_a_name_is_registered_once(api):
    api.ok("POST", path(api), body={"keypair": {"name": "laptop", "public_key": public_key("first")}})
    assert api.error("POST", path(api), body={"keypair": {"name": "laptop", "public_key": public_key("second")}}) == (
        400,
        "ModelArts.6336",
    )
    [kept] = api.ok("GET", path(api))["keypairs"]
    assert kept["keypair"]["public_key"].endswith("first")


def test_admin_add_keypair_refuses_what_is_not_a_public_key(api):
    with pytest.raises(ValueError):
        api.services.identity.add_keypair(api.creds.user_id, "k", PRIVATE)
    with pytest.raises(ValueError):
        api.services.identity.add_keypair(api.creds.user_id, "k", "ssh-ed25519 AAAAC3Nz test")
    assert api.ok("GET", path(api))["keypairs"] == []


def test_no_ssh_address_without_a_gateway(api):
    """The simulated runtime has no instances to open sessions in: a RUNNING instance's SSH uri stays null."""
    api.ok("POST", path(api), body={"keypair": {"name": "k", "public_key": public_key()}})
    nb = api.create("ssh-sim", endpoints=[{"service": "SSH", "key_pair_names": ["k"]}])
    nb = api.wait_status(nb["id"], "RUNNING")
    [ssh] = [e for e in nb["endpoints"] if e["service"] == "SSH"]
    assert ssh["uri"] is None and ssh["dev_service"] == "SSH"


def test_where_the_ssh_gateway_is_announced(tmp_path):
    local = Settings(data_dir=tmp_path, runtime="local", ssh_port=2222, public_url="https://nb.example.org")
    assert local.ssh_address() == "nb.example.org:2222"
    assert local.addresses().ssh_uri("abc") == "ssh://abc@nb.example.org:2222"
    assert (
        Settings(
            data_dir=tmp_path, runtime="local", ssh_port=2222, ssh_public_address="ssh.example.org:22"
        ).ssh_address()
        == "ssh.example.org:22"
    )
    # no sandbox, no SSH: a session would run on the host as nbfleet's own user
    assert Settings(data_dir=tmp_path, runtime="local", single_user=True).ssh_address() is None
    assert Settings(data_dir=tmp_path, runtime="local", ssh_port=0).ssh_address() is None
    assert Settings(data_dir=tmp_path, runtime="simulated").ssh_address() is None
    assert Settings(data_dir=tmp_path, runtime="docker", ssh_port=2200).ssh_address() == "127.0.0.1:2200"
