"""Engines and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, Insert, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel

from repo_service.db.tenancy import open_session

from repo_service.domain.owner_files import PRIVATE_FILE, make_private_directory, withhold_from_others

log = logging.getLogger(__name__)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)

    @contextmanager
    def session(self, *, exclusive: bool = False) -> Iterator[Session]:
        """A session in the current tenant scope (``tenancy``), committed when the block ends, rolled back when it
        raises.

        exclusive is for read-check-write blocks: on SQLite, where SELECT ... FOR
        UPDATE does nothing, the transaction takes the write lock when it begins,
        so two of them cannot both act on the same old state.
        """
        bind = self.engine.execution_options(sqlite_begin_immediate=True) if exclusive else self.engine
        with open_session(bind) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, for SQLite on disk; None otherwise."""
        if self.engine.dialect.name != "sqlite" or not self.engine.url.database or self.engine.url.database == ":memory:":
            return None
        return Path(self.engine.url.database)

    def dispose(self) -> None:
        self.engine.dispose()


def without_jit(session: Session) -> None:
    """On PostgreSQL, no JIT compilation for the rest of the session's transaction: for reads that scan many rows.

    Row-level security makes the planner cost each row of a scan at about 8 (the policy's subquery), so a read
    of a 100,000-charger campaign passes jit_above_cost and jit_optimize_above_cost, and PostgreSQL spent 0.4 to
    0.9 s compiling queries that then ran in 0.1 to 0.3 s.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))


def insert_or_ignore(session: Session, table: type[SQLModel]) -> Insert:
    """INSERT whose rows that break a unique key are dropped by the database (no read first, no race)."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    return insert(table).on_conflict_do_nothing()


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        _private_database_file(Path(path))
    # The CLI writes (clients create, db upgrade) while `fwrepo serve` runs on
    # the same file: WAL lets readers go on, the busy timeout makes writers wait
    # for each other instead of failing with "database is locked".
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        # sqlite3's own transaction handling cannot say BEGIN IMMEDIATE: SQLAlchemy says BEGIN itself.
        connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_begin_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _private_database_file(path: Path) -> None:
    # The database holds grants, the audit trail and key hashes: 0600, made so before SQLite opens it, as
    # SQLite gives its -wal and -shm files the mode of the database file. Files an older fwrepo left
    # readable to others are tightened.
    make_private_directory(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if withhold_from_others(file):
                log.warning("%s was readable by other users: now only by its owner", file)
