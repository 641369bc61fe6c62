"""The MD5 of each build, which OCPP 2.0.1 PublishFirmware sends as its checksum.

Builds stored before are left null: a migration has the database but not the storage, and reading every image
(gigabytes on S3) would hold start-up for as long. `fwrepo storage checksum` fills them by reading each once.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("firmware") as table:
        table.add_column(sa.Column("md5", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("firmware") as table:
        table.drop_column("md5")
