"""Describing the machine a benchmark ran on, how busy it was, and the payload files it writes."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import MB, GiB, MiB, say
from harness.procs import CLK_TCK


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
    block = Path("/sys/class/block") / Path(device).name
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
    """The first line a tool prints about its version, "?" when it cannot say."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    out = done.stdout.strip() or done.stderr.strip()  # nginx -v writes to stderr
    return out.splitlines()[0].strip() if out else "?"


def curl_version() -> str:
    return " ".join(tool_version(["curl", "--version"]).split()[:2])


def boto3_version() -> str:
    try:
        import boto3
    except ImportError:
        return "not installed"
    return boto3.__version__


def ceph_version() -> str:
    if not shutil.which("radosgw"):
        return "not installed"
    return tool_version(["radosgw", "--version"]).replace("ceph version ", "")


def _cpuinfo(prefix: str) -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith(prefix):
                return line
    return ""


def machine_facts(work_dir: Path, hashing: bool = True) -> dict[str, str]:
    """CPU, memory, kernel, Python, the disk of work_dir, the VM, (SHA-256 speed) and the load, by name."""
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = _cpuinfo("model name").split(":", 1)[-1].strip() or "?"
    facts = {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical CPUs ({len(os.sched_getaffinity(0))} usable by this process)",
        "RAM": f"{mem_kib / (1024 * 1024):.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "disk": disk_description(work_dir),
    }
    if vm := vm_memory_note():
        facts["virtualization"] = vm
    if hashing:
        facts["SHA-256 (hashlib, one core)"] = f"{sha256_speed():.0f} MB/s"
    facts["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return facts


def vm_memory_note() -> str | None:
    """Whether this is a VM that hands free memory back to its host (virtio-balloon free page reporting)."""
    if " hypervisor" not in _cpuinfo("flags"):
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


@dataclass
class Payloads:
    """Two files of random bytes in one directory, a large and a small download, with their SHA-256."""

    directory: Path
    size: int
    small_size: int
    big_sha256: str = ""
    small_sha256: str = ""

    @property
    def big(self) -> Path:
        return self.directory / "big.bin"

    @property
    def small(self) -> Path:
        return self.directory / "small.bin"

    def write(self) -> None:
        self.directory.mkdir(mode=0o755)  # world-readable: vsftpd reads it as its unprivileged ftp user
        say(f"writing {self.size / MiB:.0f} MiB and {self.small_size / MiB:.0f} MiB of random bytes")
        self.big_sha256 = make_random_file(self.big, self.size)
        self.small_sha256 = make_random_file(self.small, self.small_size)
        for path in (self.big, self.small):
            path.chmod(0o644)


def sync_all() -> None:
    """Flush every dirty page so that one measurement's writeback cannot slow the next."""
    subprocess.run(["sync"], check=True)
