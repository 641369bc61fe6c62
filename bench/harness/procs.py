"""Processes as /proc shows them: CPU seconds, RSS, process trees; and a meter around one measured run."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Self

from harness.report import Sample

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), 0 if it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0  # utime, stime


def children_cpu() -> float:
    """CPU seconds of the children this process has reaped (curl, cp, xargs ...)."""
    usage = os.times()
    return usage.children_user + usage.children_system


class Proc(NamedTuple):
    parent: int
    cpu: float  # user + system seconds
    start: int  # start time in clock ticks after boot
    cmdline: str


def proc_table() -> dict[int, Proc]:
    """Every process, by pid."""
    table: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if fields is None:
            continue
        table[int(entry.name)] = Proc(int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK,
                                      int(fields[19]), cmdline)
    return table


def descendants(table: dict[int, Proc], root: int) -> set[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.parent, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree, including children it has already reaped (vsftpd forks per session)."""
    total = 0.0
    for pid in descendants(proc_table(), root):
        fields = _stat_fields(pid)
        if fields:
            total += sum(int(value) for value in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    return total


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains text (to find our own Ceph daemons)."""
    return [pid for pid, proc in proc_table().items() if text in proc.cmdline]


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15, how: int = signal.SIGTERM) -> None:
    """Signal how (SIGTERM), then SIGKILL if it has not exited within timeout seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(how)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def raise_open_files() -> None:
    """RLIMIT_NOFILE up to the hard limit (as root at least 65536), for us and the servers we start."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 65536) if os.geteuid() == 0 else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class RssSampler:
    """Samples VmRSS of a process every few ms on a thread; keeps the maximum, and with trace every sample.

    Without a pid it samples nothing (max_kib stays None): the same block then
    measures a server whose memory is not ours to watch (nginx, vsftpd).
    """

    def __init__(self, pid: int | None, interval: float = 0.02, trace: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.max_kib: int | None = None if pid is None else 0
        self.samples: list[tuple[float, int]] | None = [] if trace else None  # (seconds since the start, KiB)
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        assert self.pid is not None
        while not self._stop.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is not None:
                self.max_kib = max(self.max_kib or 0, rss)
                if self.samples is not None:
                    self.samples.append((time.monotonic() - self.began, rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self.began = time.monotonic()
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class Meter:
    """Over one block: its wall time, the CPU seconds of a server, of the client and of Ceph, the server's RSS.

    server_cpu reads the server's CPU seconds now (default: those of pid);
    client_cpu those of the client (default: the children we have reaped, i.e.
    curl; time.process_time for a client in this process); pid is the process
    whose VmRSS is sampled every 20 ms (none: not sampled).
    """

    def __init__(self, pid: int | None = None, server_cpu: Callable[[], float] | None = None,
                 client_cpu: Callable[[], float] = children_cpu,
                 ceph_cpu: Callable[[], float | None] | None = None) -> None:
        if server_cpu is None and pid is not None:
            server_cpu = lambda: proc_cpu_seconds(pid)  # noqa: E731 - the default reading
        self._server, self._client, self._ceph = server_cpu, client_cpu, ceph_cpu
        self._rss = RssSampler(pid)
        self.seconds = 0.0
        self.server_cpu: float | None = None
        self.client_cpu = 0.0
        self.ceph_cpu: float | None = None

    def __enter__(self) -> Self:
        self._before = (self._server() if self._server else None, self._client(),
                        self._ceph() if self._ceph else None)
        self._rss.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self._rss.__exit__()
        server, client, ceph = self._before
        if self._server is not None and server is not None:
            self.server_cpu = self._server() - server
        self.client_cpu = self._client() - client
        if self._ceph is not None and ceph is not None:
            now = self._ceph()
            self.ceph_cpu = now - ceph if now is not None else None

    @property
    def rss_max_kib(self) -> int | None:
        return self._rss.max_kib

    def sample(self, seconds: float | None = None, mb_s: float | None = None, client_cpu: float | None = None,
               reply_bytes: int | None = None) -> Sample:
        """The run as a sample; seconds and client CPU as the client measured them itself, where it did."""
        return Sample(self.seconds if seconds is None else seconds, mb_s=mb_s, server_cpu=self.server_cpu,
                      client_cpu=self.client_cpu if client_cpu is None else client_cpu, ceph_cpu=self.ceph_cpu,
                      rss_max_kib=self.rss_max_kib, reply_bytes=reply_bytes)
