"""The servers a benchmark starts and stops: `fwrepo serve` and the baselines it is measured against.

Each runs in its own session (a Ctrl-C in the terminal reaches only the
benchmark, which then stops it itself), on free ports of 127.0.0.1, with its
files under the benchmark's temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import ROOT, say
from harness.procs import children_cpu, descendants, proc_table, stop_process, tree_cpu

BATCH = 10_000  # charger ids per POST /api/v1/grants/batch (the API's maximum)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fwrepo_command() -> list[str]:
    script = Path(sys.executable).parent / "fwrepo"
    if script.exists():
        return [str(script)]
    found = shutil.which("fwrepo")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from repo_service.cli import main; sys.exit(main())"]


def ensure_installed(command: str, package: str) -> str:
    """The path of a Debian package's command; installs the package when it is missing and we are root."""
    found = shutil.which(command) or next((str(p) for p in (Path("/usr/sbin") / command,) if p.exists()), None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{command} is needed (apt-get install {package})")
    say(f"installing Debian's {package} (it is not started as a service: policy-rc.d or no init, and we start our own)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install {package} failed: {done.stderr.strip()[-300:]}")
    return shutil.which(command) or str(Path("/usr/sbin") / command)


# --------------------------------------------------------------------------- fwrepo serve


class FwrepoServer:
    """`fwrepo serve` in its own session, with its own data directory, a release key and (csms) a csms key."""

    def __init__(self, name: str, data_dir: Path, settings: dict[str, str], tls: bool = False,
                 csms: bool = False) -> None:
        self.name = name
        self.data_dir = data_dir
        self.settings = settings
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = ""  # role release: uploads and publishing
        self.csms = ""  # role csms: grants, campaigns, events
        self.wants_csms = csms
        self.url = ""
        self.port = 0
        self.ftps_port = 0
        self.ftps_implicit_port = 0
        self.log = data_dir / "serve.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FWREPO_")}
        env.update(
            FWREPO_DATA_DIR=str(self.data_dir),
            FWREPO_HOST="127.0.0.1",
            FWREPO_PORT=str(self.port),
            FWREPO_LOG_LEVEL="warning",
            # Plain HTTP unless tls: as behind a proxy that terminates TLS, so
            # that the numbers are fwrepo's and not Python's TLS record layer.
            FWREPO_TLS="true" if self.tls else "false",
            # FTPS on free ports: a benchmark must not take 2121/9990 from `make run` or another server.
            FWREPO_FTPS_PORT=str(self.ftps_port),
            FWREPO_FTPS_IMPLICIT_PORT=str(self.ftps_implicit_port),
        )
        env.update(self.settings)  # a benchmark's own settings win
        return env

    def create_key(self, role: str, name: str = "bench") -> str:
        created = subprocess.run(
            [*fwrepo_command(), "clients", "create", "--name", name, "--role", role],
            env=self.env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"fwrepo clients create --role {role} failed: {created.stderr.strip()}")
        return created.stdout.strip()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True)
        for attempt in range(3):
            self.port, self.ftps_port, self.ftps_implicit_port = free_port(), free_port(), free_port()
            if not self.key:
                self.key = self.create_key("release")
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [*fwrepo_command(), "serve"], env=self.env(), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
            if self._healthy(deadline=time.monotonic() + 60):
                if self.wants_csms and not self.csms:
                    self.csms = self.create_key("csms", "bench-csms")
                return
            self.stop()
            if attempt == 2:
                tail = self.log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"fwrepo serve ({self.name}) did not become healthy:\n" + "\n".join(tail))

    def _healthy(self, deadline: float) -> bool:
        assert self.proc is not None
        while time.monotonic() < deadline and self.proc.poll() is None:
            context = None
            if self.tls:
                if not self.cacert.exists():  # the development CA is made at start-up
                    time.sleep(0.05)
                    continue
                context = self.ssl_context()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1, context=context) as reply:
                    if reply.status == 200:
                        return True
            except (urllib.error.URLError, OSError, ssl.SSLError):
                pass
            time.sleep(0.05)
        return False

    def describe_exit(self) -> str:
        """Why the server is gone, if it is: exit status and the end of its log."""
        if self.proc is None or self.proc.poll() is None:
            return ""
        code = self.proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        tail = self.log.read_text(errors="replace").splitlines()[-15:] if self.log.exists() else []
        return f"\n{self.name} server (pid {self.proc.pid}) {how}; end of its log:\n" + "\n".join(tail)

    @property
    def cacert(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cacert))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)

    # -- the API, as a client uses it

    def upload_firmware(self, path: Path, version: str, statuses: Sequence[str] = ("200", "201")) -> dict[str, Any]:
        """`curl -F` of one image to POST /api/v1/firmware (as an operator's script does); the stored record."""
        reply = self.data_dir.parent / f"reply-{self.name}.json"
        reply.unlink(missing_ok=True)
        done = subprocess.run(
            ["curl", "-sS", "-o", str(reply), "-w", "%{http_code}",
             "-H", f"Authorization: Bearer {self.key}",
             "-F", "vendor=Bench", "-F", "models=BM-1", "-F", f"version={version}",
             "-F", f"file=@{path};type=application/octet-stream",
             *(["--cacert", str(self.cacert)] if self.tls else []),
             self.url + "/api/v1/firmware"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        body = reply.read_text(errors="replace") if reply.exists() else ""
        if done.returncode != 0 or done.stdout.strip() not in statuses:
            raise RuntimeError(f"upload to {self.name} failed: curl exit {done.returncode}, HTTP {done.stdout.strip()}: "
                               f"{done.stderr.strip()} {body[:500]}" + self.describe_exit())
        return json.loads(body)

    def publish_firmware(self, path: Path, version: str) -> dict[str, Any]:
        """Upload and publish one image; the published record."""
        import httpx

        record = self.upload_firmware(path, version)
        with httpx.Client(verify=self.ssl_context() if self.tls else True, timeout=120) as client:
            published = client.post(f"{self.url}/api/v1/firmware/{record['id']}/publish",
                                    headers={"Authorization": f"Bearer {self.key}"})
        if published.status_code != 200:
            raise RuntimeError(f"publish on {self.name} failed: HTTP {published.status_code} {published.text[:300]}")
        return published.json()

    def issue_grants(self, firmware_id: str, charger_ids: list[str], **options: str) -> list[dict[str, Any]]:
        """Grants for these chargers (batches of up to 10,000; options such as protocol="ftps" go into each request)."""
        import httpx

        grants: list[dict[str, Any]] = []
        with httpx.Client(verify=self.ssl_context() if self.tls else True, timeout=300) as client:
            for first in range(0, len(charger_ids), BATCH):
                reply = client.post(f"{self.url}/api/v1/grants/batch", headers={"Authorization": f"Bearer {self.csms}"},
                                    json={"firmware_id": firmware_id, "charger_ids": charger_ids[first:first + BATCH],
                                          **options})
                if reply.status_code != 201:
                    raise RuntimeError(f"grants on {self.name}: HTTP {reply.status_code} {reply.text[:300]}")
                grants += reply.json()["grants"]
        return grants

    def grant_locations(self, firmware_id: str, count: int, prefix: str, **options: str) -> list[str]:
        """The download locations of fresh grants for count chargers named PREFIX-00000 ..."""
        chargers = [f"{prefix}-{n:05d}" for n in range(count)]
        return [grant["location"] for grant in self.issue_grants(firmware_id, chargers, **options)]


def start_fwrepo(stack: ExitStack, name: str, data_dir: Path, settings: dict[str, str], tls: bool = True,
                 csms: bool = True) -> FwrepoServer:
    """A started `fwrepo serve` (by default HTTPS with its development certificate and a csms key), stopped by stack."""
    server = FwrepoServer(name, data_dir, settings, tls=tls, csms=csms)
    stack.callback(server.stop)
    server.start()
    return server


# --------------------------------------------------------------------------- baselines


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1 made by openssl: ECDSA P-256, as fwrepo's development certificate is."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"openssl req failed: {made.stderr.strip()}")
    return cert, key


class Daemon(ABC):
    """A server in the foreground in its own session on a free port, with its config and logs under directory."""

    name = ""
    stop_signal = signal.SIGTERM  # how it is asked to stop; SIGKILL to its session after 10 s

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @abstractmethod
    def command(self) -> list[str]:
        """What runs it on self.port (writing its config first where it has one)."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether it answers on self.port."""

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.port = free_port()
            with (self.dir / "stderr.log").open("ab") as log:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ready():
                    return
                time.sleep(0.05)
            self.stop()
        logs = " ".join(path.read_text(errors="replace")[-400:] for path in self.dir.glob("*.log"))
        raise RuntimeError(f"{self.name} did not start: {logs}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        return sorted(descendants(proc_table(), self.pid)) if self.proc is not None else []

    def cpu(self) -> float:
        """CPU seconds of it and every process below it, reaped ones included."""
        return tree_cpu(self.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc, timeout=10, how=self.stop_signal)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: what it left behind, nothing else
        except ProcessLookupError:
            pass


NGINX_CONF = """\
# Written by bench/harness: nginx over TLS serving {files}, for comparison with fwrepo.
user root;
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 5;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name 127.0.0.1;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {files};
    }}
}}
"""


class Nginx(Daemon):
    """Debian's nginx (`daemon off`) over TLS with its own config and self-signed certificate, serving files."""

    name = "nginx"
    stop_signal = signal.SIGQUIT  # graceful: workers finish, then the master exits

    def __init__(self, directory: Path, files: Path, workers: int = 2) -> None:
        super().__init__(directory)
        self.files, self.workers = files, workers
        self.cacert, self.key = directory / "cert.pem", directory / "key.pem"  # made by start

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.dir / "tmp").mkdir(parents=True)
        self_signed_certificate(self.dir)
        super().start()

    def command(self) -> list[str]:
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, files=self.files, workers=self.workers, port=self.port,
                                          cert=self.cacert, key=self.key))
        return [ensure_installed("nginx", "nginx"), "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                "-c", str(conf)]

    def ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.cacert))
        try:
            with urllib.request.urlopen(self.url + "/", timeout=1, context=context):
                return True
        except urllib.error.HTTPError as error:
            return error.code in (403, 404)  # up: the root has no index
        except OSError:
            return False


