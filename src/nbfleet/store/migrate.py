"""Run the Alembic migrations programmatically (at ``nbfleet serve`` start and ``nbfleet db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ..auth.secrets import SecretBox
from .db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(db: Database, secrets: SecretBox | None = None) -> None:
    """Bring the schema to the newest revision; safe to call on every start.

    ``secrets``: the installation's key, for migrations that seal or open stored secrets (0006 seals
    notebook tokens); without it such a migration refuses to run on a database that has any."""
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["secrets"] = secrets
        command.upgrade(cfg, "head")


class SchemaOutOfDate(RuntimeError):
    """The database is not at the revision this nbfleet needs (and it was told not to migrate)."""


def ensure_current(db: Database) -> None:
    """Refuse to run on a schema other than the newest revision (``serve --no-migrate``)."""
    head = ScriptDirectory.from_config(alembic_config(db.url)).get_current_head()
    with db.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at revision {current or '(empty)'}, this nbfleet needs "
            f"{head}: run `nbfleet db upgrade` first (or start without --no-migrate)"
        )
