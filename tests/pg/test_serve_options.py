"""Starting replicas on PostgreSQL: explicit migrations (--no-migrate), replicas starting at the same moment
on an empty database, and a replica whose secret key differs from the others'."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.fernet import Fernet

from ..procs import ServeProcess, SignedClient


def test_no_migrate_refuses_an_old_schema_until_db_upgrade(pg_db, tmp_path):
    env = {"NBFLEET_DATABASE_URL": pg_db.url}
    with pytest.raises(RuntimeError) as refused:
        ServeProcess(tmp_path / "data", env=env, args=["--no-migrate"]).start()
    assert "nbfleet db upgrade" in str(refused.value)
    assert pg_db.scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'") == 0  # nothing created

    # NBFLEET_MIGRATE=false does not stop the explicit upgrade command.
    upgrade = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbfleet.cli.main",
            "db",
            "upgrade",
            "--database-url",
            pg_db.url,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "NBFLEET_MIGRATE": "false"},
    )
    assert upgrade.returncode == 0, upgrade.stderr
    server = ServeProcess(tmp_path / "data", env={**env, "NBFLEET_MIGRATE": "false"}).start()
    try:
        client = SignedClient(server.endpoint, server.admin_creds())
        assert client.ok("GET", "/notebooks")["total"] == 0
        client.close()
    finally:
        server.terminate()


def test_replicas_starting_together_on_an_empty_database_bootstrap_once(pg_db, tmp_path):
    """One data dir, no NBFLEET_SECRET_KEY: the replicas also race for creating secret.key."""
    replicas = [ServeProcess(tmp_path / "data", env={"NBFLEET_DATABASE_URL": pg_db.url}) for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda r: r.start(), replicas))
        assert pg_db.scalar("SELECT COUNT(*) FROM users") == 1
        assert pg_db.scalar("SELECT COUNT(*) FROM projects") == 1
        assert pg_db.scalar("SELECT COUNT(*) FROM meta WHERE key = 'domain_id'") == 1
        for replica in replicas:  # the one admin key works on every replica
            client = SignedClient(replica.endpoint, replicas[0].admin_creds())
            assert client.ok("GET", "/notebooks")["total"] == 0
            client.close()
    finally:
        for replica in replicas:
            replica.terminate()


def test_a_replica_with_another_secret_key_refuses_to_start(pg_db, tmp_path):
    key = Fernet.generate_key().decode()
    first = ServeProcess(tmp_path / "a", env={"NBFLEET_DATABASE_URL": pg_db.url, "NBFLEET_SECRET_KEY": key}).start()
    try:
        other = ServeProcess(
            tmp_path / "b",
            env={"NBFLEET_DATABASE_URL": pg_db.url, "NBFLEET_SECRET_KEY": Fernet.generate_key().decode()},
        )
        with pytest.raises(RuntimeError) as refused:
            other.start()
        assert "give every replica the same key" in str(refused.value)
    finally:
        first.terminate()


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "NBFLEET_DATABASE_URL"}
