"""Replica-safe counts: the count trigger locks its rows in one global order (PostgreSQL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Every status change updates four ``notebook_counts`` rows (the old status's and the new one's, each for
the user and for '*'), holding their row locks until commit. The trigger of 0002 always took the old
status's rows first, so concurrent transactions moving instances around a cycle of statuses
(RUNNING->STOPPING, STOPPING->STOPPED, STOPPED->STARTING, STARTING->RUNNING, or STARTING<->START_FAILED)
could each hold the rows the next one waits for: PostgreSQL breaks such a deadlock by failing one of
them, which several API replicas and reconcilers make likely. Taking the rows in ascending
(scope, status) order, the user's row before '*', gives every transaction the same lock order.

SQLite runs one writer at a time and needs nothing.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _count_sql(sign: str, row: str, user: str) -> str:
    return (
        f"INSERT INTO notebook_counts (project_id, workspace_id, feature, user_id, status, n) "
        f"VALUES ({row}.project_id, {row}.workspace_id, {row}.feature, {user}, {row}.status, {sign}1) "
        f"ON CONFLICT (project_id, workspace_id, feature, user_id, status) "
        f"DO UPDATE SET n = notebook_counts.n {sign} 1"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    old = f"{_count_sql('-', 'OLD', 'OLD.user_id')}; {_count_sql('-', 'OLD', chr(39) + '*' + chr(39))};"
    new = f"{_count_sql('+', 'NEW', 'NEW.user_id')}; {_count_sql('+', 'NEW', chr(39) + '*' + chr(39))};"
    op.execute(f"""
        CREATE OR REPLACE FUNCTION notebook_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {new}
            ELSIF TG_OP = 'DELETE' THEN
                {old}
            ELSIF (NEW.project_id, NEW.workspace_id, NEW.feature, NEW.status)
                  < (OLD.project_id, OLD.workspace_id, OLD.feature, OLD.status) THEN
                {new}
                {old}
            ELSE
                {old}
                {new}
            END IF;
            RETURN NULL;
        END $$""")


def downgrade() -> None:
    raise NotImplementedError("nbfleet migrations only go forward; restore a backup to go back")
