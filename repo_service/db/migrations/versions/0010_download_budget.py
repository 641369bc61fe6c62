"""Grants with max_downloads keep a byte budget, reserved in the database before each transfer's first byte.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("grant", sa.Column("bytes_reserved", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("grant") as table:
        table.drop_column("bytes_reserved")
