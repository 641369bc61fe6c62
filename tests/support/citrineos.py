"""A real CitrineOS for the test suite: the CitrineOS 1.8.3 peer kit (../shared/peers/citrineos), run on free ports.

The kit builds CitrineOS once per machine (``setup``, cached under
``CITRINEOS_HOME``) and runs one server per ``start`` against this machine's
PostgreSQL and RabbitMQ. Each instance here gets ports, a database and a
RabbitMQ vhost of its own: CitrineOS's queue names are fixed, so two instances
on one vhost take each other's messages (kit README, "Two instances at once"),
and pytest-xdist workers, other worktrees' test runs and several instances in
one test all share the one RabbitMQ.

Where CitrineOS cannot be had (no kit, a failed setup, no RabbitMQ or
PostgreSQL), ``citrineos_or_skip`` skips and says why, as the Ceph tests do.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.support.checkout import ROOT

__all__ = [
    "CitrineOS",
    "citrineos_kit",
    "citrineos_or_skip",
    "citrineos_unavailable_reason",
    "running_citrineos",
    "status_patch_applied",
]

KIT_VARIABLE = "FWREPO_CITRINEOS_KIT"
KIT_PLACES = (ROOT.parent / "shared" / "peers" / "citrineos", Path("/work/shared/peers/citrineos"))
DEFAULT_HOME = "/var/tmp/citrineos-peer"
RABBITMQ = ("127.0.0.1", 5672)
AMQP_SERVER = "amqp://guest:guest@127.0.0.1:5672"
# The kit's defaults for reset-db and start; an override reaches both through the environment.
POSTGRES = (os.environ.get("CITRINEOS_PG_HOST", "127.0.0.1"), int(os.environ.get("CITRINEOS_PG_PORT", "5432")))
POSTGRES_ADMIN = os.environ.get("CITRINEOS_PG_ADMIN_USER", "postgres")
# A cold setup measured 63-88 s (npm ci and tsc), 173 s on a loaded machine; a warm one under a second.
SETUP_SECONDS = 900
# start to /docs/json: 5-7 s measured, 8.8-14 s on a busy machine, plus 2-3 s for a new vhost; three xdist
# workers starting at once on two cores are the busy machine.
START_SECONDS = 120
# SIGTERM to exit measured 2.1-4.1 s.
STOP_SECONDS = 30


def citrineos_kit() -> Path | None:
    """The kit's directory: FWREPO_CITRINEOS_KIT, else the shared peers folder beside the checkout, else /work's."""
    configured = os.environ.get(KIT_VARIABLE)
    places = [Path(configured)] if configured else list(KIT_PLACES)
    return next((place for place in places if (place / "start").is_file()), None)


def citrineos_home() -> Path:
    return Path(os.environ.get("CITRINEOS_HOME", DEFAULT_HOME))


def _kit_environment(**settings: str) -> dict[str, str]:
    return {**os.environ, "CITRINEOS_HOME": str(citrineos_home()), **settings}


def _port_open(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def _kit_error(output: str) -> str:
    """The kit ends a failure with one `citrineos-peer: ERROR: ...` line; that line, or the output's last."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in lines if "ERROR:" in line), lines[-1] if lines else "no output")


def citrineos_unavailable_reason(*, build: bool = True) -> str | None:
    """None when a CitrineOS can be started here, else why not, in one line.

    build=False only looks (for the report header); otherwise the kit's setup runs first, once per process:
    under a second when the build is cached, a few minutes on a fresh machine.
    """
    kit = citrineos_kit()
    if kit is None:
        where = os.environ.get(KIT_VARIABLE) or " or ".join(str(place) for place in KIT_PLACES)
        return f"no CitrineOS peer kit at {where} (set {KIT_VARIABLE})"
    if not _port_open(RABBITMQ):
        return "RabbitMQ is not answering on {}:{}".format(*RABBITMQ)
    if not _port_open(POSTGRES):
        return "PostgreSQL is not answering on {}:{}".format(*POSTGRES)
    if not build:
        return None if (citrineos_home() / "built.stamp").is_file() else f"CitrineOS not built: run {kit}/setup"
    return _setup_failure(kit)


