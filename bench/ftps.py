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
import hashlib
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness import MB, GiB, MiB, say
from harness.machine import Payloads, machine_facts, tool_version
from harness.procs import Meter, proc_cpu_seconds, proc_status_kib, raise_open_files
from harness.profiles import Profile, ProfileSummary, render_profiles
from harness.report import Sample, Series, Verdict, fact_lines, fmt, kib_to_mb, missed, ratio_verdict, render_section
from harness.report import verdict_rows
from harness.run import Benchmark, argument_parser, interleaved, main, profile_flag, profile_options
from harness.servers import BarePyftpdlib, FwrepoServer, Vsftpd, curl_download, ensure_installed, redact_url
from harness.servers import self_signed_certificate, source_address, start_fwrepo

TARGET_BARE = 0.9  # fwrepo one stream >= 0.9 x bare pyftpdlib
SINGLE = ("vsftpd", "pyftpdlib", "fwrepo")
LABELS = {
    "vsftpd": "vsftpd, anonymous, TLS forced",
    "pyftpdlib": "bare pyftpdlib (TLS_FTPHandler, FTPServer)",
    "fwrepo": "fwrepo, grant location",
}


# --------------------------------------------------------------------------- curl


def curl_ftps(url: str, cacert: Path, expected: int) -> tuple[float, float, float]:
    """One explicit-FTPS download to /dev/null (AUTH TLS, PROT P): (B/s, wall seconds, curl's CPU seconds)."""
    return curl_download(url, expected, ["--ssl-reqd", "--cacert", str(cacert)], status=None)


def warm_up(url: str, cacert: Path, expected: int) -> str:
    """One untimed download; the TLS version and cipher curl negotiated on the data connection (its last one)."""
    done = subprocess.run(["curl", "-sS", "-v", "--ssl-reqd", "--cacert", str(cacert), "-o", "/dev/null",
                           "-w", "%{size_download}", url], capture_output=True, text=True, check=False)
    if done.returncode != 0 or done.stdout.strip() != str(expected):
        raise RuntimeError(f"curl {redact_url(url)}: exit {done.returncode}, {done.stdout.strip()!r} "
                           f"{done.stderr.strip()[-300:]}")
    found = re.findall(r"SSL connection using (.+)", done.stderr)
    return found[-1].strip() if found else "?"


@dataclass
class Fetched:
    sha256: str = ""
    size: int = 0
    error: str = ""


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


