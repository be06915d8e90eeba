"""Guards around requests: signatures already seen, failed sign-ins, where a token came from

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

- ``request_signatures``: the signature of every state-changing signed request, until its X-Sdk-Date
  leaves the allowed clock skew; a second request with the same signature is a replay. In the store,
  not in memory, so that every replica refuses it.
- ``signin_failures``: failed password sign-ins per account and per address, for the backoff every
  replica applies.
- ``tokens.origin``: ``password`` for tokens opened with a password (console sessions, ``POST
  /v3/auth/tokens``), revoked when the password changes; ``admin`` for ``nbfleet admin create-token``.
  Tokens from before are taken as ``password`` ones: when in doubt, a password change ends them.
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
    op.create_table(
        "signin_failures",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_signin_failures"),
    )
    op.create_index("ix_signin_failures_last_failure_at", "signin_failures", ["last_failure_at"])
    op.add_column("tokens", sa.Column("origin", sa.String(16), nullable=False, server_default="password"))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("origin")
    op.drop_index("ix_signin_failures_last_failure_at", table_name="signin_failures")
    op.drop_table("signin_failures")
    op.drop_index("ix_request_signatures_expires_at", table_name="request_signatures")
    op.drop_table("request_signatures")
