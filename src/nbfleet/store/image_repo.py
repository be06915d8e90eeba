"""Images: built-ins (no project) and, later, users' own images."""
from __future__ import annotations

import orjson
from sqlalchemy import Connection, and_, func, insert, or_, select, update

from .tables import images

_SORT = {"create_at": images.c.create_at, "update_at": images.c.update_at, "name": images.c.name,
         "tag": images.c.tag}


def upsert(conn: Connection, row: dict) -> None:
    exists = conn.execute(select(images.c.id).where(images.c.id == row["id"])).first()
    if exists:
        values = {k: v for k, v in row.items() if k not in ("id", "create_at")}
        conn.execute(update(images).where(images.c.id == row["id"]).values(**values))
    else:
        conn.execute(insert(images).values(**row))


def _visible(project_id: str, user_id: str):
    return or_(images.c.project_id.is_(None),
               and_(images.c.project_id == project_id,
                    or_(images.c.owner_id == user_id, images.c.visibility == "PUBLIC")))


def get_visible(conn: Connection, image_id: str, project_id: str, user_id: str):
    stmt = select(images).where(images.c.id == image_id, _visible(project_id, user_id), images.c.status != "DELETED")
    return conn.execute(stmt).mappings().first()


def page(conn: Connection, project_id: str, user_id: str, *, filters: dict, name: str | None, fuzzy: bool,
         sort: tuple[str, ...], descending: bool, offset: int, limit: int):
    cond = [_visible(project_id, user_id), images.c.status != "DELETED"]
    for column, value in filters.items():
        cond.append(images.c[column] == value)
    if name:
        if fuzzy:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond.append(images.c.name.ilike(f"%{escaped}%", escape="\\"))
        else:
            cond.append(images.c.name == name)
    total = conn.execute(select(func.count()).select_from(images).where(*cond)).scalar()
    order = [(_SORT[k].desc() if descending else _SORT[k].asc()) for k in sort]
    order.append(images.c.id.desc() if descending else images.c.id.asc())
    rows = conn.execute(select(images).where(*cond).order_by(*order).offset(offset).limit(limit)).mappings().all()
    return rows, total


def to_json(row) -> dict:
    """The wire ``Image`` object of a stored image."""
    doc = orjson.loads(row["doc"])
    doc.update({"id": row["id"], "name": row["name"], "namespace": row["namespace"], "tag": row["tag"],
                "swr_path": row["swr_path"], "type": row["type"], "status": row["status"],
                "visibility": row["visibility"], "workspace_id": row["workspace_id"],
                "service_type": row["service_type"], "show_name": row["show_name"], "show_tag": row["show_tag"],
                "create_at": row["create_at"], "update_at": row["update_at"]})
    return doc
