"""Grants (and campaigns) bound to the charger's TLS client certificate.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("grant", sa.Column("bind", sa.String(24), nullable=True))
    op.add_column("grant", sa.Column("charger_serial", sa.String(64), nullable=True))
    op.add_column("campaign", sa.Column("bind", sa.String(24), nullable=True))
    op.add_column("campaign_charger", sa.Column("serial", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign_charger") as table:
        table.drop_column("serial")
    with op.batch_alter_table("campaign") as table:
        table.drop_column("bind")
    with op.batch_alter_table("grant") as table:
        table.drop_column("charger_serial")
        table.drop_column("bind")
