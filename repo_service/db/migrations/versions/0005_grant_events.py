"""Status events of grants: what chargers reported through the CSMS.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grant_event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("grant_id", sa.Integer(), sa.ForeignKey("grant.id"), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("timestamp", UtcDateTime(), nullable=False),
        sa.Column("info", sa.Text(), nullable=True),
        sa.Column("firmware_version", sa.String(50), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("grant_id", "status", "timestamp", name="uq_grant_event"),
    )
    op.create_index("ix_grant_event_grant_id", "grant_event", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_grant_event_grant_id", table_name="grant_event")
    op.drop_table("grant_event")
