"""Signatures of state-changing signed requests that were already received (replay protection)."""

from __future__ import annotations

from sqlalchemy import Connection, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .tables import request_signatures


def remember(conn: Connection, signature: str, expires_at: int) -> bool:
    """Record ``signature``; False if it was recorded before (the request is a repeat)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    # ON CONFLICT DO NOTHING: two replicas receiving the same request at once both try, one inserts.
    statement = (
        insert(request_signatures)
        .values(signature=signature, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["signature"])
        .returning(request_signatures.c.signature)
    )
    # RETURNING, not rowcount: psycopg reports no row count for INSERT … ON CONFLICT through SQLAlchemy.
    return conn.execute(statement).first() is not None


def forget_expired(conn: Connection, now: int) -> int:
    """Drop signatures whose date is out of the allowed skew: such a request is refused for its date anyway."""
    return conn.execute(delete(request_signatures).where(request_signatures.c.expires_at < now)).rowcount
