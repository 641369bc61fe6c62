"""Shared catalogs: a tenant shares its published builds with named other tenants (a maker hosting its customers).

A receiving tenant reads the shared builds (published or yanked, never drafts), grants and campaigns them; it
changes none of them. On PostgreSQL the firmware table's policy from 0017 (own rows, for every command) stays,
and a second, read-only policy lets a session also see the shared builds: PostgreSQL ORs the permissive
policies of a command, so reads see own-or-shared while INSERT, UPDATE, DELETE and SELECT ... FOR UPDATE are
still held to own rows. A build's models and signatures were visible whenever their build was; now they are
read with it, but written only under a build of the session's own tenant (a receiver cannot re-sign). The shares
themselves are seen by both of their tenants and made only in the source's scope (or every tenant's).

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

SCOPE = "current_setting('fwrepo.tenant', true)"
SHARED = "('published', 'yanked')"
SOURCES = f"(SELECT share.source FROM tenant_share AS share WHERE share.target = {SCOPE})"
UNDER_FIRMWARE = ("firmware_model", "firmware_signature")


def upgrade() -> None:
    op.create_table(
        "tenant_share",
        sa.Column("source", sa.String(63), sa.ForeignKey("tenant.name"), primary_key=True),
        sa.Column("target", sa.String(63), sa.ForeignKey("tenant.name"), primary_key=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_tenant_share_target", "tenant_share", ["target"])
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE tenant_share ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tenant_share FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_only ON tenant_share USING ({SCOPE} IN (source, target, '*')) "
               f"WITH CHECK ({SCOPE} IN (source, '*'))")
    op.execute(f"CREATE POLICY shared_read ON firmware FOR SELECT USING (status IN {SHARED} AND tenant IN {SOURCES})")
    for table in UNDER_FIRMWARE:
        own = (f"{SCOPE} = '*' OR EXISTS (SELECT 1 FROM firmware AS parent WHERE parent.id = {table}.firmware_id "
               f"AND parent.tenant = {SCOPE})")
        # Read where the build is (its own or a shared one); written only under the session's own builds.
        visible = f"EXISTS (SELECT 1 FROM firmware AS parent WHERE parent.id = {table}.firmware_id)"
        op.execute(f"DROP POLICY tenant_only ON {table}")
        op.execute(f"CREATE POLICY tenant_only ON {table} USING ({own}) WITH CHECK ({own})")
        op.execute(f"CREATE POLICY shared_read ON {table} FOR SELECT USING ({visible})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in UNDER_FIRMWARE:
            visible = f"{SCOPE} = '*' OR EXISTS (SELECT 1 FROM firmware AS parent WHERE parent.id = {table}.firmware_id)"
            op.execute(f"DROP POLICY shared_read ON {table}")
            op.execute(f"DROP POLICY tenant_only ON {table}")
            op.execute(f"CREATE POLICY tenant_only ON {table} USING ({visible}) WITH CHECK ({visible})")
        op.execute("DROP POLICY shared_read ON firmware")
    op.drop_index("ix_tenant_share_target", "tenant_share")
    op.drop_table("tenant_share")
