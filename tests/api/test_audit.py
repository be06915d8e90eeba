"""The audit trail: a row per state-changing call (failed ones too), read by admins only, by the CLI, and
pruned after the retention."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from nbfleet.app import create_app
from nbfleet.cli.main import app as cli_app
from nbfleet.clock import ManualClock

from ..conftest import TEST_DATABASE_URL, make_settings
from ..support import Api, Creds

DAY_MS = 86_400_000


@pytest.fixture
def clocked(tmp_path):
    clock = ManualClock()
    settings = make_settings(tmp_path, audit_retention_days=30)
    app = create_app(settings, clock=clock, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)
        api.clock, api.settings = clock, settings
        yield api


def audit(api: Api, creds: Creds | None = None, **query) -> list[dict]:
    return api.ok("GET", "/nbfleet/audit", query=query, creds=creds)["events"]


def test_create_stop_delete_and_a_failed_call_are_audited(api):
    alice = api.new_user("alice")
    nb = api.create("audited", creds=alice)
    api.ok("POST", f"/notebooks/{nb['id']}/stop", creds=alice)
    api.wait_status(nb["id"], "STOPPED", creds=alice)
    api.ok("DELETE", f"/notebooks/{nb['id']}", creds=alice)
    refused = api.error("POST", f"/notebooks/{nb['id']}/stop", creds=alice)  # DELETING (6357) or gone (6309)
    assert refused[0] == 400
    api.ok("GET", "/notebooks", creds=alice)  # reads are not audited

    rows = audit(api, user="alice")
    assert [r["action"] for r in rows] == ["stop_notebook", "delete_notebook", "stop_notebook", "create_notebook"]
    assert {r["instance_id"] for r in rows} == {nb["id"]}
    assert all(r["user_id"] == alice.user_id and r["user_name"] == "alice" for r in rows)
    assert all(r["project_id"] == alice.project_id and r["request_id"] for r in rows)
    failed, deleted, stopped, created = rows
    assert (failed["status"], failed["error_code"]) == refused
    assert (created["method"], created["route"], created["status"]) == ("POST", "/v1/{project_id}/notebooks", 200)
    assert stopped["route"] == "/v1/{project_id}/notebooks/{notebook_id}/stop" and stopped["error_code"] is None
    assert deleted["method"] == "DELETE"
    assert [r["action"] for r in audit(api, instance=nb["id"], limit=2)] == ["stop_notebook", "delete_notebook"]


def test_unauthenticated_calls_are_audited_without_a_user(api):
    bad = Creds("A" * 20, "wrong", api.creds.project_id)
    assert api.error("POST", "/notebooks", body={"name": "x"}, creds=bad)[0] == 401
    row = audit(api)[0]
    assert (row["action"], row["user_id"], row["status"]) == ("create_notebook", None, 401)
    assert row["error_code"] and row["project_id"] == api.creds.project_id


def test_only_admins_read_the_audit_trail(api):
    bob = api.new_user("bob")
    status, code = api.error("GET", "/nbfleet/audit", creds=bob)
    assert (status, code) == (403, "ModelArts.0108")
    assert api.error("GET", "/nbfleet/audit", query={"limit": 0})[1] == "ModelArts.0104"
    assert api.error("GET", "/nbfleet/audit", query={"since": "yesterday"})[1] == "ModelArts.0104"


def test_no_body_or_secret_is_stored(api):
    api.create("secretive", wait=False, description="hunter2-in-the-body")
    with api.services.identity.db.read() as conn:
        stored = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM audit_events")]
    text = repr(stored)
    assert "hunter2" not in text and api.creds.sk not in text and api.creds.ak not in text


def test_old_rows_are_pruned_after_the_retention(clocked):
    nb = clocked.create("old")
    assert len(audit(clocked)) == 1
    clocked.clock.advance(31 * DAY_MS)
    clocked.ok("POST", f"/notebooks/{nb['id']}/stop")  # the next write prunes (an hour after the last pruning)
    rows = audit(clocked)
    assert [r["action"] for r in rows] == ["stop_notebook"]
    clocked.clock.advance(10 * DAY_MS)
    clocked.ok("DELETE", f"/notebooks/{nb['id']}")
    assert [r["action"] for r in audit(clocked)] == ["delete_notebook", "stop_notebook"]


def test_admin_audit_command(api, settings):
    alice = api.new_user("alice")
    nb = api.create("cli", creds=alice, wait=False)
    api.error("POST", "/notebooks/00000000-0000-0000-0000-000000000000/stop", creds=alice)
    args = ["admin", "audit", "--data-dir", str(settings.data_dir)]
    if TEST_DATABASE_URL:
        args += ["--database-url", TEST_DATABASE_URL]
    runner = CliRunner()
    as_json = runner.invoke(cli_app, [*args, "--json", "--user", "alice"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert [r["action"] for r in rows] == ["stop_notebook", "create_notebook"]
    assert rows[1]["instance_id"] == nb["id"] and rows[0]["status"] == 400
    one = json.loads(runner.invoke(cli_app, [*args, "--json", "--instance", nb["id"]]).output)
    assert len(one) == 1 and one[0]["action"] == "create_notebook"
    assert json.loads(runner.invoke(cli_app, [*args, "--json", "--since", "2999-01-01"]).output) == []
    text = runner.invoke(cli_app, [*args, "--limit", "1"])
    assert text.exit_code == 0 and len(text.output.splitlines()) == 1 and "alice" in text.output
    bad = runner.invoke(cli_app, [*args, "--since", "soon"])
    assert bad.exit_code == 1


def test_console_sign_in_actions_and_sign_out_are_audited(api):
    import re

    from .test_iam import PASSWORD

    api.services.identity.set_password(api.creds.user_id, PASSWORD)
    nb = api.create("console-audited")
    client = api.client
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    wrong = client.post(
        "/console/login", data={"csrf_token": csrf, "user": "admin", "password": "nope"}, follow_redirects=False
    )
    assert wrong.status_code == 401
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    signed_in = client.post(
        "/console/login", data={"csrf_token": csrf, "user": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert signed_in.status_code in (302, 303)
    detail = client.get(f"/console/notebooks/{nb['id']}")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', detail.text).group(1)
    client.post(f"/console/notebooks/{nb['id']}/stop", data={"csrf_token": csrf}, follow_redirects=False)
    client.post("/console/logout", data={"csrf_token": csrf}, follow_redirects=False)
    from nbfleet.observability.audit import wire
    from nbfleet.store import audit_repo

    with api.services.identity.db.read() as conn:  # every project's rows (a failed sign-in has none)
        rows = [wire(r) for r in audit_repo.page(conn) if r["route"].startswith("/console/")]
    assert [r["action"] for r in rows] == ["console.logout", "console.act.stop", "console.login", "console.login"]
    by_action = {r["action"]: r for r in rows}
    assert by_action["console.act.stop"]["instance_id"] == nb["id"]
    assert by_action["console.act.stop"]["user_id"] == api.creds.user_id
    assert by_action["console.logout"]["user_name"] == "admin"
    failed = [r for r in rows if r["action"] == "console.login" and r["status"] == 401]
    assert failed and failed[0]["user_id"] is None and failed[0]["project_id"] is None
    assert by_action["console.act.stop"] in audit(api)  # the project's admins see the project's rows
    assert PASSWORD not in repr(rows)
