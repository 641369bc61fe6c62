"""Tenant quotas: the bytes and builds a tenant may store and the grants it may issue per minute (NULL: no
limit, what every tenant had before), and an index to count a tenant's grants of the last minute by.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenant") as table:
        table.add_column(sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("max_builds", sa.Integer(), nullable=True))
        table.add_column(sa.Column("max_grants_per_minute", sa.Integer(), nullable=True))
    op.create_index("ix_grant_tenant_created_at", "grant", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_grant_tenant_created_at", "grant")
    with op.batch_alter_table("tenant") as table:
        table.drop_column("max_grants_per_minute")
        table.drop_column("max_builds")
        table.drop_column("max_stored_bytes")
