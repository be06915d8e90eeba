"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 18:24:59.962031
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notebook_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_notebook", ["notebook_id", "id"], unique=False)

    op.create_table(
        "images",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("swr_path", sa.String(length=2048), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("service_type", sa.String(length=16), nullable=False),
        sa.Column("show_name", sa.String(length=128), nullable=True),
        sa.Column("show_tag", sa.String(length=64), nullable=True),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.Column("update_at", sa.BigInteger(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index("ix_images_scope", ["project_id", "owner_id", "create_at"], unique=False)

    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meta")),
    )
    op.create_table(
        "notebooks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("desired", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("feature", sa.String(length=16), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("flavor", sa.String(length=256), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("swr_path", sa.String(length=2048), nullable=False),
        sa.Column("pool_id", sa.String(length=64), nullable=True),
        sa.Column("pool_name", sa.String(length=64), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("volume_category", sa.String(length=8), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("fail_reason", sa.Text(), nullable=True),
        sa.Column("action_progress", sa.Text(), nullable=True),
        sa.Column("lease_type", sa.String(length=8), nullable=False),
        sa.Column("lease_duration", sa.BigInteger(), nullable=True),
        sa.Column("lease_enable", sa.Boolean(), nullable=False),
        sa.Column("lease_update_at", sa.BigInteger(), nullable=False),
        sa.Column("last_activity_at", sa.BigInteger(), nullable=True),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.Column("update_at", sa.BigInteger(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("placement", sa.Text(), nullable=True),
        sa.Column("claim_owner", sa.String(length=64), nullable=True),
        sa.Column("claim_until", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notebooks")),
    )
    with op.batch_alter_table("notebooks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notebooks_owner_created",
            ["project_id", "user_id", "workspace_id", "feature", "create_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_notebooks_scope_created", ["project_id", "workspace_id", "feature", "create_at", "id"], unique=False
        )
        batch_op.create_index("ix_notebooks_status", ["status"], unique=False)
        batch_op.create_index("ix_notebooks_user_feature", ["user_id", "feature"], unique=False)

    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("instance_quota", sa.Integer(), nullable=True),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "access_keys",
        sa.Column("ak", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_access_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("ak", name=op.f("pk_access_keys")),
    )
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_keys_user_id"), ["user_id"], unique=False)

    op.create_table(
        "keypairs",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_keypairs_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "name", name=op.f("pk_keypairs")),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_memberships_project_id_projects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "project_id", name=op.f("pk_memberships")),
    )
    op.create_table(
        "notebook_tags",
        sa.Column("notebook_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["notebook_id"], ["notebooks.id"], name=op.f("fk_notebook_tags_notebook_id_notebooks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("notebook_id", "key", name=op.f("pk_notebook_tags")),
    )
    with op.batch_alter_table("notebook_tags", schema=None) as batch_op:
        batch_op.create_index("ix_notebook_tags_kv", ["key", "value"], unique=False)

    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_tokens_project_id_projects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_tokens_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_tokens")),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("create_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_workspaces_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
    )


def downgrade() -> None:
    op.drop_table("workspaces")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_user_id"))

    op.drop_table("tokens")
    with op.batch_alter_table("notebook_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_notebook_tags_kv")

    op.drop_table("notebook_tags")
    op.drop_table("memberships")
    op.drop_table("keypairs")
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_keys_user_id"))

    op.drop_table("access_keys")
    op.drop_table("users")
    op.drop_table("projects")
    with op.batch_alter_table("notebooks", schema=None) as batch_op:
        batch_op.drop_index("ix_notebooks_user_feature")
        batch_op.drop_index("ix_notebooks_status")
        batch_op.drop_index("ix_notebooks_scope_created")
        batch_op.drop_index("ix_notebooks_owner_created")

    op.drop_table("notebooks")
    op.drop_table("meta")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_scope")

    op.drop_table("images")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_notebook")

    op.drop_table("events")
