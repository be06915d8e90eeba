"""PostgreSQL fixtures: a fresh database per test on the shared server, a throwaway cluster that a test
may stop and start, and several ``nbfleet serve`` replicas on one database.

Everything here is skipped, with the reason, unless a PostgreSQL server answers on 127.0.0.1:5432
(``.ci/run`` starts one). Databases and clusters made here are removed again; nothing else is touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..procs import ServeProcess, SignedClient, free_port

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
from cryptography.fernet import Fernet  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
TRANSITIONAL = ("INIT", "CREATING", "STARTING", "STOPPING", "DELETING")


def _reachable(port: int = PG_PORT) -> str | None:
    """None if the server answers, else why not."""
    try:
        with psycopg.connect(host=PG_HOST, port=port, user=PG_USER, dbname="postgres", connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


_WHY_NOT = _reachable()
if _WHY_NOT is not None:
    pytest.skip(
        f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as user {PG_USER!r} ({_WHY_NOT}); .ci/run starts it",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


def sa_url(port: int, dbname: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{port}/{dbname}"


def _admin(port: int, *statements: str) -> None:
    with psycopg.connect(
        host=PG_HOST, port=port, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=5
    ) as conn:
        for statement in statements:
            conn.execute(statement)


class ScratchDatabase:
    """A database of our own (``nbfleet_pgtest_<hex>``) on a server; dropped at the end."""

    def __init__(self, port: int = PG_PORT):
        self.port = port
        self.name = f"nbfleet_pgtest_{uuid.uuid4().hex[:12]}"
        _admin(port, f'CREATE DATABASE "{self.name}"')
        self.url = sa_url(port, self.name)
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = create_engine(self.url, pool_pre_ping=True, pool_size=2, connect_args={"connect_timeout": 3})
        return self._engine

    def rows(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def drop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        _admin(self.port, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture
def pg_db():
    db = ScratchDatabase()
    yield db
    db.drop()


def _pg_bindir() -> Path | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    except OSError:
        pass
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class ThrowawayCluster:
    """A PostgreSQL cluster of this test alone, on a random port, that the test may stop and start
    (the shared server on 5432 is never stopped)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="nbfleet-pg-"))
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", PG_USER, "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self.as_postgres, str(self.bindir / tool), *args],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.dir),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-o",
            f"-c listen_addresses={PG_HOST} -p {self.port} -k {self.dir} -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def throwaway_cluster():
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to start a throwaway cluster")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses to run as root")
    cluster = ThrowawayCluster(bindir)
    yield cluster
    cluster.remove()


# --- replicas ---------------------------------------------------------------------------------------------

REPLICA_ENV = {
    "NBFLEET_INSTANCE_QUOTA": "-1",
    "NBFLEET_MAX_PENDING_STARTS": "100000",
    "NBFLEET_CLAIM_SECONDS": "3",
    "NBFLEET_OBSERVE_INTERVAL": "0.5",
}


class Fleet:
    """``count`` replicas of ``nbfleet serve`` on one database.

    Each replica gets its own data dir, as replicas on separate machines would: what they must share is
    the database URL and the secret key (``NBFLEET_SECRET_KEY``, identical everywhere, so the access keys
    one replica sealed open on every other). The first replica bootstraps the store; the bootstrap
    credentials are then copied into the other data dirs only because the test harness reads them
    from there. With ``shared_data_dir`` all replicas use one data dir (the local runtime needs that:
    every replica must reach the instances' processes and work dirs).
    """

    def __init__(
        self,
        root: Path,
        db_url: str,
        count: int,
        *,
        runtime: str = "simulated",
        env: dict | None = None,
        shared_data_dir: bool = False,
    ):
        self.secret_key = Fernet.generate_key().decode()
        base_env = {**REPLICA_ENV, "NBFLEET_DATABASE_URL": db_url, **(env or {})}
        if not shared_data_dir:
            base_env["NBFLEET_SECRET_KEY"] = self.secret_key
        self.replicas = [
            ServeProcess(root / ("data" if shared_data_dir else f"data-{i}"), runtime=runtime, env=dict(base_env))
            for i in range(count)
        ]

    def start(self) -> Fleet:
        first, rest = self.replicas[0], self.replicas[1:]
        first.start()
        for replica in rest:
            if replica.data_dir != first.data_dir:
                replica.data_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(first.data_dir / "credentials.json", replica.data_dir / "credentials.json")
        with ThreadPoolExecutor(len(rest) or 1) as pool:  # the others start together
            list(pool.map(lambda r: r.start(), rest))
        return self

    @property
    def creds(self):
        return self.replicas[0].admin_creds()

    def client(self, i: int) -> SignedClient:
        return SignedClient(self.replicas[i].endpoint, self.creds)

    def replica_id(self, i: int) -> str:
        """The reconciler id a replica logged at start."""
        match = re.search(r"reconciler ([0-9a-f]{32}) started", self.replicas[i].log_path.read_text(errors="replace"))
        assert match, self.replicas[i].log()
        return match.group(1)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.terminate()

    def logs(self) -> str:
        return "\n".join(f"--- replica {i} (port {r.port}) ---\n{r.log()}" for i, r in enumerate(self.replicas))


