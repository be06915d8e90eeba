"""What an operator sees when something is missing or done twice: one line, not a traceback; and the
version and the built-in images' origin as the package and the spec say."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest
from typer.testing import CliRunner

import nbfleet
from nbfleet.cli.main import app
from nbfleet.clock import SystemClock
from nbfleet.domain.images import Origin
from nbfleet.services.images import ImageCatalog
from nbfleet.settings import Settings
from nbfleet.store import image_repo
from nbfleet.store.db import MissingDriver, check_driver

PG_URL = "postgresql+psycopg://nbfleet@127.0.0.1:1/nbfleet"


@pytest.fixture
def without_psycopg(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # importing it now raises ImportError


def test_missing_postgres_driver_is_one_line(without_psycopg):
    with pytest.raises(MissingDriver, match=r"pip install 'nbfleet\[postgres\]'"):
        check_driver(PG_URL)
    check_driver("sqlite:////tmp/x.db")  # SQLite needs nothing


def test_serve_without_psycopg_says_what_to_install(without_psycopg, tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLEET_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--database-url", PG_URL, "--runtime", "simulated"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "pip install 'nbfleet[postgres]'" in lines[0]
    assert "Traceback" not in result.output


def test_seeding_a_seeded_store_again_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLEET_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    first = runner.invoke(app, ["dev", "seed", "--instances", "30", "--projects", "2", "--json"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["dev", "seed", "--instances", "30", "--projects", "2", "--json"])
    assert again.exit_code == 1, again.output
    lines = [line for line in again.output.splitlines() if line.strip()]
    assert lines == ["error: this store was seeded before; seed a new data dir (or an empty database)"]
    assert again.exception is None or isinstance(again.exception, SystemExit)


def test_builtin_images_report_an_origin_the_spec_allows(tmp_path):
    from nbfleet.app import open_store

    settings = Settings(data_dir=tmp_path)
    db, _identity = open_store(settings)
    try:
        ImageCatalog(db, SystemClock(), settings.images_file).sync_builtins()
        with db.read() as conn:
            rows = [
                image_repo.to_json(row)
                for row in conn.execute(
                    image_repo.images.select().where(image_repo.images.c.type == "BUILD_IN")
                ).mappings()
            ]
        assert rows
        for image in rows:
            # The spec's origin is CUSTOMIZE | IMAGE_SAVE (default CUSTOMIZE); presets are told by their type.
            assert image["type"] == "BUILD_IN"
            assert image["origin"] == Origin.CUSTOMIZE
    finally:
        db.dispose()


def test_version_is_the_packages():
    assert nbfleet.__version__ == importlib.metadata.version("nbfleet")
