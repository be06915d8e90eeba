"""Migration 0007 (image groups, saves, content to remove): on SQLite and PostgreSQL, up and down, and the
schema it makes is the one store/tables.py declares."""

from __future__ import annotations

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.auth.secrets import SecretBox
from nbfleet.domain.images import group_id
from nbfleet.store.db import Database
from nbfleet.store.migrate import alembic_config
from nbfleet.store.tables import metadata

from ..support import Api, Creds


def _api(client, settings) -> Api:
    c = json.loads((settings.data_dir / "credentials.json").read_text())
    return Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), client.app.state.services)


def _touches_images(diff) -> bool:
    text = repr(diff)
    return "images" in text or "image_groups" in text or "ix_notebooks_image_id" in text


def test_the_migrated_schema_is_the_declared_one(settings):
    with TestClient(create_app(settings, announce=lambda _t: None)):
        pass
    db = Database(settings.sqlalchemy_url())
    try:
        with db.engine.connect() as conn:
            diffs = [d for d in compare_metadata(MigrationContext.configure(conn), metadata) if _touches_images(d)]
            indexes = {i["name"] for i in inspect(conn).get_indexes("images")}
    finally:
        db.dispose()
    assert diffs == []
    assert {"uq_images_owner_tag", "uq_images_saved_path", "ix_images_saving", "ix_images_purge"} <= indexes


def test_down_and_up_again_keeps_users_images_and_gives_them_their_groups(settings):
    with TestClient(create_app(settings, announce=lambda _t: None)) as client:
        api = _api(client, settings)
        image = api.ok("POST", "/images", body={"swr_path": "swr.example.com/team/app:1"})
    box = SecretBox.from_settings(settings.secret_key, settings.data_dir)
    db = Database(settings.sqlalchemy_url())
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes.update(connection=conn, secrets=box)
        command.downgrade(cfg, "0006")
    with db.engine.connect() as conn:
        assert "image_groups" not in inspect(conn).get_table_names()
        assert "group_id" not in {c["name"] for c in inspect(conn).get_columns("images")}
    db.dispose()
    with TestClient(create_app(settings, announce=lambda _t: None)) as client:  # migrates at start
        api = _api(client, settings)
        assert api.ok("GET", f"/images/{image['id']}")["status"] == "ACTIVE"
        groups = {g["name"]: g for g in api.ok("GET", "/images/group", {"type": "DEDICATED"})["data"]}
        assert groups["app"]["id"] == group_id(api.creds.project_id, api.creds.user_id, "team", "app")
        assert groups["app"]["version_count"] == 1
        with client.app.state.services.images.db.read() as conn:
            assert "uq_images_owner_tag" in {i["name"] for i in inspect(conn).get_indexes("images")}
