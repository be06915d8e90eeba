"""The reconciler's queries for instances in flight use their partial index on SQLite.

SQLite uses a partial index only when the query's WHERE visibly implies the index's WHERE; a status
list sent as bound parameters does not, and the sweep then scanned the whole table under the write
lock on every wake-up (20 ms at 20,000 rows, every create waiting behind it)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from nbfleet.app import open_store
from nbfleet.domain.model import TRANSITIONAL, Status
from nbfleet.store import notebook_repo

from ..conftest import make_settings


@pytest.fixture
def db(tmp_path):
    database, _identity = open_store(make_settings(tmp_path))
    if not database.is_sqlite:
        database.dispose()
        pytest.skip("the partial-index rule checked here is SQLite's")
    yield database
    database.dispose()


def plans_of(db, work) -> list[str]:
    """EXPLAIN QUERY PLAN of every SELECT that ``work`` runs on notebooks, with its real parameters."""
    seen = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT") and "notebooks" in statement:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.write() as conn:
            work(conn)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    plans = []
    with db.engine.connect() as conn:
        for statement, parameters in seen:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            plans.append(" / ".join(r[-1] for r in rows))
    return plans


@pytest.mark.parametrize(
    "work",
    [
        lambda conn: notebook_repo.claim_in_status(conn, [s.value for s in TRANSITIONAL], "replica", 0, 1),
        lambda conn: notebook_repo.count_in_status(conn, (Status.INIT, Status.CREATING, Status.STARTING)),
        lambda conn: notebook_repo.get_many(conn, [Status.STOPPING.value]),
    ],
    ids=["claim", "count", "get_many"],
)
def test_in_flight_queries_search_the_partial_index(db, work):
    plans = plans_of(db, work)
    assert plans
    assert all("ix_notebooks_in_flight" in plan for plan in plans[:1]), plans
    assert not any("SCAN notebooks" in plan for plan in plans), plans
