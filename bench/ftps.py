"""FTPS download throughput and concurrency of fwrepo, next to vsftpd and bare pyftpdlib.

One run measures, with curl as the client (`curl --ssl-reqd --cacert CA ftp://USER:PASS@...`, explicit FTPS):

  1. one large download (default 1 GiB) through an FTPS grant location of
     `fwrepo serve` (FWREPO_STORAGE=local), vs the same file from vsftpd
     (Debian's package, its own config: anonymous read-only root, TLS forced
     for login and data) and from bare pyftpdlib (TLS_FTPHandler + FTPServer +
     DummyAuthorizer, in a child process); median MB/s of --repeat runs;
  2. 200 concurrent downloads (default 20 MiB each, each on its own grant)
     through fwrepo, every file's SHA-256 checked: errors, aggregate MB/s,
     the server's peak RSS.

Targets: fwrepo >= 0.9 x bare pyftpdlib; zero errors with 200 at once. When
the throughput target is missed an extra (unmeasured) fwrepo download, and one
of bare pyftpdlib for comparison, are profiled with py-spy and the section
says what bounds fwrepo. Rewrites the `ftps` section of docs/benchmarks.md.

    .venv/bin/python bench/ftps.py [--size-mib 1024] [--repeat 3] [--parallel 200] [--no-doc]

Waits before every measured run until no other benchmark (`bench/...`) and no
pytest is running. Everything it starts (fwrepo, vsftpd, pyftpdlib, py-spy,
curls) and every file it writes are stopped/removed at the end, also on errors
and Ctrl-C. Exit status: 0 all targets met, 1 a target missed, 2 the
benchmark itself failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the other benchmarks' helpers
import download
import grants
import upload
from download import Sample, Series
from upload import MB, FwrepoServer, GiB, MiB, say

DOC = upload.DOC
SECTION = "ftps"

TARGET_BARE = 0.9  # fwrepo one stream >= 0.9 x bare pyftpdlib
SINGLE = ("vsftpd", "pyftpdlib", "fwrepo")
LABELS = {
    "vsftpd": "vsftpd, anonymous, TLS forced",
    "pyftpdlib": "bare pyftpdlib (TLS_FTPHandler, FTPServer)",
    "fwrepo": "fwrepo, grant location",
}
BARE_USER, BARE_PASSWORD = "bench", "bench-password"
CLK_TCK = upload.CLK_TCK


# --------------------------------------------------------------------------- the baselines


VSFTPD_CONF = """\
# Written by bench/ftps.py: vsftpd serving {files} read-only over FTPS, for comparison with fwrepo.
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


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """(CA, certificate chain, unencrypted key) for 127.0.0.1: ECDSA P-256, as fwrepo's development certificate."""
    from cryptography.hazmat.primitives import serialization

    from repo_service.domain import pki

    now = dt.datetime.now(dt.UTC)
    ca_key, key = pki.generate_key("ecdsa-p256"), pki.generate_key("ecdsa-p256")
    ca = pki.make_root(ca_key, "bench/ftps.py CA", now, 2)
    certificate = pki.make_tls_certificate(key, ca_key, ca, ("127.0.0.1", "localhost"), now, 2)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_text(pki.pem(ca))
    paths[1].write_text(pki.pem(certificate) + pki.pem(ca))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def wait_for_banner(port: int, proc: subprocess.Popen[bytes], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                if connection.recv(64).startswith(b"220"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree, including children it has already reaped (vsftpd forks per session)."""
    total = 0.0
    for pid in grants.descendants(grants.proc_table(), root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    return total


class Baseline:
    """A server in the foreground in its own session, serving the files directory on a free port."""

    name = ""

    def __init__(self, directory: Path, files: Path, cert: Path, key: Path) -> None:
        self.dir, self.files, self.cert, self.key = directory, files, cert, key
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        for _attempt in range(3):
            self.port = upload.free_port()
            with (self.dir / "stderr.log").open("ab") as log:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            if wait_for_banner(self.port, self.proc):
                return
            self.stop()
        logs = " ".join(path.read_text(errors="replace")[-400:] for path in self.dir.glob("*.log"))
        raise RuntimeError(f"{self.name} did not start: {logs}")

    def url(self, name: str) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        # A vsftpd session process is reaped a moment after curl is done: wait for it, so its CPU is counted.
        deadline = time.monotonic() + 2
        while len(grants.descendants(grants.proc_table(), self.pid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        return tree_cpu(self.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        upload.stop_process(proc, timeout=10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: session processes left behind, nothing else
        except ProcessLookupError:
            pass


class Vsftpd(Baseline):
    name = "vsftpd"

    def command(self) -> list[str]:
        (self.dir / "empty").mkdir(mode=0o755, exist_ok=True)
        conf = self.dir / "vsftpd.conf"
        conf.write_text(VSFTPD_CONF.format(dir=self.dir, files=self.files, port=self.port, cert=self.cert, key=self.key))
        return ["vsftpd", str(conf)]

    def url(self, name: str) -> str:
        return f"ftp://127.0.0.1:{self.port}/{name}"


class BarePyftpdlib(Baseline):
    name = "pyftpdlib"

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--bare-pyftpdlib", str(self.files), str(self.cert),
                str(self.key), str(self.port)]

    def url(self, name: str) -> str:
        return f"ftp://{BARE_USER}:{BARE_PASSWORD}@127.0.0.1:{self.port}/{name}"


def bare_pyftpdlib_main(arguments: list[str]) -> int:
    """`ftps.py --bare-pyftpdlib DIR CERT KEY PORT`: pyftpdlib as its documentation sets up FTPS, read-only."""
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


# --------------------------------------------------------------------------- curl


def curl_ftps(url: str, cacert: Path, expected: int) -> tuple[float, float, float]:
    """One FTPS download to /dev/null: (curl's speed_download in B/s, wall seconds, curl's CPU seconds)."""
    before = upload.children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sS", "--ssl-reqd", "--cacert", str(cacert), "-o", "/dev/null",
         "-w", "%{speed_download} %{size_download} %{response_code}", url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    cpu = upload.children_cpu() - before
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 3 or int(parts[1]) != expected:
        raise RuntimeError(f"curl {redact(url)}: exit {done.returncode}, {done.stdout.strip()!r} "
                           f"{done.stderr.strip()[:300]}")
    return float(parts[0]), wall, cpu


def warm_up(url: str, cacert: Path, expected: int) -> str:
    """One untimed download; the TLS version and cipher curl negotiated on the data connection (its last one)."""
    done = subprocess.run(["curl", "-sS", "-v", "--ssl-reqd", "--cacert", str(cacert), "-o", "/dev/null",
                           "-w", "%{size_download}", url], capture_output=True, text=True, check=False)
    if done.returncode != 0 or done.stdout.strip() != str(expected):
        raise RuntimeError(f"curl {redact(url)}: exit {done.returncode}, {done.stdout.strip()!r} "
                           f"{done.stderr.strip()[-300:]}")
    found = re.findall(r"SSL connection using (.+)", done.stderr)
    return found[-1].strip() if found else "?"


def redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//USER:PASS@", url)


@dataclass
class Fetched:
    sha256: str = ""
    size: int = 0
    error: str = ""


def source_address(index: int) -> str:
    """A loopback address of its own per concurrent client, as chargers have: fwrepo's FTPS server takes at most
    16 sessions per address (ftps/server.py SESSIONS_PER_ADDRESS), so 200 curls from 127.0.0.1 would be refused."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


async def _fetch(url: str, cacert: Path, source: str) -> Fetched:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--ssl-reqd", "--cacert", str(cacert), "--interface", source, "-o", "-", url,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        limit=256 * 1024,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    digest, got = hashlib.sha256(), Fetched()
    while chunk := await process.stdout.read(256 * 1024):
        digest.update(chunk)
        got.size += len(chunk)
    stderr = (await process.stderr.read()).decode(errors="replace").strip()
    if await process.wait() != 0:
        got.error = f"curl exit {process.returncode}: {stderr.splitlines()[-1] if stderr else ''}"[:160]
    got.sha256 = digest.hexdigest()
    return got


async def _fetch_all(urls: list[str], cacert: Path) -> list[Fetched]:
    return await asyncio.gather(*(_fetch(url, cacert, source_address(i)) for i, url in enumerate(urls)))


# --------------------------------------------------------------------------- results


@dataclass
class Parallel:
    wall: float
    fetched: list[Fetched]
    expected: tuple[int, str]  # size, SHA-256
    server_cpu: float
    client_cpu: float
    rss_max_kib: int

    @property
    def errors(self) -> dict[str, int]:
        size, sha256 = self.expected
        counted: dict[str, int] = {}
        for got in self.fetched:
            what = got.error or ("wrong size" if got.size != size else "wrong SHA-256" if got.sha256 != sha256 else "")
            if what:
                counted[what] = counted.get(what, 0) + 1
        return counted

    def mb_s(self) -> float:
        size = self.expected[0]
        good = sum(1 for got in self.fetched if not got.error and got.size == size)
        return good * size / self.wall / MB


UVICORN_IDLE = "uvicorn's event loop thread (the HTTPS API, idle here)"
FTPS_CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("pyftpdlib IOLoop's epoll_wait (the syscall; a thread parked in it counts as idle)",
     re.compile(r"^(_BasePollEpoll|Select|Kqueue)\.poll \(.*pyftpdlib/ioloop\.py")),
    # uvloop waits in C, where py-spy cannot tell the HTTPS API's idle event loop from a busy one.
    (UVICORN_IDLE, re.compile(r"asyncio/runners\.py|uvicorn/|uvloop")),
    ("TLS encryption (pyOpenSSL Connection.send: SSL_write)", re.compile(r"OpenSSL/")),
    ("pyftpdlib TLS wrapper (SSLConnection.send, its retry checks)", re.compile(r"pyftpdlib/handlers/ftps/")),
    ("reading the file: fwrepo LocalStorage (os.pread into bytes)", re.compile(r"storage/local\.py")),
    ("fwrepo's one-file view (StoredFile.read: whole blocks handed on)", re.compile(r"ftps/view\.py")),
    ("fwrepo's FTPS session and grant checks (ftps/server.py, repo_service)", re.compile(r"ftps/server\.py|repo_service/")),
    ("pyftpdlib file producer (FileProducer.more: file.read in C for bare pyftpdlib)", re.compile(r"producers\.py")),
    ("pyftpdlib data channel and event loop (initiate_send, handle_write, scheduler)", re.compile(r"pyftpdlib/")),
]


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        self.args = args
        self.work = work
        self.stack = stack
        self.size = args.size_mib * MiB
        self.small = args.parallel_mib * MiB
        self.files = work / "files"
        self.big = self.files / "big.bin"
        self.small_file = self.files / "small.bin"
        self.small_sha256 = ""
        self.notes: list[str] = []
        self.turns = grants.Turns(self.notes)
        self.single = {name: Series(name) for name in SINGLE}
        self.parallel: list[Parallel] = []
        self.profiles: dict[str, grants.ProfileSummary] = {}
        self.profile_walls: dict[str, float] = {}
        self.ciphers: dict[str, str] = {}
        self.baselines: dict[str, Baseline] = {}
        self.fwrepo: FwrepoServer | None = None
        self.fwrepo_idle_kib: int | None = None
        self.fwrepo_hwm_kib: int | None = None
        self.big_id = ""
        self.small_id = ""
        self.charger = 0

    # -- set-up

    def setup(self) -> None:
        self.files.mkdir(mode=0o755)  # vsftpd's anonymous root: readable once it has dropped to its ftp user
        say(f"work directory {self.work} ({upload.disk_description(self.work)})")
        say(f"writing {self.size / MiB:.0f} MiB and {self.small / MiB:.0f} MiB of random bytes")
        upload.make_random_file(self.big, self.size)
        self.small_sha256 = upload.make_random_file(self.small_file, self.small)
        for path in (self.big, self.small_file):
            path.chmod(0o644)
        tls = self.work / "tls"
        tls.mkdir()
        self.ca, cert, key = make_certificate(tls)
        for kind in (Vsftpd, BarePyftpdlib):
            baseline = kind(self.work / kind.name, self.files, cert, key)
            self.stack.callback(baseline.stop)
            baseline.start()
            self.baselines[kind.name] = baseline
            say(f"{kind.name}: pid {baseline.pid} on port {baseline.port}")
        settings = {"FWREPO_STORAGE": "local", "FWREPO_FTPS_PORT": str(upload.free_port()),
                    "FWREPO_FTPS_IMPLICIT_PORT": str(upload.free_port())}
        self.fwrepo = grants.start_tls_server(self.stack, "fwrepo", self.work / "fwrepo", settings)
        say(f"fwrepo: fwrepo serve pid {self.fwrepo.pid} at {self.fwrepo.url}, FTPS on port {settings['FWREPO_FTPS_PORT']}")
        say("uploading both files to fwrepo (untimed)")
        self.big_id = grants.upload_firmware(self.fwrepo, self.big, "3.0.1", self.work)["id"]
        self.small_id = grants.upload_firmware(self.fwrepo, self.small_file, "3.0.2", self.work)["id"]
        self.fwrepo_idle_kib = upload.proc_status_kib(self.fwrepo.pid, "VmRSS")

    def locations(self, firmware_id: str, count: int) -> list[str]:
        """Fresh FTPS grants, one per download: a completed download may use its grant up."""
        assert self.fwrepo is not None
        chargers = [f"FTPS-{self.charger + n:06d}" for n in range(count)]
        self.charger += count
        issued = grants.issue_grants(self.fwrepo, firmware_id, chargers, protocol="ftps")
        return [grant["location"] for grant in issued]

    def target(self, name: str) -> tuple[str, Path, int | None]:
        """(URL, CA file, pid whose RSS is sampled) of one download of the big file."""
        if name == "fwrepo":
            assert self.fwrepo is not None
            return self.locations(self.big_id, 1)[0], self.fwrepo.cacert, self.fwrepo.pid
        return self.baselines[name].url(self.big.name), self.ca, None

    def server_cpu(self, name: str) -> float:
        if name == "fwrepo":
            assert self.fwrepo is not None
            return upload.proc_cpu_seconds(self.fwrepo.pid)
        return self.baselines[name].cpu()

    # -- measurements

    def run_single(self, name: str) -> Sample:
        def once() -> Sample:
            url, cacert, pid = self.target(name)
            before = self.server_cpu(name)
            with upload.RssSampler(pid) if pid else download._Nothing() as rss:
                speed, wall, client_cpu = curl_ftps(url, cacert, self.size)
            return Sample(speed / MB, wall, server_cpu=self.server_cpu(name) - before, client_cpu=client_cpu,
                          rss_max_kib=rss.max_kib if pid else None)

        return grants.measured(self.turns, f"one stream {name}", once)  # type: ignore[return-value]

    def run_parallel(self) -> Parallel:
        assert self.fwrepo is not None
        server = self.fwrepo

        def once() -> Parallel:
            urls = self.locations(self.small_id, self.args.parallel)
            server_before, client_before = upload.proc_cpu_seconds(server.pid), upload.children_cpu()
            with upload.RssSampler(server.pid) as rss:
                start = time.perf_counter()
                fetched = asyncio.run(_fetch_all(urls, server.cacert))
                wall = time.perf_counter() - start
            # The curls are reaped by asyncio, so their CPU is in children_cpu; hashing is this process's.
            return Parallel(wall, fetched, (self.small, self.small_sha256),
                            upload.proc_cpu_seconds(server.pid) - server_before,
                            upload.children_cpu() - client_before, rss.max_kib)

        return grants.measured(self.turns, f"{self.args.parallel} concurrent", once)  # type: ignore[return-value]

    def run(self) -> None:
        # Warm-up, untimed: both copies of the file in the page cache, TLS and code paths touched.
        for name in SINGLE:
            url, cacert, _pid = self.target(name)
            self.ciphers[name] = warm_up(url, cacert, self.size)
        for round_number in range(1, self.args.repeat + 1):
            for name in SINGLE if round_number % 2 else SINGLE[::-1]:
                sample = self.run_single(name)
                self.single[name].samples.append(sample)
                rss = f", RSS max {sample.rss_max_kib * 1024 / MB:.0f} MB" if sample.rss_max_kib else ""
                say(f"one stream round {round_number}/{self.args.repeat} {name:9} {sample.mb_s:8.1f} MB/s "
                    f"({sample.seconds:.2f} s), server CPU {sample.server_cpu:.1f} s, "
                    f"client CPU {sample.client_cpu:.1f} s{rss}")
        for round_number in range(1, self.args.repeat + 1):
            result = self.run_parallel()
            self.parallel.append(result)
            say(f"{self.args.parallel} concurrent round {round_number}/{self.args.repeat}: {result.mb_s():.1f} MB/s "
                f"aggregate ({result.wall:.2f} s), errors {result.errors or 'none'}, server CPU "
                f"{result.server_cpu:.1f} s, RSS max {result.rss_max_kib * 1024 / MB:.0f} MB")
        if self.args.profile == "always" or (self.args.profile == "auto" and self.ratio_verdict().outcome == "FAIL"):
            self.profile("fwrepo")
            self.profile("pyftpdlib")
        assert self.fwrepo is not None
        self.fwrepo_hwm_kib = upload.proc_status_kib(self.fwrepo.pid, "VmHWM")

    def profile(self, name: str) -> None:
        """One extra, uncounted download of the big file under py-spy."""
        say(f"profiling {name} with py-spy (an extra run, not counted)")
        url, cacert, _pid = self.target(name)
        pid = self.fwrepo.pid if name == "fwrepo" and self.fwrepo else self.baselines[name].pid
        out = self.work / f"profile-{name}.raw"
        median = self.single[name].median("seconds") or 30
        self.turns.wait(f"profiling {name}")
        with grants.Profile(pid, out, seconds=int(median * 3) + 20) as profile:
            _speed, wall, _cpu = curl_ftps(url, cacert, self.size)
        summary = grants.ProfileSummary(0, profile.rate, [], [], profile.error)
        if not profile.error:
            summary = grants.summarize_profile(out, profile.rate, FTPS_CATEGORIES)
        self.profiles[name] = summary
        self.profile_walls[name] = wall
        say(f"  profiled download took {wall:.2f} s; top: "
            + ", ".join(f"{what} {count / max(summary.samples, 1):.0%}" for what, count in summary.categories[:4]))

    # -- verdicts

    def ratio_verdict(self) -> upload.Verdict:
        fw, bare = self.single["fwrepo"].median(), self.single["pyftpdlib"].median()
        if fw is None or bare is None:
            return upload.Verdict("fwrepo / bare pyftpdlib (one stream)", "-", f">= {TARGET_BARE}", "not run")
        ratio = fw / bare
        return upload.Verdict("fwrepo / bare pyftpdlib (one stream)", f"{ratio:.2f}", f">= {TARGET_BARE}",
                              "PASS" if ratio >= TARGET_BARE else "FAIL")

    def verdicts(self) -> list[upload.Verdict]:
        out = [self.ratio_verdict()]
        fw, vsftpd = self.single["fwrepo"].median(), self.single["vsftpd"].median()
        if fw is not None and vsftpd is not None:
            out.append(upload.Verdict("fwrepo / vsftpd (one stream)", f"{fw / vsftpd:.2f}", "-", "info"))
        errors = sum(sum(run.errors.values()) for run in self.parallel)
        total = sum(len(run.fetched) for run in self.parallel)
        if total:
            out.append(upload.Verdict(f"{self.args.parallel} concurrent: downloads with an error or a wrong SHA-256",
                                      f"{errors} of {total}", "0", "PASS" if errors == 0 else "FAIL"))
        return out

    # -- report

    def tables(self) -> str:
        fmt = upload.fmt
        to_mb = upload.kib_to_mb
        lines = [
            (f"One stream of {self.size / MiB:.0f} MiB (median of {self.args.repeat}; CPU seconds per download; "
             "TLS as negotiated by curl on the data connection):"),
            "",
            "| server | MB/s (median) | runs (MB/s) | s (median) | server CPU s | curl CPU s | server max RSS MB | TLS |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for name in SINGLE:
            series = self.single[name]
            lines.append(
                f"| {LABELS[name]} | {fmt(series.median())} | {', '.join(f'{s.mb_s:.0f}' for s in series.samples)} "
                f"| {fmt(series.median('seconds'), '{:.2f}')} | {fmt(series.median('server_cpu'))} "
                f"| {fmt(series.median('client_cpu'))} | {fmt(to_mb(series.median('rss_max_kib')), '{:.0f}')} "
                f"| {self.ciphers.get(name, '?')} |"
            )
        lines += [
            "",
            (f"{self.args.parallel} concurrent downloads of {self.small / MiB:.0f} MiB through fwrepo, each on its own "
             f"grant ({len(self.parallel)} runs):"),
            "",
            ("| run | aggregate MB/s | wall s | errors | server CPU s | curl + hashing CPU s | "
             "server max RSS MB |"),
            "| ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for number, run in enumerate(self.parallel, 1):
            errors = ", ".join(f"{what}: {count}" for what, count in sorted(run.errors.items())) or "none"
            lines.append(f"| {number} | {run.mb_s():.1f} | {run.wall:.2f} | {errors} | {run.server_cpu:.1f} "
                         f"| {run.client_cpu:.1f} | {run.rss_max_kib * 1024 / MB:.0f} |")
        if self.parallel:
            lines.append(f"| median | {statistics.median(r.mb_s() for r in self.parallel):.1f} "
                         f"| {statistics.median(r.wall for r in self.parallel):.2f} | | | "
                         f"| max {max(r.rss_max_kib for r in self.parallel) * 1024 / MB:.0f} |")
        lines += ["", (f"fwrepo server RSS: {fmt(to_mb(self.fwrepo_idle_kib), '{:.0f}')} MB idle after the uploads, "
                       f"VmHWM {fmt(to_mb(self.fwrepo_hwm_kib), '{:.0f}')} MB over its whole life (uploads included).")]
        lines += ["", "| check | value | target | result |", "| --- | ---: | --- | --- |"]
        for verdict in self.verdicts():
            lines.append(f"| {verdict.what} | {verdict.value} | {verdict.target} | {verdict.outcome} |")
        return "\n".join(lines)

    def what_bounds(self) -> list[str]:
        """Where the throughput target is missed: the CPU budget and the profiles, computed from this run."""
        if self.ratio_verdict().outcome != "FAIL":
            return []
        fw, bare = self.single["fwrepo"], self.single["pyftpdlib"]
        cpus = os.cpu_count() or 1
        per_gib = GiB / self.size
        fw_cpu, bare_cpu = (fw.median("server_cpu") or 0) * per_gib, (bare.median("server_cpu") or 0) * per_gib
        fw_wall, bare_wall = (fw.median("seconds") or 0) * per_gib, (bare.median("seconds") or 0) * per_gib
        extra = fw_cpu - bare_cpu
        text = (
            f"One core of the server. Per GiB, fwrepo's server used {fw_cpu:.2f} CPU s in {fw_wall:.2f} s, bare "
            f"pyftpdlib {bare_cpu:.2f} CPU s in {bare_wall:.2f} s ({fw_cpu / fw_wall if fw_wall else 0:.0%} and "
            f"{bare_cpu / bare_wall if bare_wall else 0:.0%} of one core; curl {(fw.median('client_cpu') or 0) * per_gib:.2f} "
            f"and {(bare.median('client_cpu') or 0) * per_gib:.2f} s, on a machine of {cpus} CPUs). A transfer runs in "
            "one thread (fwrepo: its connection's ThreadedFTPServer thread; bare: the FTPServer loop), so the speed is "
            f"the inverse of the server's CPU per byte: fwrepo spends {extra:+.2f} CPU s per GiB more. Both send "
            "through the same pyftpdlib data channel and pyOpenSSL, and since b6bbd57 both read each 64 KiB block "
            "once into `bytes` (fwrepo: `os.pread` in `_FileBlocks._read`, repo_service/storage/local.py, handed on "
            "whole by `StoredFile.read`, ftps/view.py; bare: `file.read(65536)`); what only fwrepo adds per block "
            "is the Python around it (its storage iterator, the one-file view, the download counting) and, per "
            "session, its own thread (ThreadedFTPServer) and the grant checks."
        )
        for name in ("fwrepo", "pyftpdlib"):
            summary = self.profiles.get(name)
            wall = self.profile_walls.get(name)
            if summary is None or not summary.samples or not wall:
                continue
            shares = ", ".join(f"{what} {count / summary.samples:.0%}" for what, count in summary.categories[:6])
            busy = summary.seconds(summary.samples - dict(summary.categories).get(UVICORN_IDLE, 0)) / wall
            text += f" {name} profile ({wall:.2f} s download, {busy:.2f} busy threads on average): {shares}."
        text += (" py-spy counts time in C calls that release the GIL (SSL_write, the socket write) as busy or idle "
                 "by thread state, so compare shares within a profile, and CPU seconds across servers.")
        return ["What bounds fwrepo (computed from this run's numbers and profiles):", "", text, ""]


# --------------------------------------------------------------------------- the doc


def machine_lines(work: Path, bench: Bench) -> list[str]:
    from importlib.metadata import version

    from OpenSSL import SSL

    facts = upload.machine_facts(work)
    for name in ("boto3", "Ceph", "SHA-256 (hashlib, one core)"):
        facts.pop(name, None)
    facts["pyftpdlib"] = version("pyftpdlib")
    facts["pyOpenSSL"] = f"{version('pyOpenSSL')} on {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}"
    facts["curl"] = upload.tool_version(["curl", "--version"])
    vsftpd = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "vsftpd"], capture_output=True, text=True,
                            check=False).stdout.strip()
    facts["vsftpd"] = f"Debian package {vsftpd}" if vsftpd else "?"
    return [f"- {name}: {value}" for name, value in facts.items()]


def render_section(bench: Bench, machine: list[str], when: dt.datetime, elapsed: float) -> str:
    args = bench.args
    flags = (f"--size-mib {args.size_mib} --repeat {args.repeat} --parallel {args.parallel} "
             f"--parallel-mib {args.parallel_mib}")
    if args.profile != "auto":
        flags += f" --profile {args.profile}"
    lines = [
        f"<!-- bench:{SECTION}:start -->",
        "## FTPS",
        "",
        (f"Written by `bench/ftps.py {flags}` on {when:%Y-%m-%d %H:%M} UTC (the run took {elapsed / 60:.1f} min, "
         f"of which {bench.turns.waited / 60:.1f} min waiting for other benchmarks or pytest to finish)."),
        "",
        "Method:",
        "",
        (f"- **Files**: {args.size_mib} MiB and {args.parallel_mib} MiB of random bytes in one directory, uploaded "
         "(untimed) to fwrepo and published. Every file is in the page cache: an untimed warm-up download from each "
         "server precedes the runs. The one-stream runs interleave the servers (even rounds in reverse), each after "
         "a wait until no other benchmark or pytest runs; a run during which another benchmark used CPU is repeated."),
        ("- **Client**: curl, explicit FTPS (`curl -sS --ssl-reqd --cacert CA ftp://...`: AUTH TLS, PROT P, "
         "passive mode). One stream: `-o /dev/null`, curl's speed_download, median; MB/s is 10^6 bytes/s. "
         f"Concurrent: {args.parallel} curls started at once (asyncio subprocesses), each from a loopback address of "
         "its own (`--interface 127.0.x.y`, as chargers have: fwrepo takes at most 16 FTPS sessions per address), "
         "each writing to a pipe that this "
         "script reads and hashes with SHA-256; aggregate = complete downloads x size / wall time of all; an error is "
         "a curl failure, a short file or a wrong SHA-256."),
        ("- **fwrepo**: `fwrepo serve` (FWREPO_STORAGE=local, data directory on the disk below) with its FTPS server "
         "inside (pyftpdlib ThreadedFTPServer, TLS_FTPHandler with pyOpenSSL, fwrepo's one-file view reading storage "
         "in 64 KiB blocks) and its development certificate (ECDSA P-256); each download on a fresh grant "
         "(`POST /api/v1/grants/batch` with `\"protocol\": \"ftps\"`), i.e. a fresh login."),
        ("- **vsftpd**: Debian's package in the foreground with its own config in the temporary directory "
         "(`listen=YES`, `background=NO`, one port on 127.0.0.1, anonymous read-only root at the files directory, "
         "`ssl_enable=YES`, TLS forced for login and data, `ssl_ciphers=HIGH`), a process per session as vsftpd "
         "does; its CPU includes those sessions."),
        ("- **bare pyftpdlib**: a child process running pyftpdlib's documented FTPS set-up: `TLS_FTPHandler` "
         "(pyOpenSSL) with TLS required for control and data, `FTPServer` (one thread, one event loop), "
         "`DummyAuthorizer` with one read-only user (`elr`) whose home is the files directory; it reads the real "
         "file with FileProducer's 64 KiB reads."),
        ("- **Certificates**: vsftpd and bare pyftpdlib share one ECDSA P-256 certificate for 127.0.0.1 made for the "
         "run, so all three servers do the same TLS work per byte (see the TLS column)."),
        ("- **CPU**: user+system seconds during one run (median): of the server's process (vsftpd: its process "
         "tree, reaped session processes included), of curl (concurrent: all curls plus this script's hashing)."),
        "- **RSS**: fwrepo's VmRSS sampled every 20 ms during each run.",
        "",
        "Machine:",
        "",
        *machine,
        "",
        (f"Client and server share the machine's {os.cpu_count()} CPUs: every CPU second curl spends on TLS is "
         "taken from the server, for each of the three servers alike."),
        "",
    ]
    for note in bench.notes:
        lines += [f"**Note:** {note}", ""]
    lines += [bench.tables(), ""]
    for name, summary in bench.profiles.items():
        lines += grants.render_profile(summary, f"py-spy profile of {name} during an extra one-stream download "
                                                f"of {bench.profile_walls.get(name, 0):.2f} s")
    lines += bench.what_bounds()
    lines.append(f"<!-- bench:{SECTION}:end -->")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def ensure_vsftpd() -> None:
    if shutil.which("vsftpd") or Path("/usr/sbin/vsftpd").exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("bench/ftps.py needs vsftpd (apt-get install vsftpd)")
    say("installing Debian's vsftpd (it is not started as a service: policy-rc.d or no init, and we start our own)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "vsftpd"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install vsftpd failed: {done.stderr.strip()[-300:]}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="the large download, MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server and of the concurrent part (default 3)")
    parser.add_argument("--parallel", type=int, default=200, help="concurrent downloads (default 200)")
    parser.add_argument("--parallel-mib", type=int, default=20, help="size of each concurrent download, MiB (default 20)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="py-spy an extra download: when the throughput target is missed (auto, default), always, never")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temporary directory goes")
    parser.add_argument("--doc", type=Path, default=DOC, help="file whose ftps section is rewritten")
    parser.add_argument("--no-doc", action="store_true", help="print the results only")
    args = parser.parse_args(argv)
    if min(args.size_mib, args.repeat, args.parallel, args.parallel_mib) <= 0:
        parser.error("sizes and counts must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bare-pyftpdlib"]:
        return bare_pyftpdlib_main(argv[1:])
    args = parse_args(argv)
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            print(f"bench/ftps.py needs {tool}", file=sys.stderr)
            return 2
    started, when = time.monotonic(), dt.datetime.now(dt.UTC)
    stack = ExitStack()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fwrepo-ftps.", dir=args.work_dir))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    bench = Bench(args, work, stack)
    machine: list[str] = []

    def body() -> None:
        ensure_vsftpd()
        download.raise_open_files()
        needed = 3 * args.size_mib * MiB
        if shutil.disk_usage(work).free < needed:
            raise RuntimeError(f"{work} needs about {needed / GiB:.1f} GiB free")
        bench.setup()
        bench.turns.wait("the machine description")
        machine.extend(machine_lines(work, bench))
        bench.run()

    failed = grants.run_guarded("ftps.py", stack, body)
    if failed is not None:
        return failed
    if bench.turns.waited > 15 * 60:
        bench.notes.append(f"Waited {bench.turns.waited / 60:.0f} min in total for other benchmarks or pytest "
                           "to finish before the measured runs.")
    say("")
    for note in bench.notes:
        say(f"note: {note}")
    say(bench.tables())
    for name, summary in bench.profiles.items():
        say("\n".join(grants.render_profile(summary, f"profile {name}")))
    say("\n".join(bench.what_bounds()))
    if not args.no_doc:
        grants.write_section(args.doc, SECTION, render_section(bench, machine, when, time.monotonic() - started))
        say(f"\nwrote the ftps section of {args.doc}")
    return 1 if any(v.outcome == "FAIL" for v in bench.verdicts()) else 0


if __name__ == "__main__":
    sys.exit(main())
