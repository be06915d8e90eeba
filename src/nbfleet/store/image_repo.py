"""Images: built-ins (no project), users' registered and saved images; compare-and-set status writes."""

from __future__ import annotations

import orjson
from sqlalchemy import Connection, and_, func, insert, or_, select, update

from .tables import images, notebooks

I = images.c  # noqa: E741 - the table's columns, one capital letter as N, G and D in the other repos
_SORT = {"create_at": I.create_at, "update_at": I.update_at, "name": I.name, "tag": I.tag}
_LIVE = I.status != "DELETED"


def upsert(conn: Connection, row: dict) -> None:
    exists = conn.execute(select(I.id).where(I.id == row["id"])).first()
    if exists:
        values = {k: v for k, v in row.items() if k not in ("id", "create_at")}
        conn.execute(update(images).where(I.id == row["id"]).values(**values))
    else:
        conn.execute(insert(images).values(**row))


def insert_image(conn: Connection, row: dict) -> None:
    conn.execute(insert(images).values(**row))


def _visible(project_id: str, user_id: str):
    return or_(
        I.project_id.is_(None), and_(I.project_id == project_id, or_(I.owner_id == user_id, I.visibility == "PUBLIC"))
    )


def get(conn: Connection, image_id: str):
    return conn.execute(select(images).where(I.id == image_id)).mappings().first()


def get_visible(conn: Connection, image_id: str, project_id: str, user_id: str):
    stmt = select(images).where(I.id == image_id, _visible(project_id, user_id), _LIVE)
    return conn.execute(stmt).mappings().first()


def page(
    conn: Connection,
    project_id: str,
    user_id: str,
    *,
    filters: dict,
    name: str | None,
    fuzzy: bool,
    sort: tuple[str, ...],
    descending: bool,
    offset: int,
    limit: int,
):
    cond = [_visible(project_id, user_id), _LIVE]
    for column, value in filters.items():
        cond.append(images.c[column] == value)
    if name:
        if fuzzy:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond.append(I.name.ilike(f"%{escaped}%", escape="\\"))
        else:
            cond.append(I.name == name)
    total = conn.execute(select(func.count()).select_from(images).where(*cond)).scalar()
    order = [(_SORT[k].desc() if descending else _SORT[k].asc()) for k in sort]
    order.append(I.id.desc() if descending else I.id.asc())
    rows = conn.execute(select(images).where(*cond).order_by(*order).offset(offset).limit(limit)).mappings().all()
    return rows, total


def owned_with_tag(conn: Connection, project_id: str, owner_id: str, namespace: str, name: str, tag: str):
    """The owner's live image ``namespace/name:tag`` in the project, if any (spec: a second one is 6737)."""
    stmt = select(images).where(
        I.project_id == project_id,
        I.owner_id == owner_id,
        I.namespace == namespace,
        I.name == name,
        I.tag == tag,
        _LIVE,
    )
    return conn.execute(stmt).mappings().first()


def address_taken(conn: Connection, swr_path: str) -> bool:
    """Whether a save may not write ``swr_path``: an image there is live, or deleted with its content not yet
    removed, or an instance still runs from an image there (deleted or not). A save would overwrite
    content someone uses (another user's instance would then run the saver's files), or have its own
    removed by the pending purge."""
    stmt = select(I.id).where(I.swr_path == swr_path, or_(_LIVE, I.purge.is_(True))).limit(1)
    return conn.execute(stmt).first() is not None or content_in_use(conn, swr_path)


def change_status(conn: Connection, image_id: str, expected: str, values: dict) -> bool:
    """Compare-and-set: write ``values`` only while the image is still in status ``expected``."""
    result = conn.execute(update(images).where(I.id == image_id, I.status == expected).values(**values))
    return result.rowcount == 1


def saving_for(conn: Connection, notebook_id: str):
    """The image a SNAPSHOTTING notebook is being saved as (INIT or CREATING), if any."""
    stmt = (
        select(images)
        .where(I.source_notebook_id == notebook_id, I.status.in_(("INIT", "CREATING")))
        .order_by(I.create_at.desc(), I.id)
    )
    return conn.execute(stmt).mappings().first()


def pending_purges(conn: Connection, limit: int = 20) -> list[str]:
    """The addresses of deleted images whose content must still be removed from the engine."""
    stmt = select(I.swr_path).where(I.purge.is_(True)).group_by(I.swr_path).order_by(I.swr_path).limit(limit)
    return list(conn.execute(stmt).scalars())


def content_in_use(conn: Connection, swr_path: str) -> bool:
    """Whether anything still needs the content at ``swr_path``: a live image there (a built-in, another
    user's registration, a save on its way), or an instance created from any image there, which keeps
    running from it and must be able to start again."""
    if conn.execute(select(I.id).where(I.swr_path == swr_path, _LIVE).limit(1)).first() is not None:
        return True
    ids = select(I.id).where(I.swr_path == swr_path).scalar_subquery()
    used = select(notebooks.c.id).where(notebooks.c.image_id.in_(ids)).limit(1)
    return conn.execute(used).first() is not None


def keep_content(conn: Connection, swr_path: str) -> None:
    """A new image at ``swr_path`` wants its content: removals still pending there are called off."""
    conn.execute(update(images).where(I.swr_path == swr_path, I.purge.is_(True)).values(purge=False))


def purged(conn: Connection, swr_path: str) -> None:
    """The content at ``swr_path`` is gone: no deleted image there waits for its removal any more."""
    conn.execute(update(images).where(I.swr_path == swr_path, I.purge.is_(True)).values(purge=False))


def to_json(row) -> dict:
    """The wire ``Image`` object of a stored image."""
    doc = orjson.loads(row["doc"])
    doc.update(
        {
            "id": row["id"],
            "name": row["name"],
            "namespace": row["namespace"],
            "tag": row["tag"],
            "swr_path": row["swr_path"],
            "type": row["type"],
            "status": row["status"],
            "visibility": row["visibility"],
            "workspace_id": row["workspace_id"],
            "service_type": row["service_type"],
            "show_name": row["show_name"],
            "show_tag": row["show_tag"],
            "create_at": row["create_at"],
            "update_at": row["update_at"],
        }
    )
    return doc
