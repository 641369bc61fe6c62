"""Grants and download records.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grant",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("firmware_id", sa.String(32), sa.ForeignKey("firmware.id"), nullable=False),
        sa.Column("charger_id", sa.String(64), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("retrieve_date", UtcDateTime(), nullable=False),
        sa.Column("install_date", UtcDateTime(), nullable=True),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_interval", sa.Integer(), nullable=False),
        sa.Column("max_downloads", sa.Integer(), nullable=True),
        sa.Column("downloads_completed", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_grant_firmware_id", "grant", ["firmware_id"])
    op.create_index("ix_grant_charger_id", "grant", ["charger_id"])
    op.create_table(
        "download_record",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("grant_id", sa.BigInteger(), nullable=True),
        sa.Column("charger_id", sa.String(64), nullable=True),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("range_start", sa.BigInteger(), nullable=True),
        sa.Column("range_end", sa.BigInteger(), nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("refusal", sa.String(16), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
    )
    op.create_index("ix_download_record_grant_id", "download_record", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_download_record_grant_id", "download_record")
    op.drop_table("download_record")
    op.drop_index("ix_grant_charger_id", "grant")
    op.drop_index("ix_grant_firmware_id", "grant")
    op.drop_table("grant")
