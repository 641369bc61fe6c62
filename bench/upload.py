"""Upload throughput of fwrepo, next to what the machine itself can do.

One run measures, on one file of random bytes (default 1 GiB):

  cp            cp of the file into a directory (the page cache absorbs it)
  cp+sync       cp, then `sync FILE` (the bytes are on disk, as fwrepo's are)
  boto3         boto3 upload_file (default TransferConfig) to Ceph RGW
  fwrepo-local  curl -F to `fwrepo serve` with FWREPO_STORAGE=local
  fwrepo-s3     curl -F to `fwrepo serve` with FWREPO_STORAGE=s3 on the same RGW

each --repeat times, takes the median, checks the targets (fwrepo-local >=
0.5 x cp, fwrepo-s3 >= 0.8 x boto3, server peak RSS < 200 MB) and rewrites the
"Upload" section of docs/benchmarks.md. The local methods run first, before
Ceph starts; then boto3 and fwrepo-s3 on one fresh cluster. fwrepo serves plain
HTTP (FWREPO_TLS=false) unless --tls.

    .venv/bin/python bench/upload.py [--size-mib 1024] [--repeat 3]

Everything it starts (fwrepo servers, a throwaway Ceph cluster) and every file
it writes live under one temporary directory and are stopped/removed at the
end, also on errors and Ctrl-C. Exit status: 0 all targets met, 1 a target
missed, 2 the benchmark itself failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support.s3servers

DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- bench:upload:start -->"
END_MARK = "<!-- bench:upload:end -->"
DOC_HEADER = """\
# Benchmarks

Measurements of fwrepo on a real machine, each next to a baseline that shows
what the machine itself can do (`cp`, a direct boto3 upload), so that a number
says something about fwrepo rather than about the hardware. Each section is
written by a script under `bench/` and rewritten whole on every run; the text
between a section's `<!-- bench:... -->` markers is generated, so edit the
script, not the section.

Run them with

    make bench                          # sets up what is missing, then bench/upload.py
    .venv/bin/python bench/upload.py    # [--size-mib 1024] [--repeat 3]

The S3 numbers use a throwaway single-node Ceph RADOS Gateway
(`tests/support/s3servers.py`); without Ceph installed only the local part
runs and the section says so.

"""

MB = 1_000_000  # throughput and RSS are reported in MB (10^6 bytes)
MiB = 1024 * 1024
GiB = 1024 * MiB

TARGET_LOCAL = 0.5  # fwrepo-local MB/s >= 0.5 x cp
TARGET_S3 = 0.8  # fwrepo-s3 MB/s >= 0.8 x boto3 upload_file
TARGET_RSS_MB = 200  # server peak RSS below this

METHODS = ("cp", "cp+sync", "boto3", "fwrepo-local", "fwrepo-s3")
S3_METHODS = ("boto3", "fwrepo-s3")
DIRECT_BUCKET = "bench-direct"
FWREPO_BUCKET = "bench-fwrepo"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- /proc


def proc_status_kib(pid: int, name: str) -> int | None:
    """A `VmRSS:`/`VmHWM:`-style line of /proc/PID/status, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains text (to find our own Ceph daemons)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


