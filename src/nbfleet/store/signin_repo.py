"""Counters of failed password sign-ins, keyed by a hash of what they count (an account or an address)."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, case, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .tables import signin_failures


def counter_key(kind: str, value: str) -> str:
    """The row key of ``value`` (a user name or an address): a hash, so the table holds neither."""
    return hashlib.sha256(f"{kind}\0{value}".encode()).hexdigest()


def failures_of(conn: Connection, keys: list[str]) -> dict[str, tuple[int, int]]:
    """``{key: (failures, last_failure_at)}`` for those of ``keys`` that have failures."""
    rows = conn.execute(
        select(signin_failures.c.key, signin_failures.c.failures, signin_failures.c.last_failure_at).where(
            signin_failures.c.key.in_(keys)
        )
    )
    return {key: (failures, at) for key, failures, at in rows}


def add_failure(conn: Connection, key: str, now: int, forget_after_ms: int) -> None:
    """Count one more failure for ``key`` at ``now``; a counter idle for ``forget_after_ms`` starts over."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(signin_failures).values(key=key, failures=1, last_failure_at=now)
    # One statement, so two replicas counting the same key at once both count.
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["key"],
            set_={
                "failures": case(
                    (signin_failures.c.last_failure_at <= now - forget_after_ms, 1),
                    else_=signin_failures.c.failures + 1,
                ),
                "last_failure_at": now,
            },
        )
    )


def clear(conn: Connection, key: str) -> None:
    conn.execute(delete(signin_failures).where(signin_failures.c.key == key))


def forget_before(conn: Connection, moment: int) -> int:
    """Drop counters whose last failure is older than ``moment`` (they no longer slow anyone down)."""
    return conn.execute(delete(signin_failures).where(signin_failures.c.last_failure_at < moment)).rowcount
