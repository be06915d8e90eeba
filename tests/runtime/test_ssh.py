"""SSH into notebook instances of the local runtime with the real OpenSSH client (ssh, sftp, ssh -L),
through nbfleet's gateway, against real sandboxed instances."""

from __future__ import annotations

import asyncio
import hashlib
import html
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from nbfleet.runtime.base import Placement
from nbfleet.runtime.local import LocalRuntime
from nbfleet.runtime.sandbox import Unsandboxed
from nbfleet.runtime.sessions import SessionRefused

from .. import notebook_http
from ..cli.conftest import Cli
from ..procs import ServeProcess, SignedClient, UnprivilegedUser, free_port
from ..support import end_process
from .local_helpers import marked

MISSING = not shutil.which("ssh") or not Path("/usr/lib/openssh/sftp-server").exists()
if MISSING and os.environ.get("NBFLEET_REQUIRE_SSH") == "1":  # .ci/run installs them: CI must not skip
    raise RuntimeError("the SSH tests need openssh-client and openssh-sftp-server")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.runtime_only,
    pytest.mark.skipif(MISSING, reason="needs openssh-client and openssh-sftp-server"),
]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Ssh:
    """The OpenSSH client against one instance's ``uri``, never asking anything (BatchMode)."""

    def __init__(self, uri: str, key: Path, known_hosts: Path | None = None, strict: str = "yes"):
        parts = urlsplit(uri)
        self.user, self.host, self.port = parts.username, parts.hostname, parts.port
        self.key = key
        self.known_hosts = known_hosts
        self.strict = strict

    def options(self, *extra: str) -> list[str]:
        hosts = (
            ["-o", f"StrictHostKeyChecking={self.strict}", "-o", f"UserKnownHostsFile={self.known_hosts}"]
            if self.known_hosts
            else ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        )
        return [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            *hosts,
            "-i",
            str(self.key),
            *extra,
        ]

    def run(
        self, *command: str, input: str | None = None, timeout: float = 60, extra=()
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", *self.options(*extra), "-p", str(self.port), f"{self.user}@{self.host}", *command],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def sftp(self, batch: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sftp", *self.options(), "-P", str(self.port), "-b", "-", f"{self.user}@{self.host}"],
            capture_output=True,
            text=True,
            input=batch,
            timeout=60,
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssh")
    keys = root / "keys"
    keys.mkdir()
    good, other = keygen(keys / "good"), keygen(keys / "other")
    proc = ServeProcess(
        root / "data", runtime="local", env={"NBFLEET_SSH_PORT": str(free_port()), "NBFLEET_INSTANCE_QUOTA": "-1"}
    ).start()
    client = SignedClient(proc.endpoint, proc.admin_creds())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nbfleet.cli.main",
            "admin",
            "add-keypair",
            "--user",
            proc.creds["user_id"],
            "--name",
            "laptop",
            "--public-key",
            f"{good}.pub",
            "--data-dir",
            str(proc.data_dir),
        ],
        check=True,
        env=proc.cli_env(),
        capture_output=True,
        timeout=60,
    )
    try:
        yield proc, client, good, other
    finally:
        for nb in client.ok("GET", "/notebooks/all", {"limit": 50})["data"]:
            client.call("DELETE", f"/notebooks/{nb['id']}")
        deadline = time.monotonic() + 60
        while client.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
            time.sleep(0.2)
        client.close()
        proc.terminate()
        for leftover in marked(proc.data_dir):
            leftover.kill()


@pytest.fixture(autouse=True)
def one_test_at_a_time(request):
    """Each test's instances are deleted after it: a few Jupyter servers at a time, not all of them."""
    yield
    if "fleet" in request.fixturenames:
        client = request.getfixturevalue("fleet")[1]
        for nb in client.ok("GET", "/notebooks/all", {"limit": 50})["data"]:
            client.call("DELETE", f"/notebooks/{nb['id']}")


def ssh_endpoint(nb: dict) -> dict:
    return next(ep for ep in nb["endpoints"] if ep["service"] == "SSH")


def running(client: SignedClient, name: str, **endpoint) -> dict:
    ep = {"service": "SSH", "key_pair_names": ["laptop"], **endpoint}
    nb = client.create(name, endpoints=[ep])
    return client.wait_status(nb["id"], "RUNNING", timeout=120)


