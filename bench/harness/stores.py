"""The stores fwrepo runs on in a benchmark: a throwaway Ceph RGW, scratch PostgreSQL databases."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness import GiB, say
from harness.procs import pids_mentioning, proc_cpu_seconds

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --------------------------------------------------------------------------- Ceph RGW


class CephUnavailable(RuntimeError):
    """Ceph is not installed here or did not start: the message says why."""


class Ceph:
    """A single-node Ceph RGW of tests/support/s3servers.py, with its daemons' pids for CPU accounting."""

    def __init__(self, s3: Any, directory: Path) -> None:
        self.s3 = s3  # tests.support.s3servers.S3Server
        self.directory = directory
        self.pids = pids_mentioning(str(directory))  # mon, osd, rgw: their command lines name the directory

    @property
    def endpoint_url(self) -> str:
        return self.s3.endpoint_url

    def client(self) -> Any:
        """A boto3 S3 client (SigV4, path style) for this RGW."""
        return self.s3.client()

    def cpu(self) -> float | None:
        """CPU seconds of the Ceph daemons so far; None when they could not be found."""
        return sum(proc_cpu_seconds(pid) for pid in self.pids) if self.pids else None

    def fwrepo_settings(self, bucket: str) -> dict[str, str]:
        """`fwrepo serve`'s settings for FWREPO_STORAGE=s3 on a bucket of this RGW."""
        return {
            "FWREPO_STORAGE": "s3", "FWREPO_S3_ENDPOINT_URL": self.s3.endpoint_url, "FWREPO_S3_BUCKET": bucket,
            "FWREPO_S3_REGION": self.s3.region, "FWREPO_S3_ACCESS_KEY_ID": self.s3.access_key_id,
            "FWREPO_S3_SECRET_ACCESS_KEY": self.s3.secret_access_key,
        }


def start_ceph(stack: ExitStack, directory: Path, memstore_bytes: int = 0) -> Ceph:
    """A fresh Ceph RGW under directory, stopped by stack; its memstore OSD (RAM) holds at least memstore_bytes.

    Raises CephUnavailable with the reason when there is none.
    """
    from tests.support.s3servers import DEFAULT_MEMSTORE_BYTES, ceph_unavailable_reason, running_ceph_rgw

    reason = ceph_unavailable_reason()
    if reason is not None:
        raise CephUnavailable(reason)
    memstore = max(DEFAULT_MEMSTORE_BYTES, memstore_bytes)
    say(f"starting Ceph RGW (memstore capped at {memstore / GiB:.1f} GiB)")
    try:
        s3 = stack.enter_context(running_ceph_rgw(directory, memstore_bytes=memstore))
    except RuntimeError as error:
        raise CephUnavailable(f"Ceph RGW did not start: {str(error).splitlines()[0]}") from error
    say(f"Ceph RGW at {s3.endpoint_url}")
    return Ceph(s3, directory)


# --------------------------------------------------------------------------- PostgreSQL


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def admin_sql(url: str, sql: str) -> str:
    """One statement outside a transaction (CREATE/DROP DATABASE) on the server of url; the first value."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        cursor = connection.execute(sql)
        row = cursor.fetchone() if cursor.description else None
        return str(row[0]) if row else ""


def postgres_version(url: str) -> str:
    """The server's version; raises when it cannot be reached."""
    return admin_sql(url, "SHOW server_version")


def postgres_unavailable(url: str) -> str | None:
    """Why the PostgreSQL server of url cannot be used, None when it can."""
    try:
        postgres_version(url)
    except Exception as error:  # noqa: BLE001 - psycopg's and the socket's errors alike: the reason is the message
        return f"PostgreSQL at {urlsplit(url).netloc.split('@')[-1]} not reachable: {error}"
    return None


def scratch_database(stack: ExitStack, url: str, name: str, own_role: bool = False) -> str:
    """CREATE DATABASE name on the server of url now, DROP it at clean-up (or earlier: drop_database); its URL.

    own_role: owned by a new role of the same name that is no superuser, and the URL connects as it, as fwrepo's
    own role should be (a superuser passes row-level security by); the server must let it in without a password.
    """
    if not own_role:
        admin_sql(url, f'CREATE DATABASE "{name}"')
        stack.callback(drop_database, url, name)
        return with_database(url, name)
    admin_sql(url, f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOBYPASSRLS')
    stack.callback(admin_sql, url, f'DROP ROLE IF EXISTS "{name}"')
    admin_sql(url, f'CREATE DATABASE "{name}" OWNER "{name}"')
    stack.callback(drop_database, url, name)
    parts = urlsplit(with_database(url, name))
    return urlunsplit((parts.scheme, f"{name}@{parts.netloc.split('@')[-1]}", parts.path, parts.query, ""))


def drop_database(url: str, name: str) -> None:
    try:
        admin_sql(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as error:  # noqa: BLE001 - say so and go on cleaning up
        print(f"could not drop scratch database {name}: {error}", file=sys.stderr)


def redact(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    netloc = parts.netloc.split("@")[-1]
    user = parts.username
    return urlunsplit((parts.scheme, f"{user}@{netloc}" if user else netloc, parts.path, "", ""))
