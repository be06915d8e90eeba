"""SSH into instances of the docker runtime with the real OpenSSH client: sessions are execs in the
instance's container, through the Docker Engine API (never the docker CLI)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from .. import notebook_http
from ..procs import SignedClient, free_port
from ..runtime.test_ssh import MISSING, Ssh, keygen, ssh_endpoint
from ..support import end_process
from .conftest import delete_all

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING, reason="needs openssh-client and openssh-sftp-server")]


def test_ssh_exec_sftp_forward_and_stop_in_a_container(engine, docker_server, tmp_path):
    key = keygen(tmp_path / "key")
    server = docker_server(NBFLEET_SSH_PORT=str(free_port()))
    client = SignedClient(server.endpoint, server.admin_creds())
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nbfleet.cli.main",
                "admin",
                "add-keypair",
                "--user",
                server.creds["user_id"],
                "--name",
                "laptop",
                "--public-key",
                f"{key}.pub",
                "--data-dir",
                str(server.data_dir),
            ],
            check=True,
            env=server.cli_env(),
            capture_output=True,
            timeout=60,
        )
        nb = client.create("docker-ssh", endpoints=[{"service": "SSH", "key_pair_names": ["laptop"]}])
        nb = client.wait_status(nb["id"], "RUNNING", timeout=180)
        ssh = Ssh(ssh_endpoint(nb)["uri"], key)
        r = ssh.run("python -c 'import sys; print(sys.prefix, 6*7)'; id -un; pwd; cat /proc/1/cmdline | tr '\\0' ' '")
        assert r.returncode == 0, r.stderr
        first, user, cwd, init = r.stdout.split("\n")[:4]
        assert first.endswith(" 42") and (user, cwd) == ("ma-user", "/home/ma-user/work")
        assert "docker-init" in init or "tini" in init  # the container's own PID namespace
        assert ssh.run("exit 7").returncode == 7
        # the host's files, nbfleet's data dir included, are not in the container
        r = ssh.run(
            f"ls {server.data_dir.resolve()}; grep -c . /proc/self/status >/dev/null; "
            "grep -E 'CapEff|NoNewPrivs' /proc/self/status"
        )
        assert "No such file or directory" in r.stderr
        assert "CapEff:\t0000000000000000" in r.stdout and "NoNewPrivs:\t1" in r.stdout
        r = ssh.run("cat; echo err >&2", input="piped\n")
        assert (r.stdout, r.stderr.strip()) == ("piped\n", "err")
        r = ssh.run("tty; exit 4", extra=("-tt",))
        assert r.returncode == 4 and "/dev/pts/" in r.stdout, (r.stdout, r.stderr)
        # sftp: into the container's volume, which Jupyter serves
        local = tmp_path / "up.txt"
        local.write_text("over sftp\n")
        r = ssh.sftp(f"put {local} up.txt\n")
        assert r.returncode == 0, r.stderr
        got = notebook_http.get(
            f"{nb['url'].rsplit('/lab', 1)[0]}/api/contents/up.txt",
            params={"content": "1"},
            headers={"Authorization": f"token {nb['token']}"},
        )
        assert got.status_code == 200 and got.json()["content"] == "over sftp\n"
        # ssh -L reaches a server inside the container, on its own loopback
        assert (
            ssh.run(
                "echo inside > /tmp/m.txt; cd /tmp; nohup python -m http.server 8766 --bind 127.0.0.1 >/dev/null 2>&1 &"
            ).returncode
            == 0
        )
        port = free_port()
        tunnel = subprocess.Popen(
            [
                "ssh",
                *ssh.options("-N", "-L", f"127.0.0.1:{port}:127.0.0.1:8766"),
                "-p",
                str(ssh.port),
                f"{ssh.user}@{ssh.host}",
            ],
            stdin=subprocess.DEVNULL,
        )
        try:
            body = None
            deadline = time.monotonic() + 30
            while body is None and time.monotonic() < deadline:
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/m.txt", timeout=5)
                    body = answer.text if answer.status_code == 200 else None
                except httpx.HTTPError:
                    time.sleep(0.3)
            assert body == "inside\n"
        finally:
            end_process(tunnel)
        # stop ends a running session
        long = subprocess.Popen(
            ["ssh", *ssh.options(), "-p", str(ssh.port), f"{ssh.user}@{ssh.host}", "echo started; sleep 300"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert long.stdout.readline() == "started\n"
            client.ok("POST", f"/notebooks/{nb['id']}/stop")
            client.wait_status(nb["id"], "STOPPED", timeout=90)
            long.wait(timeout=30)
        finally:
            if long.poll() is None:
                long.kill()
        after = ssh.run("true")
        assert after.returncode == 255 and "not available" in after.stderr
    finally:
        delete_all(client)
        client.close()
