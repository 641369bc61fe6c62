"""Download throughput and memory of fwrepo, next to nginx and a direct GET from Ceph RGW.

One run measures, over HTTPS with curl as the client (median of --repeat runs):

  a. one large download (default 1 GiB) through a grant URL of `fwrepo serve`
     with FWREPO_STORAGE=local, vs the same file from nginx over TLS
     (sendfile on, its own config and self-signed certificate); then through
     fwrepo with FWREPO_STORAGE=s3 on a throwaway Ceph RGW, vs a direct GET of
     the same object from RGW (curl on a presigned URL);
  b. 100 parallel downloads (default 20 MiB each, each on its own grant) through
     fwrepo vs nginx with `worker_processes 2` (`xargs -P 100 curl`);
  c. peak RSS of `fwrepo serve` while 2,000 slow TLS clients each read about
     64 KB/s for about 20 s (an asyncio client in a child process).

Targets: (a) fwrepo-local >= 0.9 x nginx; fwrepo-s3 >= 0.7 x the direct RGW
GET; (b) >= 0.7 x nginx; (c) server RSS < 300 MB. Where one is missed, an
extra (unmeasured) run of that workload is profiled with py-spy and the
section says what bounds it. Rewrites the `download` section of
docs/benchmarks.md.

    .venv/bin/python bench/download.py [--size-mib 1024] [--repeat 3] [--no-doc]

Waits before every measured run until no other benchmark (`bench/...`) and no
pytest is running. Everything it starts (fwrepo servers, nginx, Ceph, py-spy,
the client) and every file it writes are stopped/removed at the end, also on
errors and Ctrl-C. Exit status: 0 all targets met, 1 a target missed, 2 the
benchmark itself failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness import MB, GiB, MiB, say
from harness.machine import Payloads, boto3_version, ceph_version, curl_version, machine_facts, sync_all, tool_version
from harness.procs import Meter, children_cpu, proc_status_kib, raise_open_files
from harness.profiles import Profile, ProfileSummary, render_profiles, short_path
from harness.report import Sample, Series, Verdict, ceiling_verdict, fact_lines, fmt, kib_to_mb, missed, ratio_verdict
from harness.report import render_section, verdict_rows
from harness.run import Benchmark, argument_parser, interleaved, main, profile_flag, profile_options
from harness.servers import FwrepoServer, Nginx, curl_download, ensure_installed, start_fwrepo
from harness.stores import Ceph, CephUnavailable, start_ceph

TARGET_LOCAL = 0.9  # fwrepo-local one stream >= 0.9 x nginx
TARGET_PARALLEL = 0.7  # fwrepo 100 parallel >= 0.7 x nginx (2 workers)
TARGET_S3 = 0.7  # fwrepo-s3 >= 0.7 x direct RGW GET
TARGET_RSS_MB = 300  # server peak RSS with 2,000 slow clients
BUCKET = "bench-download"

SINGLE = ("nginx", "fwrepo-local", "rgw-direct", "fwrepo-s3", "fwrepo-s3-redirect")
PARALLEL = ("nginx-100", "fwrepo-100")
PARTS = {"local", "slow", "s3"}

@dataclass
class SlowResult:
    clients: int = 0
    rate: int = 0
    seconds: float = 0
    connected: int = 0
    ok: int = 0  # status 200 and read for the whole time (or to the end)
    errors: dict[str, int] = field(default_factory=dict)
    bytes_total: int = 0
    per_client_kb_s_median: float = 0
    per_client_kb_s_p5: float = 0
    wall: float = 0
    idle_rss_kib: int | None = None
    hwm_kib: int | None = None
    max_rss_kib: int | None = None
    max_fds: int = 0
    server_cpu: float = 0
    client_cpu: float = 0
    skipped: str | None = None

    @property
    def peak_mb(self) -> float | None:
        values = [v for v in (self.hwm_kib, self.max_rss_kib) if v is not None]
        return max(values) * 1024 / MB if values else None



# --------------------------------------------------------------------------- curl


def curl_parallel(urls: list[str], cacert: Path, expected: int, work: Path) -> tuple[float, float, list[float]]:
    """`xargs -P N -n 1 curl` over the URLs: (wall seconds, CPU of all curls, each transfer's speed in B/s)."""
    listing = work / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    before = children_cpu()
    start = time.perf_counter()
    with listing.open() as urls_in:
        done = subprocess.run(
            ["xargs", "-P", str(len(urls)), "-n", "1", "curl", "-s", "-S", "-o", "/dev/null", "--cacert", str(cacert),
             "-w", "%{http_code} %{size_download} %{speed_download}\\n"],
            stdin=urls_in, capture_output=True, text=True, check=False,
        )  # fmt: skip
    wall = time.perf_counter() - start
    cpu = children_cpu() - before
    lines = [line.split() for line in done.stdout.splitlines() if line.strip()]
    good = [line for line in lines if len(line) == 3 and line[0] == "200" and int(line[1]) == expected]
    if done.returncode != 0 or len(good) != len(urls):
        raise RuntimeError(f"parallel curl: exit {done.returncode}, {len(good)}/{len(urls)} complete; "
                           f"{done.stderr.strip()[:300]} {done.stdout[:300]}")
    return wall, cpu, [float(line[2]) for line in good]


# --------------------------------------------------------------------------- the slow clients


async def _slow_client(url: str, context: ssl.SSLContext, delay: float, rate: int, seconds: float,
                       result: dict) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    await asyncio.sleep(delay)
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host, limit=64 * 1024), timeout=60)
        result["connected"] = True
        writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
        status = head.split(b" ", 2)[1]
        if status != b"200":
            result["error"] = f"HTTP {status.decode(errors='replace')}"
            return
        began, got = time.monotonic(), 0
        while True:
            elapsed = time.monotonic() - began
            if elapsed >= seconds:
                break
            chunk = await asyncio.wait_for(reader.read(16 * 1024), timeout=60)
            if not chunk:
                break  # the whole image came, sooner than planned
            got += len(chunk)
            ahead = got / rate - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(min(ahead, seconds - (time.monotonic() - began)) if ahead else 0)
        result["bytes"] = got
        result["seconds"] = time.monotonic() - began
        result["ok"] = True
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as error:
        result["error"] = type(error).__name__
    finally:
        if writer is not None:
            writer.transport.abort()  # hang up mid-download, as a charger that lost its link


async def _slow_clients(urls: list[str], cacert: str, rate: int, seconds: float, ramp: float) -> list[dict]:
    context = ssl.create_default_context(cafile=cacert)
    results: list[dict] = [{} for _ in urls]
    await asyncio.gather(*(
        _slow_client(url, context, ramp * index / len(urls), rate, seconds, results[index])
        for index, url in enumerate(urls)
    ))
    return results


