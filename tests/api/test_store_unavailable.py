"""A database that is away answers 503 ModelArts.6102, whatever the driver raised and wherever (checking a
connection out, running a statement, committing), and the reconciler loop survives it.

The real thing (PostgreSQL stopped under load, several replicas) is tests/pg/test_outage.py; here the
failures are injected into the in-process app, so the rendering is checked on every store."""

from __future__ import annotations

import contextlib
import copy
import time

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from nbfleet.store import notebook_repo

REFUSED = Exception("connection to server at 127.0.0.1 failed: Connection refused")
AWAY = {
    "operational": OperationalError("SELECT 1", {}, REFUSED),
    "interface": InterfaceError("SELECT 1", {}, Exception("the connection is closed")),
    "invalidated": DBAPIError("COMMIT", {}, Exception("server closed the connection"), connection_invalidated=True),
    "pool exhausted": PoolTimeout("QueuePool limit of size 10 overflow 10 reached"),
}


def _broken(db, monkeypatch, exc, *, on: str) -> None:
    """Make ``db.read``/``read_one``/``write`` fail with ``exc``: at checkout (before the body) or at commit
    (after)."""
    for name in ("read", "read_one", "write"):
        original = getattr(db, name)

        @contextlib.contextmanager
        def failing(original=original):
            if on == "checkout":
                raise exc
            with original() as conn:
                yield conn
                raise exc  # as if the COMMIT had failed: the transaction is rolled back

        monkeypatch.setattr(db, name, failing)


@pytest.mark.parametrize("kind", sorted(AWAY))
def test_store_away_at_checkout_is_503_6102(api, monkeypatch, kind):
    _broken(api.services.notebooks.db, monkeypatch, AWAY[kind], on="checkout")
    response = api.call("GET", "/notebooks")  # fails in the authentication, before the route
    assert response.status_code == 503, response.text
    assert response.json()["error_code"] == "ModelArts.6102"
    assert response.headers["retry-after"] and response.headers["x-request-id"]
    assert "Traceback" not in response.text and "psycopg" not in response.text


def test_store_away_at_commit_is_503_and_changes_nothing(api, monkeypatch):
    nb = api.create("commit-fails")
    notebooks = api.services.notebooks
    working_db = notebooks.db
    # Only the notebook service's transactions fail (authentication still reads): same engine, own wrapper.
    broken_db = copy.copy(working_db)
    _broken(broken_db, monkeypatch, AWAY["invalidated"], on="commit")
    monkeypatch.setattr(notebooks, "db", broken_db)
    response = api.call("POST", f"/notebooks/{nb['id']}/stop")
    assert response.status_code == 503 and response.json()["error_code"] == "ModelArts.6102"
    monkeypatch.setattr(notebooks, "db", working_db)
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"


def test_other_database_errors_are_still_500_with_a_request_id(api, monkeypatch):
    bug = IntegrityError("INSERT", {}, Exception("duplicate key value violates unique constraint"))
    _broken(api.services.notebooks.db, monkeypatch, bug, on="checkout")
    response = api.call("GET", "/notebooks")
    assert response.status_code == 500 and response.json()["error_code"] == "ModelArts.0010"
    assert "duplicate key" not in response.text


def test_reconciler_loop_survives_store_errors_and_resumes(api, monkeypatch):
    calls = {"n": 0}
    original = notebook_repo.claim_in_status

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 5:
            raise OperationalError("SELECT … FOR UPDATE SKIP LOCKED", {}, REFUSED)
        return original(*args, **kwargs)

    monkeypatch.setattr(notebook_repo, "claim_in_status", flaky)
    nb = api.create("after-outage", wait=False)
    deadline = time.monotonic() + 15
    while calls["n"] <= 5 and time.monotonic() < deadline:
        api.services.reconciler.wake()
        time.sleep(0.05)
    assert calls["n"] > 5
    assert api.wait_status(nb["id"], "RUNNING", timeout=15)["status"] == "RUNNING"
    assert not api.services.reconciler._task.done()
