"""Schema upgrades, run at start-up and by `fwrepo db upgrade`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from repo_service.db.session import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same on every node.
_MIGRATION_LOCK = 0x66777265706F


def upgrade(database: Database) -> None:
    """Bring the schema to the newest revision; safe when several nodes start at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Nodes starting together would otherwise race to create the same tables.
            connection.execute(text("SELECT pg_advisory_lock(:lock)"), {"lock": _MIGRATION_LOCK})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:lock)"), {"lock": _MIGRATION_LOCK})
                connection.commit()


def current_revision(database: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
