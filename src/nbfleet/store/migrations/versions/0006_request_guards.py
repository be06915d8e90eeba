"""Guards around requests: signatures already seen

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

- ``request_signatures``: the signature of every state-changing signed request, until its X-Sdk-Date
  leaves the allowed clock skew; a second request with the same signature is a replay. In the store,
  not in memory, so that every replica refuses it.
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_signatures",
        sa.Column("signature", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("signature", name="pk_request_signatures"),
    )
    op.create_index("ix_request_signatures_expires_at", "request_signatures", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_request_signatures_expires_at", table_name="request_signatures")
    op.drop_table("request_signatures")
