"""A notebook's Jupyter token is stored sealed: a copy of the database alone does not reveal it; the owner
still sees it in the API and the runtime still gets it."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import select
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.auth.secrets import SecretBox
from nbfleet.runtime.simulated import SimulatedRuntime
from nbfleet.store.db import Database
from nbfleet.store.migrate import alembic_config
from nbfleet.store.tables import notebooks

from ..support import Api, Creds
from .test_auth_and_errors import _all_stored_text


def stored_token(db, notebook_id: str) -> str:
    with db.read() as conn:
        return conn.execute(select(notebooks.c.token).where(notebooks.c.id == notebook_id)).scalar()


class RecordingRuntime(SimulatedRuntime):
    """The simulated runtime, remembering the token each start was given."""

    def __init__(self):
        super().__init__(delay=0.0)
        self.tokens: dict[str, str] = {}

    async def start(self, spec, reporter):
        self.tokens[spec.id] = spec.token
        return await super().start(spec, reporter)


def test_the_database_does_not_hold_the_token(api):
    nb = api.create("sealed")
    token = nb["token"]
    assert token and len(token) == 36  # the owner sees the token itself
    raw = stored_token(api.services.notebooks.db, nb["id"])
    assert raw != token and token not in raw
    assert token not in _all_stored_text(api)  # nowhere else in the store either
    assert api.ok("GET", f"/notebooks/{nb['id']}")["token"] == token
    listed = api.ok("GET", "/notebooks", {"name": "sealed"})["data"][0]
    assert listed["token"] == token


def test_others_never_see_it(api):
    bob = api.new_user("bob-token", admin=False)
    nb = api.create("bobs", creds=bob)
    assert nb["token"]
    admin_view = api.ok("GET", "/notebooks/all", {"name": "bobs"})["data"][0]
    assert admin_view["id"] == nb["id"] and admin_view["token"] is None


def test_the_runtime_gets_the_token_the_owner_sees(settings):
    runtime = RecordingRuntime()
    with TestClient(create_app(settings, runtime=runtime, announce=lambda _t: None)) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(
            client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), client.app.state.services
        )
        nb = api.create("runs")
        assert nb["status"] == "RUNNING" and runtime.tokens[nb["id"]] == nb["token"]
        api.ok("POST", f"/notebooks/{nb['id']}/stop")
        api.wait_status(nb["id"], "STOPPED")
        api.ok("POST", f"/notebooks/{nb['id']}/start")
        again = api.wait_status(nb["id"], "RUNNING")
        assert again["token"] != nb["token"] and runtime.tokens[nb["id"]] == again["token"]


def test_the_migration_seals_existing_tokens(settings):
    """A store of the version before keeps plain tokens; upgrading seals them, and nothing else changes."""
    with TestClient(create_app(settings, announce=lambda _t: None)) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(
            client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), client.app.state.services
        )
        nb = api.create("before")
    box = SecretBox.from_settings(settings.secret_key, settings.data_dir)
    db = Database(settings.sqlalchemy_url())
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes.update(connection=conn, secrets=box)
        command.downgrade(cfg, "0005")
    assert stored_token(db, nb["id"]) == nb["token"]  # as 0005 kept it
    db.dispose()
    with TestClient(create_app(settings, announce=lambda _t: None)) as client:  # migrates at start
        api = Api(client, api.creds, client.app.state.services)
        assert api.ok("GET", f"/notebooks/{nb['id']}")["token"] == nb["token"]
        raw = stored_token(client.app.state.services.notebooks.db, nb["id"])
        assert raw != nb["token"] and box.open(raw) == nb["token"]
