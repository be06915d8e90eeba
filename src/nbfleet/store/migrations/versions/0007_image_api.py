"""Users' images: groups, saves from notebooks, content to remove; SNAPSHOTTING is work in flight

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

- ``images.group_id``: the image's group, a UUID derived from (project, owner, namespace, name), so that
  every replica gives a group the same id without asking anyone; existing rows get theirs here.
- ``images.source_notebook_id``: the notebook a save comes from (the reconciler finds the image it is
  writing by it); ``images.purge``: a forced delete whose content the reconciler still has to remove from
  the engine.
- Uniqueness of live images (status other than DELETED): one per owner and ``namespace/name:tag``, and
  one save per ``swr_path`` whoever saves it (a second save would overwrite the first one's content).
- ``image_groups``: the guide text (``read_me``) and tags of each group.
- ``ix_notebooks_image_id``: whether instances still use an image before its content is removed.
- ``ix_notebooks_in_flight`` also holds SNAPSHOTTING rows, which the reconciler now claims like any
  other work in flight (an instance being saved as an image).
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LIVE = sa.text("status != 'DELETED'")
SAVED_LIVE = sa.text("source_notebook_id IS NOT NULL AND status != 'DELETED'")
SAVING = sa.text("status IN ('INIT', 'CREATING')")
PURGE = sa.text("purge")
IN_FLIGHT_BEFORE = sa.text("status IN ('INIT', 'CREATING', 'STARTING', 'STOPPING', 'DELETING')")
IN_FLIGHT_AFTER = sa.text("status IN ('INIT', 'CREATING', 'STARTING', 'STOPPING', 'DELETING', 'SNAPSHOTTING')")


def _group_id(project_id, owner_id, namespace, name) -> str:
    # The formula of nbfleet.domain.images.group_id at this revision, kept here as it was.
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"nbfleet:image-group:{project_id or ''}:{owner_id or ''}:{namespace}/{name}")
    )


def upgrade() -> None:
    op.create_table(
        "image_groups",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=True),
        sa.Column("owner_id", sa.String(32), nullable=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("workspace_id", sa.String(32), nullable=False),
        sa.Column("description", sa.String(512), nullable=False, server_default=""),
        sa.Column("read_me", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
        sa.Column("create_at", sa.BigInteger, nullable=False),
        sa.Column("update_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_image_groups"),
    )
    op.create_index("ix_image_groups_scope", "image_groups", ["project_id", "owner_id", "update_at"])

    op.add_column("images", sa.Column("group_id", sa.String(36), nullable=True))
    op.add_column("images", sa.Column("source_notebook_id", sa.String(36), nullable=True))
    op.add_column("images", sa.Column("purge", sa.Boolean, nullable=False, server_default=sa.text("false")))
    _fill_groups()
    with op.batch_alter_table("images") as batch:
        batch.alter_column("group_id", existing_type=sa.String(36), nullable=False)
    op.create_index("ix_images_group", "images", ["group_id", "status"])
    op.create_index("ix_images_swr_path", "images", ["swr_path", "status"])
    op.create_index(
        "uq_images_owner_tag",
        "images",
        ["project_id", "owner_id", "namespace", "name", "tag"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index(
        "uq_images_saved_path",
        "images",
        ["swr_path"],
        unique=True,
        sqlite_where=SAVED_LIVE,
        postgresql_where=SAVED_LIVE,
    )
    op.create_index("ix_images_saving", "images", ["source_notebook_id"], sqlite_where=SAVING, postgresql_where=SAVING)
    op.create_index("ix_images_purge", "images", ["id"], sqlite_where=PURGE, postgresql_where=PURGE)

    op.create_index("ix_notebooks_image_id", "notebooks", ["image_id"])
    op.drop_index("ix_notebooks_in_flight", table_name="notebooks")
    op.create_index(
        "ix_notebooks_in_flight",
        "notebooks",
        ["status"],
        sqlite_where=IN_FLIGHT_AFTER,
        postgresql_where=IN_FLIGHT_AFTER,
    )


def _fill_groups() -> None:
    """Give every existing image its group id, and every group its row (no guide text, no tags)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, project_id, owner_id, namespace, name, type, workspace_id, create_at, update_at FROM images"
        )
    ).all()
    groups: dict[str, dict] = {}
    for row in rows:
        gid = _group_id(row.project_id, row.owner_id, row.namespace, row.name)
        bind.execute(sa.text("UPDATE images SET group_id = :gid WHERE id = :id"), {"gid": gid, "id": row.id})
        group = groups.setdefault(
            gid,
            {
                "id": gid,
                "project_id": row.project_id,
                "owner_id": row.owner_id,
                "type": row.type,
                "namespace": row.namespace,
                "name": row.name,
                "workspace_id": row.workspace_id,
                "create_at": row.create_at,
                "update_at": row.update_at,
            },
        )
        group["create_at"] = min(group["create_at"], row.create_at)
        group["update_at"] = max(group["update_at"], row.update_at)
    if groups:
        bind.execute(
            sa.text(
                "INSERT INTO image_groups (id, project_id, owner_id, type, namespace, name, "
                "workspace_id, create_at, update_at) VALUES (:id, :project_id, :owner_id, :type, "
                ":namespace, :name, :workspace_id, :create_at, :update_at)"
            ),
            list(groups.values()),
        )


def downgrade() -> None:
    op.drop_index("ix_notebooks_in_flight", table_name="notebooks")
    op.create_index(
        "ix_notebooks_in_flight",
        "notebooks",
        ["status"],
        sqlite_where=IN_FLIGHT_BEFORE,
        postgresql_where=IN_FLIGHT_BEFORE,
    )
    op.drop_index("ix_notebooks_image_id", table_name="notebooks")
    for index in (
        "ix_images_purge",
        "ix_images_saving",
        "uq_images_saved_path",
        "uq_images_owner_tag",
        "ix_images_swr_path",
        "ix_images_group",
    ):
        op.drop_index(index, table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("purge")
        batch.drop_column("source_notebook_id")
        batch.drop_column("group_id")
    op.drop_index("ix_image_groups_scope", table_name="image_groups")
    op.drop_table("image_groups")