def slow_client_main(arguments: list[str]) -> int:
    """`download.py --slow-client URLS CACERT RATE SECONDS RAMP`: the client of part c, in its own process."""
    urls_file, cacert, rate, seconds, ramp = arguments
    urls = Path(urls_file).read_text().split()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, len(urls) + 1024)), hard))
    try:
        import uvloop  # the client's own efficiency only; the server is measured

        uvloop.install()
    except ImportError:
        pass
    start = time.monotonic()
    results = asyncio.run(_slow_clients(urls, cacert, int(rate), float(seconds), float(ramp)))
    print(json.dumps({"wall": time.monotonic() - start, "results": results}))
    return 0


# --------------------------------------------------------------------------- profile categories


DOWNLOAD_CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("TLS handshakes", re.compile(r"do_handshake|_do_handshake|load_verify|wrap_bio")),
    ("TLS encryption (ssl.SSLObject.write, in the event loop)", re.compile(r"ssl\.py")),
    ("reading the file (LocalStorage, os.preadv)", re.compile(r"storage/local\.py")),
    ("reading from S3 (botocore / urllib3 body)", re.compile(r"storage/s3\.py|botocore/|urllib3/|http/client\.py|socket\.py")),
    ("authorizing the download (token, grant state, database)", re.compile(r"domain/grants\.py|domain/tokens\.py|sqlalchemy/|domain/catalog\.py")),
    ("worker-thread hand-off (anyio to_thread: run_in_threadpool in _pulled)", re.compile(r"anyio/|starlette/concurrency\.py|concurrent/futures|threading\.py|queue\.py")),
    ("HTTP plumbing (Starlette StreamingResponse, uvicorn)", re.compile(r"starlette/|uvicorn/|http/streaming\.py|http/downloads\.py")),
    ("event loop: uvloop C code, socket writes and polling (idle included)", re.compile(r"asyncio/|uvloop")),
]


# --------------------------------------------------------------------------- tracemalloc of the server


# Put on the PYTHONPATH of one extra (unmeasured) `fwrepo serve` when the slow-clients target is missed:
# repo_service is left as it is; the server traces Python allocations from its start, and on SIGUSR1 writes
# what is allocated where (and its VmRSS at that moment) to $BENCH_TRACEMALLOC_OUT.N.json.
TRACEMALLOC_HOOK = """\
# Written by bench/download.py: tracemalloc in `fwrepo serve`, a snapshot on SIGUSR1.
import os
import sys

_out = os.environ.get("BENCH_TRACEMALLOC_OUT")
if _out and "serve" in sys.argv[1:]:
    import json
    import signal
    import tracemalloc

    tracemalloc.start(1)
    _count = [0]

    def _snapshot(signum, frame):
        with open("/proc/self/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        files = [[s.traceback[0].filename, s.size, s.count] for s in snapshot.statistics("filename")]
        lines = [[f"{s.traceback[0].filename}:{s.traceback[0].lineno}", s.size, s.count]
                 for s in snapshot.statistics("lineno")[:400]]
        traced, _peak = tracemalloc.get_traced_memory()
        path = f"{_out}.{_count[0]}.json"
        _count[0] += 1
        with open(path + ".tmp", "w") as f:
            json.dump({"rss_kib": rss, "traced": traced, "overhead": tracemalloc.get_tracemalloc_memory(),
                       "files": files, "lines": lines}, f)
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR1, _snapshot)
"""


@dataclass
class TracedMemory:
    """The slow clients once more, on a server with tracemalloc: Python allocations per connection, by file."""

    connected: int = 0
    idle_rss_kib: int = 0
    peak_rss_kib: int = 0
    idle_traced: int = 0
    peak_traced: int = 0
    overhead: int = 0  # growth of tracemalloc's own memory between the two snapshots
    files: list[tuple[str, int, int]] = field(default_factory=list)  # (file, bytes grown, blocks grown), largest first
    lines: list[tuple[str, int, int]] = field(default_factory=list)
    error: str = ""

    @staticmethod
    def grown(before: list, after: list) -> list[tuple[str, int, int]]:
        base = {name: (size, count) for name, size, count in before}
        out = [(name, size - base.get(name, (0, 0))[0], count - base.get(name, (0, 0))[1]) for name, size, count in after]
        return sorted((row for row in out if row[1] > 0), key=lambda row: -row[1])


# --------------------------------------------------------------------------- the bench


