"""Dynamic storage rows (``dynamic_storages``): insert, read, compare-and-set of a mount's status, claims.

Every status change is a compare-and-set on (id, version) and bumps the version, like notebook rows: an
API detach and the reconciler finishing a mount cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, text, update

from .tables import dynamic_storages, notebooks

D = dynamic_storages.c
IN_FLIGHT_SQL = text("status IN ('MOUNTING', 'UNMOUNTING')")


def insert_mount(conn: Connection, row: dict) -> None:
    conn.execute(insert(dynamic_storages).values(**row))


def lock_notebook(conn: Connection, notebook_id: str) -> None:
    """Hold the instance's row until the transaction ends (PostgreSQL; SQLite's write transaction already
    excludes every other writer): attaches to one instance check their paths one after the other, and a
    stop's compare-and-set waits for the attach that read the instance RUNNING."""
    conn.execute(select(notebooks.c.id).where(notebooks.c.id == notebook_id).with_for_update())


def get(conn: Connection, mount_id: str):
    return conn.execute(select(dynamic_storages).where(D.id == mount_id)).mappings().first()


def of_notebook(conn: Connection, notebook_id: str) -> list:
    return list(
        conn.execute(
            select(dynamic_storages).where(D.notebook_id == notebook_id).order_by(D.create_at, D.id)
        ).mappings()
    )


def of_notebooks(conn: Connection, notebook_ids: Iterable[str]) -> dict[str, list]:
    """Mounts of several instances in one query (a list page), by instance id."""
    ids = list(notebook_ids)
    out: dict[str, list] = {i: [] for i in ids}
    if not ids:
        return out
    for row in conn.execute(
        select(dynamic_storages).where(D.notebook_id.in_(ids)).order_by(D.create_at, D.id)
    ).mappings():
        out[row["notebook_id"]].append(row)
    return out


def change(conn: Connection, mount_id: str, version: int, values: dict, *, owner: str | None = None) -> bool:
    """Compare-and-set on the version (and the claim, for the reconciler); bumps the version."""
    cond = [D.id == mount_id, D.version == version]
    if owner is not None:
        cond.append(D.claim_owner == owner)
    return conn.execute(update(dynamic_storages).where(*cond).values(**values, version=D.version + 1)).rowcount == 1


def remove(conn: Connection, mount_id: str, version: int, *, owner: str | None = None) -> bool:
    cond = [D.id == mount_id, D.version == version]
    if owner is not None:
        cond.append(D.claim_owner == owner)
    return conn.execute(delete(dynamic_storages).where(*cond)).rowcount == 1


def any_in_flight(conn: Connection, exclude: Iterable[str]) -> bool:
    """Whether a mount is MOUNTING or UNMOUNTING, other than ``exclude`` (partial index: cheap)."""
    stmt = select(D.id).where(IN_FLIGHT_SQL, D.status.in_(("MOUNTING", "UNMOUNTING")))
    exclude = list(exclude)
    if exclude:
        stmt = stmt.where(D.id.not_in(exclude))
    return conn.execute(stmt.limit(1)).first() is not None


def claim_work(conn: Connection, owner: str, now: int, until: int, exclude: Iterable[str], limit: int) -> list:
    """Claim MOUNTING mounts of RUNNING instances and every UNMOUNTING mount that no live worker holds.

    A MOUNTING mount of an instance that is not running waits: it is mounted once the instance runs."""
    exclude = list(exclude)
    running = select(notebooks.c.id).where(notebooks.c.status == "RUNNING")
    cond: list[Any] = [
        IN_FLIGHT_SQL,
        D.status.in_(("MOUNTING", "UNMOUNTING")),
        or_(D.status == "UNMOUNTING", D.notebook_id.in_(running)),
        or_(D.claim_owner.is_(None), D.claim_until < now, D.claim_owner == owner),
    ]
    stmt = select(D.id).where(*cond)
    if exclude:
        stmt = stmt.where(D.id.not_in(exclude))
    ids = list(conn.execute(stmt.order_by(D.update_at, D.id).limit(limit).with_for_update(skip_locked=True)).scalars())
    if not ids:
        return []
    conn.execute(update(dynamic_storages).where(D.id.in_(ids)).values(claim_owner=owner, claim_until=until))
    return list(conn.execute(select(dynamic_storages).where(D.id.in_(ids))).mappings())


def release(conn: Connection, mount_id: str, owner: str) -> None:
    conn.execute(
        update(dynamic_storages)
        .where(D.id == mount_id, D.claim_owner == owner)
        .values(claim_owner=None, claim_until=None)
    )


def release_all(conn: Connection) -> None:
    conn.execute(update(dynamic_storages).where(D.claim_owner.is_not(None)).values(claim_owner=None, claim_until=None))


def renew(conn: Connection, mount_ids: Iterable[str], owner: str, until: int) -> None:
    ids = list(mount_ids)
    if ids:
        conn.execute(update(dynamic_storages).where(D.id.in_(ids), D.claim_owner == owner).values(claim_until=until))


def instance_stopped(conn: Connection, notebook_id: str, now: int) -> None:
    """The instance stopped and nothing of it is mounted any more: detaches in flight are done (rows gone),
    every other mount waits for the next start as UNMOUNTED."""
    conn.execute(
        delete(dynamic_storages).where(D.notebook_id == notebook_id, D.status.in_(("UNMOUNTING", "UNMOUNT_FAILED")))
    )
    conn.execute(
        update(dynamic_storages)
        .where(D.notebook_id == notebook_id)
        .values(
            status="UNMOUNTED",
            failure_reason=None,
            claim_owner=None,
            claim_until=None,
            update_at=now,
            version=D.version + 1,
        )
    )


def instance_started(conn: Connection, notebook_id: str, now: int) -> None:
    """The instance runs again: every kept mount is mounted again (by the reconciler)."""
    conn.execute(
        update(dynamic_storages)
        .where(D.notebook_id == notebook_id, D.status != "UNMOUNTING")
        .values(status="MOUNTING", failure_reason=None, update_at=now, version=D.version + 1)
    )