class Ftps(Benchmark):
    section = "ftps"
    tools = ("curl", "openssl")

    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        super().__init__(args, work, stack)
        self.size = args.size_mib * MiB
        self.small = args.parallel_mib * MiB
        self.files = Payloads(work / "files", self.size, self.small)
        self.single = {name: Series(name) for name in SINGLE}
        self.parallel: list[Parallel] = []
        self.profiles: dict[str, ProfileSummary] = {}
        self.ciphers: dict[str, str] = {}
        self.baselines: dict[str, Vsftpd | BarePyftpdlib] = {}
        self.fwrepo: FwrepoServer | None = None
        self.fwrepo_idle_kib: int | None = None
        self.fwrepo_hwm_kib: int | None = None
        self.big_id = ""
        self.small_id = ""
        self.charger = 0
        self.ca = Path()
        self.machine: list[str] = []

    # -- set-up

    def measure(self) -> None:
        ensure_installed("vsftpd", "vsftpd")
        raise_open_files()
        self.need_disk(3 * self.size)
        self.setup()
        self.turns.wait("the machine description")
        self.machine = machine_lines(self.work)
        self.run()
        if self.turns.waited > 15 * 60:
            self.notes.append(f"Waited {self.turns.waited / 60:.0f} min in total for other benchmarks or pytest "
                              "to finish before the measured runs.")

    def setup(self) -> None:
        self.files.write()  # vsftpd's anonymous root: readable once it has dropped to its ftp user
        tls = self.work / "tls"
        tls.mkdir()
        self.ca, key = self_signed_certificate(tls)  # the baselines' certificate is its own CA
        for kind in (Vsftpd, BarePyftpdlib):
            baseline = kind(self.work / kind.name, self.files.directory, self.ca, key)
            self.stack.callback(baseline.stop)
            baseline.start()
            self.baselines[kind.name] = baseline
            say(f"{kind.name}: pid {baseline.pid} on port {baseline.port}")
        self.fwrepo = start_fwrepo(self.stack, "fwrepo", self.work / "fwrepo", {"FWREPO_STORAGE": "local"})
        say(f"fwrepo: fwrepo serve pid {self.fwrepo.pid} at {self.fwrepo.url}, FTPS on port {self.fwrepo.ftps_port}")
        say("uploading both files to fwrepo (untimed)")
        self.big_id = self.fwrepo.publish_firmware(self.files.big, "3.0.1")["id"]
        self.small_id = self.fwrepo.publish_firmware(self.files.small, "3.0.2")["id"]
        self.fwrepo_idle_kib = proc_status_kib(self.fwrepo.pid, "VmRSS")

    def locations(self, firmware_id: str, count: int) -> list[str]:
        """Fresh FTPS grants, one per download: a completed download may use its grant up."""
        assert self.fwrepo is not None
        self.charger += count
        return self.fwrepo.grant_locations(firmware_id, count, f"FTPS-{self.charger:06d}", protocol="ftps")

    def target(self, name: str) -> tuple[str, Path, int | None]:
        """(URL, CA file, pid whose RSS is sampled) of one download of the big file."""
        if name == "fwrepo":
            assert self.fwrepo is not None
            return self.locations(self.big_id, 1)[0], self.fwrepo.cacert, self.fwrepo.pid
        return self.baselines[name].url(self.files.big.name), self.ca, None

    def server_cpu(self, name: str) -> Callable[[], float]:
        if name == "fwrepo":
            assert self.fwrepo is not None
            pid = self.fwrepo.pid
            return lambda: proc_cpu_seconds(pid)
        return self.baselines[name].cpu

    # -- measurements

    def run_single(self, name: str) -> Sample:
        def once() -> Sample:
            url, cacert, pid = self.target(name)
            with Meter(pid, server_cpu=self.server_cpu(name)) as meter:
                speed, wall, client_cpu = curl_ftps(url, cacert, self.size)
            return meter.sample(seconds=wall, mb_s=speed / MB, client_cpu=client_cpu)

        return self.turns.measured(f"one stream {name}", once)

    def run_parallel(self) -> Parallel:
        assert self.fwrepo is not None
        server = self.fwrepo

        def once() -> Parallel:
            urls = self.locations(self.small_id, self.args.parallel)
            with Meter(server.pid) as meter:  # the curls are reaped by asyncio: their CPU is in the children's
                fetched = asyncio.run(_fetch_all(urls, server.cacert))
            return Parallel(meter.seconds, fetched, (self.small, self.files.small_sha256), meter.server_cpu or 0.0,
                            meter.client_cpu, meter.rss_max_kib or 0)

        return self.turns.measured(f"{self.args.parallel} concurrent", once)

    def run(self) -> None:
        # Warm-up, untimed: both copies of the file in the page cache, TLS and code paths touched.
        for name in SINGLE:
            url, cacert, _pid = self.target(name)
            self.ciphers[name] = warm_up(url, cacert, self.size)
        for round_number, name in interleaved(SINGLE, self.args.repeat):
            sample = self.run_single(name)
            self.single[name].samples.append(sample)
            say(f"one stream round {round_number}/{self.args.repeat} {name:9} {sample.describe()}")
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
        self.fwrepo_hwm_kib = proc_status_kib(self.fwrepo.pid, "VmHWM")

    def profile(self, name: str) -> None:
        """One extra, uncounted download of the big file under py-spy."""
        say(f"profiling {name} with py-spy (an extra run, not counted)")
        url, cacert, _pid = self.target(name)
        pid = self.fwrepo.pid if name == "fwrepo" and self.fwrepo else self.baselines[name].pid
        median = self.single[name].median("seconds") or 30
        self.turns.wait(f"profiling {name}")
        with Profile(pid, self.work / f"profile-{name}.raw", seconds=int(median * 3) + 20) as profile:
            _speed, wall, _cpu = curl_ftps(url, cacert, self.size)
        summary = self.profiles[name] = profile.summary(FTPS_CATEGORIES, wall, self.args.keep_profiles)
        say(f"  profiled download took {wall:.2f} s; top: {summary.top(4)}")

    # -- verdicts

    def ratio_verdict(self) -> Verdict:
        return ratio_verdict("fwrepo / bare pyftpdlib (one stream)", self.single["fwrepo"].median(),
                             self.single["pyftpdlib"].median(), TARGET_BARE)

    def verdicts(self) -> list[Verdict]:
        out = [self.ratio_verdict()]
        vsftpd = ratio_verdict("fwrepo / vsftpd (one stream)", self.single["fwrepo"].median(),
                               self.single["vsftpd"].median(), None)
        if vsftpd.outcome != "not run":
            out.append(vsftpd)
        errors = sum(sum(run.errors.values()) for run in self.parallel)
        total = sum(len(run.fetched) for run in self.parallel)
        if total:
            out.append(Verdict(f"{self.args.parallel} concurrent: downloads with an error or a wrong SHA-256",
                               f"{errors} of {total}", "0", "PASS" if errors == 0 else "FAIL"))
        return out

    def missed(self) -> bool:
        return missed(self.verdicts())

    # -- report

    def tables(self) -> str:
        to_mb = kib_to_mb
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
                f"| {LABELS[name]} | {fmt(series.median())} | {series.runs()} "
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
        return "\n".join(lines + verdict_rows(self.verdicts()))

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


    def summary(self) -> str:
        return "\n".join([self.tables(), *render_profiles(self.profiles, "profile {name}"), *self.what_bounds()])

    def render(self) -> str:
        args = self.args
        intro = [
            self.written_by(f"bench/ftps.py --size-mib {args.size_mib} --repeat {args.repeat} --parallel {args.parallel} "
                            f"--parallel-mib {args.parallel_mib}{profile_flag(args)}"),
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
        ]
        shared = (f"Client and server share the machine's {os.cpu_count()} CPUs: every CPU second curl spends on TLS is "
                  "taken from the server, for each of the three servers alike.")
        body = [self.tables(), "", *render_profiles(self.profiles, "py-spy profile of {name} during an extra one-stream "
                                                                  "download of {seconds:.2f} s"), *self.what_bounds()]
        return render_section(self.section, "FTPS", intro, self.machine, shared, self.notes, body)


# --------------------------------------------------------------------------- the doc


def machine_lines(work: Path) -> list[str]:
    from importlib.metadata import version

    from OpenSSL import SSL

    vsftpd = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "vsftpd"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return fact_lines({
        **machine_facts(work, hashing=False), "curl": tool_version(["curl", "--version"]),
        "pyftpdlib": version("pyftpdlib"),
        "pyOpenSSL": f"{version('pyOpenSSL')} on {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}",
        "vsftpd": f"Debian package {vsftpd}" if vsftpd else "?",
    })


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, "ftps")
    parser.add_argument("--size-mib", type=int, default=1024, help="the large download, MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server and of the concurrent part (default 3)")
    parser.add_argument("--parallel", type=int, default=200, help="concurrent downloads (default 200)")
    parser.add_argument("--parallel-mib", type=int, default=20, help="size of each concurrent download, MiB (default 20)")
    profile_options(parser, ("auto", "always", "never"),
                    "py-spy an extra download: when the throughput target is missed (auto, default), always, never")
    args = parser.parse_args(argv)
    if min(args.size_mib, args.repeat, args.parallel, args.parallel_mib) <= 0:
        parser.error("sizes and counts must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main(Ftps, parse_args(None)))
