"""Campaigns: staged rollouts and their chargers.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("firmware_id", sa.String(32), sa.ForeignKey("firmware.id"), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("ftps_mode", sa.String(8), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_interval", sa.Integer(), nullable=False),
        sa.Column("wave_ends", sa.JSON(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("window_start", sa.String(5), nullable=True),
        sa.Column("window_end", sa.String(5), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("current_wave", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=True),
    )
    op.create_index("ix_campaign_firmware_id", "campaign", ["firmware_id"])
    op.create_table(
        "campaign_charger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(32), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("charger_id", sa.String(64), nullable=False),
        sa.Column("current_version", sa.String(50), nullable=False),
        sa.Column("model", sa.String(50), nullable=True),
        sa.Column("hardware_revision", sa.String(50), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("grant_id", sa.Integer(), sa.ForeignKey("grant.id"), nullable=True),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.Column("state", sa.String(24), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("progress_at", UtcDateTime(), nullable=True),
        sa.Column("granted_at", UtcDateTime(), nullable=True),
        sa.Column("first_byte_at", UtcDateTime(), nullable=True),
        sa.Column("last_byte_at", UtcDateTime(), nullable=True),
        sa.Column("booted_at", UtcDateTime(), nullable=True),
        sa.Column("bytes_served", sa.BigInteger(), nullable=False, server_default="0"),
        sa.UniqueConstraint("campaign_id", "charger_id", name="uq_campaign_charger"),
    )
    op.create_index("ix_campaign_charger_campaign_id", "campaign_charger", ["campaign_id"])
    op.create_index("ix_campaign_charger_grant_id", "campaign_charger", ["grant_id"])
    op.create_index("ix_campaign_charger_wave", "campaign_charger", ["campaign_id", "wave", "final"])


def downgrade() -> None:
    op.drop_table("campaign_charger")
    op.drop_table("campaign")
