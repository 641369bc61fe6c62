"""Signing: repository signing keys, firmware signatures, uploader signers.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_key",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("not_before", UtcDateTime(), nullable=False),
        sa.Column("not_after", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "firmware_signature",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("firmware_id", sa.String(32), sa.ForeignKey("firmware.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.String(32), sa.ForeignKey("signing_key.id"), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_firmware_signature_firmware_id", "firmware_signature", ["firmware_id"])
    op.create_table(
        "signer",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("removed_at", UtcDateTime(), nullable=True),
    )
    with op.batch_alter_table("firmware") as table:
        table.add_column(sa.Column("signed_by", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("firmware") as table:
        table.drop_column("signed_by")
    op.drop_table("signer")
    op.drop_index("ix_firmware_signature_firmware_id", "firmware_signature")
    op.drop_table("firmware_signature")
    op.drop_table("signing_key")
