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
    """The URL of a new empty database on the server, owned by a new role that is not a superuser (as fwrepo's
    own should be: a superuser passes row-level security by); both are dropped when the generator closes.

    The server must let the new role in without a password (trust for local connections, as here)."""
    name = f"fwrepo_test_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOBYPASSRLS')
        connection.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    try:
        scheme, _, rest = server_url.partition("://")
        yield f"{scheme}://{name}@{rest.split('@', 1)[-1].rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'DROP ROLE IF EXISTS "{name}"')
