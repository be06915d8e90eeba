"""Migration 0010 (the description in ix_notebooks_scope_status_name): up and down, the index as
store/tables.py declares it, and on SQLite the planner's statistics of the index kept across it."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.auth.secrets import SecretBox
from nbfleet.store.db import Database
from nbfleet.store.migrate import alembic_config
from nbfleet.store.tables import metadata

INDEX = "ix_notebooks_scope_status_name"


def _columns(conn) -> list[str]:
    return next(i["column_names"] for i in inspect(conn).get_indexes("notebooks") if i["name"] == INDEX)


def _stat(conn) -> str | None:
    if conn.dialect.name != "sqlite":
        return None
    return conn.execute(text("SELECT stat FROM sqlite_stat1 WHERE idx = :i"), {"i": INDEX}).scalar()


def test_down_and_up_keeps_the_index_declared_and_its_statistics(settings):
    with TestClient(create_app(settings, announce=lambda _t: None)):
        pass
    box = SecretBox.from_settings(settings.secret_key, settings.data_dir)
    db = Database(settings.sqlalchemy_url())
    cfg = alembic_config(db.url)
    pg = db.engine.dialect.name != "sqlite"
    try:
        with db.engine.begin() as conn:
            assert _columns(conn)[-2:] == ["id", "description"]
            diffs = [d for d in compare_metadata(MigrationContext.configure(conn), metadata) if INDEX in repr(d)]
            assert diffs == []
            if conn.dialect.name == "sqlite":  # what ANALYZE leaves for a store of a million rows
                conn.execute(text("ANALYZE"))
                conn.execute(text("DELETE FROM sqlite_stat1 WHERE idx = :i"), {"i": INDEX})
                conn.execute(
                    text("INSERT INTO sqlite_stat1 VALUES ('notebooks', :i, '1000000 10000 3334 1698 399 1 1 1')"),
                    {"i": INDEX},
                )
        with db.engine.begin() as conn:
            cfg.attributes.update(connection=conn, secrets=box)
            command.downgrade(cfg, "0009")
        with db.engine.connect() as conn:
            assert _columns(conn)[-1] == "id"
            assert _stat(conn) == (None if pg else "1000000 10000 3334 1698 399 1 1")
        with db.engine.begin() as conn:
            cfg.attributes.update(connection=conn, secrets=box)
            command.upgrade(cfg, "head")
        with db.engine.connect() as conn:
            assert _columns(conn)[-1] == "description"
            assert _stat(conn) == (None if pg else "1000000 10000 3334 1698 399 1 1 1")
    finally:
        db.dispose()
