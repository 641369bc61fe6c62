"""Schema upgrades, run at start-up and by `fwrepo db upgrade`."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from repo_service.db.session import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same on every node.
_MIGRATION_LOCK = 0x66777265706F


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def upgrade(database: Database) -> None:
    """Bring the schema to the newest revision; safe when several nodes start at once."""
    config = _config()
    with _sqlite_file_lock(database), database.engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            # Nodes starting together would otherwise race to create the same tables.
            connection.execute(text("SELECT pg_advisory_lock(:lock)"), {"lock": _MIGRATION_LOCK})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:lock)"), {"lock": _MIGRATION_LOCK})
                connection.commit()


@contextmanager
def _sqlite_file_lock(database: Database) -> Iterator[None]:
    """SQLite has no advisory locks and runs DDL outside transactions: lock a file beside it instead."""
    path = database.sqlite_path
    if path is None:
        yield
        return
    with open(path.with_name(path.name + ".migrate-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_revision(database: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
