"""One-time FTPS logins on grants, stored as hashes.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grant") as table:
        table.add_column(sa.Column("login_hash", sa.String(64), nullable=True))
        table.add_column(sa.Column("password_hash", sa.String(64), nullable=True))
        table.create_unique_constraint("uq_grant_login_hash", ["login_hash"])


def downgrade() -> None:
    with op.batch_alter_table("grant") as table:
        table.drop_constraint("uq_grant_login_hash", type_="unique")
        table.drop_column("password_hash")
        table.drop_column("login_hash")
