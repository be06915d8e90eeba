"""Notebook rows: insert, fetch, compare-and-set transitions, events. The list query lives in
``notebook_list``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update

from ..domain.model import Status
from ..domain.query import NotebookQuery
from . import notebook_list
from .tables import IN_FLIGHT, IN_FLIGHT_SQL, dynamic_storages, events, notebook_tags, notebooks

N = notebooks.c


def page(conn: Connection, q: NotebookQuery) -> tuple[list, int]:
    """The rows of one list page and its exact total (see ``notebook_list``)."""
    return notebook_list.page(conn, q)


def insert_notebook(conn: Connection, row: dict, tags: Iterable[tuple[str, str]] = ()) -> None:
    conn.execute(insert(notebooks).values(**row))
    for key, value in tags:
        conn.execute(insert(notebook_tags).values(notebook_id=row["id"], key=key, value=value))


def get(conn: Connection, notebook_id: str):
    return conn.execute(select(notebooks).where(N.id == notebook_id)).mappings().first()


def get_many(conn: Connection, statuses: Iterable[str]):
    return conn.execute(select(notebooks).where(_status_in(statuses))).mappings().all()


def statuses_of(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    """The status of each of ``ids`` that is in the store (absent ids are not), in bounded IN lists."""
    wanted = sorted(set(ids))
    found: dict[str, str] = {}
    for at in range(0, len(wanted), 500):
        chunk = wanted[at : at + 500]
        found.update(conn.execute(select(N.id, N.status).where(N.id.in_(chunk))).tuples().all())
    return found


def _status_in(statuses: Iterable[str]):
    """``status IN (…)``, written so that a subset of the in-flight statuses can use their partial index."""
    wanted = sorted(str(s) for s in statuses)
    if set(wanted) <= set(IN_FLIGHT):
        # The partial index applies only when the query's WHERE visibly implies the index's WHERE.
        return and_(IN_FLIGHT_SQL, N.status.in_(wanted))
    return N.status.in_(wanted)


def _timing_expired(now: int) -> list:
    return [
        N.status == Status.RUNNING.value,
        N.lease_enable.is_(True),
        N.lease_type == "TIMING",
        N.lease_duration.is_not(None),
        N.create_at + N.lease_duration <= now,
    ]


def running_with_idle_lease(conn: Connection):
    stmt = select(notebooks).where(N.status == Status.RUNNING.value, N.lease_enable.is_(True), N.lease_type == "IDLE")
    return conn.execute(stmt).mappings().all()


def compare_and_set(
    conn: Connection, notebook_id: str, version: int, values: dict, bump: bool = False, owner: str | None = None
) -> bool:
    """Apply ``values`` only if the row is still at ``version`` (and, with ``owner``, still claimed by
    that worker: a replica that lost its claim cannot write a result); bump the version on status changes."""
    if bump:
        values = {**values, "version": version + 1}
    cond = [N.id == notebook_id, N.version == version]
    if owner is not None:
        cond.append(N.claim_owner == owner)
    result = conn.execute(update(notebooks).where(*cond).values(**values))
    return result.rowcount == 1


def update_if_status(conn: Connection, notebook_id: str, status: str, values: dict) -> bool:
    """Write progress-like columns only while the instance is still in ``status``."""
    result = conn.execute(update(notebooks).where(N.id == notebook_id, N.status == status).values(**values))
    return result.rowcount == 1


def remove(conn: Connection, notebook_id: str, version: int) -> bool:
    conn.execute(delete(notebook_tags).where(notebook_tags.c.notebook_id == notebook_id))
    conn.execute(delete(dynamic_storages).where(dynamic_storages.c.notebook_id == notebook_id))
    return conn.execute(delete(notebooks).where(N.id == notebook_id, N.version == version)).rowcount == 1


def count_owned(conn: Connection, user_id: str, feature: str | None = None) -> int:
    cond = [N.user_id == user_id]
    if feature is not None:
        cond.append(N.feature == feature)
    return conn.execute(select(func.count()).select_from(notebooks).where(*cond)).scalar_one()


def claim(conn: Connection, notebook_id: str, owner: str, now: int, until: int) -> bool:
    """Take the right to act on an instance, unless another live worker holds it."""
    result = conn.execute(
        update(notebooks)
        .where(N.id == notebook_id, _claimable(owner, now))
        .values(claim_owner=owner, claim_until=until)
    )
    return result.rowcount == 1


def _claimable(owner: str, now: int):
    return (N.claim_owner.is_(None)) | (N.claim_until < now) | (N.claim_owner == owner)


def _claim_where(
    conn: Connection, cond: list, owner: str, now: int, until: int, exclude: Iterable[str], limit: int
) -> list:
    """Claim up to ``limit`` free rows matching ``cond``; return them as they are now.

    ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) lets replicas sweeping at the same moment take disjoint rows
    without waiting on each other; on SQLite the write transaction already excludes everyone else."""
    exclude = list(exclude)
    stmt = select(N.id).where(*cond, _claimable(owner, now))
    if exclude:
        stmt = stmt.where(N.id.not_in(exclude))
    stmt = stmt.order_by(N.update_at, N.id).limit(limit).with_for_update(skip_locked=True)
    ids = list(conn.execute(stmt).scalars())
    if not ids:
        return []
    conn.execute(update(notebooks).where(N.id.in_(ids)).values(claim_owner=owner, claim_until=until))
    return list(conn.execute(select(notebooks).where(N.id.in_(ids)).order_by(N.update_at, N.id)).mappings())


def claim_in_status(
    conn: Connection,
    statuses: Iterable[str],
    owner: str,
    now: int,
    until: int,
    exclude: Iterable[str] = (),
    limit: int = 100,
) -> list:
    """Claim instances in ``statuses`` (the transitional ones: work a replica must finish)."""
    return _claim_where(conn, [_status_in(statuses)], owner, now, until, exclude, limit)


def claim_expired_timing(
    conn: Connection, owner: str, now: int, until: int, exclude: Iterable[str] = (), limit: int = 100
) -> list:
    """Claim RUNNING instances whose TIMING lease ran out, so exactly one replica stops each."""
    return _claim_where(conn, _timing_expired(now), owner, now, until, exclude, limit)


def claim_row(conn: Connection, notebook_id: str, owner: str, now: int, until: int):
    """Claim one instance and return it as it is now, or None if another live worker holds it."""
    if not claim(conn, notebook_id, owner, now, until):
        return None
    return get(conn, notebook_id)


def renew(conn: Connection, notebook_ids: Iterable[str], owner: str, until: int) -> set[str]:
    """Extend this worker's claims (the heartbeat of long operations); return the ids another worker
    holds now, i.e. claims that expired and were taken over."""
    ids = list(notebook_ids)
    if not ids:
        return set()
    conn.execute(update(notebooks).where(N.id.in_(ids), N.claim_owner == owner).values(claim_until=until))
    return set(
        conn.execute(select(N.id).where(N.id.in_(ids), N.claim_owner.is_not(None), N.claim_owner != owner)).scalars()
    )


def release(conn: Connection, notebook_id: str, owner: str) -> None:
    conn.execute(
        update(notebooks).where(N.id == notebook_id, N.claim_owner == owner).values(claim_owner=None, claim_until=None)
    )


def release_owned(conn: Connection, owner: str) -> None:
    """Give up every claim ``owner`` holds (a replica that stops)."""
    conn.execute(update(notebooks).where(N.claim_owner == owner).values(claim_owner=None, claim_until=None))


def release_all(conn: Connection) -> None:
    conn.execute(update(notebooks).where(N.claim_owner.is_not(None)).values(claim_owner=None, claim_until=None))


def replace_tags(conn: Connection, notebook_id: str, tags: Iterable[tuple[str, str]]) -> None:
    conn.execute(delete(notebook_tags).where(notebook_tags.c.notebook_id == notebook_id))
    for key, value in tags:
        conn.execute(insert(notebook_tags).values(notebook_id=notebook_id, key=key, value=value))


def tags_in_use(conn: Connection, project_id: str, user_id: str | None, workspace_id: str | None) -> Sequence[Any]:
    """Distinct (key, value) of the tags on the project's notebooks (of ``user_id``'s only, unless None),
    in one workspace if given; ordered by key, then value."""
    cond = [N.project_id == project_id]
    if user_id is not None:
        cond.append(N.user_id == user_id)
    if workspace_id:
        cond.append(N.workspace_id == workspace_id)
    stmt = (
        select(notebook_tags.c.key, notebook_tags.c.value)
        .distinct()
        .join(notebooks, N.id == notebook_tags.c.notebook_id)
        .where(*cond)
        .order_by(notebook_tags.c.key, notebook_tags.c.value)
    )
    return conn.execute(stmt).all()


def add_event(conn: Connection, notebook_id: str, project_id: str, at: int, kind: str, message: str) -> None:
    conn.execute(
        insert(events).values(notebook_id=notebook_id, project_id=project_id, at=at, kind=kind, message=message)
    )


def events_page(conn: Connection, notebook_id: str, offset: int, limit: int, descending: bool):
    cond = [events.c.notebook_id == notebook_id]
    total = conn.execute(select(func.count()).select_from(events).where(*cond)).scalar_one()
    order = events.c.id.desc() if descending else events.c.id.asc()
    rows = conn.execute(select(events).where(*cond).order_by(order).offset(offset).limit(limit)).mappings().all()
    return list(rows), total


def count_in_status(conn: Connection, statuses: Iterable[str]) -> int:
    return conn.execute(select(func.count()).select_from(notebooks).where(_status_in(statuses))).scalar_one()


def count_by_status(conn: Connection) -> dict[str, int]:
    """Instances per status, in one GROUP BY (the metrics scrape)."""
    rows = conn.execute(select(N.status, func.count()).select_from(notebooks).group_by(N.status))
    return {status: count for status, count in rows}


__all__ = ["page", "insert_notebook", "get", "compare_and_set", "remove", "Status"]
