"""Schema upgrades, run at start-up and by `fwrepo db upgrade`."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from repo_service.db.session import Database
from repo_service.db.tenancy import EVERY_TENANT, SETTING

log = logging.getLogger(__name__)
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
            # A migration reads and rewrites every tenant's rows, past the row-level security of 0017.
            connection.execute(text("SELECT set_config(:setting, :every, false)"),
                               {"setting": SETTING, "every": EVERY_TENANT})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            with _alembic_quiet():
                before = _revision(connection)
                command.upgrade(config, "head")
                connection.commit()
                after = _revision(connection)
            if after != before:
                log.info("database schema upgraded from %s to %s", before or "empty", after)
        finally:
            if postgres:
                connection.execute(text("SELECT set_config(:setting, '', false)"), {"setting": SETTING})
                connection.execute(text("SELECT pg_advisory_unlock(:lock)"), {"lock": _MIGRATION_LOCK})
                connection.commit()


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic narrates each step at INFO (ten lines on a first start); fwrepo says what changed in one,
    and alembic's own lines show only when debugging."""
    alembic = logging.getLogger("alembic")
    level = alembic.level
    if not alembic.isEnabledFor(logging.DEBUG):
        alembic.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic.setLevel(level)


def _revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _sqlite_file_lock(database: Database) -> Iterator[None]:
    """SQLite has no advisory locks and runs DDL outside transactions: lock a file beside it instead."""
    path = database.sqlite_path
    if path is None:
        yield
        return
    # 0600 like the database: another local user holding a lock on it could stall every migration.
    descriptor = os.open(path.with_name(path.name + ".migrate-lock"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return _revision(connection)
