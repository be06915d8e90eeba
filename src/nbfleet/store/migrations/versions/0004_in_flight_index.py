"""A partial index on the instances in flight

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

The reconciler asks for INIT/CREATING/STARTING/STOPPING/DELETING rows many times a second. They are
few, but per-status averages in the planner's statistics make a plain status index look useless, and
SQLite then scans the table. A partial index holds only those rows.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHERE = sa.text("status IN ('INIT', 'CREATING', 'STARTING', 'STOPPING', 'DELETING')")


def upgrade() -> None:
    op.create_index("ix_notebooks_in_flight", "notebooks", ["status"], sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index("ix_notebooks_in_flight", table_name="notebooks")