class Download(Benchmark):
    section = "download"
    tools = ("curl", "xargs", "openssl")

    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        super().__init__(args, work, stack)
        self.size = args.size_mib * MiB
        self.small = args.parallel_mib * MiB
        self.files = Payloads(work / "files", self.size, self.small)
        self.single = {name: Series(name) for name in SINGLE}
        self.parallel = {name: Series(name) for name in PARALLEL}
        self.slow = SlowResult()
        self.profiles: dict[str, ProfileSummary] = {}
        self.traced: TracedMemory | None = None  # the slow clients under tracemalloc, when that target is missed
        self.server_rss: dict[str, tuple[int | None, int | None]] = {}  # name -> (idle VmRSS, VmHWM at stop) KiB
        self.nginx: Nginx | None = None
        self.local: FwrepoServer | None = None
        self.s3_server: FwrepoServer | None = None
        self.redirect_server: FwrepoServer | None = None
        self.ceph: Ceph | None = None
        self.urls: dict[str, str] = {}
        self.parallel_urls: list[str] = []
        self.counter = 0
        self.machine: list[str] = []

    # -- set-up

    def measure(self) -> None:
        ensure_installed("nginx", "nginx")
        raise_open_files()
        self.need_disk(4 * self.size)
        self.files.write()
        self.turns.wait("the machine description")
        self.machine = machine_lines(self.work)
        if "local" in self.args.only:
            self.phase_local()
        if "slow" in self.args.only:
            self.phase_slow()
        if "s3" in self.args.only:
            self.phase_s3()
        self.notes += spread_notes(self)

    def fwrepo(self, name: str, settings: dict[str, str]) -> FwrepoServer:
        # No FTPS server inside `fwrepo serve`: only HTTPS downloads are measured here.
        server = start_fwrepo(self.stack, name, self.work / name, {"FWREPO_FTPS": "false", **settings})
        say(f"{name}: fwrepo serve pid {server.pid} at {server.url}")
        return server

    def publish(self, server: FwrepoServer, path: Path) -> str:
        self.counter += 1
        return server.publish_firmware(path, f"2.0.{self.counter}")["id"]

    def stop_fwrepo(self, server: FwrepoServer | None, idle: int | None) -> None:
        if server is None or server.proc is None:
            return
        self.server_rss[server.name] = (idle, proc_status_kib(server.pid, "VmHWM"))
        server.stop()

    # -- measurements

    def run_single(self, name: str) -> Sample:
        options: list[str] = []
        if name == "nginx":
            assert self.nginx is not None
            url, pid, cpu = self.nginx.url + "/big.bin", None, self.nginx.cpu
            options = ["--cacert", str(self.nginx.cacert)]
        elif name == "rgw-direct":
            url, pid, cpu = self.urls["rgw-direct"], None, None
        else:
            server = {"fwrepo-local": self.local, "fwrepo-s3": self.s3_server,
                      "fwrepo-s3-redirect": self.redirect_server}[name]
            assert server is not None
            url, pid, cpu = self.urls[name], server.pid, None
            options = ["--cacert", str(server.cacert), *(["-L"] if name == "fwrepo-s3-redirect" else [])]
        ceph = self.ceph.cpu if self.ceph and name in ("rgw-direct", "fwrepo-s3", "fwrepo-s3-redirect") else None

        def once() -> Sample:
            with Meter(pid, server_cpu=cpu, ceph_cpu=ceph) as meter:
                speed, wall, client_cpu = curl_download(url, self.size, options)
            return meter.sample(seconds=wall, mb_s=speed / MB, client_cpu=client_cpu)

        return self.turns.measured(name, once)

    def run_parallel(self, name: str) -> Sample:
        if name == "nginx-100":
            assert self.nginx is not None
            urls, cacert, cpu, pid = [self.nginx.url + "/small.bin"] * self.args.parallel, self.nginx.cacert, self.nginx.cpu, None
        else:
            assert self.local is not None
            urls, cacert, cpu, pid = self.parallel_urls, self.local.cacert, None, self.local.pid

        def once() -> Sample:
            with Meter(pid, server_cpu=cpu) as meter:
                wall, client_cpu, _speeds = curl_parallel(urls, cacert, self.small, self.work)
            return meter.sample(seconds=wall, mb_s=len(urls) * self.small / wall / MB, client_cpu=client_cpu)

        return self.turns.measured(name, once)

    def rounds(self, names: list[str], measure: Callable[[str], Sample], series: dict[str, Series], what: str) -> None:
        for round_number, name in interleaved(names, self.args.repeat):
            sample = measure(name)
            series[name].samples.append(sample)
            say(f"{what} round {round_number}/{self.args.repeat} {name:13} {sample.describe()}")

    def phase_local(self) -> None:
        say("-- local phase: nginx and fwrepo-local (Ceph not running)")
        self.nginx = Nginx(self.work / "nginx", self.files.directory, workers=2)
        self.stack.callback(self.nginx.stop)
        self.nginx.start()
        say(f"nginx (2 workers) pids {self.nginx.pids()} at {self.nginx.url}")
        self.local = self.fwrepo("fwrepo-local", {"FWREPO_STORAGE": "local"})
        say(f"uploading {self.size / MiB:.0f} MiB and {self.small / MiB:.0f} MiB to fwrepo-local (untimed)")
        big_id = self.publish(self.local, self.files.big)
        small_id = self.publish(self.local, self.files.small)
        self.urls["fwrepo-local"] = self.local.grant_locations(big_id, 1, "BIG")[0]
        self.parallel_urls = self.local.grant_locations(small_id, self.args.parallel, "PAR")
        idle = proc_status_kib(self.local.pid, "VmRSS")
        sync_all()
        local_options = ["--cacert", str(self.local.cacert)]
        # Warm-up, untimed: both copies in the page cache, TLS and code paths touched.
        curl_download(self.nginx.url + "/big.bin", self.size, ["--cacert", str(self.nginx.cacert)])
        curl_download(self.urls["fwrepo-local"], self.size, local_options)
        self.rounds(["nginx", "fwrepo-local"], self.run_single, self.single, "one stream")
        self.rounds(list(PARALLEL), self.run_parallel, self.parallel, f"{self.args.parallel} parallel")
        if self.wants_profile("fwrepo-local"):
            self.profile("fwrepo-local", lambda: curl_download(self.urls["fwrepo-local"], self.size, local_options),
                         self.local)
        if self.wants_profile("fwrepo-100"):
            self.profile("fwrepo-100", lambda: curl_parallel(self.parallel_urls, self.local.cacert, self.small, self.work),
                         self.local)
        self.stop_fwrepo(self.local, idle)
        self.nginx.stop()

    def phase_slow(self) -> None:
        say(f"-- {self.args.slow_clients} slow clients")
        result = self.slow
        result.clients, result.rate, result.seconds = self.args.slow_clients, self.args.slow_rate, self.args.slow_seconds
        server = self.fwrepo("fwrepo-slow", {"FWREPO_STORAGE": "local"})
        firmware_id = self.publish(server, self.files.small)
        listing = self.work / "slow-urls.txt"
        listing.write_text("\n".join(server.grant_locations(firmware_id, result.clients, "SLOW")) + "\n")
        sync_all()
        time.sleep(1.0)
        result.idle_rss_kib = proc_status_kib(server.pid, "VmRSS")
        command = self.slow_client_command(listing, server)
        profile_out = self.work / "profile-slow.raw"
        duration = int(self.args.slow_seconds + self.args.slow_ramp + 20)
        timeout = self.args.slow_seconds + self.args.slow_ramp + 240
        profiling = self.args.profile == "always"

        def once() -> dict:
            fds = [0]
            stop = threading.Event()

            def count_fds() -> None:
                while not stop.wait(1.0):
                    try:
                        fds[0] = max(fds[0], len(os.listdir(f"/proc/{server.pid}/fd")))
                    except OSError:
                        pass

            counter = threading.Thread(target=count_fds, daemon=True)
            counter.start()
            with Meter(server.pid) as meter, \
                    (Profile(server.pid, profile_out, duration) if profiling else nullcontext()) as profile:
                done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
            stop.set()
            counter.join()
            if done.returncode != 0:
                raise RuntimeError(f"slow clients failed: {done.stderr.strip()[-800:]}" + server.describe_exit())
            report = json.loads(done.stdout)
            report.update(server_cpu=meter.server_cpu, client_cpu=meter.client_cpu, max_rss=meter.rss_max_kib,
                          fds=fds[0], profile=profile)
            return report

        report = self.turns.measured("slow clients", once, retries=1)
        results = report["results"]
        result.wall = report["wall"]
        result.connected = sum(1 for r in results if r.get("connected"))
        result.ok = sum(1 for r in results if r.get("ok"))
        for r in results:
            if "error" in r:
                result.errors[r["error"]] = result.errors.get(r["error"], 0) + 1
        result.bytes_total = sum(r.get("bytes", 0) for r in results)
        speeds = sorted(r["bytes"] / r["seconds"] / 1000 for r in results if r.get("ok") and r.get("seconds"))
        if speeds:
            result.per_client_kb_s_median = statistics.median(speeds)
            result.per_client_kb_s_p5 = speeds[len(speeds) // 20]
        result.server_cpu, result.client_cpu = report["server_cpu"], report["client_cpu"]
        result.max_rss_kib, result.max_fds = report["max_rss"], report["fds"]
        result.hwm_kib = proc_status_kib(server.pid, "VmHWM")
        say(f"slow clients: {result.ok}/{result.clients} ok, errors {result.errors or 'none'}, per client median "
            f"{result.per_client_kb_s_median:.0f} KB/s (5th percentile {result.per_client_kb_s_p5:.0f}), server RSS "
            f"idle {kib_to_mb(result.idle_rss_kib):.0f} MB, max sampled {kib_to_mb(result.max_rss_kib):.0f} MB, "
            f"VmHWM {kib_to_mb(result.hwm_kib):.0f} MB, {result.max_fds} fds, server CPU {result.server_cpu:.1f} s")
        if report["profile"] is not None:
            self.keep_profile("slow clients", report["profile"], 0.0)
        elif self.wants_profile("slow"):
            self.turns.wait("profiling the slow clients")
            with Profile(server.pid, profile_out, duration) as profile:
                start = time.monotonic()
                subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
            self.keep_profile("slow clients", profile, time.monotonic() - start)
        self.stop_fwrepo(server, result.idle_rss_kib)
        if self.wants_profile("slow"):
            self.trace_slow()

    def slow_client_command(self, listing: Path, server: FwrepoServer) -> list[str]:
        """This script as the slow clients' process, on the grant URLs in listing."""
        return [sys.executable, str(Path(__file__).resolve()), "--slow-client", str(listing), str(server.cacert),
                str(self.args.slow_rate), str(self.args.slow_seconds), str(self.args.slow_ramp)]

    def trace_slow(self) -> None:
        """The slow clients once more (not counted) on a fresh server that runs tracemalloc: what grows, per file."""
        say("tracing the slow clients' memory with tracemalloc (an extra run on a fresh server, not counted)")
        traced = self.traced = TracedMemory()
        args = self.args
        hook = self.work / "tracemalloc-hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(TRACEMALLOC_HOOK)
        out = self.work / "tracemalloc"
        pythonpath = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
        server = self.fwrepo("fwrepo-slow-traced", {"FWREPO_STORAGE": "local", "PYTHONPATH": pythonpath,
                                                    "BENCH_TRACEMALLOC_OUT": str(out)})
        client = None
        try:
            firmware_id = self.publish(server, self.files.small)
            urls = server.grant_locations(firmware_id, args.slow_clients, "TRACE")
            listing = self.work / "traced-urls.txt"
            listing.write_text("\n".join(urls) + "\n")
            sync_all()
            self.turns.wait("tracing the slow clients' memory")
            time.sleep(1.0)

            def snapshot(index: int) -> dict:
                os.kill(server.pid, signal.SIGUSR1)
                path = Path(f"{out}.{index}.json")
                deadline = time.monotonic() + 120
                while not path.exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no tracemalloc snapshot {path.name} from the server" + server.describe_exit())
                    try:  # a request wakes an idle event loop, which then runs the signal handler
                        import urllib.request

                        urllib.request.urlopen(server.url + "/healthz", timeout=5, context=server.ssl_context()).close()
                    except OSError:
                        pass
                    time.sleep(0.5)
                return json.loads(path.read_text())

            idle = snapshot(0)
            client = subprocess.Popen(self.slow_client_command(listing, server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(args.slow_ramp + 0.6 * args.slow_seconds)  # all connected, none done yet
            peak = snapshot(1)
            stdout, stderr = client.communicate(timeout=args.slow_seconds + args.slow_ramp + 240)
            if client.returncode != 0:
                raise RuntimeError(f"slow clients failed: {stderr.strip()[-500:]}")
            results = json.loads(stdout)["results"]
            traced.connected = sum(1 for r in results if r.get("connected"))
            traced.idle_rss_kib, traced.peak_rss_kib = idle["rss_kib"], peak["rss_kib"]
            traced.idle_traced, traced.peak_traced, traced.overhead = idle["traced"], peak["traced"], peak["overhead"] - idle["overhead"]
            traced.files = TracedMemory.grown(idle["files"], peak["files"])
            traced.lines = TracedMemory.grown(idle["lines"], peak["lines"])
            per = (traced.peak_traced - traced.idle_traced) / max(traced.connected, 1)
            say(f"  tracemalloc: {traced.connected} connected, Python allocations grew {per / 1000:.0f} KB per connection; "
                + ", ".join(f"{short_path(name)} {size / max(traced.connected, 1) / 1000:.1f} KB"
                            for name, size, _count in traced.files[:6]))
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as error:
            traced.error = str(error)[:300]
            say(f"  tracemalloc run failed: {traced.error}")
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
            server.stop()


    def phase_s3(self) -> None:
        say("-- S3 phase: Ceph RGW, direct and through fwrepo-s3")
        try:
            self.ceph = start_ceph(self.stack, self.work / "ceph", 2 * self.size + GiB)
        except CephUnavailable as error:
            for name in ("rgw-direct", "fwrepo-s3", "fwrepo-s3-redirect"):
                self.single[name].skipped = str(error)
            self.notes.append(f"S3 part not run: {error}.")
            say(f"S3 part skipped: {error}")
            return
        client = self.ceph.client()
        client.create_bucket(Bucket=BUCKET)
        s3_settings = self.ceph.fwrepo_settings(BUCKET)
        self.s3_server = self.fwrepo("fwrepo-s3", s3_settings)
        say(f"uploading {self.size / MiB:.0f} MiB to fwrepo-s3 (untimed)")
        firmware_id = self.publish(self.s3_server, self.files.big)
        self.urls["fwrepo-s3"] = self.s3_server.grant_locations(firmware_id, 1, "S3")[0]
        keys = [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
                if item["Size"] == self.size]
        if len(keys) != 1:
            raise RuntimeError(f"expected one {self.size}-byte object in {BUCKET}, found {keys}")
        self.urls["rgw-direct"] = client.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": keys[0]}, ExpiresIn=3600)
        # The same image behind FWREPO_DOWNLOAD_MODE=redirect (its own server and copy): 302 to a presigned URL.
        self.redirect_server = self.fwrepo("fwrepo-s3-redirect", {**s3_settings, "FWREPO_DOWNLOAD_MODE": "redirect"})
        say(f"uploading {self.size / MiB:.0f} MiB to fwrepo-s3-redirect (untimed)")
        redirect_id = self.publish(self.redirect_server, self.files.big)
        self.urls["fwrepo-s3-redirect"] = self.redirect_server.grant_locations(redirect_id, 1, "S3R")[0]
        idle = proc_status_kib(self.s3_server.pid, "VmRSS")
        s3_options = ["--cacert", str(self.s3_server.cacert)]
        curl_download(self.urls["rgw-direct"], self.size)  # warm-up, untimed
        curl_download(self.urls["fwrepo-s3"], self.size, s3_options)
        self.rounds(["rgw-direct", "fwrepo-s3", "fwrepo-s3-redirect"], self.run_single, self.single, "S3 one stream")
        if self.wants_profile("fwrepo-s3"):
            self.profile("fwrepo-s3", lambda: curl_download(self.urls["fwrepo-s3"], self.size, s3_options),
                         self.s3_server)
        self.stop_fwrepo(self.s3_server, idle)
        self.stop_fwrepo(self.redirect_server, None)

    # -- profiles

    def wants_profile(self, name: str) -> bool:
        if self.args.profile == "never":
            return False
        if self.args.profile == "always":
            return True
        return any(v.key == name and (v.outcome == "FAIL" or v.narrow) for v in self.verdicts())

    def profile(self, name: str, work: Callable[[], object], server: FwrepoServer) -> None:
        say(f"profiling {name} with py-spy (an extra run, not counted)")
        self.turns.wait(f"profiling {name}")
        with Profile(server.pid, self.work / f"profile-{name}.raw", seconds=300, rate=200) as profile:
            start = time.monotonic()
            work()
            seconds = time.monotonic() - start
        self.keep_profile(name, profile, seconds)

    def keep_profile(self, name: str, profile: Profile, seconds: float) -> None:
        summary = self.profiles[name] = profile.summary(DOWNLOAD_CATEGORIES, seconds, self.args.keep_profiles)
        say(f"  {name}: {summary.top(5)}")

    # -- verdicts and report

    def verdicts(self) -> list[Verdict]:
        single, parallel = self.single, self.parallel
        out = [
            ratio_verdict("one stream: fwrepo-local / nginx", single["fwrepo-local"].median(), single["nginx"].median(),
                          TARGET_LOCAL, "fwrepo-local"),
            ratio_verdict(f"{self.args.parallel} parallel: fwrepo / nginx (2 workers)", parallel["fwrepo-100"].median(),
                          parallel["nginx-100"].median(), TARGET_PARALLEL, "fwrepo-100"),
            ratio_verdict("one stream: fwrepo-s3 / direct RGW GET", single["fwrepo-s3"].median(),
                          single["rgw-direct"].median(), TARGET_S3, "fwrepo-s3"),
        ]
        redirect = ratio_verdict("info: fwrepo-s3 in redirect mode / direct RGW GET",
                                 single["fwrepo-s3-redirect"].median(), single["rgw-direct"].median(), None, "redirect")
        if redirect.outcome != "not run":
            out.append(redirect)
        out.append(ceiling_verdict(f"{self.args.slow_clients} slow clients: server peak RSS", self.slow.peak_mb,
                                   TARGET_RSS_MB, " MB", key="slow"))
        return out

    def missed(self) -> bool:
        return missed(self.verdicts())

    def complete(self) -> bool:
        return self.args.only == PARTS

    def tables(self) -> str:
        lines = [
            f"One stream of {self.size / MiB:.0f} MiB (curl, median of {self.args.repeat}):",
            "",
            ("| method | MB/s (median) | runs (MB/s) | wall s (median) | server CPU s | curl CPU s | Ceph CPU s "
             "| server max RSS MB |"),
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        labels = {"nginx": "nginx, TLS", "fwrepo-local": "fwrepo-local, grant URL, TLS",
                  "rgw-direct": "Ceph RGW direct, presigned URL, plain HTTP", "fwrepo-s3": "fwrepo-s3, grant URL, TLS",
                  "fwrepo-s3-redirect": "info: fwrepo-s3 with FWREPO_DOWNLOAD_MODE=redirect (curl -L: TLS 302, then RGW)"}
        for name in SINGLE:
            series = self.single[name]
            if series.skipped:
                lines.append(f"| {labels[name]} | not run | | | | | | |")
                continue
            lines.append(
                f"| {labels[name]} | {fmt(series.median())} | {series.runs()} "
                f"| {fmt(series.median('seconds'), '{:.2f}')} | {fmt(series.median('server_cpu'))} "
                f"| {fmt(series.median('client_cpu'))} | {fmt(series.median('ceph_cpu'))} "
                f"| {fmt(kib_to_mb(series.median('rss_max_kib')), '{:.0f}')} |"
            )
        lines += [
            "",
            (f"{self.args.parallel} parallel downloads of {self.small / MiB:.0f} MiB (`xargs -P {self.args.parallel} curl`, "
             f"median of {self.args.repeat}):"),
            "",
            "| method | aggregate MB/s (median) | runs (MB/s) | wall s (median) | server CPU s | curl CPU s | server max RSS MB |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        labels = {"nginx-100": "nginx, TLS, worker_processes 2", "fwrepo-100": "fwrepo-local, one grant URL each, TLS"}
        for name in PARALLEL:
            series = self.parallel[name]
            lines.append(
                f"| {labels[name]} | {fmt(series.median())} | {series.runs()} "
                f"| {fmt(series.median('seconds'), '{:.2f}')} | {fmt(series.median('server_cpu'))} "
                f"| {fmt(series.median('client_cpu'))} | {fmt(kib_to_mb(series.median('rss_max_kib')), '{:.0f}')} |"
            )
        slow = self.slow
        lines += ["", f"{slow.clients} slow clients on fwrepo-local (one run):", ""]
        if slow.skipped or not slow.clients:
            lines.append(f"not run{': ' + slow.skipped if slow.skipped else ''}")
        else:
            errors = ", ".join(f"{k} {v}" for k, v in sorted(slow.errors.items())) or "none"
            lines += [
                "| clients ok | errors | per client KB/s (median / 5th pct) | server fds (max) | server RSS MB: idle / max sampled / VmHWM | server CPU s | client CPU s |",
                "| ---: | --- | --- | ---: | --- | ---: | ---: |",
                (f"| {slow.ok} / {slow.clients} | {errors} | {slow.per_client_kb_s_median:.0f} / {slow.per_client_kb_s_p5:.0f} "
                 f"| {slow.max_fds} | {fmt(kib_to_mb(slow.idle_rss_kib), '{:.0f}')} / {fmt(kib_to_mb(slow.max_rss_kib), '{:.0f}')} / "
                 f"{fmt(kib_to_mb(slow.hwm_kib), '{:.0f}')} | {slow.server_cpu:.1f} | {slow.client_cpu:.1f} |"),
            ]
        if self.server_rss:
            lines += ["", "Server RSS over each fwrepo server's life (MB, idle after set-up / VmHWM at the end): "
                      + "; ".join(f"{name} {fmt(kib_to_mb(idle), '{:.0f}')} / {fmt(kib_to_mb(hwm), '{:.0f}')}"
                                  for name, (idle, hwm) in self.server_rss.items()) + "."]
        return "\n".join(lines + verdict_rows(self.verdicts()))

    def summary(self) -> str:
        return "\n".join([self.tables(), *render_profiles(self.profiles, "profile {name}")])

    def render(self) -> str:
        args = self.args
        intro = [
            self.written_by(f"bench/download.py --size-mib {args.size_mib} --repeat {args.repeat}{profile_flag(args)}"),
            "",
            "Method:",
            "",
            (f"- **Files**: {args.size_mib} MiB and {args.parallel_mib} MiB of random bytes, uploaded (untimed) to each fwrepo "
             "server and published; grants issued through the API. Every file is in the page cache: an untimed warm-up "
             "download of each precedes the runs. The runs interleave the methods of a part (even rounds in reverse), "
             "each after a wait until no other benchmark or pytest runs; a run during which another benchmark used CPU "
             "is repeated."),
            ("- **Client**: curl (`curl -s -o /dev/null --cacert ... -w '%{speed_download}'`); MB/s is 10^6 bytes/s. "
             "One stream: curl's speed_download of each run, median. Parallel: `xargs -P N -n 1 curl` with N URLs "
             "(each fwrepo download on its own grant, nginx the same file), aggregate = N x size / wall time of all N, "
             "every transfer's status and size checked."),
            ("- **fwrepo**: `fwrepo serve` (one uvicorn process) over HTTPS with its development certificate "
             "(ECDSA P-256), FWREPO_LOG_LEVEL=warning; FWREPO_STORAGE=local (data directory on the disk below) or "
             "s3 (default FWREPO_DOWNLOAD_MODE=stream: fwrepo fetches from RGW and re-sends over TLS)."),
            ("- **nginx**: Debian's package, its own minimal config in the temporary directory (`daemon off`, "
             "`worker_processes 2`, `sendfile on`, `tcp_nopush on`, access log off) serving the same files over TLS "
             "with a self-signed ECDSA P-256 certificate made by openssl. This kernel has no kernel TLS, so with TLS "
             "nginx cannot use sendfile: it reads the file into buffers and encrypts with OpenSSL in user space, as "
             "fwrepo does."),
            ("- **Ceph RGW**: the throwaway single-node cluster of `tests/support/s3servers.py` (memstore OSD, i.e. RAM; "
             "plain HTTP on 127.0.0.1); the direct GET is curl on a presigned URL of the very object fwrepo-s3 "
             "serves. Ceph runs only in its phase; the local measurements run before it starts."),
            (f"- **Slow clients**: a fresh fwrepo-local server, a {args.parallel_mib} MiB image and one grant per client. "
             f"A child process (asyncio on uvloop, `ssl`) opens {args.slow_clients} TLS connections, spread over "
             f"{args.slow_ramp:.0f} s, sends GET on each client's grant URL and reads 16 KiB at a time with pauses so as "
             f"not to exceed {args.slow_rate / 1000:.0f} KB/s, for {args.slow_seconds:.0f} s, then hangs up. The "
             "server's VmRSS is sampled every 20 ms; VmHWM is read at the end (its whole life: start-up, the upload "
             "and the grants included). RLIMIT_NOFILE of client and server is raised to the hard limit."),
            "- **CPU**: user+system seconds during one run (median) of the server (nginx: master and workers), of curl, of Ceph.",
            "",
        ]
        shared = (f"Client, server (and Ceph) share the machine's {os.cpu_count()} CPUs: every CPU second the client spends on "
                  "TLS is taken from the server, for nginx as for fwrepo.")
        body = [self.tables(), "", *render_profiles(self.profiles, "py-spy profile of fwrepo during an extra {name} run"),
                *findings(self), WHAT_IF, ""]
        return render_section(self.section, "Download", intro, self.machine, shared, self.notes, body)


# --------------------------------------------------------------------------- the doc


def machine_lines(work: Path) -> list[str]:
    facts = {**machine_facts(work), "curl": curl_version(), "boto3": boto3_version(), "Ceph": ceph_version(),
             "nginx": tool_version(["nginx", "-v"]).replace("nginx version: ", ""),
             "OpenSSL (curl, nginx, Python ssl)": ssl.OPENSSL_VERSION,
             "kernel TLS": ("available" if Path("/proc/net/tls_stat").exists()
                            else "not available (no /proc/net/tls_stat)")}
    try:
        import uvloop

        facts["uvicorn loop"] = f"uvloop {uvloop.__version__} (installed, so uvicorn uses it), httptools"
    except ImportError:
        facts["uvicorn loop"] = "asyncio"
    return fact_lines(facts)


def spread_notes(bench: Download) -> list[str]:
    """Series whose runs differ by more than 30%: a ratio against them says less than its digits suggest."""
    notes = []
    for series in [*bench.single.values(), *bench.parallel.values()]:
        speeds = [s.mb_s for s in series.samples]
        if len(speeds) >= 2 and max(speeds) > 1.3 * min(speeds):
            notes.append(f"{series.name} varied from {min(speeds):.0f} to {max(speeds):.0f} MB/s between runs "
                         "(the median counts); ratios against it move with it.")
    return notes


def findings(bench: Download) -> list[str]:
    """What bounds fwrepo where a target was missed: from this run's numbers and profiles."""
    failed = [v for v in bench.verdicts() if v.outcome == "FAIL" or v.narrow]
    if not failed:
        return []
    lines = [("What bounds fwrepo where a target was missed or only narrowly met (from this run's numbers and the "
             "profiles above; the suggested changes are not made by the benchmark):"), ""]
    for verdict in failed:
        how = "missed" if verdict.outcome == "FAIL" else "met by less than 10%, within run-to-run noise"
        lines.append(f"- **{verdict.what}** ({verdict.value}, target {verdict.target}, {how}): "
                     f"{what_bounds(bench, verdict.key)}")
    lines.append("")
    if bench.traced is not None:
        lines += traced_table(bench)
    return lines


def traced_table(bench: Download) -> list[str]:
    traced = bench.traced
    assert traced is not None
    if traced.error:
        return [f"tracemalloc run of the slow clients: failed ({traced.error}).", ""]
    n = max(traced.connected, 1)
    lines = [
        (f"tracemalloc of fwrepo during an extra slow-clients run (a fresh server started with tracemalloc, "
         f"{traced.connected} clients connected; growth between a snapshot before the clients and one "
         f"{bench.args.slow_ramp + 0.6 * bench.args.slow_seconds:.0f} s after they began; bytes as allocated, "
         "touched or not; OpenSSL's own allocations are not traced):"),
        "",
        "| allocated in (innermost Python frame) | KB per connection | blocks per connection |",
        "| --- | ---: | ---: |",
    ]
    for name, size, count in traced.files[:10]:
        lines.append(f"| `{short_path(name)}` | {size / n / 1000:.1f} | {count / n:.1f} |")
    lines.append(f"| all traced | {(traced.peak_traced - traced.idle_traced) / n / 1000:.1f} | |")
    lines += ["", "| largest lines | KB per connection |", "| --- | ---: |"]
    for name, size, _count in traced.lines[:8]:
        lines.append(f"| `{short_path(name)}` | {size / n / 1000:.1f} |")
    lines.append("")
    return lines


def _share(bench: Download, profile: str, *names: str) -> str:
    summary = bench.profiles.get(profile)
    if summary is None or not summary.samples:
        return ""
    parts = [f"{name} {count / summary.samples:.0%}" for name, count in summary.categories
             if any(n in name for n in names)]
    return f" Profile: {', '.join(parts)}." if parts else ""


def _code_constants() -> tuple[int, int, int]:
    """The download block sizes and the TLS write high-water mark, as the code under test has them."""
    from repo_service.http.server import WRITE_HIGH_WATER
    from repo_service.storage.local import READ_BLOCK
    from repo_service.storage.s3 import S3_READ_BLOCK

    return READ_BLOCK, S3_READ_BLOCK, WRITE_HIGH_WATER


def what_bounds(bench: Download, key: str) -> str:
    cpus = os.cpu_count() or 1
    block, s3_block, high_water = _code_constants()
    if key == "fwrepo-local":
        fw, ng = bench.single["fwrepo-local"], bench.single["nginx"]
        per_second = fw.median() * MB / block
        return (
            f"per GiB fwrepo used {fw.median('server_cpu'):.1f} CPU s and nginx {ng.median('server_cpu'):.1f} s, the "
            f"curl client {fw.median('client_cpu'):.1f} s against nginx's {ng.median('client_cpu'):.1f} s; at about "
            f"{fw.median('seconds'):.2f} s per GiB neither side fills the {cpus} CPUs, so the stream is bound by "
            f"the serial path of one connection in the event loop: per {block // 1024} KiB block (`READ_BLOCK` in "
            f"`repo_service/storage/local.py`, {per_second:,.0f} blocks/s here) an `os.preadv(RWF_NOWAIT)` from the "
            "page cache into a fresh buffer handed on as a `memoryview` without a copy (`_FileBlocks._read`), Starlette's `StreamingResponse` and uvicorn's "
            "`send`, then TLS encryption (`ssl.SSLObject.write`) and the socket write, one after the other, where "
            "nginx reads and encrypts in one loop in C with larger buffers."
            + _share(bench, "fwrepo-local", "TLS encryption", "HTTP plumbing", "hand-off", "event loop", "reading the file")
            + " The Python work per block is fixed, so it weighs more the smaller the block (the what-if table below: "
            "16 KiB blocks gave 0.78 x nginx, 64 KiB 1.15 x, both measured before 97c0e08)."
        )
    if key == "fwrepo-100":
        fw, ng = bench.parallel["fwrepo-100"], bench.parallel["nginx-100"]
        wall, server, client = fw.median("seconds"), fw.median("server_cpu"), fw.median("client_cpu")
        nginx_cpu = ng.median("server_cpu")
        return (
            f"CPU. In {wall:.2f} s the {cpus} CPUs give {cpus * wall:.1f} CPU s; fwrepo used {server:.1f} s and the "
            f"{bench.args.parallel} curls {client:.1f} s, while nginx sent the same bytes with {nginx_cpu:.1f} s: "
            f"fwrepo spends {server / nginx_cpu:.1f}x nginx's CPU per byte on cores the clients need too. "
            f"Local blocks ({block // 1024} KiB) are read in the event loop (`_pulled` in "
            "`repo_service/http/streaming.py`; a worker thread only when a block is not in the page cache), so what "
            "is left per block is Python: Starlette's `StreamingResponse`, uvicorn's `send`, the `ssl.py` wrapper "
            "around OpenSSL. One event-loop thread was not the limit before 97c0e08 (two fwrepo processes on one "
            "port, SO_REUSEPORT, gave the same ratio; what-if table below)."
            + _share(bench, "fwrepo-100", "TLS encryption", "HTTP plumbing", "hand-off", "reading the file", "event loop")
        )
    if key == "fwrepo-s3":
        fw, direct = bench.single["fwrepo-s3"], bench.single["rgw-direct"]
        wall = fw.median("seconds")
        total = sum(v or 0 for v in (fw.median("server_cpu"), fw.median("client_cpu"), fw.median("ceph_cpu")))
        direct_total = sum(v or 0 for v in (direct.median("client_cpu"), direct.median("ceph_cpu")))
        redirect = bench.single["fwrepo-s3-redirect"].median()
        hand_offs = fw.median() * MB / s3_block
        return (
            f"CPU of the shared machine. Per GiB through fwrepo: fwrepo {fw.median('server_cpu'):.1f} s, curl "
            f"{fw.median('client_cpu'):.1f} s (TLS; {direct.median('client_cpu'):.1f} s for the plain-HTTP direct GET), "
            f"Ceph {fw.median('ceph_cpu'):.1f} s: {total:.1f} CPU s in {wall:.2f} s, {total / (cpus * wall):.0%} of "
            f"the {cpus} CPUs; the direct GET needs {direct_total:.1f} CPU s. fwrepo adds a second socket hop and TLS "
            f"at both ends on the cores Ceph needs, and each {s3_block // 1024} KiB S3 block (`S3_READ_BLOCK` in "
            "`repo_service/storage/s3.py`) is fetched in a worker thread (`run_in_threadpool` in `_pulled`, "
            f"`repo_service/http/streaming.py`): {hand_offs:,.0f} thread hand-offs per second here."
            + _share(bench, "fwrepo-s3", "TLS encryption", "event loop", "HTTP plumbing", "S3", "hand-off")
            + " Reading ahead did not fix it before 97c0e08: a what-if that fetched block N+1 from RGW while block N "
            "was being sent (1 MiB blocks; and one with 4 MiB blocks) gained about 6%. Suggested: where chargers "
            "follow redirects, FWREPO_DOWNLOAD_MODE=redirect (the info row: "
            + (f"{redirect:.0f} MB/s" if redirect else "not measured")
            + ", the bytes go from RGW to the charger); otherwise fwrepo needs its own cores (RGW on other "
            "machines) or less CPU per byte on its path."
        )
    if key == "slow":
        slow = bench.slow
        idle_kib = slow.idle_rss_kib or 0
        peak_kib = max(filter(None, (slow.hwm_kib, slow.max_rss_kib)))
        per = (peak_kib - idle_kib) * 1024 / max(slow.clients, 1)
        budget = (TARGET_RSS_MB * MB - idle_kib * 1024) / max(slow.clients, 1)
        held = block + high_water
        text = (
            f"memory per connection: ({peak_kib * 1024 / MB:.0f} MB peak - {idle_kib * 1024 / MB:.0f} MB idle) / "
            f"{slow.clients} = {per / 1000:.0f} KB; the target leaves {budget / 1000:.0f} KB per connection next to "
            "the idle process. Since 97c0e08 the image data a connection holds in user space is bounded: a "
            f"{high_water // 1024} KiB write high-water mark on each TLS transport (`WRITE_HIGH_WATER`, set by "
            f"`_BoundedWriteBuffers` in `repo_service/http/server.py`), which the last {block // 1024} KiB block "
            "written may overshoot before uvicorn waits for the drain, the next block read only after that "
            f"(`READ_BLOCK` in `repo_service/storage/local.py`, `_pulled` in `repo_service/http/streaming.py`); "
            "below the TLS layer uvloop's TCP transport keeps its own write buffer of encrypted records (its "
            f"default mark). That is a few {block // 1024} KiB blocks at most, held when the kernel's socket "
            "buffers are full, as they get with thousands of slow sockets."
        )
        traced = bench.traced
        data = None
        if traced is not None and not traced.error and traced.connected:
            n = traced.connected
            python = (traced.peak_traced - traced.idle_traced) / n
            rss = (traced.peak_rss_kib - traced.idle_rss_kib) * 1024 / n
            plain = sum(size for name, size, _c in traced.files if short_path(name).startswith("repo_service/storage/")) / n
            records = sum(size for name, size, _c in traced.files if short_path(name).startswith("uvicorn/protocols/http/")) / n
            data = plain + records
            text += (
                f" tracemalloc (table below, an extra run on a fresh server) puts it at {data / 1000:.0f} KB per "
                f"connection: {plain / 1000:.0f} KB of plaintext blocks (buffers allocated in `repo_service/storage/`) and "
                f"{records / 1000:.0f} KB allocated under uvicorn's `send` (`transport.write` in "
                "`uvicorn/protocols/http/`: the encrypted records uvloop queues for the socket). The other "
                f"{(per - data) / 1000:.0f} KB per connection of the measured run is the connection itself: OpenSSL's "
                "SSL state, `MemoryBIO`s and record buffers behind CPython's `ssl.SSLObject` (allocated by OpenSSL, "
                "not traced), uvloop's SSL protocol and transport, uvicorn's `HttpToolsProtocol` and httptools parser, "
                "the request's scope, Starlette's `Request` and `StreamingResponse`, the task that runs them, and "
                f"what malloc keeps. In all, Python's allocators grew by {python / 1000:.0f} KB per connection "
                f"(counted as allocated, touched or not), RSS by {rss / 1000:.0f} KB per connection in that run "
                f"(tracemalloc's own {traced.overhead / n / 1000:.0f} KB included)."
            )
            if traced.files and short_path(traced.files[0][0]).startswith("asyncio/runners.py"):
                text += (
                    " The `asyncio/runners.py` row is memory allocated by C code under the event loop's run call, "
                    "with no Python frame of its own: chiefly uvloop's SSL protocol, which reserves a 256 KiB read "
                    "buffer per connection (`SSL_READ_MAX_SIZE`, `PyMem_RawMalloc` in uvloop's `sslproto.pyx`) "
                    "of which a GET request touches little, so it counts there in full but hardly in RSS."
                )
        else:
            text += (
                " The rest is the connection itself: OpenSSL's SSL state, `MemoryBIO`s and record buffers behind "
                "CPython's `ssl.SSLObject`, uvloop's SSL protocol and transport, uvicorn's `HttpToolsProtocol` and "
                "httptools parser, the request's scope, Starlette's `Request` and `StreamingResponse`, the task that "
                "runs them, and what malloc keeps."
            )
        saved = data if data is not None else held
        text += (
            f" The CPU is not the problem: every client got its {slow.rate / 1000:.0f} KB/s (median "
            f"{slow.per_client_kb_s_median:.0f} KB/s; server CPU {slow.server_cpu:.1f} s)."
            + _share(bench, "slow clients", "TLS", "authorizing", "reading the file", "HTTP plumbing")
            + f" Smaller blocks and marks would save part of the {saved / 1000:.0f} KB of image data, not the connection, and cost "
            "throughput (16 KiB blocks: 0.78 x nginx in the what-if table); under "
            f"{TARGET_RSS_MB} MB needs cheaper connections: TLS ended outside Python (a TLS-terminating proxy in "
            "front of fwrepo, or kernel TLS, which this kernel lacks), or fewer connections per process."
        )
        return text
    return "see the profile above."


# Measured once, not by this script: fwrepo patched at start-up by a launcher outside the repository
# (repo_service unchanged), on this machine, 1 GiB one stream / 100 x 20 MiB / 2,000 slow clients as above.
# History: the code they patched is the one before commit 97c0e08 (one READ_BLOCK of 1 MiB for local and S3
# reads, each read in a worker thread via iterate_in_threadpool, uvloop's default 512 KiB TLS write high-water
# mark); 97c0e08 shipped the row "64 KiB, high-water 64 KiB, reads in the event loop" (S3: 256 KiB blocks).
WHAT_IF = """\
History: what-if measurements of 2026-11-25, before commit 97c0e08 (once, not repeated by this script; fwrepo
patched at start-up by a launcher outside the repository, same machine and workloads, ratios against nginx in
the same session). The code they started from read local and S3 files in 1 MiB blocks (`READ_BLOCK`), each in a
worker thread (`iterate_in_threadpool`), with uvloop's default 512 KiB TLS write high-water mark; 97c0e08 shipped
the row "READ_BLOCK 64 KiB, high-water 64 KiB, reads in the event loop" (and 256 KiB S3 blocks). This run's
numbers for the shipped code are the tables above.

| change (to the code before 97c0e08) | one stream / nginx | 100 parallel / nginx | 2,000 slow clients: peak RSS |
| --- | ---: | ---: | ---: |
| none (1 MiB blocks in a worker thread; all runs of that day) | 0.93-1.04 | 0.69-0.77 | 6.4-6.7 GB |
| READ_BLOCK 64 KiB | 0.37 | 0.48 | 1.4 GB |
| READ_BLOCK 256 KiB | 0.92 | 0.79 | 3.5 GB |
| READ_BLOCK 64 KiB, SSL write high-water 64 KiB | - | - | 0.92 GB |
| READ_BLOCK 64 KiB, high-water 64 KiB, reads in the event loop (shipped in 97c0e08) | 1.15 | 0.89 | 0.75 GB |
| READ_BLOCK 32 KiB, high-water 32 KiB, reads in the event loop | 1.11 | 0.85 | 0.62 GB |
| READ_BLOCK 16 KiB, high-water 16 KiB, reads in the event loop | 0.78 | 0.79 | 0.49 GB |
| two fwrepo processes on one port (SO_REUSEPORT) | - | 0.77 (same session: 0.76 without) | - |
| fwrepo-s3: block N+1 fetched while N is sent | 0.59 x direct RGW (820 vs 770 MB/s without) | - | - |
| MALLOC_ARENA_MAX=2 | - | - | 6.2 GB (no effect) |"""


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, "download")
    parser.add_argument("--size-mib", type=int, default=1024, help="the large download, MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the median counts (default 3)")
    parser.add_argument("--parallel", type=int, default=100, help="parallel downloads (default 100)")
    parser.add_argument("--parallel-mib", type=int, default=20, help="size of each parallel download, MiB (default 20)")
    parser.add_argument("--slow-clients", type=int, default=2000, help="slow clients (default 2000)")
    parser.add_argument("--slow-rate", type=int, default=64_000, help="bytes/s each slow client reads (default 64000)")
    parser.add_argument("--slow-seconds", type=float, default=20, help="seconds each slow client reads (default 20)")
    parser.add_argument("--slow-ramp", type=float, default=5, help="seconds over which they connect (default 5)")
    parser.add_argument("--only", default="local,slow,s3", help="comma-separated parts: local,slow,s3 (a partial run writes no doc)")
    profile_options(parser, ("auto", "always", "never"),
                    "py-spy an extra run: of each missed target (auto, default), of all, never")
    args = parser.parse_args(argv)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    if args.only - PARTS:
        parser.error("--only: choose from local, slow, s3")
    if min(args.size_mib, args.repeat, args.parallel, args.parallel_mib, args.slow_clients) <= 0:
        parser.error("sizes and counts must be positive")
    return args


if __name__ == "__main__":
    if sys.argv[1:2] == ["--slow-client"]:
        sys.exit(slow_client_main(sys.argv[2:]))
    sys.exit(main(Download, parse_args(None)))
