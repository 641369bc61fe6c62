"""Dispatch by fwrepo: a campaign's choice of who sends UpdateFirmware, each charger's OCPP version, and the
outbox of UpdateFirmware requests fwrepo sends through a CSMS.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as table:
        table.add_column(sa.Column("dispatch", sa.String(16), nullable=False, server_default="csms"))
    with op.batch_alter_table("campaign_charger") as table:
        table.add_column(sa.Column("ocpp_version", sa.String(8), nullable=True))
    op.create_table(
        "dispatch",
        sa.Column("grant_id", sa.Integer(), sa.ForeignKey("grant.id"), primary_key=True),
        sa.Column("campaign_id", sa.String(32), sa.ForeignKey("campaign.id"), nullable=False, index=True),
        sa.Column("charger_id", sa.String(64), nullable=False),
        sa.Column("csms", sa.String(16), nullable=False),
        sa.Column("ocpp_version", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("misses", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("claim_token", sa.String(32), nullable=True),
        sa.Column("claimed_until", UtcDateTime(), nullable=True),
        sa.Column("body_sealed", sa.Text(), nullable=False),
        sa.Column("location_digest", sa.String(64), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=True, index=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_dispatch_ready", "dispatch", ["status", "next_attempt_at"])
    op.create_index("ix_dispatch_charger", "dispatch", ["charger_id", "status"])


def downgrade() -> None:
    op.drop_table("dispatch")
    with op.batch_alter_table("campaign_charger") as table:
        table.drop_column("ocpp_version")
    with op.batch_alter_table("campaign") as table:
        table.drop_column("dispatch")
