"""Throwaway S3 servers for the test suite: a real Ceph RADOS Gateway, or moto.

The storage layer must be exercised against a real S3 implementation, because
emulators agree with boto3 on things real servers do not (checksums, error
shapes, multipart edge cases). Ceph RGW is that real implementation; moto's
server mode is only the fallback where the Ceph packages cannot be installed,
and the caller is expected to say so when it falls back.

Both servers run as separate processes speaking HTTP on 127.0.0.1, so the code
under test goes through a real socket, exactly as in production, and a fault
proxy can be put in between.

The project must stand alone from a clean clone, so everything needed to bring
Ceph up is here rather than in external shell scripts.
"""

from __future__ import annotations

import errno
import json
import os
import random
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.config import Config

__all__ = [
    "CEPH_BINARIES",
    "S3Server",
    "ceph_unavailable_reason",
    "running_ceph_rgw",
    "running_moto",
]

REGION = "us-east-1"

# Every binary the launcher invokes; checking them all up front turns a
# half-installed Ceph into a clear skip/fallback reason instead of a mid-start crash.
CEPH_BINARIES: tuple[str, ...] = (
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph",
    "monmaptool",
    "ceph-authtool",
)
CEPH_PACKAGES = "ceph-mon ceph-osd radosgw ceph-common"

# Memstore keeps object data in RAM; the cap bounds what a runaway test can eat.
DEFAULT_MEMSTORE_BYTES = 4 * 1024**3
# Daemons get this long to exit after SIGTERM before SIGKILL, per daemon.
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class S3Server:
    name: str  # "ceph-rgw" or "moto"
    endpoint_url: str  # http://127.0.0.1:PORT
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    def client(
        self,
        *,
        endpoint_url: str | None = None,
        config: Config | None = None,
    ) -> BaseClient:
        """A boto3 S3 client for this server.

        ``endpoint_url`` lets a test reach the same server through a
        FaultProxy with the same credentials; ``config`` is merged over the
        defaults (e.g. short timeouts, no retries for fault tests).
        """
        import boto3
        from botocore.config import Config

        base = Config(
            # RGW here is addressed by IP, where virtual-host buckets cannot resolve.
            s3={"addressing_style": "path"},
            # botocore >= 1.36 adds a CRC32 to every upload by default. Over
            # plain HTTP it goes in a header that Ceph 16 ignores, but over
            # HTTPS botocore switches to aws-chunked bodies with a trailing
            # checksum, which Ceph 16 rejects (MissingContentLength on every
            # PutObject/UploadPart; measured). Production may use TLS, so keep
            # the tests on the same, working setting: checksums only where an
            # operation requires them, as boto3 did before 1.36.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        if config is not None:
            base = base.merge(config)
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=base,
        )


# --------------------------------------------------------------------------- helpers


def _free_ports(count: int) -> list[int]:
    # Racy by nature (a port is released before the server binds it), but the
    # ephemeral range is large and the callers retry on a clash. Holding all
    # probe sockets open at once guarantees the ports differ from each other.
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _messenger_port_window() -> tuple[int, int]:
    """A 200-port window for the OSD's messengers, below the ephemeral range.

    The mon and RGW ports come from the ephemeral range (via _free_ports), so a
    window below it can never collide with them; the window is random so two
    clusters on one machine (e.g. pytest-xdist) rarely share one, and when they
    do Ceph simply binds the next free port inside it.
    """
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    top = max(low - 200, 10200)
    start = random.randrange(10000, top, 100)
    return start, start + 199


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _logs_tail(log_dir: Path, lines: int = 15) -> str:
    chunks = []
    for path in sorted(log_dir.glob("*")):
        if path.is_file():
            chunks.append(f"== {path}\n{_tail(path, lines)}")
    return "\n".join(chunks)


def _clean_env() -> dict[str, str]:
    # The ceph CLI is a /usr/bin/python3 script; a venv's PYTHONPATH/PYTHONHOME
    # would make it import the wrong modules. CEPH_ARGS/CEPH_CONF from the
    # developer's shell must not redirect our throwaway cluster to a real one.
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "CEPH_ARGS", "CEPH_CONF", "CEPH_KEYRING"):
        env.pop(key, None)
    return env


