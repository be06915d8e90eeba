"""Compare-and-set writes that lose to a concurrent one: tag writes, and rows deleted meanwhile.

A concurrent write is made to land exactly between a request's read and its compare-and-set, in the
request's own transaction: what another transaction commits in that window on PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from nbfleet.runtime.simulated import SimulatedRuntime
from nbfleet.store import notebook_repo
from nbfleet.store.tables import events, notebook_tags, notebooks


def _before_compare_and_set(monkeypatch, notebook_id: str, meanwhile) -> list:
    """Run ``meanwhile(conn, row)`` once, just before the first compare-and-set on ``notebook_id``."""
    original = notebook_repo.compare_and_set
    fired = []

    def racing(conn, target, version, values, bump=False, owner=None):
        if target == notebook_id and not fired:
            fired.append(True)
            meanwhile(conn, conn.execute(select(notebooks).where(notebooks.c.id == target)).mappings().one())
        return original(conn, target, version, values, bump, owner)

    monkeypatch.setattr(notebook_repo, "compare_and_set", racing)
    return fired


def _tag_rows(api, notebook_id: str) -> list[tuple[str, str]]:
    with api.services.notebooks.db.read() as conn:
        return sorted(
            conn.execute(
                select(notebook_tags.c.key, notebook_tags.c.value).where(notebook_tags.c.notebook_id == notebook_id)
            ).tuples()
        )


def _version(api, notebook_id: str) -> int:
    with api.services.notebooks.db.read() as conn:
        return conn.execute(select(notebooks.c.version).where(notebooks.c.id == notebook_id)).scalar_one()


def _status_change(conn, row) -> None:
    conn.execute(
        update(notebooks)
        .where(notebooks.c.id == row["id"])
        .values(status="STOPPING", desired="STOPPED", version=row["version"] + 1)
    )


def _deletion(conn, row) -> None:
    conn.execute(delete(notebook_tags).where(notebook_tags.c.notebook_id == row["id"]))
    conn.execute(delete(events).where(events.c.notebook_id == row["id"]))
    conn.execute(delete(notebooks).where(notebooks.c.id == row["id"]))


# --- tags ----------------------------------------------------------------------------------------------


def test_a_tag_write_bumps_the_version(api):
    nb = api.create("tag-version")
    before = _version(api, nb["id"])
    assert (
        api.call(
            "POST", f"/notebooks/{nb['id']}/tags/create", body={"tags": [{"key": "team", "value": "ml"}]}
        ).status_code
        == 204
    )
    assert _version(api, nb["id"]) == before + 1


@pytest.mark.parametrize(
    "method,suffix,body,expected",
    [
        ("POST", "create", {"tags": [{"key": "team", "value": "ml"}]}, [("env", "dev"), ("team", "ml")]),
        ("DELETE", "delete", {"tags": [{"key": "env"}]}, []),
    ],
)
def test_a_status_change_during_a_tag_write_cannot_split_filter_rows_from_shown_tags(
    api, monkeypatch, method, suffix, body, expected
):
    nb = api.create("tag-race")
    assert (
        api.call(
            "POST", f"/notebooks/{nb['id']}/tags/create", body={"tags": [{"key": "env", "value": "dev"}]}
        ).status_code
        == 204
    )
    fired = _before_compare_and_set(monkeypatch, nb["id"], _status_change)
    response = api.call(method, f"/notebooks/{nb['id']}/tags/{suffix}", body=body)
    assert fired and response.status_code == 204, response.text
    shown = sorted((t["key"], t["value"]) for t in api.ok("GET", f"/notebooks/{nb['id']}")["tags"])
    assert shown == expected
    assert _tag_rows(api, nb["id"]) == expected
    filtered = api.ok("GET", "/notebooks", {"tags": "team|ml"})["total"]
    assert filtered == (1 if ("team", "ml") in expected else 0)


def test_a_tag_write_during_a_bring_up_does_not_cost_a_second_start(tmp_path):
    from starlette.testclient import TestClient

    from nbfleet.app import create_app

    from ..conftest import make_settings
    from .test_runtime_failures import _api

    runtime = SimulatedRuntime(delay=0.1)
    settings = make_settings(tmp_path)
    app = create_app(settings, runtime=runtime, announce=lambda _t: None)
    with TestClient(app) as client:
        api = _api(app, settings, client)
        nb = api.create("tag-while-creating", wait=False)
        assert (
            api.call(
                "POST", f"/notebooks/{nb['id']}/tags/create", body={"tags": [{"key": "team", "value": "ml"}]}
            ).status_code
            == 204
        )
        running = api.wait_status(nb["id"], "RUNNING")
        assert running["tags"] == [{"key": "team", "value": "ml"}]
        assert runtime.started[nb["id"]] == 1


# --- rows deleted between the read and the compare-and-set ---------------------------------------------


@pytest.mark.parametrize(
    "method,suffix,query,body",
    [
        ("POST", "/stop", None, None),
        ("DELETE", "", None, None),
        ("PUT", "", None, {"description": "late"}),
        ("PATCH", "/lease", {"duration": 7_200_000}, None),
        ("POST", "/tags/create", None, {"tags": [{"key": "k", "value": "v"}]}),
        ("DELETE", "/tags/delete", None, {"tags": [{"key": "k"}]}),
    ],
)
def test_a_row_deleted_before_the_compare_and_set_is_6309(api, monkeypatch, method, suffix, query, body):
    nb = api.create("vanishing")
    fired = _before_compare_and_set(monkeypatch, nb["id"], _deletion)
    assert api.error(method, f"/notebooks/{nb['id']}{suffix}", query, body) == (400, "ModelArts.6309")
    assert fired


def test_a_row_deleted_before_a_start_is_6309(api, monkeypatch):
    nb = api.create("vanishing-start")
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    fired = _before_compare_and_set(monkeypatch, nb["id"], _deletion)
    assert api.error("POST", f"/notebooks/{nb['id']}/start") == (400, "ModelArts.6309")
    assert fired