def test_exec_pty_and_environment_are_the_instances(fleet):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-exec")
    uri = ssh_endpoint(nb)["uri"]
    assert uri == f"ssh://{nb['id']}@127.0.0.1:{proc.env['NBFLEET_SSH_PORT']}"
    ssh = Ssh(uri, good)
    r = ssh.run("python -c 'import sys; print(sys.prefix, 6*7)'")
    assert r.returncode == 0, r.stderr
    prefix, answer = r.stdout.split()
    assert answer == "42" and "notebook-python3.11" in prefix  # the image's environment, first on PATH
    r = ssh.run("id -un; id -u; pwd; echo $HOME; grep -E 'NoNewPrivs|CapEff' /proc/self/status; exit 3")
    assert r.returncode == 3, r.stderr
    lines = r.stdout.split("\n")
    assert lines[:4] == ["ma-user", "1000", "/home/ma-user/work", "/home/ma-user"]
    assert "NoNewPrivs:\t1" in r.stdout and "CapEff:\t0000000000000000" in r.stdout
    # stdin reaches the command, stderr comes back apart
    r = ssh.run("cat; echo err >&2", input="piped\n")
    assert (r.stdout, r.stderr.strip()) == ("piped\n", "err")
    # an interactive terminal (what a terminal of VS Code opens)
    r = ssh.run("tty; echo cols=$(tput cols); exit 5", extra=("-tt",))
    assert r.returncode == 5 and "/dev/pts/" in r.stdout and "cols=" in r.stdout, (r.stdout, r.stderr)
    # a paste far larger than a terminal's buffer arrives whole and in order
    pasted = "".join(f"{i:07d}" + ("\n" if i % 10 == 9 else "") for i in range(30_000))  # 213 000 characters
    r = ssh.run(f"head -c {len(pasted)} | md5sum", input=pasted, extra=("-tt",), timeout=120)
    assert r.returncode == 0 and hashlib.md5(pasted.encode()).hexdigest() in r.stdout, (r.stdout[-300:], r.stderr)


def test_the_session_cannot_reach_nbfleet_or_the_host(fleet):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-confined")
    ssh = Ssh(ssh_endpoint(nb)["uri"], good)
    data_dir = proc.data_dir.resolve()
    r = ssh.run(f"ls {data_dir}; cat {data_dir}/nbfleet.db; ls /proc | grep -c '^[0-9]'; cat /proc/1/comm")
    assert "No such file or directory" in r.stderr and "nbfleet.db" not in r.stdout
    count, init = r.stdout.split()
    assert int(count) < 15 and init == "bwrap"  # the sandbox's own PID namespace, not the host's
    assert not Path(f"{data_dir}/instances/{nb['id']}/work/.nbfleet-probe").exists()
    # nothing of nbfleet's process is handed down: only the standard streams (and ls's own directory)
    r = ssh.run("ls /proc/self/fd")
    assert r.stdout.split() == ["0", "1", "2", "3"], r.stdout
    # nbfleet's listening API port is on the host's loopback, not the instance's
    port = urlsplit(proc.endpoint).port
    r = ssh.run(f"python -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=3)'")
    assert r.returncode != 0 and "ConnectionRefused" in r.stderr


def test_sftp_upload_is_seen_by_jupyter(fleet, tmp_path):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-sftp")
    ssh = Ssh(ssh_endpoint(nb)["uri"], good)
    local = tmp_path / "hello.txt"
    local.write_text("uploaded over sftp\n")
    r = ssh.sftp(f"put {local} hello.txt\nls -l\n")
    assert r.returncode == 0, r.stderr  # sftp-server's exit status reaches the client
    base = nb["url"].rsplit("/lab", 1)[0]
    got = notebook_http.get(
        f"{base}/api/contents/hello.txt", params={"content": "1"}, headers={"Authorization": f"token {nb['token']}"}
    )
    assert got.status_code == 200 and got.json()["content"] == "uploaded over sftp\n"
    # and back
    r = ssh.sftp(f"get hello.txt {tmp_path / 'back.txt'}\n")
    assert r.returncode == 0 and (tmp_path / "back.txt").read_text() == "uploaded over sftp\n"
    # the sftp-server runs in the sandbox: the host's files are not there
    r = ssh.sftp(f"get {proc.data_dir.resolve()}/secret.key {tmp_path / 'stolen'}\n")
    assert r.returncode != 0 and not (tmp_path / "stolen").exists()


