"""A notebook reaches nothing but its own work: attacks from inside real, sandboxed notebooks.

Alice has two instances, Bob one, all of the same image, on a real ``nbfleet serve`` with the local runtime.
From a kernel of Alice's first instance the tests try what a hostile owner would: read nbfleet's data dir
and the other instances' volumes, signal or trace nbfleet and the other servers, import nbfleet, write
outside the volume, and change the image. The same runs with the server as root (each instance a host uid
of its own) and as an unprivileged user (the namespaces alone), where the host allows it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest

from .. import notebook_http
from ..images import make_reachable, shared_environments
from ..jupyter_client import execute, send_without_waiting, start_kernel
from ..procs import ServeProcess, SignedClient, UnprivilegedUser
from ..support import Creds
from .local_helpers import marked

pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]

PACKAGE = "nbfleet_probe_pkg"


def _modes():
    user, why = UnprivilegedUser.available()
    return [
        pytest.param(None, id="server-as-root" if os.geteuid() == 0 else "server-as-its-user"),
        pytest.param(
            user, id="server-as-unprivileged-user", marks=pytest.mark.skipif(user is None, reason=why or "n/a")
        ),
    ]


class Fleet:
    def __init__(self, proc: ServeProcess, alice: SignedClient, bob: SignedClient):
        self.proc, self.alice, self.bob = proc, alice, bob
        self.nbs: dict[str, dict] = {}

    def base(self, key: str) -> str:
        return self.nbs[key]["url"].rsplit("/lab", 1)[0]

    def run(self, key: str, code: str, kernel: str | None = None) -> str:
        nb = self.nbs[key]
        kernel = kernel or start_kernel(self.base(key), nb["token"])
        return execute(self.base(key), nb["token"], kernel, code)

    def probe(self, key: str, code: str, **values) -> dict:
        """Run ``code`` (which fills the dict ``out``) with ``values`` bound; return ``out``."""
        prelude = (
            "import json, os, sys\nout = {}\n"
            "def attempt(fn):\n    try:\n        fn()\n        return 'ok'\n"
            "    except BaseException as exc:\n        return type(exc).__name__\n"
        )
        bound = "".join(f"{k} = json.loads({json.dumps(json.dumps(v))})\n" for k, v in values.items())
        return json.loads(self.run(key, prelude + bound + code + "\nprint(json.dumps(out))").strip().splitlines()[-1])

    def upload(self, key: str, name: str, data: bytes) -> None:
        nb = self.nbs[key]
        r = notebook_http.put(
            f"{self.base(key)}/api/contents/{name}",
            headers={"Authorization": f"token {nb['token']}"},
            json={"type": "file", "format": "base64", "content": base64.b64encode(data).decode()},
        )
        assert r.status_code in (200, 201), r.text

    def server_pid(self, key: str) -> int:
        """The host pid of the instance's Jupyter server."""
        for p in psutil.process_iter():
            try:
                if p.environ().get("NBFLEET_INSTANCE_ID") == self.nbs[key]["id"]:
                    for child in p.children(recursive=True):
                        if "jupyter_server" in " ".join(child.cmdline()):
                            return child.pid
            except (psutil.Error, OSError):
                continue
        raise AssertionError(f"no server process for {key}")


@pytest.fixture(scope="module", params=_modes())
def fleet(request, tmp_path_factory):
    user = request.param
    proc = ServeProcess(tmp_path_factory.mktemp("isolation") / "data", runtime="local", user=user).start()
    admin = proc.admin_creds()
    bob_keys = proc.cli("admin", "create-user", "--name", f"bob-{uuid.uuid4().hex[:6]}", "--json")
    alice_keys = proc.cli("admin", "create-user", "--name", f"alice-{uuid.uuid4().hex[:6]}", "--json")
    alice = SignedClient(proc.endpoint, Creds(alice_keys["ak"], alice_keys["sk"], admin.project_id))
    bob = SignedClient(proc.endpoint, Creds(bob_keys["ak"], bob_keys["sk"], admin.project_id))
    fleet = Fleet(proc, alice, bob)
    try:
        wanted = {"a1": alice.create("alice-one"), "a2": alice.create("alice-two"), "b1": bob.create("bob-one")}
        for key, nb in wanted.items():
            client = bob if key == "b1" else alice
            fleet.nbs[key] = client.wait_status(nb["id"], "RUNNING", timeout=120)
        yield fleet
    finally:  # whatever failed, no server and no sandbox outlives the module
        try:
            owners = {key: (bob if key == "b1" else alice) for key in fleet.nbs}
            for key, nb in fleet.nbs.items():
                owners[key].call("DELETE", f"/notebooks/{nb['id']}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                owners[key].call("GET", f"/notebooks/{nb['id']}").status_code == 200 for key, nb in fleet.nbs.items()
            ):
                time.sleep(0.2)
        finally:
            alice.close()
            bob.close()
            proc.terminate()
            for leftover in marked(proc.data_dir):
                leftover.kill()


