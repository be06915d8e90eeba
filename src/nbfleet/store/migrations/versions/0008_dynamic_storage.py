"""Dynamic storage mounts of instances (spec images-flavors-tags-storage.md §4)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

- ``dynamic_storages``: one row per mount of an instance under /data/, with its status (MOUNTING, MOUNTED,
  MOUNT_FAILED, UNMOUNTING, UNMOUNT_FAILED, UNMOUNTED) and the reconciler's claim on it. A mount path is
  unique per instance; rows go with their instance.
- ``ix_dynamic_storages_work``: the reconciler looks for mounts in flight every sweep; they are few.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

IN_FLIGHT = sa.text("status IN ('MOUNTING', 'UNMOUNTING')")


def upgrade() -> None:
    op.create_table(
        "dynamic_storages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("notebook_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("category", sa.String(8), nullable=False),
        sa.Column("mount_path", sa.String(300), nullable=False),
        sa.Column("uri", sa.String(256), nullable=False),
        sa.Column("efs_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("claim_owner", sa.String(64), nullable=True),
        sa.Column("claim_until", sa.BigInteger, nullable=True),
        sa.Column("create_at", sa.BigInteger, nullable=False),
        sa.Column("update_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dynamic_storages"),
        sa.ForeignKeyConstraint(
            ["notebook_id"], ["notebooks.id"], ondelete="CASCADE", name="fk_dynamic_storages_notebook_id_notebooks"
        ),
    )
    op.create_index("ix_dynamic_storages_notebook", "dynamic_storages", ["notebook_id", "create_at"])
    op.create_index("uq_dynamic_storages_path", "dynamic_storages", ["notebook_id", "mount_path"], unique=True)
    op.create_index(
        "ix_dynamic_storages_work", "dynamic_storages", ["status"], sqlite_where=IN_FLIGHT, postgresql_where=IN_FLIGHT
    )


def downgrade() -> None:
    op.drop_table("dynamic_storages")
