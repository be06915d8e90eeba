"""``nbfleet keypairs …``, ``notebooks create --ssh-key`` and ``notebooks ssh`` against a real server (simulated
runtime: no SSH gateway; tests/runtime/test_ssh.py runs the printed command against a real one)."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import Cli


@pytest.fixture(scope="module")
def user(server, tmp_path_factory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("cli-home"))
    cli.configure(server.creds)
    return cli


def keygen(path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def test_keypairs_add_list_delete(user, tmp_path):
    keygen(tmp_path / "id")
    added = user.ok("keypairs", "add", "cli-laptop", "--public-key", str(tmp_path / "id.pub"))
    assert added.stdout.startswith("cli-laptop: SHA256:")
    listed = user.json("keypairs", "list")
    assert [k["name"] for k in listed] == ["cli-laptop"]
    assert "cli-laptop" in user.ok("keypairs", "list").stdout
    # a private key is refused by the server, and not stored
    refused = user.run("keypairs", "add", "oops", "--public-key", str(tmp_path / "id"))
    assert refused.returncode == 1 and "ModelArts.6336" in refused.stderr
    assert [k["name"] for k in user.json("keypairs", "list")] == ["cli-laptop"]
    assert user.ok("keypairs", "delete", "cli-laptop").stdout.strip() == "cli-laptop deleted"
    gone = user.run("keypairs", "delete", "cli-laptop")
    assert gone.returncode == 1 and "ModelArts.6789" in gone.stderr


def test_create_with_ssh_and_the_ssh_command(user, api, tmp_path):
    keygen(tmp_path / "id")
    user.ok("keypairs", "add", "cli-ssh", "--public-key", str(tmp_path / "id.pub"))
    nb = user.json(
        "notebooks",
        "create",
        "--name",
        "cli-ssh",
        "--flavor",
        "modelarts.vm.cpu.2u",
        "--image",
        "notebook-python3.11",
        "--ssh-key",
        "cli-ssh",
        "--ssh-allow",
        "192.0.2.0/24",
    )
    [ssh] = [ep for ep in nb["endpoints"] if ep["service"] == "SSH"]
    assert ssh["key_pair_names"] == ["cli-ssh"] and ssh["allowed_access_ips"] == ["192.0.2.0/24"]
    api.wait_status(nb["id"], "RUNNING", timeout=30)
    # this server (simulated runtime) runs no SSH gateway: said plainly, exit 1
    none = user.run("notebooks", "ssh", nb["id"])
    assert none.returncode == 1 and "offers no SSH" in none.stderr
    plain = user.json(
        "notebooks",
        "create",
        "--name",
        "cli-nossh",
        "--flavor",
        "modelarts.vm.cpu.2u",
        "--image",
        "notebook-python3.11",
    )
    missing = user.run("notebooks", "ssh", plain["id"])
    assert missing.returncode == 1 and "no SSH endpoint" in missing.stderr
    unknown = user.run(
        "notebooks",
        "create",
        "--name",
        "x",
        "--flavor",
        "modelarts.vm.cpu.2u",
        "--image",
        "notebook-python3.11",
        "--ssh-key",
        "not-registered",
    )
    assert unknown.returncode == 1 and "ModelArts.6789" in unknown.stderr


def test_the_same_command_twice_in_one_second_is_two_requests(server):
    """The CLI signs a fresh request id into every call: repeating a state-changing command at once reaches the
    server's logic again (here: not found) instead of being refused as a replayed signature (ModelArts.0208)."""
    from nbfleet.cli.client import ApiClient, ApiError, Credentials

    creds = server.admin_creds()
    with ApiClient(Credentials(server.endpoint, creds.project_id, creds.ak, creds.sk)) as client:
        codes = []
        for _ in range(3):  # well within one second: the same method, path, body and X-Sdk-Date
            with pytest.raises(ApiError) as refused:
                client.request("DELETE", "/keypairs/never-added", version="v3")
            codes.append(refused.value.code)
    assert codes == ["ModelArts.6789"] * 3
