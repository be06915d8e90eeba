from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import create_engine
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.settings import LeaseSettings, Settings
from nbfleet.store.tables import metadata

from .support import Api, Creds


# Set to a PostgreSQL URL to run the in-process suite against PostgreSQL instead of SQLite.
TEST_DATABASE_URL = os.environ.get("NBFLEET_TEST_DATABASE_URL")


def reset_database(url: str) -> None:
    """Drop every nbfleet table so that each test starts from an empty schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # also functions, triggers and extensions of the migrations
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        else:
            metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()


def make_settings(tmp_path, **overrides) -> Settings:
    values = dict(data_dir=tmp_path / "data", runtime="simulated", simulated_delay=0.0, reconcile_interval=0.05,
                  observe_interval=0.1, port=8080)
    if TEST_DATABASE_URL:
        reset_database(TEST_DATABASE_URL)
        values["database_url"] = TEST_DATABASE_URL
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def api(settings):
    """An in-process nbfleet (simulated runtime, zero delays) and a signed client for its admin."""
    app = create_app(settings, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]),
                  app.state.services)


__all__ = ["make_settings", "LeaseSettings"]
