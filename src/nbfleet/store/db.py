"""Engine set-up and transaction boundaries for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from ..private_files import create_private, make_private


class MissingDriver(RuntimeError):
    """The database URL names a driver that is not installed (PostgreSQL without the ``postgres`` extra)."""


# URL driver -> (module to import, what to install)
_DRIVERS = {"psycopg": ("psycopg", "pip install 'nbfleet[postgres]'")}


def check_driver(url: str) -> None:
    """Raise ``MissingDriver`` with one line that says what to install when ``url``'s driver is missing:
    SQLAlchemy's own error is a traceback ending in ``No module named 'psycopg'``."""
    scheme = url.split("://", 1)[0]
    if not scheme.startswith("postgresql"):
        return
    driver = scheme.partition("+")[2] or "psycopg2"
    module, install = _DRIVERS.get(driver, (driver, f"install the {driver} driver"))
    try:
        __import__(module)
    except ImportError:
        raise MissingDriver(f"the database URL needs the {driver} driver, which is not installed: {install}") from None


class Database:
    """Owns the engine. ``read()`` gives a read-only snapshot; ``write()`` a transaction that holds the
    write lock from its first statement, so check-then-write sequences (quotas, compare-and-set) cannot
    interleave. On PostgreSQL (writes READ COMMITTED, several replicas) the same guarantees come from row
    locks instead: the user row is locked for quota checks and every status change is a compare-and-set
    on ``version``."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int | None = None):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock = threading.Lock()
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                database = Path(path)
                database.parent.mkdir(parents=True, exist_ok=True)
                create_private(database)  # before SQLite creates it (and its -wal, -shm) with the umask's mode
                for companion in ("-wal", "-shm", "-journal"):
                    make_private(database.with_name(database.name + companion))
            max_overflow = 20 if max_overflow is None else max_overflow
            self.engine: Engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            _configure_sqlite(self.engine)
        else:
            # A database that is unreachable must fail a request quickly (503), not hang it; a URL's own
            # connect_timeout wins. pool_pre_ping replaces connections that died while the database was away.
            connect_args: dict[str, Any] = {} if "connect_timeout=" in url else {"connect_timeout": 5}
            # psycopg prepares repeated statements; PostgreSQL's generic plan for them cannot see the search
            # pattern or the offset, and falls back to scans the trigram and ordering indexes exist to avoid.
            connect_args["options"] = "-c plan_cache_mode=force_custom_plan"
            max_overflow = 10 if max_overflow is None else max_overflow
            self.engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_pre_ping=True,
                pool_timeout=10,
                connect_args=connect_args,
            )
        self.max_connections = pool_size + max_overflow  # what the pool may open at once

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                # READ COMMITTED would give each statement its own snapshot; a list's total and its page
                # must come from one (the page of a deep offset is found from the total). psycopg puts
                # both settings into the BEGIN it sends anyway, so this costs no round trip.
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read_one(self) -> Iterator[Connection]:
        """A connection for a single read statement, which is its own snapshot. On PostgreSQL it runs
        without a transaction: BEGIN and COMMIT would be two more round trips than the query itself
        (every request's credential lookup is one). SQLite has no round trips; there it is ``read()``."""
        if self.is_sqlite:
            with self.read() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        if not self.is_sqlite:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        # SQLite has one writer at a time. Writers of this process queue on a lock instead of in
        # SQLite's busy handler, whose growing sleeps collapse throughput when many threads write at once.
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def startup_lock(self) -> Iterator[None]:
        """Serialise start-up work (migrations, bootstrap, built-in images) across replicas that start
        together on one PostgreSQL database. SQLite has one owning process and needs none."""
        if self.is_sqlite:
            yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _STARTUP_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _STARTUP_LOCK_KEY})
                conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()


# An arbitrary constant that names nbfleet's start-up advisory lock ("nbfleet" in ASCII, as an int).
_STARTUP_LOCK_KEY = 0x6E62666C656574


def store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database cannot be reached right now" (answer 503, retry later)
    rather than a bug: lost or refused connections, a server shutting down, an exhausted pool, a
    deadlock or serialization failure the database resolved by aborting us."""
    if isinstance(exc, (OperationalError, InterfaceError, SATimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _unicode_lower(value):
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's begin event, not the sqlite3 module, decide when transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # A modest page cache per connection and no mmap: the operating system's file cache already keeps
        # hot pages, and the server's own memory stays small and flat however large the database grows.
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=30000",
            "foreign_keys=ON",
            "temp_store=MEMORY",
            "cache_size=-16384",
            "mmap_size=0",
        ):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
        # SQLite's built-in lower() folds ASCII only, so ILIKE (lower(x) LIKE lower(y)) missed 'É' for 'é';
        # fuzzy filters are case-insensitive for every script, as on PostgreSQL.
        dbapi_conn.create_function("lower", 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # SQLAlchemy never commits these, so a BEGIN here would silently drop their writes
        mode = options.get("sqlite_begin", "DEFERRED")
        # Straight to the driver: this runs for every transaction, and SQLAlchemy's statement machinery
        # costs more than the BEGIN itself.
        conn.connection.driver_connection.execute(f"BEGIN {mode}")
