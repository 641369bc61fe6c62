"""Real servers, started once per session: fwrepo itself, PostgreSQL databases, Ceph RGW and moto.

Every test that touches the database runs twice: on SQLite and on
PostgreSQL (``FWREPO_TEST_DATABASE_URL``, a server URL; a scratch database is
made per run and dropped after). Without that variable the PostgreSQL runs
are skipped and say why.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.s3servers import S3Server, ceph_unavailable_reason, running_ceph_rgw, running_moto

ROOT = Path(__file__).resolve().parent.parent
FWREPO = str(Path(sys.executable).with_name("fwrepo"))
TEST_MAX_UPLOAD = 48 * 1024 * 1024
POSTGRES_SKIP = (
    "PostgreSQL run skipped: set FWREPO_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB "
    "(.ci/run sets it to this machine's server)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if not os.environ.get("FWREPO_TEST_DATABASE_URL"):
        lines.append(POSTGRES_SKIP)
    reason = ceph_unavailable_reason()
    if reason:
        lines.append(f"Ceph RGW tests skipped: {reason}")
    return lines


# -- databases --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get("FWREPO_TEST_DATABASE_URL")
    if not url:
        pytest.skip(POSTGRES_SKIP)
    return url


def _scratch_postgres(server_url: str) -> Iterator[str]:
    import psycopg

    name = f"fwrepo_test_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database of each kind, shared by the session's fwrepo server on it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'fwrepo.sqlite3'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    yield from _scratch_postgres(server_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind for one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    yield from _scratch_postgres(request.getfixturevalue("postgres_server_url"))


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


def s3_environment(server: S3Server, bucket: str) -> dict[str, str]:
    return {
        "FWREPO_STORAGE": "s3",
        "FWREPO_S3_ENDPOINT_URL": server.endpoint_url,
        "FWREPO_S3_BUCKET": bucket,
        "FWREPO_S3_REGION": server.region,
        "FWREPO_S3_ACCESS_KEY_ID": server.access_key_id,
        "FWREPO_S3_SECRET_ACCESS_KEY": server.secret_access_key,
        "FWREPO_S3_PART_SIZE": str(5 * 1024 * 1024),
    }


# -- fwrepo itself -----------------------------------------------------------------------------


@dataclass
class Fwrepo:
    """A `fwrepo serve` process on a free port, with one API key per role."""

    data_dir: Path
    environment: dict[str, str]
    port: int = field(default_factory=free_port)
    ftps_port: int = field(default_factory=free_port)
    ftps_implicit_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        """The development CA the server's TLS certificate chains to."""
        return str(self.data_dir / "tls" / "ca.pem")

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FWREPO_DATA_DIR": str(self.data_dir),
            "FWREPO_PORT": str(self.port),
            "FWREPO_FTPS_PORT": str(self.ftps_port),
            "FWREPO_FTPS_IMPLICIT_PORT": str(self.ftps_implicit_port),
            "FWREPO_LOG_LEVEL": "info",
            "FWREPO_MAX_UPLOAD_BYTES": str(TEST_MAX_UPLOAD),
            **self.environment,
        }

    def cli(self, *arguments: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [FWREPO, *arguments], env=self.env, capture_output=True, text=True, timeout=120,
            input=stdin.decode() if stdin else None,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"fwrepo {' '.join(arguments)} failed ({result.returncode}): {result.stderr}")
        return result

    def start(self) -> Fwrepo:
        log = open(self.data_dir / "serve.log", "ab")
        self.process = subprocess.Popen([FWREPO, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fwrepo serve exited: {(self.data_dir / 'serve.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1, verify=self.tls()).status_code == 200:
                    return self
            except (httpx.HTTPError, OSError):
                time.sleep(0.1)
        raise RuntimeError("fwrepo serve did not answer within 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def key(self, role: str) -> str:
        if role not in self.keys:
            self.keys[role] = self.cli("clients", "create", "--name", f"test-{role}", "--role", role).stdout.strip()
        return self.keys[role]

    def client(self, role: str | None = "release") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key(role)}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, verify=self.tls())


def start_fwrepo(data_dir: Path, **environment: str) -> Fwrepo:
    return Fwrepo(data_dir=data_dir, environment=environment).start()


@pytest.fixture(scope="session")
def fwrepo(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fwrepo]:
    """fwrepo on local storage, once on SQLite and once on PostgreSQL."""
    server = start_fwrepo(tmp_path_factory.mktemp("fwrepo"), FWREPO_DATABASE_URL=database_url)
    yield server
    server.stop()


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
def vendor(request: pytest.FixtureRequest) -> str:
    """A vendor name no other test uses, so tests sharing a server do not see each other's firmware."""
    return f"V{secrets.token_hex(5)}"


def image(size: int = 100_000, seed: str | None = None) -> bytes:
    """Deterministic-looking but unique bytes for a firmware image."""
    block = secrets.token_bytes(64) if seed is None else seed.encode().ljust(64, b"\0")
    return (block * (size // len(block) + 1))[:size]


def upload(client: httpx.Client, vendor: str, version: str, content: bytes | None = None, **fields: object) -> httpx.Response:
    data: dict[str, object] = {"vendor": vendor, "models": fields.pop("models", "AC22"), "version": version, **fields}
    return client.post(
        "/api/v1/firmware", data=data, files={"file": ("fw.bin", content if content is not None else image())}
    )
