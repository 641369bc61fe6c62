"""Download records by client address and time: FTPS bans count recent wrong logins on every node.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_download_record_address", "download_record", ["client_address", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_download_record_address", table_name="download_record")
