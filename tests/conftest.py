from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from sqlalchemy import create_engine
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.settings import LeaseSettings, Settings
from nbfleet.store.tables import metadata

from .procs import test_databases
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
    values = dict(
        data_dir=tmp_path / "data",
        runtime="simulated",
        simulated_delay=0.0,
        reconcile_interval=0.05,
        observe_interval=0.1,
        port=8080,
    )
    if TEST_DATABASE_URL:
        reset_database(TEST_DATABASE_URL)
        values["database_url"] = TEST_DATABASE_URL
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session", autouse=True)
def no_mounts_left(tmp_path_factory):
    """Instances a test leaves running (a server killed, its containers removed by hand) keep their /data
    mount point on the host (as root): unmount whatever is left below this session's temporary directory,
    so that nothing stays mounted on the machine and the directories can be removed."""
    yield
    from .procs import unmount_below

    unmount_below(tmp_path_factory.getbasetemp())


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def api(settings):
    """An in-process nbfleet (simulated runtime, zero delays) and a signed client for its admin."""
    app = create_app(settings, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)


# --- the databases of server processes (tests/procs.py, NBFLEET_TEST_DATABASE_URL) --------------------------


class _TestDatabaseOwners:
    """Drops each database of ``test_databases`` once what created it is torn down: the fixture whose set-up
    created it (after the fixture stopped its servers), else the test (after its teardown).

    A plugin rather than hooks of this conftest: a conftest's hooks are not called for session-scoped
    fixtures, whose node (the session) lies above this directory.
    """

    def __init__(self):
        self.by_fixture: dict[object, set[str]] = {}

    def owned(self) -> set[str]:
        return set().union(*self.by_fixture.values())

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        before = test_databases.names()
        try:
            return (yield)
        finally:
            made = test_databases.names() - before - self.owned()
            if made:
                self.by_fixture.setdefault(fixturedef, set()).update(made)

    def pytest_fixture_post_finalizer(self, fixturedef, request):
        test_databases.drop(self.by_fixture.pop(fixturedef, ()))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        try:
            return (yield)
        finally:
            test_databases.drop(test_databases.names() - self.owned())

    def pytest_sessionfinish(self, session, exitstatus):
        test_databases.drop(test_databases.names())


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # As root, sandboxed notebooks run as uids of their own and must pass through the test's temporary
    # directories (tests/images.py make_reachable). pytest's shared /tmp/pytest-of-root is reset to 0700 by
    # every session that starts, so each session gets a base of its own that only it touches.
    if config.option.basetemp is None and os.geteuid() == 0:
        config.option.basetemp = tempfile.mkdtemp(prefix="nbfleet-pytest-")
        config.nbfleet_own_basetemp = config.option.basetemp
    if test_databases.base is not None:
        config.pluginmanager.register(_TestDatabaseOwners(), "nbfleet-test-databases")


def pytest_unconfigure(config):
    own = getattr(config, "nbfleet_own_basetemp", None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


__all__ = ["make_settings", "LeaseSettings"]
