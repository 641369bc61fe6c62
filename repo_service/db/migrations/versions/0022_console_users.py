"""Console users and their sessions: people sign in to /console/ with a name and a password (API clients keep
their keys), and failed sign-ins are counted per name tried, for the backoff. Users and sessions belong to a
tenant; on PostgreSQL row-level security holds them to the transaction's
tenant as migration 0017 holds the others.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

SCOPE = "current_setting('fwrepo.tenant', true)"
TABLES = ("console_user", "console_session")


def upgrade() -> None:
    op.create_table(
        "console_user",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(63), sa.ForeignKey("tenant.name"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("disabled_at", UtcDateTime(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_at", UtcDateTime(), nullable=True),
        sa.Column("last_login_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "sign_in_failure",
        sa.Column("name_hash", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", UtcDateTime(), nullable=False, index=True),
    )
    op.create_table(
        "console_session",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(63), sa.ForeignKey("tenant.name"), nullable=False, index=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("console_user.id"), nullable=False, index=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tenant_only ON {table} USING ({SCOPE} IN (tenant, '*')) "
                       f"WITH CHECK ({SCOPE} IN (tenant, '*'))")


def downgrade() -> None:
    op.drop_table("console_session")
    op.drop_table("sign_in_failure")
    op.drop_table("console_user")
