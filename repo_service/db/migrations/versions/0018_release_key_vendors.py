"""A release key may be limited to vendor names: a charger maker's engineer uploads, publishes and yanks only
that maker's builds in the operator's tenant. Null for every key made before: any vendor, as they could.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_client") as table:
        table.add_column(sa.Column("vendors", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_client") as table:
        table.drop_column("vendors")
