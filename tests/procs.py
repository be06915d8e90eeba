"""A real ``nbfleet serve`` process for tests that need one (SDK, local runtime, crash recovery)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from .images import make_reachable, shared_environments
from .support import Creds, encode_query, sign_headers

STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 15.0

# A PostgreSQL URL here runs the whole suite on PostgreSQL: the in-process tests on that database itself
# (tests/conftest.py), every server process on a database of its own next to it (``TestDatabases``).
TEST_DATABASE_URL = os.environ.get("NBFLEET_TEST_DATABASE_URL") or None


class TestDatabases:
    """One PostgreSQL database per data dir for the server processes of the tests, when
    ``NBFLEET_TEST_DATABASE_URL`` is set: ``<its database>_<hex>`` on the same server.

    The first ``ServeProcess`` of a data dir creates it; later ones of that data dir (a restart after a crash)
    get the same one, as they would get the same SQLite file. tests/conftest.py drops each database when the
    fixture or test that created it has been torn down (and any left at the end of the session).
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, base_url: str | None):
        url = make_url(base_url) if base_url else None
        # Any other URL (a SQLite file) is for the in-process tests; servers keep SQLite in their data dirs.
        self.base = url if url is not None and url.drivername.startswith("postgresql") else None
        self._lock = threading.Lock()
        self._by_dir: dict[Path, str] = {}

    def url_for(self, data_dir: Path) -> str | None:
        """The database URL of the servers of ``data_dir`` (None: SQLite in the data dir)."""
        if self.base is None:
            return None
        key = Path(data_dir).resolve()
        with self._lock:
            name = self._by_dir.get(key)
            if name is None:
                name = f"{(self.base.database or 'nbfleet')[:50]}_{uuid.uuid4().hex[:12]}"
                self._admin(f'CREATE DATABASE "{name}"')
                self._by_dir[key] = name
        return self.base.set(database=name).render_as_string(hide_password=False)

    def names(self) -> set[str]:
        with self._lock:
            return set(self._by_dir.values())

    def drop(self, names: Iterable[str]) -> None:
        """Drop these databases (connections still open to them, e.g. of a leaked server, are ended)."""
        names = set(names)
        if not names:
            return
        with self._lock:
            for key in [k for k, v in self._by_dir.items() if v in names]:
                del self._by_dir[key]
        for name in sorted(names):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        server = self.base.set(drivername="postgresql")
        try:  # the test database itself, else the server's maintenance database
            conn = psycopg.connect(server.render_as_string(hide_password=False), autocommit=True, connect_timeout=10)
        except psycopg.OperationalError:
            conn = psycopg.connect(
                server.set(database="postgres").render_as_string(hide_password=False),
                autocommit=True,
                connect_timeout=10,
            )
        with conn:
            conn.execute(statement)