def test_health_says_which_isolation_applies(fleet):
    health = httpx.get(f"{fleet.proc.endpoint}/health").json()
    assert health["isolation"]["mechanism"] == "bubblewrap"
    assert health["isolation"]["host_uid"] == (
        "one per instance" if os.geteuid() == 0 and fleet.proc.user is None else "nbfleet's own"
    )
    assert "network" in health["isolation"]["namespaces"]


def test_a_notebook_cannot_read_or_find_nbfleets_state_or_other_instances(fleet):
    data = fleet.proc.data_dir.resolve()
    fleet.run("b1", "open('bob-secret.txt', 'w').write('only for bob')")
    fleet.run("a2", "open('alice-two-secret.txt', 'w').write('only for alice two')")
    paths = [
        str(data),
        str(data / "secret.key"),
        str(data / "credentials.json"),
        str(data / "nbfleet.db"),
        str(data / "instances"),
        str(data / "instances" / fleet.nbs["b1"]["id"] / "work"),
        str(data / "instances" / fleet.nbs["b1"]["id"] / "work" / "bob-secret.txt"),
        str(data / "instances" / fleet.nbs["a2"]["id"] / "work" / "alice-two-secret.txt"),
        sys.prefix,
        str(Path(sys.prefix) / "pyvenv.cfg"),
        "/root",
        "/etc/shadow",
        "/sys/fs/cgroup",
        f"/proc/{fleet.proc.proc.pid}/environ",
        f"/proc/{fleet.server_pid('b1')}/environ",
    ]
    out = fleet.probe(
        "a1",
        """
for path in paths:
    out[path] = attempt(lambda p=path: os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(1))
names = {'secret.key', 'credentials.json', 'nbfleet.db', 'bob-secret.txt', 'alice-two-secret.txt'}
found = []
for top, dirs, files in os.walk('/'):
    if top in ('/proc', '/sys', '/dev'):
        dirs[:] = []
        continue
    found += [os.path.join(top, f) for f in files if f in names]
out['found'] = found
""",
        paths=paths,
    )
    assert out.pop("found") == []
    assert all(out[p] != "ok" for p in paths), out


def test_a_notebook_cannot_signal_trace_or_see_other_processes(fleet):
    targets = {"nbfleet": fleet.proc.proc.pid, "bob": fleet.server_pid("b1"), "alice-two": fleet.server_pid("a2")}
    out = fleet.probe(
        "a1",
        """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for name, pid in targets.items():
    out['kill ' + name] = attempt(lambda p=pid: os.kill(p, 0))
    out['trace ' + name] = 'ok' if libc.ptrace(16, pid, 0, 0) == 0 else os.strerror(ctypes.get_errno())
seen = [p for p in os.listdir('/proc') if p.isdigit()]
out['processes'] = [open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode() for p in seen]
""",
        targets=targets,
    )
    processes = out.pop("processes")
    for name in targets:
        assert out[f"kill {name}"] in ("ProcessLookupError", "PermissionError"), out
        assert out[f"trace {name}"] != "ok", out
    # Only its own sandbox: its first process, its server, the probing kernel (and what they run).
    assert len(processes) < 10, processes
    assert not any("nbfleet.cli" in p or fleet.nbs["b1"]["id"] in p or fleet.nbs["a2"]["id"] in p for p in processes), (
        processes
    )


def test_a_notebook_runs_as_ma_user_in_its_image_and_writes_only_its_volume(fleet):
    out = fleet.probe(
        "a1",
        """
import pwd, site
out['identity'] = [os.getuid(), pwd.getpwuid(os.getuid()).pw_name, os.getcwd(), os.environ['HOME']]
out['prefix'] = sys.prefix
out['import nbfleet'] = attempt(lambda: __import__('nbfleet'))
for path in ['/', '/usr', '/etc', '/home/ma-user', sys.prefix, sys.base_prefix, '/usr/local/lib', '/var']:
    out['write ' + path] = attempt(lambda p=path: open(os.path.join(p, 'probe.txt'), 'w').write('x'))
for path in ['/home/ma-user/work', '/tmp']:
    out['write ' + path] = attempt(lambda p=path: open(os.path.join(p, 'probe.txt'), 'w').write('x'))
""",
    )
    assert out.pop("identity") == [1000, "ma-user", "/home/ma-user/work", "/home/ma-user"]
    prefix = out.pop("prefix")
    assert Path(prefix).parent == shared_environments().root and Path(prefix).name.startswith("notebook-python3.11-")
    assert out.pop("import nbfleet") == "ModuleNotFoundError"
    assert out.pop("write /home/ma-user/work") == "ok" and out.pop("write /tmp") == "ok"
    assert all(v in ("OSError", "PermissionError", "FileNotFoundError") for v in out.values()), out


