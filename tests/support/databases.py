"""Scratch PostgreSQL databases: one made per run on the server FWREPO_TEST_DATABASE_URL names, dropped after."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg

POSTGRES_SKIP = (
    "PostgreSQL run skipped: set FWREPO_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB "
    "(.ci/run sets it to this machine's server)"
)


def scratch_postgres(server_url: str) -> Iterator[str]:
    """The URL of a new empty database on the server; the database is dropped when the generator closes."""
    name = f"fwrepo_test_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