test_databases = TestDatabases(TEST_DATABASE_URL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``nbfleet serve`` on a free port with its own data dir; start, SIGTERM, SIGKILL, restart."""

    def __init__(
        self,
        data_dir: Path,
        *,
        runtime: str = "simulated",
        env: dict | None = None,
        args: list[str] | None = None,
        port: int | None = None,
        user: UnprivilegedUser | None = None,
    ):
        """``user``: run the server as that (unprivileged) user instead of as the tests' own."""
        self.data_dir = Path(data_dir)
        self.user = user
        self.runtime = runtime
        self.env = env or {}
        self.args = args or []
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"serve-{self.port}.log"
        self.creds: dict = {}
        # The store: the caller's NBFLEET_DATABASE_URL (tests/pg), else a test database of this data dir on
        # PostgreSQL (NBFLEET_TEST_DATABASE_URL), else None: SQLite in the data dir.
        self.database_url: str | None = self.env.get("NBFLEET_DATABASE_URL") or test_databases.url_for(self.data_dir)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        # No SSH gateway unless a test asks for one (on a port of its own): servers run side by side.
        extra = {"NBFLEET_RECONCILE_INTERVAL": "0.05", "NBFLEET_SIMULATED_DELAY": "0.05", "NBFLEET_SSH_PORT": "0"}
        if self.runtime == "local":  # notebooks run in the image environments built once for all tests
            extra["NBFLEET_IMAGE_DIR"] = str(shared_environments().root)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            make_reachable(self.data_dir)
        env = self.cli_env({**extra, **self.env})
        python, as_user = sys.executable, {}
        if self.user is not None:
            python, as_user = self.user.python, self.user.popen_options()
            env.update(self.user.env())
            self.user.own(self.data_dir)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    python,
                    "-m",
                    "nbfleet.cli.main",
                    "serve",
                    "--runtime",
                    self.runtime,
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    *self.args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **as_user,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nbfleet serve exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.endpoint}/health", timeout=2) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nbfleet serve not healthy after {STARTUP_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.05)
        self.creds = json.loads((self.data_dir / "credentials.json").read_text())
        return self

    def terminate(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL, as a crash would."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(SHUTDOWN_TIMEOUT)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-6000:]
        return ""

    def admin_creds(self) -> Creds:
        c = self.creds
        return Creds(c["ak"], c["sk"], c["project_id"], c["user_id"])

    def cli_env(self, extra: dict | None = None) -> dict:
        """The environment for this server or its admin CLI: the caller's, with this server's store (a stray
        NBFLEET_DATABASE_URL of the caller's shell must not pick it) and ``extra``."""
        env = dict(os.environ)
        env.pop("NBFLEET_DATABASE_URL", None)
        if self.database_url:
            env["NBFLEET_DATABASE_URL"] = self.database_url
        env.update(extra or {})
        return env

    def cli(self, *args: str) -> dict:
        python, as_user, env = sys.executable, {}, self.cli_env()
        if self.user is not None:  # the store's files must stay the server user's
            python, as_user = self.user.python, self.user.popen_options()
            env.update(self.user.env())
        out = subprocess.run(
            [python, "-m", "nbfleet.cli.main", *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
            **as_user,
        )
        return json.loads(out.stdout)


class ServerRestarts:
    """``nbfleet serve`` on one data dir (so one store) and one port, started again after a kill or a stop
    as a restarted service would be; ``kill_all`` ends every process it started."""

    def __init__(self, data_dir: Path, runtime: str, env: dict[str, str]):
        self.data_dir, self.runtime, self.env = data_dir, runtime, env
        self.servers: list[ServeProcess] = []

    def start(self, **env: str) -> ServeProcess:
        port = self.servers[0].port if self.servers else None
        server = ServeProcess(self.data_dir, runtime=self.runtime, env={**self.env, **env}, port=port).start()
        self.servers.append(server)
        return server

    def kill_all(self) -> None:
        for server in self.servers:
            server.kill()


class UnprivilegedUser:
    """Another uid to run a server as (root only), with an interpreter every user can run.

    nbfleet's virtualenv may sit below a private home (a pyenv Python in /root): the server then runs with a
    system interpreter of the same version and the virtualenv's packages on its path.
    """

    def __init__(self, name: str = "nobody"):
        import pwd

        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        self.python = next(
            (p for p in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}") if os.access(p, os.X_OK)), None
        )

    @classmethod
    def available(cls) -> tuple[UnprivilegedUser | None, str]:
        """(user, "") when a server can run as another uid here, else (None, why not)."""
        if os.geteuid() != 0:
            return None, "the tests already run as an unprivileged user"
        user = cls()
        if user.python is None:
            return None, "no system Python of the tests' version for another uid to run"
        return user, ""

    def env(self) -> dict[str, str]:
        import site

        import nbfleet

        src = str(Path(nbfleet.__file__).resolve().parents[1])
        return {"PYTHONPATH": os.pathsep.join([src, *site.getsitepackages()]), "HOME": "/nonexistent"}

    def popen_options(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        make_reachable(data_dir.parent)
        os.chown(data_dir, self.uid, self.gid)


class SignedClient:
    """httpx against a server process, every request signed like the SDK signs it."""

    def __init__(self, endpoint: str, creds: Creds):
        self.endpoint = endpoint
        self.creds = creds
        self.http = httpx.Client(base_url=endpoint, timeout=30)

    def call(self, method: str, path: str, query=None, body=None) -> httpx.Response:
        full = f"/v1/{self.creds.project_id}{path}"
        qs = encode_query(query or {})
        data = json.dumps(body).encode() if body is not None else b""
        host = self.endpoint.split("://", 1)[1]
        headers = sign_headers(self.creds, method, full, qs, data, host, call_id=True)
        return self.http.request(method, full + ("?" + qs if qs else ""), content=data, headers=headers)

    def ok(self, method: str, path: str, query=None, body=None) -> dict:
        response = self.call(method, path, query, body)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, notebook_id: str, *statuses: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            nb = self.ok("GET", f"/notebooks/{notebook_id}")
            if nb["status"] in statuses:
                return nb
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{notebook_id} stayed {nb['status']} (wanted {statuses}); {nb.get('fail_reason')}"
                )
            time.sleep(0.02)

    def image_id(self, name: str = "notebook-python3.11") -> str:
        return next(i["id"] for i in self.ok("GET", "/images")["data"] if i["name"] == name)

    def create(self, name: str, **extra) -> dict:
        body = {
            "name": name,
            "image_id": self.image_id(),
            "flavor": "modelarts.vm.cpu.2u",
            "volume": {"category": "EVS", "ownership": "MANAGED"},
            **extra,
        }
        return self.ok("POST", "/notebooks", body=body)

    def close(self) -> None:
        self.http.close()


def unmount_below(top: Path) -> list[str]:
    """Lazily unmount whatever is still mounted below ``top`` (deepest first) and say what it was: a test that
    failed half-way must not leave mounts on the machine (tmp_path's removal would walk into them)."""
    prefix = str(Path(top).resolve()) + "/"
    with open("/proc/self/mountinfo") as fh:
        left = sorted({line.split()[4] for line in fh if line.split()[4].startswith(prefix)}, key=len, reverse=True)
    for path in left:
        subprocess.run(["umount", "-l", path], capture_output=True)
    return left