def _wheel() -> tuple[str, bytes]:
    """A minimal pure-Python wheel, so pip needs no network."""
    name, version = PACKAGE, "1.0"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    record += f"{name}-{version}.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as whl:
        for path, data in {**files, f"{name}-{version}.dist-info/RECORD": record.encode()}.items():
            whl.writestr(path, data)
    return f"{name}-{version}-py3-none-any.whl", buffer.getvalue()


def test_pip_install_lands_in_the_instances_own_layer(fleet):
    wheel, data = _wheel()
    fleet.upload("a1", wheel, data)
    image = fleet.probe("a1", "import sys; out['prefix'] = sys.prefix")["prefix"]
    installed = fleet.probe(
        "a1",
        """
import subprocess
r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', '--disable-pip-version-check', wheel],
                   capture_output=True, text=True)
out['rc'], out['output'] = r.returncode, r.stdout + r.stderr
""",
        wheel=wheel,
    )
    assert installed["rc"] == 0, installed["output"]

    nb = fleet.nbs["a1"]
    fleet.alice.ok("POST", f"/notebooks/{nb['id']}/stop")
    fleet.alice.wait_status(nb["id"], "STOPPED", timeout=60)
    fleet.alice.ok("POST", f"/notebooks/{nb['id']}/start")
    fleet.nbs["a1"] = fleet.alice.wait_status(nb["id"], "RUNNING", timeout=120)
    code = (
        f"out['import'] = attempt(lambda: __import__('{PACKAGE}'))\n"
        f"out['where'] = getattr(sys.modules.get('{PACKAGE}'), '__file__', None)"
    )
    after = fleet.probe("a1", code)
    assert after["import"] == "ok" and after["where"].startswith("/home/ma-user/work/.local/"), after
    # Not in the other instance of the same image, not in the image, not in nbfleet's environment.
    assert fleet.probe("a2", code)["import"] == "ModuleNotFoundError"
    assert not list(Path(image).rglob(f"{PACKAGE}*"))
    here = subprocess.run([sys.executable, "-c", f"import {PACKAGE}"], capture_output=True)
    assert here.returncode != 0
    layer = fleet.proc.data_dir / "instances" / nb["id"] / "work" / ".local"
    assert list(layer.rglob(f"{PACKAGE}/__init__.py"))


def test_delete_removes_the_volume_and_the_layer(fleet):
    nb = fleet.alice.wait_status(fleet.alice.create("short-lived")["id"], "RUNNING", timeout=120)
    fleet.nbs["tmp"] = nb
    fleet.run("tmp", "open('mine.txt', 'w').write('x'); import os; os.makedirs('.local/lib', exist_ok=True)")
    instance = fleet.proc.data_dir / "instances" / nb["id"]
    assert (instance / "work" / "mine.txt").exists()
    fleet.alice.ok("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + 60
    while fleet.alice.call("GET", f"/notebooks/{nb['id']}").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    del fleet.nbs["tmp"]
    assert not instance.exists()


def test_a_notebook_cannot_point_its_address_at_another_socket(fleet, tmp_path):
    """The socket's directory is the notebook's to write: a link put there in place of its Jupyter's
    socket must not lead nbfleet, connecting as itself, to a socket of the host (or another instance's)."""
    decoy_path = make_reachable(tmp_path) / "decoy.sock"
    decoy = socket.socket(socket.AF_UNIX)
    decoy.bind(str(decoy_path))
    decoy.listen(8)
    answered = []

    def serve() -> None:
        while True:
            try:
                conn, _ = decoy.accept()
            except OSError:
                return
            answered.append(True)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\ndecoy")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    nb = fleet.alice.wait_status(fleet.alice.create("pointer")["id"], "RUNNING", timeout=120)
    fleet.nbs["pointer"] = nb
    try:
        # The link in place of the socket, then the server ends, so that nbfleet must connect anew.
        kernel = start_kernel(fleet.base("pointer"), nb["token"])
        send_without_waiting(
            fleet.base("pointer"),
            nb["token"],
            kernel,
            f"import os, signal, time\nos.remove('/run/nbfleet/jupyter.sock')\n"
            f"os.symlink({str(decoy_path)!r}, '/run/nbfleet/jupyter.sock')\n"
            "time.sleep(0.5); os.kill(os.getppid(), signal.SIGKILL)",
        )
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            answer = notebook_http.get(
                f"{fleet.base('pointer')}/api/status", headers={"Authorization": f"token {nb['token']}"}
            )
            assert "decoy" not in answer.text
            time.sleep(0.05)
        assert answered == []
    finally:
        decoy.close()
        fleet.alice.call("DELETE", f"/notebooks/{nb['id']}")
        del fleet.nbs["pointer"]