def _stop(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    # Only ever signal our own child, by its Popen handle: the PID cannot have
    # been reused while we have not reaped it, and wait() reaps it so no zombie
    # is left behind.
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def _http_answers(url: str, timeout: float = 1.0) -> bool:
    # Any HTTP status counts: we only need to know the server is serving.
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- Ceph


def _admin_socket(path: Path, command: dict[str, str], timeout: float = 2.0) -> object:
    """One command over a Ceph daemon's admin socket (what `ceph daemon` does).

    Protocol: JSON command terminated by NUL; reply is a 4-byte big-endian
    length followed by that many bytes of JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(command).encode() + b"\0")
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"admin socket {path} closed mid-reply")
            buf += chunk
    return json.loads(buf[4:])


def _osd_active(asok: Path) -> bool:
    # "active" means the OSD has seen itself marked up in the osdmap.
    try:
        status = _admin_socket(asok, {"prefix": "status"})
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("state") == "active"


def ceph_unavailable_reason() -> str | None:
    """None when Ceph RGW can be started here, else a human-readable reason."""
    missing = [b for b in CEPH_BINARIES if shutil.which(b) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not installed: run make test as root to install it "
        f"(apt-get install -y --no-install-recommends {CEPH_PACKAGES})"
    )


def _ceph_conf(
    *,
    cluster_dir: Path,
    fsid: str,
    mon_port: int,
    rgw_port: int,
    ms_window: tuple[int, int],
    memstore_bytes: int,
) -> str:
    d = cluster_dir
    # "$name"/"$cluster"/"$id" are Ceph metavariables, expanded per daemon.
    return f"""\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
# msgr2 only: one port per daemon role, nothing on the well-known 6789.
ms bind msgr1 = false
ms bind msgr2 = true
ms bind port min = {ms_window[0]}
ms bind port max = {ms_window[1]}
# No cephx: nothing to provision, and the cluster is loopback-only and throwaway.
auth cluster required = none
auth service required = none
auth client required = none
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
pid file = {d}/run/$name.pid
crash dir = {d}/crash
log to stderr = false
err to stderr = false
# A single OSD can only ever hold one replica.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# Do not go read-only/HEALTH_ERR just because the CI disk is fairly full.
mon data avail warn = 2
mon data avail crit = 1
mgr initial modules =
# RGW creates ~14 pools at first start; with the default 1 s paxos batching
# each costs a monitor round (start-up ~13 s instead of ~1.6 s).
paxos propose interval = 0.01
paxos min wait = 0.001
mon allow insecure global id reclaim = false
auth allow insecure global id reclaim = false

[mon]
mon data = {d}/mon/$cluster-$id
mon cluster log file = {d}/log/cluster.log

[osd]
osd data = {d}/osd/$cluster-$id
# RAM-backed store: fast, nothing written to disk, capped below.
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd memory target = 939524096
osd op num shards = 2
osd op num threads per shard = 2

[client]
log file = {d}/log/$name.log

[client.rgw.a]
# radosgw defaults to ms_mon_client_mode=secure, which needs cephx; with
# auth=none it loops on "get_initial_auth_request returned -13" and never
# serves HTTP unless crc mode is allowed.
ms mon client mode = crc
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw enable usage log = false
rgw thread pool size = 64
# Deleted/overwritten data is garbage-collected after 2 h by default, which
# with memstore means it sits in RAM; collect it within a minute instead.
rgw gc obj min wait = 30
rgw gc processor period = 30
rgw gc processor max time = 30
"""


class _DaemonExitedError(RuntimeError):
    def __init__(self, name: str, returncode: int) -> None:
        # Ceph daemons exit with the errno of a fatal setup error (98 when a
        # port is taken, where the log itself says nothing), so name it.
        why = f" ({os.strerror(returncode)}?)" if 1 < returncode < 134 else ""
        super().__init__(f"{name} exited with code {returncode}{why} during start-up")
        self.returncode = returncode


class _CephCluster:
    """The processes and files of one throwaway cluster, for start and stop."""

    def __init__(self, cluster_dir: Path, timeout: float) -> None:
        self.dir = cluster_dir
        self.conf = cluster_dir / "ceph.conf"
        self.log_dir = cluster_dir / "log"
        self.timeout = timeout
        self.env = _clean_env()
        # Start order; stopped in reverse because radosgw hangs on shutdown
        # once the mon/osd it talks to are gone.
        self.daemons: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self, name: str, argv: Sequence[str]) -> str:
        """Run a one-shot tool, returning stdout; its output is kept in the log dir."""
        try:
            res = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self.env,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{name} timed out after {self.timeout:.0f} s: {argv}"
            ) from exc
        (self.log_dir / f"{name}.out").write_bytes(res.stdout + res.stderr)
        if res.returncode != 0:
            raise RuntimeError(
                f"{name} failed (exit {res.returncode}): {' '.join(argv)}\n"
                + (res.stderr or res.stdout).decode(errors="replace")[-2000:]
            )
        return res.stdout.decode()

    def start_daemon(self, name: str, argv: Sequence[str]) -> None:
        # Foreground (-f) so the PID we hold is the daemon itself, not a
        # forked-off parent; a new session so a Ctrl-C aimed at pytest is not
        # delivered to the daemons before we stop them in the right order.
        out = (self.log_dir / f"{name}.stdout").open("wb")
        try:
            proc = subprocess.Popen(
                [*argv, "-f", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        finally:
            out.close()
        self.daemons.append((name, proc))

    def check_alive(self) -> None:
        for name, proc in self.daemons:
            if proc.poll() is not None:
                raise _DaemonExitedError(name, proc.returncode)

    def wait_for(
        self, what: str, predicate: Callable[[], bool], interval: float = 0.05
    ) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self.check_alive()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {self.timeout:.0f} s waiting for {what}"
                )
            time.sleep(interval)

    def stop(self) -> None:
        for _name, proc in reversed(self.daemons):
            _stop(proc)
        self.daemons.clear()


class _PortInUseError(RuntimeError):
    """A daemon lost the race for a port probed as free; worth another try."""


def _start_ceph(
    base_dir: Path, memstore_bytes: int, timeout: float
) -> tuple[_CephCluster, S3Server]:
    cluster_dir = Path(tempfile.mkdtemp(prefix="ceph-rgw.", dir=base_dir))
    for sub in ("run", "log", "mon", "osd", "rgw", "crash"):
        (cluster_dir / sub).mkdir()
    mon_port, rgw_port = _free_ports(2)
    fsid = str(uuid.uuid4())
    cluster = _CephCluster(cluster_dir, timeout)
    cluster.conf.write_text(
        _ceph_conf(
            cluster_dir=cluster_dir,
            fsid=fsid,
            mon_port=mon_port,
            rgw_port=rgw_port,
            ms_window=_messenger_port_window(),
            memstore_bytes=memstore_bytes,
        )
    )
    conf = str(cluster.conf)
    keyring = str(cluster_dir / "keyring")
    monmap = str(cluster_dir / "monmap")
    endpoint = f"http://127.0.0.1:{rgw_port}"
    # The shape RGW itself generates: 20 upper-alnum chars / 40-char secret.
    alphabet = string.ascii_uppercase + string.digits
    access_key = "".join(secrets.choice(alphabet) for _ in range(20))
    secret_key = secrets.token_urlsafe(30)[:40]

    try:
        # --- monitor
        cluster.run(
            "mon-keyring",
            ["ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon."]
            + ["--cap", "mon", "allow *"],
        )
        cluster.run(
            "monmaptool",
            ["monmaptool", "--create", "--fsid", fsid, "--addv", "a"]
            + [f"[v2:127.0.0.1:{mon_port}]", monmap],
        )
        cluster.run(
            "mon-mkfs",
            ["ceph-mon", "-c", conf, "--mkfs", "-i", "a"]
            + ["--monmap", monmap, "--keyring", keyring],
        )
        cluster.start_daemon("mon.a", ["ceph-mon", "-i", "a"])
        cluster.wait_for("ceph-mon to listen", lambda: _port_open(mon_port))

        # --- OSD: register it with the mon, then create its (RAM) store.
        osd_uuid = str(uuid.uuid4())
        osd_id = cluster.run(
            "osd-new",
            ["ceph", "-c", conf, "--connect-timeout", str(int(timeout))]
            + ["osd", "new", osd_uuid],
        ).strip()
        if not osd_id.isdigit():
            raise RuntimeError(f"'ceph osd new' returned {osd_id!r}, not an OSD id")
        (cluster_dir / "osd" / f"ceph-{osd_id}").mkdir()
        cluster.run(
            "osd-mkfs",
            ["ceph-osd", "-c", conf, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid],
        )
        cluster.start_daemon(f"osd.{osd_id}", ["ceph-osd", "-i", osd_id])
        # RGW must not start before the OSD is up: its first writes would
        # find no OSD and be retried only on the client's 5 s objecter tick
        # (measured: 5.5 s start-up instead of 0.6 s). The admin socket
        # answers in microseconds, unlike a `ceph osd dump` poll (~0.3 s each).
        osd_asok = cluster_dir / "run" / f"osd.{osd_id}.asok"
        cluster.wait_for("ceph-osd to boot", lambda: _osd_active(osd_asok))

        # --- RADOS Gateway
        cluster.start_daemon("rgw.a", ["radosgw", "-n", "client.rgw.a"])
        cluster.wait_for(
            f"radosgw to serve HTTP on {endpoint}", lambda: _http_answers(endpoint)
        )

        # --- S3 user. Only after RGW is serving: RGW creates the default
        # realm/zone on first start, and a concurrent radosgw-admin would race
        # it to create them.
        out = cluster.run(
            "user-create",
            ["radosgw-admin", "-c", conf, "user", "create", "--uid", "testuser"]
            + ["--display-name", "testuser"]
            + ["--access-key", access_key, "--secret-key", secret_key],
        )
        keys = json.loads(out).get("keys", [])
        if not any(k.get("access_key") == access_key for k in keys):
            raise RuntimeError(f"radosgw-admin did not create our key: {out[:500]}")
    except Exception as exc:
        # Stop first: the logs are only complete once the daemons have exited.
        cluster.stop()
        error = _PortInUseError if _exited_for_port(exc) else RuntimeError
        raise error(
            f"Ceph RGW failed to start ({exc}); logs in {cluster.log_dir}:\n"
            + _logs_tail(cluster.log_dir)
        ) from exc
    except BaseException:
        cluster.stop()  # e.g. Ctrl-C during start-up: leave nothing running
        raise

    server = S3Server(
        name="ceph-rgw",
        endpoint_url=endpoint,
        access_key_id=access_key,
        secret_access_key=secret_key,
        region=REGION,
    )
    return cluster, server


def _exited_for_port(exc: Exception) -> bool:
    return isinstance(exc, _DaemonExitedError) and exc.returncode == errno.EADDRINUSE


@contextmanager
def running_ceph_rgw(
    base_dir: Path,
    *,
    memstore_bytes: int = DEFAULT_MEMSTORE_BYTES,
    timeout: float = 60.0,
) -> Iterator[S3Server]:
    """A single-node Ceph cluster (mon, memstore OSD, RGW) with one S3 user.

    Everything lives in a fresh ``ceph-rgw.*`` directory under ``base_dir``
    (config, mon store, logs; object data is in RAM). The directory is left
    in place on exit so the logs can be read after a failure; the caller owns
    ``base_dir`` (typically a pytest tmp path).

    Raises RuntimeError carrying the tail of the daemon logs if start-up
    fails; by then every process it started has been stopped.
    """
    reason = ceph_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    base_dir.mkdir(parents=True, exist_ok=True)

    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            cluster, server = _start_ceph(base_dir, memstore_bytes, timeout)
            break
        except _PortInUseError:
            # Ports are probed free and bound later by the daemons; another
            # process can take one in between. A fresh set of ports fixes it.
            if attempt == attempts:
                raise
    try:
        yield server
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- moto


def _start_moto(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C aimed at pytest must not kill it under a
            # test that is still tearing down against it.
            start_new_session=True,
        )


def _wait_moto(proc: subprocess.Popen[bytes], endpoint: str, timeout: float) -> str:
    """'' once moto answers HTTP, else why it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"moto exited with code {proc.returncode}"
        # /moto-api/ is moto's own dashboard; it answers without credentials.
        if _http_answers(f"{endpoint}/moto-api/"):
            return ""
        time.sleep(0.05)
    return f"moto did not answer within {timeout:.0f} s"


@contextmanager
def running_moto(base_dir: Path, *, timeout: float = 30.0) -> Iterator[S3Server]:
    """moto's server mode in a child process, for hosts without Ceph.

    A separate process rather than moto's in-process ThreadedMotoServer so
    that, like Ceph, it is reached only over a real socket and cannot share
    (or be patched through) this interpreter's state.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix="moto.", suffix=".log", dir=base_dir)
    os.close(fd)
    log_path = Path(log_name)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # The probed port may be taken before moto binds it; a few attempts
        # make that race practically irrelevant.
        failure = ""
        for _attempt in range(3):
            (port,) = _free_ports(1)
            endpoint = f"http://127.0.0.1:{port}"
            proc = _start_moto(port, log_path)
            failure = _wait_moto(proc, endpoint, timeout)
            if not failure:
                break
            _stop(proc)
            proc = None
        if proc is None:
            raise RuntimeError(f"{failure}; log {log_path}:\n{_tail(log_path)}")

        yield S3Server(
            name="moto",
            endpoint_url=endpoint,
            # moto accepts any credentials; fixed ones make failures reproducible.
            access_key_id="testing",
            secret_access_key="testing",
            region=REGION,
        )
    finally:
        if proc is not None:
            _stop(proc)