def test_local_forward_reaches_a_server_inside_the_instance_only(fleet):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-forward")
    ssh = Ssh(ssh_endpoint(nb)["uri"], good)
    inner = 8765
    r = ssh.run(
        f"echo inside > /tmp/marker.txt; cd /tmp; nohup python -m http.server {inner} --bind 127.0.0.1 "
        ">/dev/null 2>&1 &"
    )
    assert r.returncode == 0, r.stderr
    local = free_port()
    tunnel = subprocess.Popen(
        [
            "ssh",
            *ssh.options("-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{inner}", "-o", "ExitOnForwardFailure=yes"),
            "-p",
            str(ssh.port),
            f"{ssh.user}@{ssh.host}",
        ],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{local}/marker.txt", timeout=5)
                if answer.status_code == 200:
                    body = answer.text
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert body == "inside\n"
    finally:
        end_process(tunnel)
    # the host's own services are not reachable through the instance: nbfleet's API port on the host
    api = urlsplit(proc.endpoint).port
    r = ssh.run("true", extra=("-W", f"127.0.0.1:{api}"))
    assert r.returncode != 0
    r = ssh.run("true", extra=("-W", "192.0.2.1:80"))  # nor any other address
    assert r.returncode != 0
    # remote forwarding is refused
    r = ssh.run("true", extra=("-R", f"127.0.0.1:{free_port()}:127.0.0.1:{api}", "-o", "ExitOnForwardFailure=yes"))
    assert r.returncode == 255


def test_only_the_named_keys_from_allowed_addresses(fleet, tmp_path):
    proc, client, good, other = fleet
    nb = running(client, "ssh-auth", allowed_access_ips=["127.0.0.0/8"])
    uri = ssh_endpoint(nb)["uri"]
    assert Ssh(uri, good).run("true").returncode == 0
    wrong = Ssh(uri, other).run("true")
    assert wrong.returncode == 255 and "Permission denied (publickey)" in wrong.stderr
    # passwords and keyboard-interactive are not offered at all
    listed = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-p",
            str(urlsplit(uri).port),
            f"{nb['id']}@127.0.0.1",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert listed.returncode == 255 and "Permission denied (publickey)" in listed.stderr
    # another instance's name, a stopped one or an unknown one: the same refusal
    outside = running(client, "ssh-outside", allowed_access_ips=["203.0.113.0/24"])
    refused = Ssh(ssh_endpoint(outside)["uri"], good).run("true")
    assert refused.returncode == 255 and "not available" in refused.stderr
    unknown = Ssh(uri.replace(nb["id"], "00000000-0000-4000-8000-000000000000"), good).run("true")
    assert unknown.returncode == 255 and "not available" in unknown.stderr


def test_a_deleted_key_pair_opens_nothing_more(fleet, tmp_path):
    proc, client, good, _ = fleet
    spare = keygen(tmp_path / "spare")
    cli = Cli(tmp_path)
    cli.configure(proc.creds)
    cli.ok("keypairs", "add", "spare", "--public-key", f"{spare}.pub")
    nb = running(client, "ssh-spare", key_pair_names=["laptop", "spare"])
    ssh = Ssh(ssh_endpoint(nb)["uri"], spare)
    # one connection, two channels: the first before the key pair is deleted, the second after
    master = tmp_path / "mux"
    mux = ["-o", "ControlMaster=yes", "-o", f"ControlPath={master}", "-o", "ControlPersist=60"]
    assert ssh.run("true", extra=mux).returncode == 0
    tunnel = subprocess.Popen(
        [
            "ssh",
            *ssh.options("-N", "-L", f"127.0.0.1:{free_port()}:127.0.0.1:9"),
            "-p",
            str(ssh.port),
            f"{ssh.user}@{ssh.host}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    assert tunnel.poll() is None
    cli.ok("keypairs", "delete", "spare")
    again = ssh.run("echo still", extra=("-o", f"ControlPath={master}"))
    assert again.returncode != 0 and "still" not in again.stdout
    # refused on the open connection, or the connection was already closed (below)
    assert "no longer" in again.stderr or "Permission denied" in again.stderr, again.stderr
    fresh = Ssh(ssh_endpoint(nb)["uri"], spare).run("true")
    assert fresh.returncode == 255 and "Permission denied (publickey)" in fresh.stderr
    # the connection itself (open shells, ``-N -L`` tunnels on it) ends too, shortly
    try:
        tunnel.wait(timeout=15)
    finally:
        if tunnel.poll() is None:
            tunnel.kill()
    subprocess.run(["ssh", "-o", f"ControlPath={master}", "-O", "exit", "x"], capture_output=True, timeout=10)
    assert Ssh(ssh_endpoint(nb)["uri"], good).run("true").returncode == 0


def test_stop_ends_sessions_and_refuses_new_ones(fleet):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-stop")
    ssh = Ssh(ssh_endpoint(nb)["uri"], good)
    long = subprocess.Popen(
        ["ssh", *ssh.options(), "-p", str(ssh.port), f"{ssh.user}@{ssh.host}", "echo started; sleep 300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    # a connection without any session (a tunnel waiting for use): the gateway closes it too
    idle = subprocess.Popen(
        [
            "ssh",
            *ssh.options("-N", "-L", f"127.0.0.1:{free_port()}:127.0.0.1:9"),
            "-p",
            str(ssh.port),
            f"{ssh.user}@{ssh.host}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert long.stdout.readline() == "started\n"
        time.sleep(1)
        assert idle.poll() is None
        client.ok("POST", f"/notebooks/{nb['id']}/stop")
        client.wait_status(nb["id"], "STOPPED", timeout=60)
        long.wait(timeout=30)  # the session ended with the instance, well before its sleep
        assert long.returncode != 0
        idle.wait(timeout=15)
    finally:
        for ssh_client in (long, idle):
            if ssh_client.poll() is None:
                ssh_client.kill()
    stopped = client.ok("GET", f"/notebooks/{nb['id']}")
    assert ssh_endpoint(stopped)["uri"] is None
    after = ssh.run("true")
    assert after.returncode == 255 and "not available" in after.stderr


def test_host_key_is_kept_across_restarts(fleet, tmp_path):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-hostkey")
    uri = ssh_endpoint(nb)["uri"]
    known = tmp_path / "known_hosts"
    first = Ssh(uri, good, known_hosts=known, strict="accept-new")
    r = first.run("true")
    assert r.returncode == 0 and known.read_text().strip(), r.stderr
    key_file = proc.data_dir / "ssh_host_ed25519_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    # a session open while nbfleet shuts down ends with it, and does not hold the shutdown up
    open_session = subprocess.Popen(
        ["ssh", *first.options(), "-p", str(first.port), f"{first.user}@{first.host}", "echo open; sleep 300"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert open_session.stdout.readline() == "open\n"
    started = time.monotonic()
    proc.terminate()
    assert time.monotonic() - started < 20
    open_session.wait(timeout=15)
    proc.start()  # same data dir and ports; the instance was adopted
    client.wait_status(nb["id"], "RUNNING", timeout=60)
    r = Ssh(uri, good, known_hosts=known).run("echo same")
    assert r.returncode == 0 and r.stdout == "same\n", r.stderr


def test_the_cli_prints_a_working_ssh_command_and_config(fleet, tmp_path):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-cli")
    cli = Cli(tmp_path)
    cli.configure(proc.creds)
    printed = cli.ok("notebooks", "ssh", nb["id"], "-i", str(good)).stdout.strip()
    argv = shlex.split(printed)
    assert argv[0] == "ssh" and argv[-1] == f"{nb['id']}@127.0.0.1"
    quiet = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
    ]
    r = subprocess.run(
        [argv[0], *quiet, *argv[1:], "echo", "via-cli"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0 and r.stdout == "via-cli\n", r.stderr
    # the ~/.ssh/config entry VS Code Remote-SSH uses
    config = tmp_path / "ssh_config"
    config.write_text(cli.ok("notebooks", "ssh", nb["id"], "-i", str(good), "--config").stdout)
    alias = config.read_text().split()[1]
    r = subprocess.run(
        ["ssh", "-F", str(config), *quiet, alias, "echo", "via-config"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0 and r.stdout == "via-config\n", r.stderr


def test_the_console_shows_the_ssh_command(fleet):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-console")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nbfleet.cli.main",
            "admin",
            "set-password",
            "--user",
            proc.creds["user_id"],
            "--password-stdin",
            "--data-dir",
            str(proc.data_dir),
        ],
        input="console-password-1\n",
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=proc.cli_env(),
    )
    with httpx.Client(base_url=proc.endpoint, timeout=30) as browser:
        page = browser.get("/console/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        browser.post(
            "/console/login",
            data={"csrf_token": csrf, "user": proc.creds["user_name"], "password": "console-password-1"},
        )
        detail = browser.get(f"/console/notebooks/{nb['id']}")
    assert detail.status_code == 200
    shown = html.unescape(re.search(r'<pre class="mono small" id="ssh-command">([^<]+)</pre>', detail.text).group(1))
    assert shown == f"ssh -p {Ssh(ssh_endpoint(nb)['uri'], good).port} {nb['id']}@127.0.0.1"
    argv = shlex.split(shown)
    r = subprocess.run(
        [argv[0], *Ssh(ssh_endpoint(nb)["uri"], good).options(), *argv[1:], "echo", "ok"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_an_ssh_only_image_runs_without_jupyter(fleet):
    proc, client, good, _ = fleet
    devbox = client.image_id("ssh-devbox")
    refused = client.call(
        "POST",
        "/notebooks",
        body={
            "name": "devbox-nossh",
            "image_id": devbox,
            "flavor": "modelarts.vm.cpu.2u",
            "volume": {"category": "EVS", "ownership": "MANAGED"},
        },
    )
    assert refused.status_code == 400 and refused.json()["error_code"] == "ModelArts.6768"
    nb = client.create("devbox", image_id=devbox, endpoints=[{"service": "SSH", "key_pair_names": ["laptop"]}])
    nb = client.wait_status(nb["id"], "RUNNING", timeout=180)
    ssh = Ssh(ssh_endpoint(nb)["uri"], good)
    r = ssh.run("python -c 'import sys; print(sys.prefix)'; ps -eo args")
    assert r.returncode == 0, r.stderr
    assert "ssh-devbox" in r.stdout.split("\n")[0]
    # nothing in the sandbox serves Jupyter; what holds it open does
    assert "jupyter_server" not in r.stdout and "signal.pause()" in r.stdout
    assert not any("jupyter_server" in " ".join(p.cmdline()) for p in marked(proc.data_dir, nb["id"]))
    # its notebook address answers like any instance that is not running
    page = notebook_http.get(
        f"{nb['url'].rsplit('/lab', 1)[0]}/api/status", headers={"Authorization": f"token {nb['token']}"}
    )
    assert page.status_code == 404
    client.ok("POST", f"/notebooks/{nb['id']}/stop")
    client.wait_status(nb["id"], "STOPPED", timeout=60)
    assert not marked(proc.data_dir, nb["id"])


def test_no_session_without_a_sandbox(tmp_path):
    """Single-user mode runs notebooks as nbfleet's own user on the host: a session there would be one on the
    host, so it is refused whatever the instance's state."""
    runtime = LocalRuntime(tmp_path, isolation=Unsandboxed(tmp_path))
    placement = Placement(host="127.0.0.1", pid=os.getpid(), details={"environment": "/usr"})
    with pytest.raises(SessionRefused, match="without"):
        runtime.session("00000000-0000-4000-8000-000000000000", placement)
    asyncio.run(runtime.close())


def test_forwarding_is_refused_when_instances_share_the_hosts_network(tmp_path):
    """With NBFLEET_SANDBOX_NETWORK=host an instance's loopback is the host's: sessions still run in the
    sandbox, but no forwarded connection may be made (it would reach every service of the host)."""
    key = keygen(tmp_path / "key")
    proc = ServeProcess(
        tmp_path / "data",
        runtime="local",
        env={"NBFLEET_SSH_PORT": str(free_port()), "NBFLEET_SANDBOX_NETWORK": "host"},
    ).start()
    client = SignedClient(proc.endpoint, proc.admin_creds())
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nbfleet.cli.main",
                "admin",
                "add-keypair",
                "--user",
                proc.creds["user_id"],
                "--name",
                "laptop",
                "--public-key",
                f"{key}.pub",
                "--data-dir",
                str(proc.data_dir),
            ],
            check=True,
            env=proc.cli_env(),
            capture_output=True,
            timeout=60,
        )
        nb = running(client, "shared-net")
        ssh = Ssh(ssh_endpoint(nb)["uri"], key)
        assert ssh.run("id -un").stdout == "ma-user\n"
        api = urlsplit(proc.endpoint).port
        r = ssh.run("true", extra=("-W", f"127.0.0.1:{api}"))
        assert r.returncode != 0
        assert httpx.get(f"{proc.endpoint}/health", timeout=5).status_code == 200
        local = free_port()
        tunnel = subprocess.Popen(
            [
                "ssh",
                *ssh.options("-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{api}"),
                "-p",
                str(ssh.port),
                f"{ssh.user}@{ssh.host}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            reached = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and reached is None:
                try:
                    reached = httpx.get(f"http://127.0.0.1:{local}/health", timeout=3).status_code
                except httpx.ConnectError:
                    time.sleep(0.3)  # the tunnel is not listening yet
                except httpx.HTTPError:
                    reached = "refused"  # listening, but the gateway refused the channel
            assert reached == "refused"
        finally:
            end_process(tunnel)
    finally:
        client.call("DELETE", f"/notebooks/{nb['id']}") if "nb" in locals() else None
        deadline = time.monotonic() + 30
        while client.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
            time.sleep(0.2)
        client.close()
        proc.terminate()
        for leftover in marked(proc.data_dir):
            leftover.kill()


UNPRIVILEGED, WHY_NOT = UnprivilegedUser.available()


@pytest.mark.skipif(UNPRIVILEGED is None, reason=WHY_NOT or "n/a")
def test_sessions_when_nbfleet_runs_as_an_unprivileged_user(tmp_path):
    """Without root, nbfleet enters the sandboxes through the user namespaces it owns: the same sessions."""
    key = keygen(tmp_path / "key")
    os.chmod(tmp_path / "key", 0o600)
    proc = ServeProcess(
        tmp_path / "data", runtime="local", user=UNPRIVILEGED, env={"NBFLEET_SSH_PORT": str(free_port())}
    ).start()
    client = SignedClient(proc.endpoint, proc.admin_creds())
    nb = None
    try:
        public = (tmp_path / "key.pub").read_text()
        cli = Cli(tmp_path / "home")
        cli.home.mkdir()
        cli.configure(proc.creds)
        (cli.home / "laptop.pub").write_text(public)
        cli.ok("keypairs", "add", "laptop", "--public-key", str(cli.home / "laptop.pub"))
        nb = running(client, "unprivileged")
        ssh = Ssh(ssh_endpoint(nb)["uri"], key)
        r = ssh.run("id -un; pwd; python -c 'print(6*7)'; grep NoNewPrivs /proc/self/status")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:3] == ["ma-user", "/home/ma-user/work", "42"] and "NoNewPrivs:\t1" in r.stdout
        assert ssh.run(f"ls {proc.data_dir.resolve()}").returncode != 0
        (tmp_path / "up.txt").write_text("up\n")
        assert ssh.sftp(f"put {tmp_path / 'up.txt'} up.txt\n").returncode == 0
        assert ssh.run("cat /home/ma-user/work/up.txt").stdout == "up\n"
    finally:
        if nb is not None:
            client.call("DELETE", f"/notebooks/{nb['id']}")
        deadline = time.monotonic() + 30
        while client.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
            time.sleep(0.2)
        client.close()
        proc.terminate()
        for leftover in marked(proc.data_dir):
            leftover.kill()


def asyncssh_connect(uri: str, key: Path):
    import asyncssh

    parts = urlsplit(uri)
    return asyncssh.connect(
        parts.hostname,
        parts.port,
        username=parts.username,
        client_keys=[str(key)],
        known_hosts=None,
        agent_path=None,
        config=None,
    )


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def session_processes(server_pid: int, text: str) -> list:
    """Processes below nbfleet (sessions and their launchers) whose command line contains ``text``."""
    import psutil

    found = []
    for p in psutil.Process(server_pid).children(recursive=True):
        try:
            if text in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_a_huge_terminal_size_leaks_nothing(fleet):
    """SSH sends a terminal's size as uint32s; one that does not fit a terminal must neither fail the
    session nor leave its terminal and process behind in nbfleet."""
    proc, client, good, _ = fleet
    nb = running(client, "ssh-winsize")
    uri = ssh_endpoint(nb)["uri"]
    server = proc.proc.pid

    async def attempts(count: int) -> list:
        results = []
        async with asyncssh_connect(uri, good) as conn:
            for _ in range(count):
                done = await asyncio.wait_for(
                    conn.run("echo sized", term_type="xterm", term_size=(70000, 70000, 70000, 70000)), 60
                )
                results.append((done.exit_status, done.stdout))
        return results

    asyncio.run(attempts(1))  # the gateway's lazily opened files (host key, thread pool) are open now
    time.sleep(0.5)
    before = open_fds(server)
    results = asyncio.run(attempts(10))
    assert all(status == 0 and "sized" in out for status, out in results), results
    deadline = time.monotonic() + 10
    while open_fds(server) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_fds(server) <= before + 2, (before, open_fds(server))


def test_channels_per_connection_are_capped(fleet):
    import asyncssh

    proc, client, good, _ = fleet
    nb = running(client, "ssh-cap")

    async def scenario():
        async with asyncssh_connect(ssh_endpoint(nb)["uri"], good) as conn:
            held = [await conn.create_process("sleep 60") for _ in range(10)]
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.create_process("echo one too many")
            assert refused.value.code == asyncssh.OPEN_RESOURCE_SHORTAGE and "10 channels" in refused.value.reason
            held[0].close()  # a closed channel gives its place back
            await held[0].wait_closed()
            await asyncio.sleep(0.2)
            again = await asyncio.wait_for(conn.run("echo again"), 60)
            assert again.stdout == "again\n"
            for session in held[1:]:
                session.close()

    asyncio.run(scenario())


def test_a_session_whose_client_left_while_it_started_is_ended(fleet):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-left")

    async def leave_at_once():
        conn = await asyncssh_connect(ssh_endpoint(nb)["uri"], good)
        chan, _ = await conn.create_session(lambda: __import__("asyncssh").SSHClientSession(), "sleep 1000")
        conn.abort()  # gone while the gateway is still starting the command
        await asyncio.sleep(0)

    for _ in range(3):
        asyncio.run(leave_at_once())
    time.sleep(1)
    deadline = time.monotonic() + 15
    while session_processes(proc.proc.pid, "sleep 1000") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not session_processes(proc.proc.pid, "sleep 1000")


def test_the_launcher_gets_none_of_nbfleets_environment(fleet):
    proc, client, good, _ = fleet
    nb = running(client, "ssh-env")
    ssh = Ssh(ssh_endpoint(nb)["uri"], good)
    long = subprocess.Popen(
        ["ssh", *ssh.options(), "-p", str(ssh.port), f"{ssh.user}@{ssh.host}", "echo started; sleep 301"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert long.stdout.readline() == "started\n"
        launchers = [p for p in session_processes(proc.proc.pid, "enter.py") if "sleep 301" in " ".join(p.cmdline())]
        assert launchers
        for launcher in launchers:
            environ = Path(f"/proc/{launcher.pid}/environ").read_bytes()
            assert b"NBFLEET_" not in environ and b"SECRET" not in environ, environ[:500]
    finally:
        long.kill()
        long.wait(timeout=10)


def test_sessions_take_the_flavors_rlimits_without_cgroups(tmp_path):
    """Without cgroups the flavor's memory is an address-space rlimit and its vCPUs a CPU affinity of the
    notebook's processes; a session has the same."""
    key = keygen(tmp_path / "key")
    proc = ServeProcess(
        tmp_path / "data", runtime="local", env={"NBFLEET_SSH_PORT": str(free_port()), "NBFLEET_CGROUPS": "false"}
    ).start()
    client = SignedClient(proc.endpoint, proc.admin_creds())
    nb = None
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nbfleet.cli.main",
                "admin",
                "add-keypair",
                "--user",
                proc.creds["user_id"],
                "--name",
                "laptop",
                "--public-key",
                f"{key}.pub",
                "--data-dir",
                str(proc.data_dir),
            ],
            check=True,
            env=proc.cli_env(),
            capture_output=True,
            timeout=60,
        )
        nb = running(client, "rlimits")
        root = next(p for p in marked(proc.data_dir, nb["id"]) if "jupyter" in " ".join(p.cmdline()))
        notebook_limits = Path(f"/proc/{root.pid}/limits").read_text()
        notebook_as = next(line for line in notebook_limits.splitlines() if line.startswith("Max address space"))
        assert "unlimited" not in notebook_as  # the flavor's memory, as an rlimit
        ssh = Ssh(ssh_endpoint(nb)["uri"], key)
        r = ssh.run("grep 'Max address space' /proc/self/limits; grep Cpus_allowed_list /proc/self/status")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == notebook_as
        wanted = Path(f"/proc/{root.pid}/status").read_text()
        assert r.stdout.splitlines()[1] in wanted.splitlines()
    finally:
        if nb is not None:
            client.call("DELETE", f"/notebooks/{nb['id']}")
        deadline = time.monotonic() + 30
        while client.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
            time.sleep(0.2)
        client.close()
        proc.terminate()
        for leftover in marked(proc.data_dir):
            leftover.kill()
