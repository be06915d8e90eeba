"""Statements run with isolation_level=AUTOCOMMIT on SQLite are kept (``nbfleet dev seed`` runs ANALYZE so)."""

from __future__ import annotations

import sqlite3

from nbfleet.app import open_store
from nbfleet.settings import Settings


def test_autocommit_statements_are_kept(tmp_path):
    db, _identity = open_store(Settings(data_dir=tmp_path, database_url=None))
    try:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("INSERT INTO meta (key, value) VALUES ('autocommit-probe', 'kept')")
            assert not conn.connection.driver_connection.in_transaction
    finally:
        db.dispose()
    with sqlite3.connect(tmp_path / "nbfleet.db") as raw:
        assert raw.execute("SELECT value FROM meta WHERE key = 'autocommit-probe'").fetchone() == ("kept",)
        assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() == (1,)
