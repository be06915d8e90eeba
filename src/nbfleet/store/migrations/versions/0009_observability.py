"""Request ids on intents, and the audit trail

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

- ``notebooks.request_id``: the id of the API call that wrote the instance's current intent (create, start,
  stop, delete, ...), so that the reconciler's log lines for the work it does carry it. Nullable: rows
  written before, and work nobody asked for (auto-stops), have none.
- ``audit_events``: one row per state-changing API or console call (who, what, which instance, the
  answer's status and error code), pruned after ``NBFLEET_AUDIT_RETENTION_DAYS``. Indexed for the three
  ways it is read: by time, by user, by instance.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch (table copy) on SQLite would lose the count triggers of 0002.
    op.add_column("notebooks", sa.Column("request_id", sa.String(32), nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), sa.Identity(), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("user_name", sa.String(256), nullable=True),
        sa.Column("project_id", sa.String(32), nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_code", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_user_id_at", "audit_events", ["user_id", "at"])
    op.create_index("ix_audit_events_target_at", "audit_events", ["target", "at"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_column("notebooks", "request_id")
