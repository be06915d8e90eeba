"""Guards around requests: signatures already seen, failed sign-ins, where a token came from; sealed
notebook tokens

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
- ``notebooks.token``: the Jupyter token of each instance, sealed with the installation's key (the
  one that seals access keys) so that a copy of the database alone opens no notebook; existing rows are
  sealed here, which needs that key (``nbfleet serve`` and ``nbfleet db upgrade`` hand it over). The
  column becomes text: a sealed token is longer than 64 characters.
"""

import sqlalchemy as sa
from alembic import op

BATCH = 2000

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
    if op.get_bind().dialect.name == "postgresql":  # SQLite does not enforce a VARCHAR's length
        op.alter_column("notebooks", "token", type_=sa.Text, existing_type=sa.String(64), existing_nullable=False)
    _rewrite_tokens(lambda secrets: secrets.seal)


def downgrade() -> None:
    _rewrite_tokens(lambda secrets: secrets.open)
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("notebooks", "token", type_=sa.String(64), existing_type=sa.Text, existing_nullable=False)
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("origin")
    op.drop_index("ix_signin_failures_last_failure_at", table_name="signin_failures")
    op.drop_table("signin_failures")
    op.drop_index("ix_request_signatures_expires_at", table_name="request_signatures")
    op.drop_table("request_signatures")


def _rewrite_tokens(transform_with) -> None:
    """Seal (or, going down, open) every notebook's token, a batch of rows at a time."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM notebooks LIMIT 1")).first() is None:
        return
    secrets = op.get_context().config.attributes.get("secrets")
    if secrets is None:
        raise RuntimeError(
            "migration 0006 seals the notebook tokens with the installation's secret key; "
            "run it through `nbfleet db upgrade` (or `nbfleet serve`)"
        )
    _check_key(bind, secrets)
    transform = transform_with(secrets)
    last = -1
    while True:
        rows = bind.execute(
            sa.text("SELECT seq, token FROM notebooks WHERE seq > :last ORDER BY seq LIMIT :n"),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            return
        bind.execute(
            sa.text("UPDATE notebooks SET token = :token WHERE seq = :seq"),
            [{"seq": seq, "token": transform(token)} for seq, token in rows],
        )
        last = rows[-1][0]


def _check_key(bind, secrets) -> None:
    """Refuse to seal with a key that is not the one the stored access keys were sealed with: the
    replicas that have the right key could then not open a single token."""
    sealed = bind.execute(sa.text("SELECT secret_enc FROM access_keys ORDER BY create_at LIMIT 1")).scalar()
    if sealed is None:
        return
    try:
        secrets.open(sealed)
    except ValueError:
        raise RuntimeError(
            "the secret key (NBFLEET_SECRET_KEY or <data dir>/secret.key) is not the one that "
            "encrypted the access keys in this database; migrate with the installation's key"
        ) from None
