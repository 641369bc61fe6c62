"""Campaign jobs keep when the clock alone changes them (due_at), and nodes share periodic work by a lease.

progress_at held when a job last moved, and readers of a campaign derived its stale jobs again. Waves now
advance on events and on a periodic tick, which re-derives the jobs whose due_at has passed: a failed
download that became final, or a timeout. Old rows get due_at = progress_at, so the first tick derives
them once and stores their real deadline.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign_charger") as table:
        table.alter_column("progress_at", new_column_name="due_at", existing_nullable=True)
    op.create_index("ix_campaign_charger_due", "campaign_charger", ["final", "due_at"])
    op.create_table(
        "lease",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("until", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("lease")
    op.drop_index("ix_campaign_charger_due", table_name="campaign_charger")
    with op.batch_alter_table("campaign_charger") as table:
        table.alter_column("due_at", new_column_name="progress_at", existing_nullable=True)