@functools.cache
def _setup_failure(kit: Path) -> str | None:
    # setup serialises concurrent runs (xdist workers, other checkouts) with flock on its cache directory.
    try:
        result = subprocess.run([str(kit / "setup")], env=_kit_environment(), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=SETUP_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return f"{kit}/setup did not finish in {SETUP_SECONDS} s"
    if result.returncode != 0:
        return f"{kit}/setup failed: {_kit_error(result.stderr + result.stdout)}"
    return None


def _free_ports(count: int) -> list[int]:
    # All probes open at once, so the ports differ; another process may still take one before CitrineOS binds
    # it, which start reports as "cannot bind" and running_citrineos answers with fresh ports.
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


class _PortTaken(RuntimeError):
    """A probed port was taken before CitrineOS bound it: worth a try on other ports."""


@dataclass
class CitrineOS:
    """One CitrineOS server: its REST API, OCPP 2.0.1 and 1.6 WebSocket ports, database and AMQP vhost."""

    kit: Path
    run_dir: Path
    log: Path
    http_port: int
    ws201_port: int
    ws16_port: int
    db: str
    vhost: str
    exchange: str = "citrineos"
    tenant_id: int = 1
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws201_url(self) -> str:
        """Where an OCPP 2.0.1 station connects, as ws201_url/<station id> with subprotocol ocpp2.0.1."""
        return f"ws://127.0.0.1:{self.ws201_port}"

    @property
    def ws16_url(self) -> str:
        """Where an OCPP 1.6J station connects, as ws16_url/<station id> with subprotocol ocpp1.6."""
        return f"ws://127.0.0.1:{self.ws16_port}"

    @property
    def amqp_url(self) -> str:
        """The RabbitMQ vhost CitrineOS publishes on (headers exchange `exchange`)."""
        return f"{AMQP_SERVER}/{quote(self.vhost, safe='')}"

    def environment(self) -> dict[str, str]:
        return _kit_environment(
            CITRINEOS_DB=self.db, CITRINEOS_AMQP_VHOST=self.vhost, CITRINEOS_AMQP_EXCHANGE=self.exchange,
            CITRINEOS_HTTP_PORT=str(self.http_port), CITRINEOS_WS201_PORT=str(self.ws201_port),
            CITRINEOS_WS16_PORT=str(self.ws16_port),
            # Security profile 1 (basic auth) is not what the tests speak: one port fewer to find free.
            CITRINEOS_WS201_SP1_PORT="0",
            CITRINEOS_RUN_DIR=str(self.run_dir))

    def reset_db(self) -> None:
        result = subprocess.run([str(self.kit / "reset-db")], env=self.environment(), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=STOP_SECONDS * 4, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"reset-db of {self.db} failed: {_kit_error(result.stderr + result.stdout)}\n"
                               f"{result.stderr[-2000:]}")

    def start(self) -> None:
        """Start the server and return once its REST API answers; the OCPP ports open before it does."""
        with self.log.open("ab") as output:
            output.write(f"\n=== start at {time.strftime('%H:%M:%S')}\n".encode())
            output.flush()
            # Its own process group: SIGTERM reaches node (start execs it) and anything it spawned, and a Ctrl-C
            # aimed at pytest does not stop it under a test that is still tearing down.
            self.process = subprocess.Popen([str(self.kit / "start")], env=self.environment(),
                                            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while not _answers(f"{self.rest_url}/docs/json"):
            if self.process.poll() is not None:
                tail = self.log_tail()
                error = _PortTaken if "cannot bind" in tail else RuntimeError
                raise error(f"CitrineOS exited with code {self.process.returncode} while starting; "
                            f"log {self.log}:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"CitrineOS did not answer {self.rest_url}/docs/json in {START_SECONDS} s; "
                                   f"log {self.log}:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to its process group, and wait for it (upstream exits with code 1 about 2 s later)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports, database and vhost: a CSMS restarting mid-campaign."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def discard(self) -> None:
        """Drop its database and vhost once it is stopped, so runs do not pile them up on the shared servers."""
        with psycopg.connect(host=POSTGRES[0], port=POSTGRES[1], user=POSTGRES_ADMIN, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], capture_output=True,
                       timeout=STOP_SECONDS, check=False)


@contextmanager
def running_citrineos(tmp_dir: Path) -> Iterator[CitrineOS]:
    """A CitrineOS on free ports with a new database and vhost, stopped (and both dropped) on exit.

    Runs the kit's setup first (cached); raises RuntimeError, with the reason and the log's tail, when it
    cannot be started. Its log is tmp_dir/citrineos-<id>.log, kept after the run.
    """
    kit = citrineos_kit()
    reason = citrineos_unavailable_reason()
    if kit is None or reason is not None:
        raise RuntimeError(reason)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(4)
    attempts = 3
    for attempt in range(1, attempts + 1):
        http_port, ws201_port, ws16_port = _free_ports(3)
        instance = CitrineOS(kit=kit, run_dir=tmp_dir / f"citrineos-{name}", log=tmp_dir / f"citrineos-{name}.log",
                             http_port=http_port, ws201_port=ws201_port, ws16_port=ws16_port,
                             db=f"citrine_fwrepo_{name}", vhost=f"fwrepo-{name}")
        try:
            if attempt == 1:
                instance.reset_db()
            instance.start()
            break
        except _PortTaken:
            if attempt == attempts:
                instance.discard()
                raise
        except BaseException:
            instance.stop()
            instance.discard()
            raise
    try:
        yield instance
    finally:
        instance.stop()
        instance.discard()


@contextmanager
def citrineos_or_skip(tmp_dir: Path) -> Iterator[CitrineOS]:
    """running_citrineos, or a skip that says why CitrineOS cannot be had here."""
    reason = citrineos_unavailable_reason()
    if reason is not None:
        pytest.skip(f"CitrineOS not available: {reason}")
    with running_citrineos(tmp_dir) as instance:
        yield instance


def status_patch_applied() -> bool:
    """Whether the build answers OCPP 1.6 FirmwareStatusNotification (setup --apply-16-status-patch); plain
    upstream 1.8.3 answers it with CALLERROR NotSupported (citrineos#216)."""
    stamp = citrineos_home() / "built.stamp"
    return stamp.is_file() and "patch16=none" not in stamp.read_text()
