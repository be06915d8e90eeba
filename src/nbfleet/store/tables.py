"""Table definitions. Nested, rarely-filtered parts of a notebook live in JSON text columns;
everything a list filter or sort touches is a real, indexed column."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("create_at", BigInteger, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("password_hash", Text, nullable=True),
    Column("instance_quota", Integer, nullable=True),  # None: the service default
    Column("create_at", BigInteger, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("ak", String(64), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("secret_enc", Text, nullable=False),  # encrypted with a key kept outside the database
    Column("enabled", Boolean, nullable=False, default=True),
    Column("create_at", BigInteger, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the token; the token itself is never stored
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("project_id", String(32), ForeignKey("projects.id", ondelete="CASCADE"), nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("create_at", BigInteger, nullable=False),
    # "password": opened with the user's password (console sessions, POST /v3/auth/tokens), revoked when it
    # changes; "admin": issued by `nbfleet admin create-token` (migration 0006)
    Column("origin", String(16), nullable=False, server_default="password"),
)

keypairs = Table(
    "keypairs",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("public_key", Text, nullable=False),
    Column("create_at", BigInteger, nullable=False),
)

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("create_at", BigInteger, nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(32), nullable=True),  # None: built-in, visible in every project
    Column("owner_id", String(32), nullable=True),
    Column("name", String(512), nullable=False),
    Column("namespace", String(64), nullable=False),
    Column("tag", String(64), nullable=False),
    Column("swr_path", String(2048), nullable=False),
    Column("type", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("workspace_id", String(32), nullable=False, default="0"),
    Column("service_type", String(16), nullable=False),
    Column("show_name", String(128), nullable=True),
    Column("show_tag", String(64), nullable=True),
    Column("create_at", BigInteger, nullable=False),
    Column("update_at", BigInteger, nullable=False),
    Column("doc", Text, nullable=False),  # the rest of the Image object, JSON
    # Migration 0007: the image's group (domain.images.group_id), the notebook a save comes from, and
    # whether the content must still be removed from the engine (a forced delete; the reconciler does it).
    Column("group_id", String(36), nullable=False),
    Column("source_notebook_id", String(36), nullable=True),
    Column("purge", Boolean, nullable=False, server_default=text("false")),
    Index("ix_images_scope", "project_id", "owner_id", "create_at"),
    Index("ix_images_group", "group_id", "status"),
    Index("ix_images_swr_path", "swr_path", "status"),
    # One live image per owner and namespace/name:tag (spec: 6737), and one live save per address, whatever
    # the owner: a second save would overwrite the first one's content. Deleted rows stay as a record.
    Index(
        "uq_images_owner_tag",
        "project_id",
        "owner_id",
        "namespace",
        "name",
        "tag",
        unique=True,
        sqlite_where=text("status != 'DELETED'"),
        postgresql_where=text("status != 'DELETED'"),
    ),
    Index(
        "uq_images_saved_path",
        "swr_path",
        unique=True,
        sqlite_where=text("source_notebook_id IS NOT NULL AND status != 'DELETED'"),
        postgresql_where=text("source_notebook_id IS NOT NULL AND status != 'DELETED'"),
    ),
    Index(
        "ix_images_saving",
        "source_notebook_id",
        sqlite_where=text("status IN ('INIT', 'CREATING')"),
        postgresql_where=text("status IN ('INIT', 'CREATING')"),
    ),
    Index("ix_images_purge", "id", sqlite_where=text("purge"), postgresql_where=text("purge")),
)

# A user's images of one namespace/name (all tags), or a built-in one (no project, no owner): the guide
# text and tags of the group (migration 0007). Its counts and times come from its images.
image_groups = Table(
    "image_groups",
    metadata,
    Column("id", String(36), primary_key=True),  # domain.images.group_id: derived, the same on every replica
    Column("project_id", String(32), nullable=True),
    Column("owner_id", String(32), nullable=True),
    Column("type", String(16), nullable=False),
    Column("namespace", String(64), nullable=False),
    Column("name", String(512), nullable=False),
    Column("workspace_id", String(32), nullable=False),
    Column("description", String(512), nullable=False, server_default=""),
    Column("read_me", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default="[]"),
    Column("create_at", BigInteger, nullable=False),
    Column("update_at", BigInteger, nullable=False),
    Index("ix_image_groups_scope", "project_id", "owner_id", "update_at"),
)

# The statuses of domain.model.TRANSITIONAL (migration 0007 added SNAPSHOTTING to the index).
IN_FLIGHT = ("INIT", "CREATING", "STARTING", "STOPPING", "DELETING", "SNAPSHOTTING")
IN_FLIGHT_SQL = text("status IN ('INIT', 'CREATING', 'STARTING', 'STOPPING', 'DELETING', 'SNAPSHOTTING')")

notebooks = Table(
    "notebooks",
    metadata,
    # A stable integer key: SQLite's rowid alias (it survives VACUUM, which the full-text index relies on)
    # and an identity column on PostgreSQL. The public id is the UUID.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("project_id", String(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("user_name", String(256), nullable=False),
    Column("name", String(128), nullable=False),
    Column("description", String(512), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("desired", String(16), nullable=False),  # RUNNING | STOPPED | DELETED: what the user asked for
    Column("version", Integer, nullable=False),  # bumped on every status change; the compare-and-set key
    Column("feature", String(16), nullable=False),
    Column("workspace_id", String(32), nullable=False),
    Column("flavor", String(256), nullable=False),
    Column("image_id", String(36), nullable=False),
    Column("swr_path", String(2048), nullable=False),
    Column("pool_id", String(64), nullable=True),
    Column("pool_name", String(64), nullable=True),
    Column("ip", String(45), nullable=True),
    Column("volume_category", String(8), nullable=False),
    Column("token", Text, nullable=False),  # the Jupyter token, sealed by the SecretBox (migration 0006)
    Column("fail_reason", Text, nullable=True),
    Column("action_progress", Text, nullable=True),  # JSON list of JobProgress
    Column("lease_type", String(8), nullable=False),
    Column("lease_duration", BigInteger, nullable=True),
    Column("lease_enable", Boolean, nullable=False),
    Column("lease_update_at", BigInteger, nullable=False),
    Column("last_activity_at", BigInteger, nullable=True),
    Column("create_at", BigInteger, nullable=False),
    Column("update_at", BigInteger, nullable=False),
    Column("spec", Text, nullable=False),  # JSON: volume, endpoints, hooks, image snapshot, ...
    Column("tags", Text, nullable=False, default="[]"),
    Column("placement", Text, nullable=True),  # JSON: where the runtime runs it
    Column("claim_owner", String(64), nullable=True),
    Column("claim_until", BigInteger, nullable=True),
    Column("request_id", String(32), nullable=True),  # the API call that wrote the current intent (migration 0009)
    # One index per supported order, each led by the list scope, so a page is an index walk.
    Index("ix_notebooks_scope_created", "project_id", "workspace_id", "feature", "create_at", "id"),
    Index("ix_notebooks_owner_created", "project_id", "user_id", "workspace_id", "feature", "create_at", "id"),
    Index("ix_notebooks_status_created", "project_id", "workspace_id", "feature", "status", "create_at", "id"),
    Index(
        "ix_notebooks_owner_status_created",
        "project_id",
        "user_id",
        "workspace_id",
        "feature",
        "status",
        "create_at",
        "id",
    ),
    Index("ix_notebooks_scope_name", "project_id", "workspace_id", "feature", "name", "id"),
    # With the description: a LIKE over a scope (a common substring, notebook_list.plan_fuzzy) reads the index
    # alone (migration 0010).
    Index(
        "ix_notebooks_scope_status_name",
        "project_id",
        "workspace_id",
        "feature",
        "status",
        "name",
        "id",
        "description",
    ),
    Index("ix_notebooks_scope_updated", "project_id", "workspace_id", "feature", "update_at", "id"),
    Index("ix_notebooks_status", "status"),
    Index("ix_notebooks_user_feature", "user_id", "feature"),
    Index("ix_notebooks_lease", "status", "lease_enable", "lease_type"),
    # Whether an image's content is still needed before it is removed from the engine (migration 0007).
    Index("ix_notebooks_image_id", "image_id"),
    # The reconciler looks for rows in flight many times a second; they are a handful among millions,
    # which planner statistics (averages per status) cannot know, so they get an index of their own.
    Index("ix_notebooks_in_flight", "status", sqlite_where=IN_FLIGHT_SQL, postgresql_where=IN_FLIGHT_SQL),
)

# Exact row counts per list scope and status, kept by database triggers in the same transaction as every
# insert, delete and status change (migration 0002). user_id '*' rows count all users of a scope.
notebook_counts = Table(
    "notebook_counts",
    metadata,
    Column("project_id", String(32), primary_key=True),
    Column("workspace_id", String(32), primary_key=True),
    Column("feature", String(16), primary_key=True),
    Column("user_id", String(32), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

notebook_tags = Table(
    "notebook_tags",
    metadata,
    Column("notebook_id", String(36), ForeignKey("notebooks.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(255), nullable=False, default=""),
    Index("ix_notebook_tags_kv", "key", "value"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notebook_id", String(36), nullable=False),
    Column("project_id", String(32), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Index("ix_events_notebook", "notebook_id", "id"),
)

# Dynamic storage mounts of instances (spec §4, migration 0008). ``status`` is the mount's own state machine
# (domain.storage.MountStatus); the reconciler works on MOUNTING/UNMOUNTING rows of RUNNING instances while
# it holds the row's claim. A detached mount's row is removed. Credentials are never stored here.
dynamic_storages = Table(
    "dynamic_storages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("notebook_id", String(36), ForeignKey("notebooks.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", String(32), nullable=False),
    Column("category", String(8), nullable=False),
    Column("mount_path", String(300), nullable=False),  # normalised: /data/<dir>[/<dir>…]/
    Column("uri", String(256), nullable=False),
    Column("efs_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("failure_reason", Text, nullable=True),
    Column("version", Integer, nullable=False),
    Column("claim_owner", String(64), nullable=True),
    Column("claim_until", BigInteger, nullable=True),
    Column("create_at", BigInteger, nullable=False),
    Column("update_at", BigInteger, nullable=False),
    Index("ix_dynamic_storages_notebook", "notebook_id", "create_at"),
    Index("uq_dynamic_storages_path", "notebook_id", "mount_path", unique=True),
    Index(
        "ix_dynamic_storages_work",
        "status",
        sqlite_where=text("status IN ('MOUNTING', 'UNMOUNTING')"),
        postgresql_where=text("status IN ('MOUNTING', 'UNMOUNTING')"),
    ),
)

# Signatures of state-changing signed requests, kept while their X-Sdk-Date is acceptable, so that a
# repeat of one is refused on every replica (migration 0006).
request_signatures = Table(
    "request_signatures",
    metadata,
    Column("signature", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_request_signatures_expires_at", "expires_at"),
)

# Failed password sign-ins per account and per address (keys are hashes, see store/signin_repo.py), so
# that every replica applies the same backoff (migration 0006).
signin_failures = Table(
    "signin_failures",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", BigInteger, nullable=False),
    Index("ix_signin_failures_last_failure_at", "last_failure_at"),
)

# State-changing API and console calls, who made them and how they ended; never bodies or credentials
# (migration 0009). Pruned after NBFLEET_AUDIT_RETENTION_DAYS.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), Identity(), primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("request_id", String(32), nullable=True),
    Column("user_id", String(32), nullable=True),  # None: the caller was not authenticated
    Column("user_name", String(256), nullable=True),
    Column("project_id", String(32), nullable=True),
    Column("method", String(8), nullable=False),
    Column("route", String(256), nullable=False),  # the route template, never the raw path
    Column("action", String(64), nullable=False),
    Column("target", String(64), nullable=True),  # the instance acted on, when there is one
    Column("status", Integer, nullable=False),  # the HTTP status of the answer
    Column("error_code", String(32), nullable=True),
    Index("ix_audit_events_at", "at"),
    Index("ix_audit_events_user_id_at", "user_id", "at"),
    Index("ix_audit_events_target_at", "target", "at"),
)

__all__ = [
    "metadata",
    "audit_events",
    "meta",
    "projects",
    "users",
    "memberships",
    "access_keys",
    "tokens",
    "keypairs",
    "workspaces",
    "images",
    "image_groups",
    "notebooks",
    "dynamic_storages",
    "notebook_counts",
    "notebook_tags",
    "events",
    "request_signatures",
    "signin_failures",
]