def ftp_banner(port: int) -> bool:
    """Whether an FTP server greets (220) on port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            return connection.recv(64).startswith(b"220")
    except OSError:
        return False


VSFTPD_CONF = """\
# Written by bench/harness: vsftpd serving {files} read-only over FTPS, for comparison with fwrepo.
listen=YES
listen_ipv6=NO
background=NO
listen_address=127.0.0.1
listen_port={port}
anonymous_enable=YES
no_anon_password=YES
anon_root={files}
anon_world_readable_only=YES
local_enable=NO
write_enable=NO
secure_chroot_dir={dir}/empty
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
force_local_logins_ssl=YES
force_local_data_ssl=YES
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=YES
ssl_ciphers=HIGH
rsa_cert_file={cert}
rsa_private_key_file={key}
xferlog_enable=NO
vsftpd_log_file={dir}/vsftpd.log
seccomp_sandbox=NO
"""


class FtpsBaseline(Daemon):
    """An FTPS server that serves the files directory read-only with a certificate (cert, key) for 127.0.0.1."""

    def __init__(self, directory: Path, files: Path, cert: Path, key: Path) -> None:
        super().__init__(directory)
        self.files, self.cert, self.key = files, cert, key

    def ready(self) -> bool:
        return ftp_banner(self.port)

    @abstractmethod
    def url(self, name: str) -> str:
        """The ftp:// URL of one file of the files directory, credentials included."""


