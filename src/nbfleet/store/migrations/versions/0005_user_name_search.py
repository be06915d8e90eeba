"""A trigram index on user names

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

The list's ``username`` filter matches the owner's name, which an instance copies from its user at
creation (users are never renamed). Users are a hundred times fewer than instances, so the filter
first finds the matching users in their own small trigram index and then lists their instances
through the owner index and the counter rows, instead of intersecting large trigram lists over every
instance (see store/notebook_list.py).
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Its own copy of the names, keyed by user id: the users table has no stable integer key to
        # point at (an implicit rowid may change on VACUUM).
        op.execute("CREATE VIRTUAL TABLE users_fts USING fts5(user_id UNINDEXED, name, tokenize='trigram')")
        op.execute("INSERT INTO users_fts (user_id, name) SELECT id, name FROM users")
        op.execute(
            "CREATE TRIGGER users_fts_insert AFTER INSERT ON users BEGIN "
            "INSERT INTO users_fts (user_id, name) VALUES (NEW.id, NEW.name); END"
        )
        op.execute(
            "CREATE TRIGGER users_fts_delete AFTER DELETE ON users BEGIN "
            "DELETE FROM users_fts WHERE user_id = OLD.id; END"
        )
        op.execute(
            "CREATE TRIGGER users_fts_update AFTER UPDATE OF id, name ON users BEGIN "
            "DELETE FROM users_fts WHERE user_id = OLD.id; "
            "INSERT INTO users_fts (user_id, name) VALUES (NEW.id, NEW.name); END"
        )
    else:
        op.execute(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN "
            "CREATE INDEX ix_users_name_trgm ON users USING gin (name gin_trgm_ops); END IF; END $$"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("users_fts_insert", "users_fts_delete", "users_fts_update"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE users_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_users_name_trgm")