@pytest.fixture
def fleet_factory(tmp_path):
    fleets: list[Fleet] = []

    def make(db_url: str, count: int = 3, **kw) -> Fleet:
        fleet = Fleet(tmp_path, db_url, count, **kw)
        fleets.append(fleet)
        return fleet.start()

    yield make
    for fleet in fleets:
        fleet.stop()


# --- checks shared by the tests ----------------------------------------------------------------------------

INTENTS = {"created": "RUNNING", "starting": "RUNNING", "stopping": "STOPPED", "deleting": None}
OUTCOMES = {"created": ("ready",), "starting": ("started",), "stopping": ("stopped",), "deleting": ("deleted",)}


def event_history(db: ScratchDatabase) -> dict[str, list[tuple[str, str]]]:
    """Every instance's events (kind, message) in the order the store recorded them."""
    history: dict[str, list[tuple[str, str]]] = {}
    for notebook_id, kind, message in db.rows("SELECT notebook_id, kind, message FROM events ORDER BY id"):
        history.setdefault(notebook_id, []).append((kind, message))
    return history


def check_converged(db: ScratchDatabase, *, max_schedules: int = 1) -> dict:
    """The store after the dust settled: no transitional status, no claim left, every instance where its
    last accepted request put it, and each request carried out exactly once.

    Per request (an intent event written with the accepted call: created/starting/stopping/deleting) the
    outcome event (ready/started/stopped/deleted) must appear exactly once before the next request, and
    a bring-up is scheduled at most ``max_schedules`` times (more only when a replica died mid-way).
    Returns {"requests": n, "schedules": n, "deleted": n, "rows": n}.
    """
    rows = {r[0]: r for r in db.rows("SELECT id, status, fail_reason, claim_owner FROM notebooks")}
    stuck = [r for r in rows.values() if r[1] in TRANSITIONAL]
    assert not stuck, f"instances left in a transitional status: {stuck}"
    claimed = [r for r in rows.values() if r[3] is not None]
    assert not claimed, f"claims left behind: {claimed}"
    failed = [r for r in rows.values() if r[2]]
    assert not failed, f"instances with a fail_reason: {failed}"
    requests = schedules = deleted = 0
    for notebook_id, events in event_history(db).items():
        segments: list[list[tuple[str, str]]] = []
        for kind, message in events:
            if kind in INTENTS:
                segments.append([(kind, message)])
            elif segments:
                segments[-1].append((kind, message))
        assert segments and segments[0][0][0] == "created", (notebook_id, events)
        for segment in segments:
            intent = segment[0][0]
            kinds = [k for k, _ in segment[1:]]
            requests += 1
            outcome = [k for k in kinds if k in OUTCOMES[intent]]
            assert len(outcome) == 1, f"{notebook_id}: request {intent!r} had outcomes {kinds}"
            runs = kinds.count("scheduled")
            schedules += runs
            if intent in ("created", "starting"):
                assert 1 <= runs <= max_schedules, f"{notebook_id}: {intent!r} scheduled {runs} times: {kinds}"
            assert "failed" not in kinds and "auto_stopped" not in kinds, (notebook_id, kinds)
        last = segments[-1][0][0]
        expected = INTENTS[last]
        if expected is None:
            deleted += 1
            assert notebook_id not in rows, f"{notebook_id} was deleted but its row remains"
        else:
            assert notebook_id in rows, f"{notebook_id} vanished although its last request was {last!r}"
            assert rows[notebook_id][1] == expected, f"{notebook_id}: {rows[notebook_id][1]} after {last!r}"
    return {"requests": requests, "schedules": schedules, "deleted": deleted, "rows": len(rows)}


