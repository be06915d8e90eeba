"""List at scale: integer row key, one index per sort order, trigger-kept counts, trigram search

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

- notebooks gets ``seq`` as its primary key (SQLite: the rowid alias; PostgreSQL: an identity column)
  and keeps ``id`` unique, so the full-text index can point at a key that never changes;
- an index per supported sort order, each led by the list scope;
- ``notebook_counts``: exact counts per (project, workspace, feature, user, status), maintained by
  triggers in the same transaction as every insert, delete and status change; user '*' = all users;
- fuzzy search: an FTS5 trigram index over name, description and user name on SQLite; pg_trgm GIN
  indexes on PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCOPE = "project_id, workspace_id, feature"
NEW_INDEXES = {
    "ix_notebooks_status_created": ["project_id", "workspace_id", "feature", "status", "create_at", "id"],
    "ix_notebooks_owner_status_created": [
        "project_id",
        "user_id",
        "workspace_id",
        "feature",
        "status",
        "create_at",
        "id",
    ],
    "ix_notebooks_scope_name": ["project_id", "workspace_id", "feature", "name", "id"],
    "ix_notebooks_scope_status_name": ["project_id", "workspace_id", "feature", "status", "name", "id"],
    "ix_notebooks_scope_updated": ["project_id", "workspace_id", "feature", "update_at", "id"],
    "ix_notebooks_lease": ["status", "lease_enable", "lease_type"],
}
OLD_INDEXES = {
    "ix_notebooks_owner_created": ["project_id", "user_id", "workspace_id", "feature", "create_at", "id"],
    "ix_notebooks_scope_created": ["project_id", "workspace_id", "feature", "create_at", "id"],
    "ix_notebooks_status": ["status"],
    "ix_notebooks_user_feature": ["user_id", "feature"],
}
COLUMNS = (
    "id, project_id, user_id, user_name, name, description, status, desired, version, feature, "
    "workspace_id, flavor, image_id, swr_path, pool_id, pool_name, ip, volume_category, token, fail_reason, "
    "action_progress, lease_type, lease_duration, lease_enable, lease_update_at, last_activity_at, "
    "create_at, update_at, spec, tags, placement, claim_owner, claim_until"
)


def _count_sql(sign: str, row: str, user: str) -> str:
    return (
        f"INSERT INTO notebook_counts (project_id, workspace_id, feature, user_id, status, n) "
        f"VALUES ({row}.project_id, {row}.workspace_id, {row}.feature, {user}, {row}.status, {sign}1) "
        f"ON CONFLICT (project_id, workspace_id, feature, user_id, status) "
        f"DO UPDATE SET n = notebook_counts.n {sign} 1"
    )


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.create_table(
        "notebook_counts",
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("feature", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "project_id", "workspace_id", "feature", "user_id", "status", name=op.f("pk_notebook_counts")
        ),
    )
    if sqlite:
        _rebuild_sqlite_notebooks()
    else:
        _rekey_postgres_notebooks()
    for name, columns in NEW_INDEXES.items():
        op.create_index(name, "notebooks", columns)
    op.execute(
        "INSERT INTO notebook_counts (project_id, workspace_id, feature, user_id, status, n) "
        "SELECT project_id, workspace_id, feature, user_id, status, COUNT(*) FROM notebooks "
        "GROUP BY project_id, workspace_id, feature, user_id, status"
    )
    op.execute(
        "INSERT INTO notebook_counts (project_id, workspace_id, feature, user_id, status, n) "
        "SELECT project_id, workspace_id, feature, '*', status, COUNT(*) FROM notebooks "
        "GROUP BY project_id, workspace_id, feature, status"
    )
    if sqlite:
        _sqlite_triggers()
    else:
        _postgres_triggers()


def _rebuild_sqlite_notebooks() -> None:
    # SQLite cannot change a primary key in place: copy into a new table. Tags are kept aside because
    # dropping the old table would cascade into them.
    op.execute("CREATE TEMP TABLE tags_kept AS SELECT * FROM notebook_tags")
    op.execute("DELETE FROM notebook_tags")
    op.execute("""
        CREATE TABLE notebooks_new (
            seq INTEGER NOT NULL, id VARCHAR(36) NOT NULL, project_id VARCHAR(32) NOT NULL,
            user_id VARCHAR(32) NOT NULL, user_name VARCHAR(256) NOT NULL, name VARCHAR(128) NOT NULL,
            description VARCHAR(512) NOT NULL, status VARCHAR(16) NOT NULL, desired VARCHAR(16) NOT NULL,
            version INTEGER NOT NULL, feature VARCHAR(16) NOT NULL, workspace_id VARCHAR(32) NOT NULL,
            flavor VARCHAR(256) NOT NULL, image_id VARCHAR(36) NOT NULL, swr_path VARCHAR(2048) NOT NULL,
            pool_id VARCHAR(64), pool_name VARCHAR(64), ip VARCHAR(45), volume_category VARCHAR(8) NOT NULL,
            token VARCHAR(64) NOT NULL, fail_reason TEXT, action_progress TEXT, lease_type VARCHAR(8) NOT NULL,
            lease_duration BIGINT, lease_enable BOOLEAN NOT NULL, lease_update_at BIGINT NOT NULL,
            last_activity_at BIGINT, create_at BIGINT NOT NULL, update_at BIGINT NOT NULL, spec TEXT NOT NULL,
            tags TEXT NOT NULL, placement TEXT, claim_owner VARCHAR(64), claim_until BIGINT,
            CONSTRAINT pk_notebooks PRIMARY KEY (seq),
            CONSTRAINT uq_notebooks_id UNIQUE (id)
        )""")
    op.execute(f"INSERT INTO notebooks_new ({COLUMNS}) SELECT {COLUMNS} FROM notebooks ORDER BY create_at, id")
    op.execute("DROP TABLE notebooks")
    op.execute("ALTER TABLE notebooks_new RENAME TO notebooks")
    for name, columns in OLD_INDEXES.items():
        op.create_index(name, "notebooks", columns)
    op.execute("INSERT INTO notebook_tags SELECT * FROM tags_kept")
    op.execute("DROP TABLE tags_kept")


def _rekey_postgres_notebooks() -> None:
    op.execute("ALTER TABLE notebooks ADD COLUMN seq BIGINT GENERATED BY DEFAULT AS IDENTITY")
    op.execute("ALTER TABLE notebooks ADD CONSTRAINT uq_notebooks_id UNIQUE (id)")
    op.execute("ALTER TABLE notebook_tags DROP CONSTRAINT fk_notebook_tags_notebook_id_notebooks")
    op.execute("ALTER TABLE notebooks DROP CONSTRAINT pk_notebooks")
    op.execute("ALTER TABLE notebooks ADD CONSTRAINT pk_notebooks PRIMARY KEY (seq)")
    op.execute(
        "ALTER TABLE notebook_tags ADD CONSTRAINT fk_notebook_tags_notebook_id_notebooks "
        "FOREIGN KEY (notebook_id) REFERENCES notebooks (id) ON DELETE CASCADE"
    )


def _sqlite_triggers() -> None:
    changed = (
        "OLD.status IS NOT NEW.status OR OLD.user_id IS NOT NEW.user_id OR "
        "OLD.workspace_id IS NOT NEW.workspace_id OR OLD.feature IS NOT NEW.feature OR "
        "OLD.project_id IS NOT NEW.project_id"
    )
    op.execute(
        f"CREATE TRIGGER notebook_counts_insert AFTER INSERT ON notebooks BEGIN "
        f"{_count_sql('+', 'NEW', 'NEW.user_id')}; {_count_sql('+', 'NEW', chr(39) + '*' + chr(39))}; END"
    )
    op.execute(
        f"CREATE TRIGGER notebook_counts_delete AFTER DELETE ON notebooks BEGIN "
        f"{_count_sql('-', 'OLD', 'OLD.user_id')}; {_count_sql('-', 'OLD', chr(39) + '*' + chr(39))}; END"
    )
    op.execute(
        f"CREATE TRIGGER notebook_counts_update AFTER UPDATE ON notebooks WHEN {changed} BEGIN "
        f"{_count_sql('-', 'OLD', 'OLD.user_id')}; {_count_sql('-', 'OLD', chr(39) + '*' + chr(39))}; "
        f"{_count_sql('+', 'NEW', 'NEW.user_id')}; {_count_sql('+', 'NEW', chr(39) + '*' + chr(39))}; END"
    )
    op.execute(
        "CREATE VIRTUAL TABLE notebooks_fts USING fts5(name, description, user_name, content='notebooks', "
        "content_rowid='seq', tokenize='trigram')"
    )
    op.execute("INSERT INTO notebooks_fts (notebooks_fts) VALUES ('rebuild')")
    op.execute(
        "CREATE TRIGGER notebooks_fts_insert AFTER INSERT ON notebooks BEGIN "
        "INSERT INTO notebooks_fts (rowid, name, description, user_name) "
        "VALUES (NEW.seq, NEW.name, NEW.description, NEW.user_name); END"
    )
    op.execute(
        "CREATE TRIGGER notebooks_fts_delete AFTER DELETE ON notebooks BEGIN "
        "INSERT INTO notebooks_fts (notebooks_fts, rowid, name, description, user_name) "
        "VALUES ('delete', OLD.seq, OLD.name, OLD.description, OLD.user_name); END"
    )
    op.execute(
        "CREATE TRIGGER notebooks_fts_update AFTER UPDATE OF name, description, user_name ON notebooks BEGIN "
        "INSERT INTO notebooks_fts (notebooks_fts, rowid, name, description, user_name) "
        "VALUES ('delete', OLD.seq, OLD.name, OLD.description, OLD.user_name); "
        "INSERT INTO notebooks_fts (rowid, name, description, user_name) "
        "VALUES (NEW.seq, NEW.name, NEW.description, NEW.user_name); END"
    )


def _postgres_triggers() -> None:
    op.execute(f"""
        CREATE FUNCTION notebook_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                {_count_sql("-", "OLD", "OLD.user_id")};
                {_count_sql("-", "OLD", "'*'")};
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                {_count_sql("+", "NEW", "NEW.user_id")};
                {_count_sql("+", "NEW", "'*'")};
            END IF;
            RETURN NULL;
        END $$""")
    op.execute(
        "CREATE TRIGGER notebook_counts_insert_delete AFTER INSERT OR DELETE ON notebooks "
        "FOR EACH ROW EXECUTE FUNCTION notebook_counts_apply()"
    )
    op.execute(
        "CREATE TRIGGER notebook_counts_update AFTER UPDATE OF status, user_id, workspace_id, feature, "
        "project_id ON notebooks FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR "
        "OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.workspace_id IS DISTINCT FROM NEW.workspace_id OR "
        "OLD.feature IS DISTINCT FROM NEW.feature OR OLD.project_id IS DISTINCT FROM NEW.project_id) "
        "EXECUTE FUNCTION notebook_counts_apply()"
    )
    # Trigram indexes serve the case-insensitive substring filters; without the extension (no rights to
    # create it) the filters still work, by scanning.
    op.execute(
        "DO $$ BEGIN CREATE EXTENSION IF NOT EXISTS pg_trgm; EXCEPTION WHEN OTHERS THEN "
        "RAISE NOTICE 'pg_trgm unavailable: %', SQLERRM; END $$"
    )
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN "
        "CREATE INDEX ix_notebooks_name_trgm ON notebooks USING gin (name gin_trgm_ops); "
        "CREATE INDEX ix_notebooks_description_trgm ON notebooks USING gin (description gin_trgm_ops); "
        "CREATE INDEX ix_notebooks_user_name_trgm ON notebooks USING gin (user_name gin_trgm_ops); "
        "END IF; END $$"
    )


def downgrade() -> None:
    raise NotImplementedError("nbfleet migrations only go forward; restore a backup to go back")