class Vsftpd(FtpsBaseline):
    """Debian's vsftpd in the foreground: anonymous read-only root at files, TLS forced for login and data."""

    name = "vsftpd"

    def command(self) -> list[str]:
        (self.dir / "empty").mkdir(mode=0o755, exist_ok=True)
        conf = self.dir / "vsftpd.conf"
        conf.write_text(VSFTPD_CONF.format(dir=self.dir, files=self.files, port=self.port, cert=self.cert,
                                           key=self.key))
        return [ensure_installed("vsftpd", "vsftpd"), str(conf)]

    def url(self, name: str) -> str:
        return f"ftp://127.0.0.1:{self.port}/{name}"

    def cpu(self) -> float:
        # A session process is reaped a moment after curl is done: wait for it, so that its CPU is counted.
        deadline = time.monotonic() + 2
        while len(descendants(proc_table(), self.pid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().cpu()


BARE_USER, BARE_PASSWORD = "bench", "bench-password"
BENCH = ROOT / "bench"


class BarePyftpdlib(FtpsBaseline):
    """pyftpdlib as its documentation sets up FTPS, read-only, in a child process (bare_pyftpdlib_main)."""

    name = "pyftpdlib"

    def command(self) -> list[str]:
        launcher = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); from harness.servers import bare_pyftpdlib_main; "
                    "sys.exit(bare_pyftpdlib_main(sys.argv[1:]))")
        return [sys.executable, "-c", launcher, str(self.files), str(self.cert), str(self.key), str(self.port)]

    def url(self, name: str) -> str:
        return f"ftp://{BARE_USER}:{BARE_PASSWORD}@127.0.0.1:{self.port}/{name}"