def check_counts(db: ScratchDatabase, client: SignedClient) -> None:
    """List totals (served from the trigger-kept ``notebook_counts``) equal the rows themselves."""
    assert db.scalar("SELECT COUNT(*) FROM notebook_counts WHERE n < 0") == 0
    by_status = dict(db.rows("SELECT status, COUNT(*) FROM notebooks GROUP BY status"))
    for which, cond in (("all users", "user_id = '*'"), ("per user", "user_id <> '*'")):
        counted = dict(
            db.rows(f"SELECT status, SUM(n) FROM notebook_counts WHERE {cond} GROUP BY status HAVING SUM(n) <> 0")
        )
        assert {k: int(v) for k, v in counted.items()} == by_status, (which, counted, by_status)
    total = db.scalar("SELECT COUNT(*) FROM notebooks")
    assert client.ok("GET", "/notebooks", {"limit": 1})["total"] == total
    assert client.ok("GET", "/notebooks/all", {"limit": 1})["total"] == total
    for status, n in by_status.items():
        assert client.ok("GET", "/notebooks", {"limit": 1, "status": status})["total"] == n, status


def wait_settled(db: ScratchDatabase, timeout: float) -> float:
    """Seconds until no instance is transitional or claimed (bounded by ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        busy = db.scalar(
            "SELECT COUNT(*) FROM notebooks WHERE status IN ('INIT', 'CREATING', 'STARTING', "
            "'STOPPING', 'DELETING') OR claim_owner IS NOT NULL"
        )
        if busy == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    busy = db.rows(
        "SELECT id, status, claim_owner, claim_until FROM notebooks WHERE claim_owner IS NOT NULL "
        "OR status IN ('INIT', 'CREATING', 'STARTING', 'STOPPING', 'DELETING')"
    )
    raise AssertionError(f"not settled after {timeout} s: {busy}")


class Tally:
    """Thread-safe record of what every call answered; a transport error, an error without a JSON body or a
    5xx other than those in ``allow`` (e.g. "503 ModelArts.6102") is bad."""

    def __init__(self, allow: tuple[str, ...] = ()):
        self.allow = set(allow)
        self.lock = threading.Lock()
        self.codes: dict[str, int] = {}
        self.bad: list[str] = []
        self.accepted: dict[tuple[str, str], int] = {}
        self.calls = 0

    def note(
        self,
        label: str,
        response=None,
        *,
        error: Exception | None = None,
        notebook_id: str | None = None,
        op: str | None = None,
    ) -> None:
        with self.lock:
            self.calls += 1
            if error is not None:
                self.codes["transport-error"] = self.codes.get("transport-error", 0) + 1
                self.bad.append(f"{label}: {type(error).__name__}: {error}")
                return
            key = str(response.status_code)
            if response.status_code >= 400:
                try:
                    key += " " + response.json()["error_code"]
                except (ValueError, KeyError, TypeError):
                    self.bad.append(f"{label}: {response.status_code} without a JSON error: {response.text[:200]}")
            self.codes[key] = self.codes.get(key, 0) + 1
            if response.status_code >= 500 and key not in self.allow:
                self.bad.append(f"{label}: {response.status_code} {response.text[:300]}")
            if response.status_code == 200 and op is not None and notebook_id is not None:
                self.accepted[(notebook_id, op)] = self.accepted.get((notebook_id, op), 0) + 1


def json_of(path: Path) -> dict:
    return json.loads(path.read_text())
