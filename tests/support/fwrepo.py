"""A running fwrepo: a `fwrepo serve` process on free ports, its CLI, API clients and curl that trust it."""

from __future__ import annotations

import os
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

from tests.support.admin import create_key, create_tenant
from tests.support.cli_process import run_fwrepo
from tests.support.s3servers import S3Server

FWREPO = str(Path(sys.executable).with_name("fwrepo"))
TEST_MAX_UPLOAD = 48 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    def keys_dir(self) -> Path:
        """Where its signing keys and the firmware root its chargers trust are (shared by nodes that share it)."""
        return Path(self.environment.get("FWREPO_KEYS_DIR", self.data_dir / "keys"))

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
        # A process of its own per command, forked from one with fwrepo imported (tests/support/cli_process.py).
        result = run_fwrepo(FWREPO, arguments, self.env, timeout=120, stdin=stdin.decode() if stdin else None)
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

    def key(self, role: str, tenant: str | None = None) -> str:
        """A key of role, in tenant (made as `fwrepo tenants create` makes it the first time it is named) or the
        default."""
        name = role if tenant is None else f"{tenant}/{role}"
        if name not in self.keys:
            # In this process, as the commands do it (tests/support/admin.py): a subprocess each is a second.
            if tenant is not None and not any(known.startswith(f"{tenant}/") for known in self.keys):
                create_tenant(self.env, tenant)
            self.keys[name] = create_key(self.env, f"test-{role}", role, tenant)
        return self.keys[name]

    def client(self, role: str | None = "release", tenant: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key(role, tenant)}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, verify=self.tls())


def start_fwrepo(data_dir: Path, **environment: str) -> Fwrepo:
    return Fwrepo(data_dir=data_dir, environment=environment).start()


def two_nodes(database_url: str, tmp_path: Path, environment: dict[str, str]) -> Iterator[tuple[Fwrepo, Fwrepo]]:
    """Two `fwrepo serve` nodes on one database, each with a data directory of its own under tmp_path; they
    are stopped when the generator closes. environment holds what nodes share (keys directory, secrets)."""
    started: list[Fwrepo] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            node = Fwrepo(data_dir=tmp_path / name, environment={**environment, "FWREPO_DATABASE_URL": database_url})
            started.append(node.start())
        started[1].keys = started[0].keys  # API keys live in the shared database
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()


def s3_environment(server: S3Server, bucket: str) -> dict[str, str]:
    """The settings that put a fwrepo's firmware into a bucket of this S3 server."""
    return {
        "FWREPO_STORAGE": "s3",
        "FWREPO_S3_ENDPOINT_URL": server.endpoint_url,
        "FWREPO_S3_BUCKET": bucket,
        "FWREPO_S3_REGION": server.region,
        "FWREPO_S3_ACCESS_KEY_ID": server.access_key_id,
        "FWREPO_S3_SECRET_ACCESS_KEY": server.secret_access_key,
        "FWREPO_S3_PART_SIZE": str(5 * 1024 * 1024),
    }


def curl(fwrepo: Fwrepo, *arguments: str) -> subprocess.CompletedProcess[str]:
    """curl as a charger runs it, trusting the server's CA; a minute bounds a transfer that hangs."""
    return subprocess.run(["curl", "-sS", "--cacert", fwrepo.ca, *arguments], capture_output=True, text=True,
                          timeout=60)
