"""Migrations on SQLite and PostgreSQL: they build exactly the tables the code declares, repeatably."""

from __future__ import annotations

import subprocess

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import repo_service.db.models  # noqa: F401
from repo_service.db.migrate import current_revision, head_revision, upgrade
from repo_service.db.session import Database
from tests.support.fwrepo import FWREPO


def test_migrations_build_the_schema_the_models_declare(fresh_database_url: str) -> None:
    database = Database(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade(database)
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []
    database.dispose()


def test_db_upgrade_is_safe_to_repeat_and_to_run_from_several_nodes_at_once(fresh_database_url: str, tmp_path) -> None:
    command = [FWREPO, "db", "upgrade", "--database-url", fresh_database_url, "--data-dir", str(tmp_path)]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = [(node.wait(timeout=120), node.stderr.read()) for node in nodes]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
    again = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"revision {head_revision()}" in again.stdout
    database = Database(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    assert current_revision(database) == head_revision()
    database.dispose()