def bare_pyftpdlib_main(arguments: list[str]) -> int:
    """DIR CERT KEY PORT: TLS_FTPHandler + FTPServer + DummyAuthorizer with one read-only user."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import TLS_FTPHandler
    from pyftpdlib.servers import FTPServer

    directory, cert, key, port = arguments
    authorizer = DummyAuthorizer()
    authorizer.add_user(BARE_USER, BARE_PASSWORD, directory, perm="elr")
    handler = TLS_FTPHandler
    handler.certfile, handler.keyfile = cert, key
    handler.authorizer = authorizer
    handler.tls_control_required = handler.tls_data_required = True
    FTPServer(("127.0.0.1", int(port)), handler).serve_forever()
    return 0


# --------------------------------------------------------------------------- clients


def redact_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//USER:PASS@", url)


def curl_download(url: str, expected: int, options: Sequence[str] = (), status: str | None = "200",
                  ) -> tuple[float, float, float]:
    """One download to /dev/null: (curl's speed_download in B/s, wall seconds, curl's CPU seconds).

    options go to curl (--cacert, -L, --ssl-reqd); the size must be expected,
    and the last response's code status (None: not checked, as for FTP).
    """
    before = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sS", *options, "-o", "/dev/null", "-w", "%{speed_download} %{size_download} %{response_code}", url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    cpu = children_cpu() - before
    parts = done.stdout.split()
    if (done.returncode != 0 or len(parts) != 3 or int(parts[1]) != expected
            or (status is not None and parts[2] != status)):
        raise RuntimeError(f"curl {redact_url(url)}: exit {done.returncode}, {done.stdout.strip()!r} "
                           f"{done.stderr.strip()[:300]}")
    return float(parts[0]), wall, cpu


def source_address(index: int) -> str:
    """A loopback address of its own per concurrent client, as chargers have: fwrepo's FTPS server takes at most
    16 sessions per address (ftps/server.py SESSIONS_PER_ADDRESS), so 200 clients from 127.0.0.1 would be refused."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"
