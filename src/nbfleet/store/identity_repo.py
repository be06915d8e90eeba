"""Projects, users, memberships, access keys, tokens and key pairs."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from .tables import access_keys, keypairs, memberships, meta, projects, tokens, users, workspaces


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()


def set_meta(conn: Connection, key: str, value: str) -> None:
    if get_meta(conn, key) is None:
        conn.execute(insert(meta).values(key=key, value=value))
    else:
        conn.execute(update(meta).where(meta.c.key == key).values(value=value))


def insert_project(conn: Connection, project_id: str, name: str, now: int) -> None:
    conn.execute(insert(projects).values(id=project_id, name=name, create_at=now))


def get_project(conn: Connection, project_id: str):
    return conn.execute(select(projects).where(projects.c.id == project_id)).mappings().first()


def find_project_by_name(conn: Connection, name: str):
    return conn.execute(select(projects).where(projects.c.name == name)).mappings().first()


def insert_user(conn: Connection, user_id: str, name: str, is_admin: bool, now: int) -> None:
    conn.execute(insert(users).values(id=user_id, name=name, is_admin=is_admin, create_at=now))


def get_user(conn: Connection, user_id: str, *, lock: bool = False):
    stmt = select(users).where(users.c.id == user_id)
    if lock:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def find_user_by_name(conn: Connection, name: str):
    return conn.execute(select(users).where(users.c.name == name)).mappings().first()


def list_users(conn: Connection):
    return conn.execute(select(users).order_by(users.c.create_at, users.c.id)).mappings().all()


def update_user(conn: Connection, user_id: str, **values) -> int:
    return conn.execute(update(users).where(users.c.id == user_id).values(**values)).rowcount


def add_membership(conn: Connection, user_id: str, project_id: str) -> None:
    exists = conn.execute(
        select(func.count())
        .select_from(memberships)
        .where(memberships.c.user_id == user_id, memberships.c.project_id == project_id)
    ).scalar()
    if not exists:
        conn.execute(insert(memberships).values(user_id=user_id, project_id=project_id))


def user_projects(conn: Connection, user_id: str) -> list[str]:
    return list(conn.execute(select(memberships.c.project_id).where(memberships.c.user_id == user_id)).scalars())


def is_member(conn: Connection, user_id: str, project_id: str) -> bool:
    return (
        conn.execute(
            select(func.count())
            .select_from(memberships)
            .where(memberships.c.user_id == user_id, memberships.c.project_id == project_id)
        ).scalar_one()
        > 0
    )


def insert_access_key(conn: Connection, ak: str, user_id: str, secret_enc: str, now: int) -> None:
    conn.execute(insert(access_keys).values(ak=ak, user_id=user_id, secret_enc=secret_enc, enabled=True, create_at=now))


# Built once: this runs on every signed request, and building the expression costs more than running it.
_KEY_FOR_PROJECT = (
    select(
        access_keys.c.secret_enc,
        access_keys.c.enabled,
        users.c.id.label("user_id"),
        users.c.name.label("user_name"),
        users.c.is_admin,
        select(func.count())
        .select_from(memberships)
        .where(memberships.c.user_id == users.c.id, memberships.c.project_id == bindparam("project_id"))
        .scalar_subquery()
        .label("member"),
    )
    .join(users, users.c.id == access_keys.c.user_id)
    .where(access_keys.c.ak == bindparam("ak"))
)


def access_key_for_project(conn: Connection, ak: str, project_id: str):
    """Key, user and whether the user belongs to ``project_id``, in one query (the per-request path)."""
    return conn.execute(_KEY_FOR_PROJECT, {"ak": ak, "project_id": project_id}).mappings().first()


def any_sealed_secret(conn: Connection) -> str | None:
    """One stored (encrypted) secret key, to check the installation's key against."""
    return conn.execute(select(access_keys.c.secret_enc).order_by(access_keys.c.create_at).limit(1)).scalar()


def set_access_key_enabled(conn: Connection, ak: str, enabled: bool) -> int:
    return conn.execute(update(access_keys).where(access_keys.c.ak == ak).values(enabled=enabled)).rowcount


def insert_token(
    conn: Connection, token_hash: str, user_id: str, project_id: str | None, expires_at: int, now: int, origin: str
) -> None:
    conn.execute(
        insert(tokens).values(
            token_hash=token_hash,
            user_id=user_id,
            project_id=project_id,
            expires_at=expires_at,
            create_at=now,
            origin=origin,
        )
    )


def get_token(conn: Connection, token_hash: str):
    stmt = (
        select(
            tokens.c.project_id,
            tokens.c.expires_at,
            users.c.id.label("user_id"),
            users.c.name.label("user_name"),
            users.c.is_admin,
        )
        .join(users, users.c.id == tokens.c.user_id)
        .where(tokens.c.token_hash == token_hash)
    )
    return conn.execute(stmt).mappings().first()


def delete_token(conn: Connection, token_hash: str) -> int:
    return conn.execute(delete(tokens).where(tokens.c.token_hash == token_hash)).rowcount


def delete_user_tokens(conn: Connection, user_id: str, origin: str) -> int:
    return conn.execute(delete(tokens).where(tokens.c.user_id == user_id, tokens.c.origin == origin)).rowcount


def insert_keypair(conn: Connection, user_id: str, name: str, public_key: str, now: int) -> None:
    conn.execute(insert(keypairs).values(user_id=user_id, name=name, public_key=public_key, create_at=now))


def keypairs_named(conn: Connection, user_id: str, names: set[str]) -> list[tuple[str, str]]:
    """(name, public key) of the user's key pairs among ``names``."""
    if not names:
        return []
    rows = conn.execute(
        select(keypairs.c.name, keypairs.c.public_key).where(
            keypairs.c.user_id == user_id, keypairs.c.name.in_(sorted(names))
        )
    )
    return [(row.name, row.public_key) for row in rows]


def list_keypairs(conn: Connection, user_id: str):
    query = select(keypairs).where(keypairs.c.user_id == user_id).order_by(keypairs.c.name)
    return conn.execute(query).mappings().all()


def delete_keypair(conn: Connection, user_id: str, name: str) -> int:
    return conn.execute(delete(keypairs).where(keypairs.c.user_id == user_id, keypairs.c.name == name)).rowcount


def keypair_names(conn: Connection, user_id: str) -> set[str]:
    return set(conn.execute(select(keypairs.c.name).where(keypairs.c.user_id == user_id)).scalars())


def insert_workspace(conn: Connection, workspace_id: str, project_id: str, name: str, now: int) -> None:
    conn.execute(insert(workspaces).values(id=workspace_id, project_id=project_id, name=name, create_at=now))


def workspace_exists(conn: Connection, workspace_id: str, project_id: str) -> bool:
    return (
        conn.execute(
            select(func.count())
            .select_from(workspaces)
            .where(workspaces.c.id == workspace_id, workspaces.c.project_id == project_id)
        ).scalar_one()
        > 0
    )
