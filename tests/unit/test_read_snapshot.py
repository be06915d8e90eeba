"""``Database.read()`` is one snapshot on both stores: what commits after its first statement stays unseen
(a list's total and its page must agree: a deep page is found from the total), and it cannot write."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from nbfleet.app import open_store
from nbfleet.store.tables import meta

from ..conftest import make_settings


@pytest.fixture
def db(tmp_path):
    database, _identity = open_store(make_settings(tmp_path))
    yield database
    database.dispose()


def count(conn) -> int:
    return conn.execute(select(func.count()).select_from(meta)).scalar_one()


def test_a_read_sees_one_snapshot(db):
    with db.read() as conn:
        before = count(conn)
        with db.write() as other:
            other.execute(insert(meta).values(key="snapshot-probe", value="x"))
        assert count(conn) == before
    with db.read() as conn:
        assert count(conn) == before + 1


def test_a_read_cannot_write(db):
    if db.is_sqlite:
        pytest.skip("SQLite has no read-only transactions; the write lock serialises writers instead")
    with pytest.raises(DBAPIError, match="read-only"), db.read() as conn:
        conn.execute(insert(meta).values(key="read-only-probe", value="x"))
