"""Image groups: one row each for the guide text and tags; the counts and times come from the live images."""

from __future__ import annotations

import orjson
from sqlalchemy import Connection, and_, delete, func, or_, select, update

from .tables import image_groups, images

G = image_groups.c
I = images.c  # noqa: E741 - the table's columns, one capital letter as N, G and D in the other repos


def ensure(conn: Connection, row: dict) -> None:
    """Create the group if it is new (a concurrent creator of the same group is no error: its id is
    derived from what the group is, so both mean the same row); a new image's description becomes the
    group's."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]  # same API
    conn.execute(dialect_insert(image_groups).values(**row).on_conflict_do_nothing(index_elements=["id"]))
    conn.execute(
        update(image_groups)
        .where(G.id == row["id"])
        .values(
            description=row["description"],
            update_at=func.max(G.update_at, row["update_at"])
            if dialect == "sqlite"
            else func.greatest(G.update_at, row["update_at"]),
        )
    )


def _visible(project_id: str, user_id: str):
    """Built-in groups, and the caller's own groups of the project."""
    return or_(G.project_id.is_(None), and_(G.project_id == project_id, G.owner_id == user_id))


def _with_counts():
    """Groups joined with their live images: how many, the first creation and the last change."""
    live = (
        select(
            I.group_id.label("group_id"),
            func.count().label("version_count"),
            func.min(I.create_at).label("first_create_at"),
            func.max(I.update_at).label("last_update_at"),
        )
        .where(I.status != "DELETED")
        .group_by(I.group_id)
        .subquery()
    )
    columns = [image_groups, live.c.version_count, live.c.first_create_at, live.c.last_update_at]
    return columns, image_groups.join(live, live.c.group_id == G.id)


def get_visible(conn: Connection, group_id: str, project_id: str, user_id: str):
    """The group with its counts, if the caller may see it and it has a live image."""
    columns, source = _with_counts()
    stmt = select(*columns).select_from(source).where(G.id == group_id, _visible(project_id, user_id))
    return conn.execute(stmt).mappings().first()


def page(
    conn: Connection,
    project_id: str,
    user_id: str,
    *,
    filters: dict,
    name: str | None,
    fuzzy: bool,
    offset: int,
    limit: int,
):
    columns, source = _with_counts()
    cond = [_visible(project_id, user_id)]
    for column, value in filters.items():
        cond.append(image_groups.c[column] == value)
    if name:
        if fuzzy:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond.append(G.name.ilike(f"%{escaped}%", escape="\\"))
        else:
            cond.append(G.name == name)
    total = conn.execute(select(func.count()).select_from(source).where(*cond)).scalar()
    stmt = (
        select(*columns)
        .select_from(source)
        .where(*cond)
        .order_by(G.namespace, G.name, G.id)
        .offset(offset)
        .limit(limit)
    )
    return conn.execute(stmt).mappings().all(), total


def live_images(conn: Connection, group_id: str):
    return (
        conn.execute(select(images).where(I.group_id == group_id, I.status != "DELETED").order_by(I.create_at, I.id))
        .mappings()
        .all()
    )


def update_group(conn: Connection, group_id: str, values: dict) -> None:
    conn.execute(update(image_groups).where(G.id == group_id).values(**values))


def remove(conn: Connection, group_id: str) -> None:
    """Forget the group's guide text and tags (its images are all deleted)."""
    conn.execute(delete(image_groups).where(G.id == group_id))


def to_json(row) -> dict:
    """The wire ``ImageGroup`` (with its type, workspace and tags beyond the SDK's members)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "namespace": row["namespace"],
        "description": row["description"],
        "read_me": row["read_me"],
        "icon_name": "",
        "version_count": row["version_count"],
        "create_at": row["first_create_at"],
        "update_at": max(row["last_update_at"], row["update_at"]),
        "swr_instance_name": None,
        "swr_instance_id": None,
        "type": row["type"],
        "workspace_id": row["workspace_id"],
        "tags": orjson.loads(row["tags"]),
    }
