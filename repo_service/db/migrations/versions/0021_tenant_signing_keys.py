"""Signing keys per tenant: each tenant signs its builds with a root and key set of its own, which its chargers
trust and no other tenant's do. The keys there were (the installation's) become the default tenant's, which is
whose builds they signed until now; on PostgreSQL row-level security holds signing_key to the transaction's
tenant as migration 0017 holds the other tenant tables.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

SCOPE = "current_setting('fwrepo.tenant', true)"


def upgrade() -> None:
    with op.batch_alter_table("signing_key") as batch:
        batch.add_column(sa.Column("tenant", sa.String(63), nullable=False, server_default="default"))
    with op.batch_alter_table("signing_key") as batch:
        batch.alter_column("tenant", existing_type=sa.String(63), existing_nullable=False, server_default=None)
        batch.create_foreign_key("fk_signing_key_tenant", "tenant", ["tenant"], ["name"])
        batch.create_index("ix_signing_key_tenant", ["tenant"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE signing_key ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE signing_key FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_only ON signing_key USING ({SCOPE} IN (tenant, '*')) "
                   f"WITH CHECK ({SCOPE} IN (tenant, '*'))")
        # Read only: the keys of a tenant sharing its builds here, so a shared build shows its signature.
        op.execute("CREATE POLICY shared_read ON signing_key FOR SELECT USING (tenant IN (SELECT share.source FROM "
                   f"tenant_share AS share WHERE share.target = {SCOPE}))")


def downgrade() -> None:
    # Only while the default tenant alone has keys: the others' would become the installation's.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP POLICY shared_read ON signing_key")
        op.execute("DROP POLICY tenant_only ON signing_key")
        op.execute("ALTER TABLE signing_key NO FORCE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE signing_key DISABLE ROW LEVEL SECURITY")
    with op.batch_alter_table("signing_key") as batch:
        batch.drop_index("ix_signing_key_tenant")
        batch.drop_constraint("fk_signing_key_tenant", type_="foreignkey")
        batch.drop_column("tenant")
