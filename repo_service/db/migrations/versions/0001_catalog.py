"""The catalog: API clients, firmware, its models, pending storage writes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_client",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "firmware",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("version_canonical", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(200), nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("min_version", sa.String(64), nullable=True),
        sa.Column("hardware_revisions", sa.JSON(), nullable=False),
        sa.Column("release_notes", sa.Text(), nullable=False),
        sa.Column("uploaded_by", sa.String(32), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("published_at", UtcDateTime(), nullable=True),
        sa.Column("yanked_at", UtcDateTime(), nullable=True),
        sa.Column("yank_reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("vendor", "version_canonical", name="uq_firmware_vendor_version"),
    )
    op.create_index("ix_firmware_vendor_status_channel", "firmware", ["vendor", "status", "channel"])
    op.create_table(
        "firmware_model",
        sa.Column("firmware_id", sa.String(32), sa.ForeignKey("firmware.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(64), primary_key=True),
    )
    op.create_index("ix_firmware_model_model", "firmware_model", ["model"])
    op.create_table(
        "pending_write",
        sa.Column("storage_key", sa.String(200), primary_key=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pending_write")
    op.drop_index("ix_firmware_model_model", "firmware_model")
    op.drop_table("firmware_model")
    op.drop_index("ix_firmware_vendor_status_channel", "firmware")
    op.drop_table("firmware")
    op.drop_table("api_client")
