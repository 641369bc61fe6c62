"""Real servers, started once per session: fwrepo itself, PostgreSQL databases, Ceph RGW, moto and CitrineOS.

Every test that touches the database runs twice: on SQLite and on
PostgreSQL (``FWREPO_TEST_DATABASE_URL``, a server URL; a scratch database is
made per run and dropped after). Without that variable the PostgreSQL runs
are skipped and say why.

The fixtures only start and stop things; what they start is built by the
modules in ``tests/support``, which tests import directly.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.builds import unique_vendor
from tests.support.campaigns import csv_agrees_with_report
from tests.support.citrineos import (
    CitrineOS,
    citrineos_or_skip,
    citrineos_unavailable_reason,
)
from tests.support.databases import POSTGRES_SKIP, scratch_postgres
from tests.support.fwrepo import Fwrepo, s3_environment, start_fwrepo, two_nodes
from tests.support.s3servers import (
    S3Server,
    ceph_unavailable_reason,
    running_ceph_rgw,
    running_moto,
)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if not os.environ.get("FWREPO_TEST_DATABASE_URL"):
        lines.append(POSTGRES_SKIP)
    reason = ceph_unavailable_reason()
    if reason:
        lines.append(f"Ceph RGW tests skipped: {reason}")
    reason = citrineos_unavailable_reason(build=False)
    if reason:
        lines.append(f"CitrineOS tests skipped: {reason}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used a CitrineOS shows the end of its log: most failures against it are told there."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, CitrineOS):
                report.sections.append((f"CitrineOS log {value.log}", value.log_tail(60)))
    return report


# -- databases --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get("FWREPO_TEST_DATABASE_URL")
    if not url:
        pytest.skip(POSTGRES_SKIP)
    return url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database of each kind, shared by the session's fwrepo server on it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'fwrepo.sqlite3'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    yield from scratch_postgres(server_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind for one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    yield from scratch_postgres(request.getfixturevalue("postgres_server_url"))


# -- S3 servers ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    reason = ceph_unavailable_reason()
    if reason:
        pytest.skip(f"Ceph RGW not available: {reason}")
    with running_ceph_rgw(tmp_path_factory.mktemp("ceph")) as server:
        yield server


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session", params=["ceph", "moto"])
def s3(request: pytest.FixtureRequest) -> S3Server:
    """Each real S3 implementation in turn."""
    return request.getfixturevalue(request.param)


# -- CitrineOS ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def citrineos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CitrineOS]:
    """One CitrineOS per xdist worker (a start is 6-14 s and 400 MB), shared by every test that never stops it."""
    with citrineos_or_skip(tmp_path_factory.mktemp("citrineos")) as instance:
        yield instance


@pytest.fixture
def own_citrineos(tmp_path: Path) -> Iterator[CitrineOS]:
    """A CitrineOS of the test's own, for a test that restarts or stops it."""
    with citrineos_or_skip(tmp_path) as instance:
        yield instance


# -- fwrepo itself -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fwrepo(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fwrepo]:
    """fwrepo on local storage, once on SQLite and once on PostgreSQL."""
    server = start_fwrepo(tmp_path_factory.mktemp("fwrepo"), FWREPO_DATABASE_URL=database_url)
    yield server
    # Every campaign the tests ran on it, whatever they checked themselves (issue 11: CSV and report agree).
    csv_agrees_with_report(server)
    server.stop()


@pytest.fixture
def nodes(postgres_server_url: str, ceph: S3Server, tmp_path: Path) -> Iterator[tuple[Fwrepo, Fwrepo]]:
    """Two fwrepo nodes on one PostgreSQL database and one Ceph RGW bucket, as a production pair runs."""
    shared = {
        **s3_environment(ceph, f"replicas-{secrets.token_hex(4)}"),
        "FWREPO_KEYS_DIR": str(tmp_path / "keys"),  # a shared volume in production
        "FWREPO_KEY_PASSPHRASE": secrets.token_urlsafe(24),
        "FWREPO_TOKEN_SECRET": secrets.token_urlsafe(32),
        "FWREPO_SHUTDOWN_GRACE": "1",
    }
    for database_url in scratch_postgres(postgres_server_url):
        yield from two_nodes(database_url, tmp_path, shared)


@pytest.fixture(scope="session")
def fwrepo_on_s3(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fwrepo]:
    """fwrepo on SQLite and each real S3 implementation."""
    server = start_fwrepo(tmp_path_factory.mktemp("fwrepo-s3"), **s3_environment(s3, f"fw-{secrets.token_hex(4)}"))
    yield server
    server.stop()


@pytest.fixture
def release(fwrepo: Fwrepo) -> Iterator[httpx.Client]:
    with fwrepo.client("release") as client:
        yield client


@pytest.fixture
def csms(fwrepo: Fwrepo) -> Iterator[httpx.Client]:
    with fwrepo.client("csms") as client:
        yield client


@pytest.fixture
def vendor() -> str:
    """A vendor of the test's own (see unique_vendor)."""
    return unique_vendor()
