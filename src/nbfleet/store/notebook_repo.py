"""Notebook rows: insert, fetch, compare-and-set transitions, and the list query in SQL.

The list is built in one order: scope -> filters -> count -> sort (whitelisted keys, ``id`` as
the unique tie-breaker) -> offset/limit. Nothing is filtered or sorted in Python.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, and_, delete, exists, func, insert, select, update

from ..domain.model import HOLDS_COMPUTE, Billing, Status
from ..domain.query import NotebookQuery
from .tables import events, notebook_tags, notebooks

N = notebooks.c
_SORT_COLUMNS = {"create_at": N.create_at, "update_at": N.update_at, "name": N.name, "status": N.status,
                 "flavor": N.flavor, "id": N.id, "feature": N.feature}
_FUZZY_COLUMNS = {"name": N.name, "pool_name": N.pool_name, "flavor": N.flavor, "swr_path": N.swr_path,
                  "description": N.description, "user_name": N.user_name}


def _like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def conditions(q: NotebookQuery) -> list:
    """WHERE clauses of a list query (scope first, then every filter that is set)."""
    cond = [N.project_id == q.project_id, N.workspace_id == q.workspace_id, N.feature == q.feature.value]
    if q.owner_id is not None:
        cond.append(N.user_id == q.owner_id)
    if q.status is not None:
        cond.append(N.status == q.status.value)
    for column, value in ((N.pool_id, q.pool_id), (N.image_id, q.image_id), (N.id, q.id), (N.ip, q.ip)):
        if value is not None:
            cond.append(column == value)
    if q.billing is Billing.COMPUTE:
        cond.append(N.status.in_([s.value for s in HOLDS_COMPUTE]))
    elif q.billing is Billing.STORAGE:
        cond.append(N.volume_category.in_(["EVS", "EFS"]))
    for tag in q.tags:
        match = [notebook_tags.c.notebook_id == N.id, notebook_tags.c.key == tag.key]
        if tag.value is not None:
            match.append(notebook_tags.c.value == tag.value)
        cond.append(exists().where(and_(*match)))
    for column, text in q.fuzzy_filters().items():
        cond.append(_FUZZY_COLUMNS[column].ilike(_like_pattern(text), escape="\\"))
    return cond


def order_by(q: NotebookQuery) -> list:
    columns = [_SORT_COLUMNS[k] for k in q.sort]
    if "id" not in q.sort:
        columns.append(N.id)
    return [c.desc() if q.descending else c.asc() for c in columns]


def page(conn: Connection, q: NotebookQuery) -> tuple[list, int]:
    """The rows of one page and the exact total of rows matching the filters."""
    cond = conditions(q)
    total = conn.execute(select(func.count()).select_from(notebooks).where(*cond)).scalar_one()
    if total == 0 or q.offset >= total:
        return [], total
    # Page by primary key first (an index-only walk), then fetch just the rows of the page.
    ids = select(N.id).where(*cond).order_by(*order_by(q)).offset(q.offset).limit(q.limit).subquery()
    rows = conn.execute(select(notebooks).join(ids, ids.c.id == N.id).order_by(*order_by(q))).mappings().all()
    return list(rows), total


def insert_notebook(conn: Connection, row: dict, tags: Iterable[tuple[str, str]] = ()) -> None:
    conn.execute(insert(notebooks).values(**row))
    for key, value in tags:
        conn.execute(insert(notebook_tags).values(notebook_id=row["id"], key=key, value=value))


def get(conn: Connection, notebook_id: str):
    return conn.execute(select(notebooks).where(N.id == notebook_id)).mappings().first()


def get_many(conn: Connection, statuses: Iterable[str]):
    return conn.execute(select(notebooks).where(N.status.in_(list(statuses)))).mappings().all()


def expired_timing_leases(conn: Connection, now: int, limit: int = 500):
    """RUNNING instances whose TIMING lease ran out (found in SQL, however many rows the table has)."""
    stmt = (select(notebooks).where(N.status == Status.RUNNING.value, N.lease_enable.is_(True),
                                    N.lease_type == "TIMING", N.lease_duration.is_not(None),
                                    N.create_at + N.lease_duration <= now).limit(limit))
    return conn.execute(stmt).mappings().all()


def running_with_idle_lease(conn: Connection):
    stmt = select(notebooks).where(N.status == Status.RUNNING.value, N.lease_enable.is_(True),
                                   N.lease_type == "IDLE")
    return conn.execute(stmt).mappings().all()


def all_ids(conn: Connection) -> set[str]:
    return set(conn.execute(select(N.id)).scalars())


def compare_and_set(conn: Connection, notebook_id: str, version: int, values: dict,
                    bump: bool = False) -> bool:
    """Apply ``values`` only if the row is still at ``version``; bump the version on status changes."""
    if bump:
        values = {**values, "version": version + 1}
    result = conn.execute(update(notebooks).where(N.id == notebook_id, N.version == version).values(**values))
    return result.rowcount == 1


def update_if_status(conn: Connection, notebook_id: str, status: str, values: dict) -> bool:
    """Write progress-like columns only while the instance is still in ``status``."""
    result = conn.execute(update(notebooks).where(N.id == notebook_id, N.status == status).values(**values))
    return result.rowcount == 1


def remove(conn: Connection, notebook_id: str, version: int) -> bool:
    conn.execute(delete(notebook_tags).where(notebook_tags.c.notebook_id == notebook_id))
    return conn.execute(delete(notebooks).where(N.id == notebook_id, N.version == version)).rowcount == 1


def count_owned(conn: Connection, user_id: str, feature: str | None = None) -> int:
    cond = [N.user_id == user_id]
    if feature is not None:
        cond.append(N.feature == feature)
    return conn.execute(select(func.count()).select_from(notebooks).where(*cond)).scalar_one()


def claim(conn: Connection, notebook_id: str, owner: str, now: int, until: int) -> bool:
    """Take the right to act on an instance, unless another live worker holds it."""
    free = (N.claim_owner.is_(None)) | (N.claim_until < now) | (N.claim_owner == owner)
    result = conn.execute(update(notebooks).where(N.id == notebook_id, free)
                          .values(claim_owner=owner, claim_until=until))
    return result.rowcount == 1


def release(conn: Connection, notebook_id: str, owner: str) -> None:
    conn.execute(update(notebooks).where(N.id == notebook_id, N.claim_owner == owner)
                 .values(claim_owner=None, claim_until=None))


def release_all(conn: Connection) -> None:
    conn.execute(update(notebooks).where(N.claim_owner.is_not(None)).values(claim_owner=None, claim_until=None))


def replace_tags(conn: Connection, notebook_id: str, tags: Iterable[tuple[str, str]]) -> None:
    conn.execute(delete(notebook_tags).where(notebook_tags.c.notebook_id == notebook_id))
    for key, value in tags:
        conn.execute(insert(notebook_tags).values(notebook_id=notebook_id, key=key, value=value))


def add_event(conn: Connection, notebook_id: str, project_id: str, at: int, kind: str, message: str) -> None:
    conn.execute(insert(events).values(notebook_id=notebook_id, project_id=project_id, at=at, kind=kind,
                                       message=message))


def events_page(conn: Connection, notebook_id: str, offset: int, limit: int, descending: bool):
    cond = [events.c.notebook_id == notebook_id]
    total = conn.execute(select(func.count()).select_from(events).where(*cond)).scalar_one()
    order = events.c.id.desc() if descending else events.c.id.asc()
    rows = conn.execute(select(events).where(*cond).order_by(order).offset(offset).limit(limit)).mappings().all()
    return list(rows), total


def count_in_status(conn: Connection, statuses: Iterable[str]) -> int:
    return conn.execute(select(func.count()).select_from(notebooks)
                        .where(N.status.in_(list(statuses)))).scalar_one()


def status_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(N.status, func.count()).group_by(N.status)).all()
    return {status: n for status, n in rows}


__all__ = ["page", "insert_notebook", "get", "compare_and_set", "remove", "Status"]