class RssSampler:
    """Samples VmRSS of a process every few ms on a thread; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.max_kib = max(self.max_kib, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- machine


def mount_of(path: Path) -> tuple[str, str, str]:
    """(device, mount point, fs type) of the file system holding path."""
    path = path.resolve()
    best = ("?", "/", "?")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, mountpoint, fstype = line.split()[:3]
            mountpoint = mountpoint.replace("\\040", " ")
            if path.is_relative_to(mountpoint) and len(mountpoint) >= len(best[1]):
                best = (device, mountpoint, fstype)
    return best


def disk_description(path: Path) -> str:
    device, mountpoint, fstype = mount_of(path)
    usage = shutil.disk_usage(path)
    parts = [f"{device} on {mountpoint} ({fstype}, {usage.total / GiB:.0f} GiB, {usage.free / GiB:.0f} GiB free)"]
    name = Path(device).name
    block = Path("/sys/class/block") / name
    if block.exists():
        disk = block.resolve()
        if (disk / "partition").exists():
            disk = disk.parent
        driver = disk / "device" / "driver"
        if driver.exists():
            parts.append(f"driver {driver.resolve().name}")
        model = disk / "device" / "model"
        if model.exists() and model.read_text().strip():
            parts.append(f"model {model.read_text().strip()}")
        rotational = disk / "queue" / "rotational"
        if rotational.exists():
            parts.append("rotational=" + rotational.read_text().strip())
    return ", ".join(parts)


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.splitlines()[0].strip() if out.strip() else "?"


def machine_facts(work_dir: Path) -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    try:
        import boto3

        boto3_version = boto3.__version__
    except ImportError:
        boto3_version = "not installed"
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical CPUs ({len(os.sched_getaffinity(0))} usable by this process)",
        "RAM": f"{mem_kib / (1024 * 1024):.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "disk": disk_description(work_dir),
        **({"virtualization": vm} if (vm := vm_memory_note()) else {}),
        "SHA-256 (hashlib, one core)": f"{sha256_speed():.0f} MB/s",
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "curl": " ".join(tool_version(["curl", "--version"]).split()[:2]),
        "boto3": boto3_version,
        "Ceph": tool_version(["radosgw", "--version"]).replace("ceph version ", "") if shutil.which("radosgw") else "not installed",
    }


def vm_memory_note() -> str | None:
    """Whether this is a VM that hands free memory back to its host (virtio-balloon free page reporting)."""
    flags = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags = line
                break
    if " hypervisor" not in flags:
        return None
    reported = Path("/sys/module/page_reporting/parameters/reported_kib")
    try:
        reported_kib = int(reported.read_text())
    except (OSError, ValueError):
        reported_kib = 0
    if reported_kib:
        return (
            "virtual machine with virtio-balloon free page reporting "
            f"({reported_kib / 1024**2:.0f} GiB handed back to the host so far): memory the guest has not "
            "used recently costs a host page fault on first touch, so whatever grows its memory "
            "(page cache, Ceph memstore) pays extra CPU"
        )
    return "virtual machine"


def sha256_speed() -> float:
    """MB/s of hashlib SHA-256 on one core: fwrepo hashes every uploaded byte once."""
    block = os.urandom(8 * MiB)
    digest = hashlib.sha256()
    rounds = 0
    start = time.perf_counter()
    while time.perf_counter() - start < 0.5:
        digest.update(block)
        rounds += 1
    return rounds * len(block) / (time.perf_counter() - start) / MB


def cpu_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs; /proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal: busy is all but idle, iowait, steal.
    return (sum(values) - values[3] - values[4] - values[7]) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has reaped (curl, cp, servers, Ceph)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over a short interval: other load skews the numbers."""
    before = cpu_busy_seconds()
    time.sleep(seconds)
    return (cpu_busy_seconds() - before) / (seconds * (os.cpu_count() or 1))


