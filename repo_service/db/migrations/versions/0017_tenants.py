"""Tenants: every client, build, signer, grant, campaign, webhook and audit row belongs to one; what was there
before belongs to the tenant "default". Each tenant's audit trail is a chain of its own (its seq counts from 1),
and a build's version is unique within its tenant.

On PostgreSQL, row-level security holds every session to the tenant its transaction names in fwrepo.tenant
(repo_service/db/tenancy.py): tables with a tenant column compare it, the tables under them (a grant's events,
a campaign's chargers, a webhook's deliveries) follow their parent's visibility. FORCE makes the policies apply
to the tables' owner, which is who fwrepo connects as; a superuser still bypasses them.

Revision ID: 0017
Revises: 0016
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from repo_service.db.types import UtcDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

OWNED = ("api_client", "firmware", "signer", "grant", "campaign", "audit_event", "audit_checkpoint", "webhook")
# A table under a parent, the column naming the parent, and the parent: a row is visible when its parent is.
UNDER = (("firmware_model", "firmware_id", "firmware", "id"), ("firmware_signature", "firmware_id", "firmware", "id"),
         ("grant_event", "grant_id", '"grant"', "id"), ("download_record", "grant_id", '"grant"', "id"),
         ("campaign_charger", "campaign_id", "campaign", "id"), ("dispatch", "grant_id", '"grant"', "id"),
         ("webhook_delivery", "webhook_id", "webhook", "id"), ("webhook_attempt", "delivery_id", "webhook_delivery", "id"))
SCOPE = "current_setting('fwrepo.tenant', true)"


def upgrade() -> None:
    tenant = op.create_table(
        "tenant",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("disabled_at", UtcDateTime(), nullable=True),
    )
    op.bulk_insert(tenant, [{"name": "default", "created_at": datetime.now(UTC), "disabled_at": None}])
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tenant", sa.String(63), nullable=False, server_default="default"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("tenant", existing_type=sa.String(63), existing_nullable=False, server_default=None)
            batch.create_foreign_key(f"fk_{table}_tenant", "tenant", ["tenant"], ["name"])
            if table != "audit_event":
                batch.create_index(f"ix_{table}_tenant", ["tenant"])
    with op.batch_alter_table("firmware") as batch:
        batch.drop_constraint("uq_firmware_vendor_version", type_="unique")
        batch.create_unique_constraint("uq_firmware_vendor_version", ["tenant", "vendor", "version_canonical"])
    _signer_names_per_tenant()
    _audit_chain_per_tenant()
    if op.get_bind().dialect.name == "postgresql":
        _row_level_security()


def _signer_names_per_tenant() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("signer_name_key", "signer", type_="unique")
        op.create_unique_constraint("uq_signer_tenant_name", "signer", ["tenant", "name"])
        return
    # SQLite's unique constraint from 0002 has no name to drop: the table is made again from this shape.
    shape = sa.Table(
        "signer", sa.MetaData(),
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("removed_at", UtcDateTime(), nullable=True),
        sa.Column("tenant", sa.String(63), sa.ForeignKey("tenant.name", name="fk_signer_tenant"), nullable=False),
        sa.Index("ix_signer_tenant", "tenant"),
    )
    with op.batch_alter_table("signer", copy_from=shape, recreate="always") as batch:
        batch.create_unique_constraint("uq_signer_tenant_name", ["tenant", "name"])


def _audit_chain_per_tenant() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("audit_event_pkey", "audit_event", type_="primary")
        op.create_primary_key("audit_event_pkey", "audit_event", ["tenant", "seq"])
        return
    shape = sa.Table(
        "audit_event", sa.MetaData(),
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(63), sa.ForeignKey("tenant.name", name="fk_audit_event_tenant"), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "seq"),
        *(sa.Index(f"ix_audit_event_{column}", column) for column in ("at", "actor", "action", "subject")),
    )
    with op.batch_alter_table("audit_event", copy_from=shape, recreate="always"):
        pass


def _row_level_security() -> None:
    for table in OWNED:
        quoted = f'"{table}"'
        op.execute(f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {quoted} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_only ON {quoted} USING ({SCOPE} IN (tenant, '*')) "
                   f"WITH CHECK ({SCOPE} IN (tenant, '*'))")
    for table, column, parent, key in UNDER:
        visible = f"{SCOPE} = '*' OR EXISTS (SELECT 1 FROM {parent} AS parent WHERE parent.{key} = {table}.{column})"
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_only ON {table} USING ({visible}) WITH CHECK ({visible})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in (*OWNED, *(under[0] for under in UNDER)):
            quoted = f'"{table}"'
            op.execute(f"DROP POLICY tenant_only ON {quoted}")
            op.execute(f"ALTER TABLE {quoted} NO FORCE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {quoted} DISABLE ROW LEVEL SECURITY")
        op.drop_constraint("audit_event_pkey", "audit_event", type_="primary")
        op.create_primary_key("audit_event_pkey", "audit_event", ["seq"])
        op.drop_constraint("uq_signer_tenant_name", "signer", type_="unique")
        op.create_unique_constraint("signer_name_key", "signer", ["name"])
    # Going back is only possible while the default tenant is the only one: other tenants' rows would collide.
    with op.batch_alter_table("firmware") as batch:
        batch.drop_constraint("uq_firmware_vendor_version", type_="unique")
        batch.create_unique_constraint("uq_firmware_vendor_version", ["vendor", "version_canonical"])
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            if table != "audit_event":
                batch.drop_index(f"ix_{table}_tenant")
            batch.drop_constraint(f"fk_{table}_tenant", type_="foreignkey")
            batch.drop_column("tenant")
    op.drop_table("tenant")
