"""Status events carry OCPP's statusInfo (reason code, additional info) and, for a local controller's
PublishFirmwareStatusNotification, the message they came in. The status column grows to 40 characters:
the security event InvalidFirmwareSigningCertificate (33) did not fit PostgreSQL's 32.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grant_event") as table:
        table.alter_column("status", existing_type=sa.String(32), type_=sa.String(40), existing_nullable=False)
        table.add_column(sa.Column("reason_code", sa.String(20), nullable=True))
        table.add_column(sa.Column("additional_info", sa.Text(), nullable=True))
        table.add_column(sa.Column("notification", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grant_event") as table:
        table.drop_column("notification")
        table.drop_column("additional_info")
        table.drop_column("reason_code")
        table.alter_column("status", existing_type=sa.String(40), type_=sa.String(32), existing_nullable=False)