class OtherLoad:
    """How much of the machine processes other than ours used during the run.

    Measured once everything we started has been stopped and reaped, so that
    their CPU time is in our children's; loopback softirq work done outside
    our processes counts as "other", so this errs on the high side.
    """

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.busy = cpu_busy_seconds()
        self.own = own_cpu_seconds()

    def share(self) -> float:
        elapsed = time.monotonic() - self.start
        other = (cpu_busy_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        return max(other, 0.0) / (elapsed * (os.cpu_count() or 1))


def mem_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------- results


@dataclass
class Sample:
    seconds: float
    server_cpu: float | None = None  # CPU seconds of the fwrepo server during the upload
    client_cpu: float | None = None  # CPU seconds of curl / of this process for boto3
    ceph_cpu: float | None = None  # CPU seconds of mon + osd + rgw during the upload
    rss_max_kib: int | None = None  # max VmRSS of the server sampled during the upload


@dataclass
class Result:
    method: str
    samples: list[Sample] = field(default_factory=list)
    peak_rss_kib: int | None = None  # server VmHWM at the end (its whole life)
    idle_rss_kib: int | None = None  # server VmRSS before the first upload
    skipped: str | None = None  # why it did not run

    def median_seconds(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None

    def mb_per_s(self, size: int) -> float | None:
        median = self.median_seconds()
        return size / median / MB if median else None

    def median_of(self, name: str) -> float | None:
        values = [getattr(s, name) for s in self.samples if getattr(s, name) is not None]
        return statistics.median(values) if values else None

    def max_sampled_rss_kib(self) -> int | None:
        values = [s.rss_max_kib for s in self.samples if s.rss_max_kib is not None]
        return max(values) if values else None


# --------------------------------------------------------------------------- helpers


def make_random_file(path: Path, size: int) -> str:
    """Write size random bytes; return their SHA-256."""
    digest = hashlib.sha256()
    block = 4 * MiB
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(block, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def sync_all() -> None:
    """Flush every dirty page so that one measurement's writeback cannot slow the next."""
    subprocess.run(["sync"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def fwrepo_command() -> list[str]:
    script = Path(sys.executable).parent / "fwrepo"
    if script.exists():
        return [str(script)]
    found = shutil.which("fwrepo")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from repo_service.cli import main; sys.exit(main())"]


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class FwrepoServer:
    """`fwrepo serve` in its own session, with its own data directory and an API key."""

    def __init__(self, name: str, data_dir: Path, settings: dict[str, str], tls: bool = False) -> None:
        self.name = name
        self.data_dir = data_dir
        self.settings = settings
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = ""
        self.url = ""
        self.log = data_dir / "serve.log"

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FWREPO_")}
        env.update(
            FWREPO_DATA_DIR=str(self.data_dir),
            FWREPO_HOST="127.0.0.1",
            FWREPO_PORT=str(port),
            FWREPO_LOG_LEVEL="warning",
            # Plain HTTP unless --tls: as behind a proxy that terminates TLS, so
            # that the numbers are fwrepo's and not Python's TLS record layer.
            FWREPO_TLS="true" if self.tls else "false",
            # FTPS on free ports: a benchmark must not take 2121/9990 from `make run` or another server.
            FWREPO_FTPS_PORT=str(free_port()),
            FWREPO_FTPS_IMPLICIT_PORT=str(free_port()),
        )
        env.update(self.settings)  # a benchmark's own settings win, its FTPS ports included
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True)
        for attempt in range(3):
            port = free_port()
            env = self.env(port)
            if not self.key:
                created = subprocess.run(
                    [*fwrepo_command(), "clients", "create", "--name", "bench", "--role", "release"],
                    env=env, capture_output=True, text=True, timeout=120, check=False,
                )
                if created.returncode != 0:
                    raise RuntimeError(f"fwrepo clients create failed: {created.stderr.strip()}")
                self.key = created.stdout.strip()
            with self.log.open("ab") as log:
                # Own session: a Ctrl-C in the terminal reaches only this script,
                # which then stops the server itself, after the upload in flight.
                self.proc = subprocess.Popen(
                    [*fwrepo_command(), "serve"], env=env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                context = None
                if self.tls:
                    if not self.cacert.exists():  # the development CA is made at start-up
                        time.sleep(0.05)
                        continue
                    context = ssl.create_default_context(cafile=str(self.cacert))
                try:
                    with urllib.request.urlopen(self.url + "/healthz", timeout=1, context=context) as reply:
                        if reply.status == 200:
                            return
                except (urllib.error.URLError, OSError, ssl.SSLError):
                    pass
                time.sleep(0.05)
            self.stop()
            if attempt == 2:
                tail = self.log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"fwrepo serve ({self.name}) did not become healthy:\n" + "\n".join(tail))

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

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        self.args = args
        self.work = work
        self.stack = stack
        self.size = args.size_mib * MiB
        self.source = work / "payload.bin"
        self.sha256 = ""
        self.methods = [m for m in METHODS if m in args.only]
        self.results = {m: Result(m) for m in self.methods}
        self.notes: list[str] = []
        self.s3 = None  # tests.support.s3servers.S3Server
        self.s3_client = None
        self.ceph_pids: list[int] = []
        self.gc_works = True
        self.servers: dict[str, FwrepoServer] = {}
        self.version_counter = 0

    # -- set-up

    def setup(self) -> None:
        say(f"work directory {self.work} ({disk_description(self.work)})")
        _, _, fstype = mount_of(self.work)
        if fstype in ("tmpfs", "ramfs"):
            self.notes.append(f"The work directory is on {fstype}: cp and fwrepo-local measure RAM, not a disk.")
        say(f"writing {self.size / MiB:.0f} MiB of random bytes to {self.source.name}")
        self.sha256 = make_random_file(self.source, self.size)
        (self.work / "copies").mkdir()

    def start_fwrepo_s3(self) -> None:
        assert self.s3 is not None
        self.start_server(
            "fwrepo-s3",
            {
                "FWREPO_STORAGE": "s3",
                "FWREPO_S3_ENDPOINT_URL": self.s3.endpoint_url,
                "FWREPO_S3_BUCKET": FWREPO_BUCKET,
                "FWREPO_S3_REGION": self.s3.region,
                "FWREPO_S3_ACCESS_KEY_ID": self.s3.access_key_id,
                "FWREPO_S3_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            },
        )

    def start_ceph(self) -> None:
        from tests.support.s3servers import (
            DEFAULT_MEMSTORE_BYTES,
            ceph_unavailable_reason,
            running_ceph_rgw,
        )

        reason = ceph_unavailable_reason()
        if reason is None:
            # Memstore keeps objects in RAM, capped by memstore_bytes. Each object
            # is deleted and garbage-collected right after its upload (see
            # reclaim_s3), so one or two at a time would fit in the default cap;
            # the cap leaves room for all of them, where RAM allows, in case the
            # forced garbage collection does not work.
            uploads = sum(m in self.methods for m in S3_METHODS) * self.args.repeat
            everything = uploads * self.size + GiB
            spare = mem_available() - 2 * self.size - 3 * GiB
            memstore = max(DEFAULT_MEMSTORE_BYTES, 3 * self.size + GiB, min(everything, spare))
            say(f"starting Ceph RGW (memstore capped at {memstore / GiB:.1f} GiB)")
            try:
                self.s3 = self.stack.enter_context(running_ceph_rgw(self.work / "ceph", memstore_bytes=memstore))
            except RuntimeError as error:
                reason = f"Ceph RGW did not start: {str(error).splitlines()[0]}"
        if self.s3 is None:
            for method in S3_METHODS:
                if method in self.results:
                    self.results[method].skipped = reason
            self.notes.append(f"S3 part not run: {reason}.")
            say(f"S3 part skipped: {reason}")
            return
        say(f"Ceph RGW at {self.s3.endpoint_url}")
        self.ceph_pids = pids_mentioning(str(self.work / "ceph"))
        self.s3_client = self.s3.client()
        if "boto3" in self.methods:
            self.s3_client.create_bucket(Bucket=DIRECT_BUCKET)

    def start_server(self, name: str, settings: dict[str, str]) -> None:
        server = FwrepoServer(name, self.work / name, settings, tls=self.args.tls)
        self.servers[name] = server
        self.stack.callback(server.stop)
        server.start()
        self.results[name].idle_rss_kib = proc_status_kib(server.pid, "VmRSS")
        say(f"{name}: fwrepo serve pid {server.pid} at {server.url}")

    def stop_server(self, name: str) -> None:
        server = self.servers.get(name)
        if server is None or server.proc is None:
            return
        self.results[name].peak_rss_kib = proc_status_kib(server.pid, "VmHWM")
        server.stop()

    # -- measurements

    def ceph_cpu(self) -> float | None:
        return sum(proc_cpu_seconds(pid) for pid in self.ceph_pids) if self.ceph_pids else None

    def measure_cp(self, with_sync: bool) -> Sample:
        target = self.work / "copies" / "payload.copy"
        client_before = children_cpu()
        start = time.perf_counter()
        # --reflink=never: on btrfs/XFS a reflink would copy no data at all.
        subprocess.run(["cp", "--reflink=never", str(self.source), str(target)], check=True)
        if with_sync:
            subprocess.run(["sync", str(target)], check=True)  # fsync of that one file
        seconds = time.perf_counter() - start
        sample = Sample(seconds, client_cpu=children_cpu() - client_before)
        target.unlink()
        return sample

    def measure_boto3(self) -> Sample:
        assert self.s3_client is not None
        key = f"payload-{self.version_counter}"
        self.version_counter += 1
        ceph_before, cpu_before = self.ceph_cpu(), time.process_time()
        start = time.perf_counter()
        self.s3_client.upload_file(str(self.source), DIRECT_BUCKET, key)  # default TransferConfig
        seconds = time.perf_counter() - start
        sample = Sample(seconds, client_cpu=time.process_time() - cpu_before)
        if ceph_before is not None:
            sample.ceph_cpu = self.ceph_cpu() - ceph_before
        size = self.s3_client.head_object(Bucket=DIRECT_BUCKET, Key=key)["ContentLength"]
        if size != self.size:
            raise RuntimeError(f"boto3 stored {size} bytes, not {self.size}")
        self.reclaim_s3(DIRECT_BUCKET)
        return sample

    def measure_fwrepo(self, name: str) -> Sample:
        server = self.servers[name]
        self.version_counter += 1
        version = f"1.0.{self.version_counter}"
        reply = self.work / "reply.json"
        reply.unlink(missing_ok=True)
        command = [
            "curl", "-sS", "-o", str(reply), "-w", "%{http_code}",
            "-H", f"Authorization: Bearer {server.key}",
            "-F", "vendor=Bench", "-F", "models=BM-1", "-F", f"version={version}",
            "-F", f"file=@{self.source};type=application/octet-stream",
            *(["--cacert", str(server.cacert)] if server.tls else []),
            server.url + "/api/v1/firmware",
        ]  # fmt: skip
        server_before, client_before, ceph_before = proc_cpu_seconds(server.pid), children_cpu(), self.ceph_cpu()
        with RssSampler(server.pid) as rss:
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - start
        sample = Sample(
            seconds,
            server_cpu=proc_cpu_seconds(server.pid) - server_before,
            client_cpu=children_cpu() - client_before,
            rss_max_kib=rss.max_kib,
        )
        if name == "fwrepo-s3" and ceph_before is not None:
            sample.ceph_cpu = self.ceph_cpu() - ceph_before
        status = done.stdout.strip()
        body = reply.read_text(errors="replace") if reply.exists() else ""
        if done.returncode != 0 or status != "201":
            raise RuntimeError(
                f"{name} upload failed: curl exit {done.returncode}, HTTP {status}: {done.stderr.strip()} {body[:500]}"
                + server.describe_exit()
            )
        record = json.loads(body)
        if record.get("size") != self.size or record.get("sha256") != self.sha256:
            raise RuntimeError(f"{name} stored other bytes: {record.get('size')} bytes, SHA-256 {record.get('sha256')}")
        if name == "fwrepo-s3":
            self.reclaim_s3(FWREPO_BUCKET)
        if name == "fwrepo-local":
            # Like cp's copy, the stored image goes (untimed), so that every
            # local measurement finds the same amount of free memory for the
            # page cache; see the note on this VM's memory in the doc.
            for stored in (server.data_dir / "storage").rglob("*"):
                if stored.is_file():
                    stored.unlink()
        return sample

    def reclaim_s3(self, bucket: str) -> None:
        """Delete what an upload stored and have RGW garbage-collect it now (untimed).

        On this VM memory that a process touches for the first time is
        expensive, so with every object kept the memstore OSD grows into fresh
        memory on each upload and Ceph's CPU per GiB nearly doubles over a few
        uploads (measured: boto3 3.1 s -> 5.1 s per GiB). Deleted multipart
        data would only be collected after RGW's GC delay; `radosgw-admin gc
        process --include-all` frees it at once, so each upload reuses the
        memory of the previous one and all S3 runs start alike.
        """
        self.empty_bucket(bucket)
        if not self.gc_works:
            return
        conf = next(iter(sorted((self.work / "ceph").glob("ceph-rgw.*/ceph.conf"))), None)
        failure = "no ceph.conf found" if conf is None else ""
        if conf is not None:
            # The ceph tools are Python scripts of the system's python3: no venv
            # PYTHONPATH, and no CEPH_* from the caller's shell.
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("CEPH_")}
            try:
                done = subprocess.run(
                    ["radosgw-admin", "-c", str(conf), "gc", "process", "--include-all"],
                    env=env, capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    failure = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
            except (OSError, subprocess.SubprocessError) as error:
                failure = str(error)
        if failure:
            self.gc_works = False
            self.notes.append(
                f"`radosgw-admin gc process` failed ({failure}): later S3 uploads grew Ceph's memory "
                "and deleted data was collected on RGW's own schedule, so the S3 numbers are noisier."
            )

    def empty_bucket(self, bucket: str) -> None:
        assert self.s3_client is not None
        for page in self.s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                self.s3_client.delete_object(Bucket=bucket, Key=item["Key"])

    def measure(self, method: str) -> Sample:
        if method == "cp":
            return self.measure_cp(with_sync=False)
        if method == "cp+sync":
            return self.measure_cp(with_sync=True)
        if method == "boto3":
            return self.measure_boto3()
        return self.measure_fwrepo(method)

    def run(self) -> None:
        local = [m for m in self.methods if m not in S3_METHODS]
        remote = [m for m in self.methods if m in S3_METHODS]
        # Two phases: the local measurements run before Ceph starts, so that
        # neither its CPU nor its memory (memstore grows by every object) weighs
        # on them; the S3 ones then run side by side on one fresh cluster.
        if local:
            say("-- local phase (Ceph not running)")
            if "fwrepo-local" in local:
                self.start_server("fwrepo-local", {"FWREPO_STORAGE": "local"})
            self.rounds(local)
            self.stop_server("fwrepo-local")
        if remote:
            say("-- S3 phase")
            self.start_ceph()
            if self.s3 is not None:
                if "fwrepo-s3" in remote:
                    self.start_fwrepo_s3()
                self.rounds(remote)
                self.stop_server("fwrepo-s3")

    def rounds(self, methods: list[str]) -> None:
        for round_number in range(1, self.args.repeat + 1):
            # Odd rounds in the given order, even rounds reversed: no method
            # always follows the same other one.
            for method in methods if round_number % 2 else methods[::-1]:
                sync_all()  # untimed: the previous measurement's dirty pages go to disk now
                time.sleep(self.args.settle)
                sample = self.measure(method)
                self.results[method].samples.append(sample)
                extra = ""
                if sample.server_cpu is not None:
                    extra += f", server CPU {sample.server_cpu:.1f} s, RSS max {sample.rss_max_kib * 1024 / MB:.0f} MB"
                if sample.ceph_cpu is not None:
                    extra += f", Ceph CPU {sample.ceph_cpu:.1f} s"
                if sample.client_cpu is not None:
                    extra += f", client CPU {sample.client_cpu:.1f} s"
                say(
                    f"round {round_number}/{self.args.repeat} {method:13} {sample.seconds:7.2f} s "
                    f"{self.size / sample.seconds / MB:8.1f} MB/s{extra}"
                )


# --------------------------------------------------------------------------- report


def fmt(value: float | None, pattern: str = "{:.1f}", missing: str = "-") -> str:
    return pattern.format(value) if value is not None else missing


def kib_to_mb(kib: int | None) -> float | None:
    return kib * 1024 / MB if kib is not None else None


@dataclass
class Verdict:
    what: str
    value: str
    target: str
    outcome: str  # PASS, FAIL, "not run", "info"


def verdicts(results: dict[str, Result], size: int) -> list[Verdict]:
    def speed(method: str) -> float | None:
        result = results.get(method)
        return result.mb_per_s(size) if result is not None else None

    out: list[Verdict] = []

    def ratio(what: str, top: str, bottom: str, target: float | None) -> None:
        if top not in results or bottom not in results:
            return
        a, b = speed(top), speed(bottom)
        if a is None or b is None:
            out.append(Verdict(what, "-", f">= {target}" if target else "-", "not run"))
            return
        value = a / b
        if target is None:
            out.append(Verdict(what, f"{value:.2f}", "-", "info"))
        else:
            out.append(Verdict(what, f"{value:.2f}", f">= {target}", "PASS" if value >= target else "FAIL"))

    ratio("fwrepo-local / cp", "fwrepo-local", "cp", TARGET_LOCAL)
    ratio("fwrepo-local / cp+sync", "fwrepo-local", "cp+sync", None)
    ratio("fwrepo-s3 / boto3", "fwrepo-s3", "boto3", TARGET_S3)
    for method in ("fwrepo-local", "fwrepo-s3"):
        if method not in results:
            continue
        result = results[method]
        peak = max(filter(None, (kib_to_mb(result.peak_rss_kib), kib_to_mb(result.max_sampled_rss_kib()))), default=None)
        if peak is None:
            out.append(Verdict(f"{method} server peak RSS", "-", f"< {TARGET_RSS_MB} MB", "not run"))
        else:
            out.append(
                Verdict(f"{method} server peak RSS", f"{peak:.0f} MB", f"< {TARGET_RSS_MB} MB",
                        "PASS" if peak < TARGET_RSS_MB else "FAIL")
            )  # fmt: skip
    return out


def render_tables(results: dict[str, Result], size: int) -> str:
    lines = [
        ("| method | MB/s (median) | median s | runs (s) | server peak RSS MB (VmHWM / max sampled VmRSS / idle) "
         "| CPU s per upload: server / client / Ceph |"),
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for method, result in results.items():
        if result.skipped is not None:
            lines.append(f"| {method} | not run | | | | |")
            continue
        runs = ", ".join(f"{s.seconds:.2f}" for s in result.samples)
        rss = "-"
        if result.peak_rss_kib is not None or result.max_sampled_rss_kib() is not None:
            rss = " / ".join(
                fmt(kib_to_mb(v), "{:.0f}")
                for v in (result.peak_rss_kib, result.max_sampled_rss_kib(), result.idle_rss_kib)
            )
        cpu = " / ".join(fmt(result.median_of(name)) for name in ("server_cpu", "client_cpu", "ceph_cpu"))
        lines.append(
            f"| {method} | {fmt(result.mb_per_s(size))} | {fmt(result.median_seconds(), '{:.2f}')} | {runs} "
            f"| {rss} | {cpu} |"
        )
    lines += ["", "| check | value | target | result |", "| --- | ---: | --- | --- |"]
    for verdict in verdicts(results, size):
        lines.append(f"| {verdict.what} | {verdict.value} | {verdict.target} | {verdict.outcome} |")
    return "\n".join(lines)


def render_section(bench: Bench, facts: dict[str, str], when: dt.datetime, elapsed: float) -> str:
    args = bench.args
    lines = [
        START_MARK,
        "## Upload",
        "",
        (f"Written by `bench/upload.py --size-mib {args.size_mib} --repeat {args.repeat}{' --tls' if args.tls else ''}` on "
         f"{when:%Y-%m-%d %H:%M} UTC (the run took {elapsed / 60:.1f} min)."),
        "",
        (f"One file of {args.size_mib} MiB of random bytes (in the page cache throughout), uploaded "
         f"{args.repeat} times by each method. Two phases: first cp, cp+sync and fwrepo-local, with Ceph "
         "not running; then a fresh Ceph cluster for boto3 and fwrepo-s3. Within a phase the rounds "
         "interleave the methods (even rounds in reverse order), with `sync` and a pause before each "
         "measurement (untimed). "
         "MB/s is 10^6 bytes per second of wall time, from the median run."),
        "",
        "- **cp**: `cp --reflink=never` into a directory on the same file system; the page cache absorbs it.",
        ("- **cp+sync**: the same, then `sync FILE` (fsync): the bytes are on disk, as fwrepo's are "
         "(fwrepo-local fsyncs the file and its directory)."),
        ("- **boto3**: `upload_file` with the default TransferConfig (8 MiB parts, 10 threads) and the "
         "client of `tests/support/s3servers.py` (SigV4, path style), to a bucket on the Ceph RGW "
         "that fwrepo-s3 uses."),
        ("- **fwrepo-local / fwrepo-s3**: `curl -F file=@...` to `POST /api/v1/firmware` of `fwrepo serve` "
         f"(one uvicorn process) with FWREPO_STORAGE=local / s3 (default FWREPO_S3_PART_SIZE), "
         f"{'HTTPS (FWREPO_TLS=true, development certificate)' if args.tls else 'plain HTTP (FWREPO_TLS=false, as behind a proxy that terminates TLS; `--tls` measures HTTPS)'}; "
         "a fresh version per upload, size and SHA-256 of every reply checked. "
         "After each run, untimed, what it stored is deleted: cp's copy and fwrepo-local's image, so that "
         "each local run finds the same free memory; the S3 object, followed by "
         "`radosgw-admin gc process --include-all`, so that Ceph's memstore does not grow from run to run "
         "(on this VM growing into fresh memory nearly doubles Ceph's CPU per GiB) and no RGW garbage "
         "collection overlaps a later run."),
        ("- **Server RSS**: VmHWM of the server process at the end (its whole life, start-up included) / "
         "the largest VmRSS sampled every 20 ms during the uploads / VmRSS idle before the first upload."),
        ("- **CPU**: user+system seconds during one upload (median) of the fwrepo server, of the client "
         "(curl; for boto3 the benchmark's own Python process) and of the Ceph daemons (mon+osd+rgw)."),
        "",
        "Machine:",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in facts.items()]
    lines += [
        "",
        (f"This machine has {os.cpu_count()} CPUs, and the client (curl or boto3), fwrepo and Ceph "
         "(radosgw + OSD + mon) all share them: the S3 numbers measure a CPU-bound setup, where every CPU "
         "second fwrepo spends is taken from RGW, and they would differ on a machine where S3 is elsewhere. "
         "Ceph runs with a memstore OSD (objects in RAM), so neither S3 number includes a disk."),
        "",
    ]
    for note in bench.notes:
        lines.append(f"**Note:** {note}")
        lines.append("")
    lines += [render_tables(bench.results, bench.size), "", END_MARK]
    return "\n".join(lines) + "\n"


def write_doc(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else DOC_HEADER
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(END_MARK):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


# --------------------------------------------------------------------------- main


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM/SIGHUP end the run like Ctrl-C does, so that clean-up runs."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cleanup(stack: ExitStack) -> None:
    # A second Ctrl-C must not cut the clean-up short and leave daemons behind.
    ignored: dict[int, Callable | int | None] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        ignored[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        say("cleaning up (servers, Ceph, files)")
        stack.close()
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="payload size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the median counts (default 3)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary directory goes (default $TMPDIR or /tmp); payload, copies and "
                             "fwrepo's data directories all live there, on one file system")  # fmt: skip
    parser.add_argument("--only", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (a partial run writes no doc)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of pause before each measurement (default 1)")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"file whose Upload section is rewritten (default {DOC.relative_to(ROOT)})")
    parser.add_argument("--tls", action="store_true",
                        help="fwrepo serves HTTPS (its development certificate) instead of plain HTTP")  # fmt: skip
    parser.add_argument("--no-doc", action="store_true", help="print the results only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) instead of removing it")
    args = parser.parse_args(argv)
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(args.only) - set(METHODS))
    if unknown:
        parser.error(f"--only: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.size_mib <= 0 or args.repeat <= 0:
        parser.error("--size-mib and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("curl") is None:
        print("bench/upload.py needs curl", file=sys.stderr)
        return 2
    started = time.monotonic()
    when = dt.datetime.now(dt.UTC)
    stack = ExitStack()
    try:
        with signals_as_interrupts():
            args.work_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="fwrepo-bench.", dir=args.work_dir))
            if args.keep:
                stack.callback(say, f"kept {work}")
            else:
                stack.callback(shutil.rmtree, work, ignore_errors=True)
            free = shutil.disk_usage(work).free
            needed = (3 + args.repeat) * args.size_mib * MiB  # payload, a copy, fwrepo-local's stored images
            if free < needed:
                raise RuntimeError(f"{work} has {free / GiB:.1f} GiB free; this run needs about {needed / GiB:.1f} GiB")
            bench = Bench(args, work, stack)
            other_load = OtherLoad()
            busy = busy_fraction()
            if busy > 0.25:
                warning = (
                    f"{busy:.0%} of the CPUs were busy with other work just before the run; "
                    "the numbers are lower than on a quiet machine."
                )
                say(f"warning: {warning}")
                bench.notes.append(warning)
            facts = machine_facts(work)
            bench.setup()
            bench.run()
    except KeyboardInterrupt:
        cleanup(stack)
        print("interrupted: everything started was stopped and removed", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - any failure: clean up, say why, exit 2
        cleanup(stack)
        print(f"bench/upload.py failed: {error}", file=sys.stderr)
        return 2
    cleanup(stack)

    other = other_load.share()
    facts["CPU used by other processes during the run"] = f"about {other:.0%} of the machine"
    say(f"other processes used about {other:.0%} of the CPUs during the run")
    if other > 0.10:
        warning = (
            f"Other processes used about {other:.0%} of the CPUs during the run: the numbers are lower "
            "(and noisier) than on a quiet machine."
        )
        bench.notes.append(warning)
    table = render_tables(bench.results, bench.size)
    say("")
    for note in bench.notes:
        say(f"note: {note}")
    say(table)
    partial = set(args.only) != set(METHODS)
    if not args.no_doc and not partial:
        write_doc(args.doc, render_section(bench, facts, when, time.monotonic() - started))
        say(f"\nwrote the Upload section of {args.doc}")
    failed = any(v.outcome == "FAIL" for v in verdicts(bench.results, bench.size))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
