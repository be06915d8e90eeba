"""The audit trail: rows of state-changing calls, appended, read newest first, pruned by age."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from .tables import audit_events

A = audit_events.c


def append(conn: Connection, row: dict) -> None:
    conn.execute(insert(audit_events).values(**row))


def prune(conn: Connection, before: int) -> int:
    """Drop the rows older than ``before`` (ms); how many went."""
    return conn.execute(delete(audit_events).where(A.at < before)).rowcount


def page(
    conn: Connection,
    *,
    since: int | None = None,
    user: str | None = None,
    instance: str | None = None,
    project_id: str | None = None,
    limit: int = 100,
) -> list[dict]:
    """Rows newest first. ``user`` matches a user id or name."""
    stmt = select(audit_events)
    if since is not None:
        stmt = stmt.where(A.at >= since)
    if user:
        stmt = stmt.where((A.user_id == user) | (A.user_name == user))
    if instance:
        stmt = stmt.where(A.target == instance)
    if project_id:
        stmt = stmt.where(A.project_id == project_id)
    stmt = stmt.order_by(A.at.desc(), A.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]
