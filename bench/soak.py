"""A soak run: two fwrepo nodes on one PostgreSQL database and one Ceph RGW bucket under mixed load.

Two `fwrepo serve` processes (HTTPS with their own development certificates,
FTPS on their own ports, FWREPO_LOG_LEVEL=warning) share a scratch PostgreSQL
database, a Ceph RGW bucket, FWREPO_KEYS_DIR, FWREPO_KEY_PASSPHRASE and
FWREPO_TOKEN_SECRET, as the nodes of one service behind a load balancer do
(tests/test_replicas.py). For --duration seconds (default 600) --workers
threads (default 6) each pick, at random, one of:

  grant          POST /api/v1/grants (https or ftps) on either node
  grant-batch    POST /api/v1/grants/batch, 2-20 chargers (https or ftps)
  https-download GET of a grant's location on one node; most are cut off at a random byte and
                 resumed with `Range: bytes=N-` on the other node; the SHA-256 of the whole is checked
  ftps-download  ftplib (AUTH TLS, PROT P) on one node; some are cut off and resumed with REST on the
                 other node; the SHA-256 is checked (each login is also an ftps-login sample)
  events         POST /api/v1/events, the status sequences of 10-60 issued grants
  revoke         DELETE /api/v1/grants/{id} on one node; the grant must be refused at once there (410,
                 or 530 at FTPS login) and on the other node 2.5 s later (timed as refused-https / refused-ftps)

Every unexpected status, wrong byte count or digest and every exception is an
error (target: none), as are 5xx counts in each node's /metrics and ERROR lines
or tracebacks in its log. Each node's RSS is sampled every second; the run
reports per operation count, rate and p50/p95 latency, and per node its RSS
idle, at the start of the load (after a warm-up), at the end and at most, and
rewrites the `soak` section of docs/benchmarks.md.

    .venv/bin/python bench/soak.py [--duration 600] [--workers 6] [--no-doc]

Needs PostgreSQL (--database-url, default postgresql://postgres@127.0.0.1:5432/postgres:
a scratch database is created and dropped) and Ceph (tests/support/s3servers.py).
Before the load it waits until no other benchmark (`bench/...`) and no pytest
runs. Everything it starts and writes is stopped/removed at the end, also on
errors and Ctrl-C. Exit status: 0 no errors and no RSS growth beyond noise,
1 otherwise, 2 the benchmark itself failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ftplib
import hashlib
import os
import random
import re
import secrets
import ssl
import statistics
import sys
import threading
import time
from collections import Counter, deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness import MB, MiB, say
from harness.machine import boto3_version, ceph_version, machine_facts, make_random_file
from harness.procs import RssSampler, proc_cpu_seconds, proc_status_kib, raise_open_files
from harness.report import Verdict, fact_lines, fmt, kib_to_mb, render_section, verdict_rows
from harness.run import Benchmark, argument_parser, main
from harness.servers import FwrepoServer, source_address, start_fwrepo
from harness.stores import DEFAULT_DATABASE_URL, postgres_unavailable, postgres_version, scratch_database, start_ceph

BUCKET = "bench-soak"
OPERATIONS = ("grant", "grant-batch", "https-download", "ftps-download", "events", "revoke")
WEIGHTS = (20, 8, 30, 18, 16, 8)
REPORTED = ("grant", "grant-batch", "https-download", "ftps-download", "ftps-login", "events", "revoke",
            "refused-https", "refused-ftps")
STATUSES = ("Downloading", "Downloaded", "Installing", "Installed", "Booted")
REVOCATION_BOUND = 2.5  # s after which the other node must refuse a revoked grant (README: within 2 s)
POOL_CAP = 400  # grants of each protocol kept for downloads and revocations
RSS_GROWTH_MB = 10.0  # growth from the start of the load to its end that counts as more than noise ...
RSS_GROWTH_SHARE = 0.05  # ... or this share of the start, whichever is larger


# --------------------------------------------------------------------------- what the workers share


@dataclass
class Grant:
    id: int
    location: str
    protocol: str
    firmware: str  # key into Soak.images


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in REPORTED})
    items: Counter = field(default_factory=Counter)  # grants issued, events posted, bytes downloaded ...
    errors: Counter = field(default_factory=Counter)  # (operation, kind) -> count
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, operation: str, seconds: float, **items: int) -> None:
        with self.lock:
            self.latencies[operation].append(seconds)
            self.items.update(items)

    def error(self, operation: str, kind: str, detail: str) -> None:
        with self.lock:
            self.errors[(operation, kind)] += 1
            self.examples.setdefault((operation, kind), detail[:300])
        say(f"  error in {operation}: {kind}: {detail[:200]}")


class Unexpected(Exception):
    """A reply the soak did not expect: kind is what goes into the error table."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


@dataclass
class NodeMemory:
    idle_kib: int
    start_kib: float  # median VmRSS over the start window (after the warm-up)
    end_kib: float  # median VmRSS over the last window
    max_kib: int
    hwm_kib: int | None
    slope_mb_min: float  # least-squares slope of VmRSS after the warm-up
    start_window: tuple[float, float]
    end_window: tuple[float, float]

    @property
    def growth_mb(self) -> float:
        return (self.end_kib - self.start_kib) * 1024 / MB

    @property
    def limit_mb(self) -> float:
        return max(RSS_GROWTH_MB, RSS_GROWTH_SHARE * self.start_kib * 1024 / MB)

    @property
    def grew(self) -> bool:
        return self.growth_mb > self.limit_mb


def node_memory(samples: list[tuple[float, int]], idle_kib: int, hwm_kib: int | None, duration: float) -> NodeMemory:
    warm = min(60.0, 0.2 * duration)
    window = max(15.0, min(60.0, 0.1 * duration))
    start = [rss for t, rss in samples if warm <= t < warm + window] or [samples[0][1]]
    end = [rss for t, rss in samples if t >= duration - window] or [samples[-1][1]]
    steady = [(t, rss) for t, rss in samples if t >= warm]
    slope = 0.0
    if len(steady) >= 2:
        mean_t = statistics.fmean(t for t, _ in steady)
        mean_r = statistics.fmean(r for _, r in steady)
        var = sum((t - mean_t) ** 2 for t, _ in steady)
        if var:
            slope = sum((t - mean_t) * (r - mean_r) for t, r in steady) / var * 60 * 1024 / MB
    return NodeMemory(idle_kib, statistics.median(start), statistics.median(end), max(r for _, r in samples), hwm_kib,
                      slope, (warm, warm + window), (duration - window, duration))


# --------------------------------------------------------------------------- the soak


class Soak(Benchmark):
    section = "soak"

    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        super().__init__(args, work, stack)
        self.nodes: list[FwrepoServer] = []
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.images: dict[str, tuple[str, int, str]] = {}  # name -> (firmware id, size, SHA-256)
        self.stats = Stats()
        self.pools: dict[str, deque[Grant]] = {"https": deque(), "ftps": deque()}
        self.known: deque[int] = deque(maxlen=5000)  # grant ids for status events
        self.revoked: deque[tuple[float, Grant, int]] = deque()  # (when, grant, node index that revoked it)
        self.pool_lock = threading.Lock()
        self.charger = 0
        self.pg_version = ""
        self.machine: list[str] = []
        self.idle_kib: dict[str, int] = {}
        self.memory: dict[str, NodeMemory] = {}
        self.server_cpu: dict[str, float] = {}
        self.client_cpu = 0.0
        self.load_seconds = 0.0
        self.server_errors: dict[str, dict[str, int]] = {}  # node -> {what: count}
        self.warnings: dict[str, Counter] = {}
        self.foreign_cpu = 0.0

    # -- set-up

    def measure(self) -> None:
        raise_open_files()
        self.turns.wait("the set-up")
        self.setup()
        import httpx
        import pyftpdlib

        self.machine = fact_lines({**machine_facts(self.work), "boto3": boto3_version(), "Ceph": ceph_version(),
                                   "PostgreSQL": self.pg_version or "?", "httpx": httpx.__version__,
                                   "pyftpdlib": pyftpdlib.__ver__})
        self.run()

    def setup(self) -> None:
        reason = postgres_unavailable(self.args.database_url)
        if reason:
            raise RuntimeError(reason)
        self.pg_version = postgres_version(self.args.database_url)
        database = scratch_database(self.stack, self.args.database_url, f"fwrepo_bench_soak_{os.getpid()}")
        ceph = start_ceph(self.stack, self.work / "ceph")
        ceph.client().create_bucket(Bucket=BUCKET)
        shared = {
            "FWREPO_DATABASE_URL": database,
            **ceph.fwrepo_settings(BUCKET),
            "FWREPO_KEYS_DIR": str(self.work / "keys"),  # a shared volume in production
            "FWREPO_KEY_PASSPHRASE": secrets.token_urlsafe(24),
            "FWREPO_TOKEN_SECRET": secrets.token_urlsafe(32),
            "FWREPO_SHUTDOWN_GRACE": "2",
        }
        for name in ("node-a", "node-b"):  # one after the other: the first makes the signing key
            node = start_fwrepo(self.stack, name, self.work / name, shared)
            self.nodes.append(node)
            self.contexts[name] = node.ssl_context()
            say(f"{name}: fwrepo serve pid {node.pid} at {node.url}, FTPS on port {node.ftps_port}")
        for index, (name, size) in enumerate((("large", self.args.image_mib * MiB), ("small", 256 * 1024))):
            path = self.work / f"{name}.bin"
            sha256 = make_random_file(path, size)
            record = self.nodes[index % 2].publish_firmware(path, f"5.0.{index + 1}")
            if record["sha256"] != sha256:
                raise RuntimeError(f"{name} image stored with SHA-256 {record['sha256']}, not {sha256}")
            self.images[name] = (record["id"], size, sha256)
            path.unlink()
        say(f"images: {', '.join(f'{n} {s / MiB:.2f} MiB' for n, (_i, s, _h) in self.images.items())} (published)")

    # -- grants

    def issue(self, client, node: FwrepoServer, count: int, protocol: str) -> list[Grant]:
        image = random.choice(list(self.images))
        with self.pool_lock:
            first = self.charger
            self.charger += count
        chargers = [f"SOAK-{n:07d}" for n in range(first, first + count)]
        body: dict = {"firmware_id": self.images[image][0], "protocol": protocol}
        if count == 1:
            reply = client.post(node.url + "/api/v1/grants", json={**body, "charger_id": chargers[0]},
                                headers={"Authorization": f"Bearer {node.csms}"})
        else:
            reply = client.post(node.url + "/api/v1/grants/batch", json={**body, "charger_ids": chargers},
                                headers={"Authorization": f"Bearer {node.csms}"})
        if reply.status_code != 201:
            raise Unexpected(f"HTTP {reply.status_code}", reply.text[:200])
        issued = [reply.json()] if count == 1 else reply.json()["grants"]
        if len(issued) != count or any(g["protocol"] != protocol for g in issued):
            raise Unexpected("wrong grants", f"{len(issued)} grants for {count} chargers")
        made = [Grant(g["id"], g["location"], protocol, image) for g in issued]
        prefix = "https://" if protocol == "https" else "ftp://"
        if any(not g.location.startswith(prefix) for g in made):
            raise Unexpected("wrong location", made[0].location[:60])
        with self.pool_lock:
            pool = self.pools[protocol]
            pool.extend(made)
            while len(pool) > POOL_CAP:
                pool.popleft()
            self.known.extend(g.id for g in made)
        return made

    def take(self, protocol: str) -> Grant | None:
        """A grant no other worker uses until it is handed back."""
        with self.pool_lock:
            pool = self.pools[protocol]
            if not pool:
                return None
            pool.rotate(-random.randrange(len(pool)))
            return pool.popleft()

    def give_back(self, grant: Grant) -> None:
        with self.pool_lock:
            self.pools[grant.protocol].append(grant)

    # -- downloads

    def https_download(self, clients, first: int, grant: Grant) -> tuple[int, bool]:
        """The whole image, maybe in two pieces on two nodes; (bytes, interrupted)."""
        _fid, size, sha256 = self.images[grant.firmware]
        path = urlsplit(grant.location).path
        node = self.nodes[first]
        digest, got = hashlib.sha256(), 0
        interrupted = random.random() < 0.7
        cut = random.randrange(1, size) if interrupted else size
        with clients[first].stream("GET", node.url + path) as reply:
            if reply.status_code != 200:
                raise Unexpected(f"HTTP {reply.status_code} on GET", reply.read()[:200].decode(errors="replace"))
            if int(reply.headers.get("content-length", -1)) != size:
                raise Unexpected("wrong Content-Length", reply.headers.get("content-length", "none"))
            for chunk in reply.iter_raw(64 * 1024):
                piece = chunk[:cut - got]
                digest.update(piece)
                got += len(piece)
                if got >= cut:
                    break  # leaving the block closes the connection mid-body: the charger's link dropped
        if got != cut:
            raise Unexpected("short body", f"{got} of {cut} bytes before the cut")
        if interrupted:
            other = 1 - first
            with clients[other].stream("GET", self.nodes[other].url + path,
                                       headers={"Range": f"bytes={got}-"}) as reply:
                if reply.status_code != 206:
                    raise Unexpected(f"HTTP {reply.status_code} on Range resume", reply.read()[:200].decode(errors="replace"))
                expected = f"bytes {got}-{size - 1}/{size}"
                if reply.headers.get("content-range") != expected:
                    raise Unexpected("wrong Content-Range", f"{reply.headers.get('content-range')} != {expected}")
                for chunk in reply.iter_raw(64 * 1024):
                    digest.update(chunk)
                    got += len(chunk)
        if got != size or digest.hexdigest() != sha256:
            raise Unexpected("wrong bytes", f"{got} of {size} bytes, SHA-256 {'ok' if digest.hexdigest() == sha256 else 'wrong'}")
        return size, interrupted

    def ftps_login(self, worker: int, index: int, grant: Grant) -> ftplib.FTP_TLS:
        parts = urlsplit(grant.location)
        node = self.nodes[index]
        began = time.perf_counter()
        # Each worker its own loopback address, as chargers have: fwrepo takes at most 16 sessions per address.
        ftp = ftplib.FTP_TLS(context=self.contexts[node.name], timeout=60, source_address=(source_address(worker), 0))
        try:
            ftp.connect("127.0.0.1", node.ftps_port)
            ftp.login(parts.username or "", parts.password or "")
            ftp.prot_p()
        except BaseException:
            ftp.close()
            raise
        self.stats.ok("ftps-login", time.perf_counter() - began)
        return ftp

    def ftps_download(self, worker: int, first: int, grant: Grant) -> tuple[int, bool]:
        _fid, size, sha256 = self.images[grant.firmware]
        path = urlsplit(grant.location).path
        digest, got = hashlib.sha256(), 0
        interrupted = random.random() < 0.5
        ftp = self.ftps_login(worker, first, grant)
        try:
            ftp.voidcmd("TYPE I")
            if interrupted:
                cut = random.randrange(1, size)
                conn = ftp.transfercmd(f"RETR {path}")
                try:
                    while got < cut:
                        chunk = conn.recv(min(64 * 1024, cut - got))
                        if not chunk:
                            break
                        digest.update(chunk)
                        got += len(chunk)
                finally:
                    conn.close()  # no unwrap, no ABOR: the link dropped
                ftp.close()
                if got != cut:
                    raise Unexpected("short data", f"{got} of {cut} bytes before the cut")
                ftp = self.ftps_login(worker, 1 - first, grant)
                ftp.voidcmd("TYPE I")

            def received(chunk: bytes) -> None:
                nonlocal got
                digest.update(chunk)
                got += len(chunk)

            ftp.retrbinary(f"RETR {path}", received, blocksize=64 * 1024, rest=got or None)
            ftp.quit()
        finally:
            ftp.close()
        if got != size or digest.hexdigest() != sha256:
            raise Unexpected("wrong bytes", f"{got} of {size} bytes, SHA-256 {'ok' if digest.hexdigest() == sha256 else 'wrong'}")
        return size, interrupted

    # -- events and revocations

    def post_events(self, client, node: FwrepoServer) -> int:
        with self.pool_lock:
            known = list(self.known)
        if not known:
            return 0
        now = dt.datetime.now(dt.UTC)
        events = []
        for grant_id in random.sample(known, min(len(known), random.randint(10, 60))):
            for step, status in enumerate(STATUSES[:random.randint(1, len(STATUSES))]):
                stamp = (now - dt.timedelta(seconds=10 * (len(STATUSES) - step))).isoformat().replace("+00:00", "Z")
                event = {"request_id": grant_id, "status": status, "timestamp": stamp}
                if status == "Booted":
                    event["firmware_version"] = "5.0.1"
                events.append(event)
        reply = client.post(node.url + "/api/v1/events", json={"events": events},
                            headers={"Authorization": f"Bearer {node.csms}"})
        if reply.status_code != 200:
            raise Unexpected(f"HTTP {reply.status_code}", reply.text[:200])
        answer = reply.json()
        if answer.get("accepted", 0) + answer.get("duplicates", 0) != len(events):
            raise Unexpected("wrong counts", f"{answer} for {len(events)} events")
        return len(events)

    def refused(self, worker: int, clients, index: int, grant: Grant) -> None:
        """The grant must be refused on that node now: 410 over HTTPS, 530 at the FTPS login."""
        began = time.perf_counter()
        self._refused(worker, clients, index, grant)
        self.stats.ok(f"refused-{grant.protocol}", time.perf_counter() - began)

    def _refused(self, worker: int, clients, index: int, grant: Grant) -> None:
        if grant.protocol == "https":
            reply = clients[index].get(self.nodes[index].url + urlsplit(grant.location).path)
            if reply.status_code != 410:
                raise Unexpected(f"HTTP {reply.status_code} for a revoked grant", f"on {self.nodes[index].name}")
            return
        try:
            ftp = self.ftps_login(worker, index, grant)
        except ftplib.error_perm as error:
            if str(error).startswith("530"):
                return
            raise Unexpected("FTPS refusal other than 530", str(error)) from None
        ftp.close()
        raise Unexpected("FTPS login to a revoked grant worked", f"on {self.nodes[index].name}")

    def revoke(self, worker: int, clients, index: int) -> None:
        """DELETE (the revoke sample), then the refusal on the same node at once (a refused-* sample)."""
        grant = self.take(random.choice(("https", "ftps")))
        if grant is None:
            return
        node = self.nodes[index]
        began = time.perf_counter()
        reply = clients[index].delete(f"{node.url}/api/v1/grants/{grant.id}", headers={"Authorization": f"Bearer {node.csms}"})
        if reply.status_code != 200 or not reply.json().get("revoked_at"):
            raise Unexpected(f"HTTP {reply.status_code} on DELETE", reply.text[:200])
        self.stats.ok("revoke", time.perf_counter() - began, revoked=1)
        self.refused(worker, clients, index, grant)
        with self.pool_lock:
            self.revoked.append((time.monotonic(), grant, index))

    def due_revocation(self) -> tuple[Grant, int] | None:
        with self.pool_lock:
            if self.revoked and time.monotonic() - self.revoked[0][0] >= REVOCATION_BOUND:
                _when, grant, index = self.revoked.popleft()
                return grant, index
        return None

    # -- the load

    def worker(self, number: int, deadline: float) -> None:
        import httpx

        rng = random.Random(self.args.seed * 1000 + number)
        clients = [httpx.Client(verify=self.contexts[node.name], timeout=60) for node in self.nodes]
        try:
            turn = number
            while time.monotonic() < deadline:
                turn += 1
                due = self.due_revocation()
                if due is not None:
                    grant, index = due
                    self.attempt(f"refused-{grant.protocol}", lambda: self.refused(number, clients, 1 - index, grant),
                                 record=False)
                    continue
                operation = rng.choices(OPERATIONS, WEIGHTS)[0]
                index = turn % 2  # each worker alternates between the nodes
                node = self.nodes[index]
                protocol = rng.choice(("https", "ftps"))
                if operation == "grant":
                    self.attempt(operation, lambda: {"grants": len(self.issue(clients[index], node, 1, protocol))})
                elif operation == "grant-batch":
                    count = rng.randint(2, 20)
                    self.attempt(operation, lambda: {"grants": len(self.issue(clients[index], node, count, protocol))})
                elif operation in ("https-download", "ftps-download"):
                    kind = "https" if operation == "https-download" else "ftps"
                    grant = self.take(kind)
                    if grant is None:
                        self.attempt("grant", lambda: {"grants": len(self.issue(clients[index], node, 1, kind))})
                        continue
                    try:
                        def download() -> dict[str, int]:
                            if kind == "https":
                                size, cut = self.https_download(clients, index, grant)
                            else:
                                size, cut = self.ftps_download(number, index, grant)
                            return {f"{operation} bytes": size, f"{operation} resumed": int(cut)}

                        self.attempt(operation, download)
                    finally:
                        self.give_back(grant)
                elif operation == "events":
                    self.attempt(operation, lambda: {"events": self.post_events(clients[index], node)})
                else:
                    self.attempt(operation, lambda: self.revoke(number, clients, index), record=False)
        finally:
            for client in clients:
                client.close()

    def attempt(self, operation: str, call, record: bool = True) -> None:
        """Run one operation; its latency is a sample of operation (unless the call records its own), any exception an error."""
        began = time.perf_counter()
        try:
            items = call()
        except Unexpected as error:
            self.stats.error(operation, error.kind, error.detail)
            return
        except Exception as error:  # noqa: BLE001 - every exception is an error of the run
            self.stats.error(operation, type(error).__name__, str(error) or repr(error))
            return
        if record:
            self.stats.ok(operation, time.perf_counter() - began, **{k: v for k, v in (items or {}).items() if v})

    def run(self) -> None:
        self.turns.wait("the soak run")
        for node in self.nodes:
            self.idle_kib[node.name] = proc_status_kib(node.pid, "VmRSS") or 0
        duration = self.args.duration
        say(f"soak: {self.args.workers} workers for {duration:.0f} s on {', '.join(n.name for n in self.nodes)}")
        snapshot = self.turns.snapshot()
        cpu_before = {node.name: proc_cpu_seconds(node.pid) for node in self.nodes}
        client_before = time.process_time()
        with ExitStack() as sampling:  # each node's VmRSS once a second
            traces = {node.name: sampling.enter_context(RssSampler(node.pid, interval=1.0, trace=True))
                      for node in self.nodes}
            began = time.monotonic()
            deadline = began + duration
            threads = [threading.Thread(target=self.worker, args=(n, deadline), name=f"soak-{n}", daemon=True)
                       for n in range(self.args.workers)]
            for thread in threads:
                thread.start()
            last = began
            while any(thread.is_alive() for thread in threads):
                time.sleep(1.0)
                if time.monotonic() - last >= 60:
                    last = time.monotonic()
                    done = sum(len(v) for v in self.stats.latencies.values())
                    rss = ", ".join(f"{n.name} {kib_to_mb(proc_status_kib(n.pid, 'VmRSS')):.0f} MB" for n in self.nodes)
                    say(f"  {last - began:4.0f} s: {done} operations, {sum(self.stats.errors.values())} errors, RSS {rss}")
                for node in self.nodes:
                    if node.proc is not None and node.proc.poll() is not None:
                        raise RuntimeError("a node died during the soak" + node.describe_exit())
            self.load_seconds = time.monotonic() - began
        self.client_cpu = time.process_time() - client_before
        self.foreign_cpu = self.turns.foreign_cpu_since(snapshot)
        if self.foreign_cpu > 0.05 * self.load_seconds:
            self.notes.append(f"Other benchmarks or pytest used {self.foreign_cpu:.0f} CPU s during the run.")
        for node in self.nodes:
            self.server_cpu[node.name] = proc_cpu_seconds(node.pid) - cpu_before[node.name]
            self.memory[node.name] = node_memory(traces[node.name].samples or [], self.idle_kib[node.name],
                                                 proc_status_kib(node.pid, "VmHWM"), self.load_seconds)
        self.check_servers()

    def check_servers(self) -> None:
        """5xx in each node's /metrics; ERROR lines and tracebacks in its log (warnings are counted, not errors)."""
        import httpx

        # TEXT_FORMAT of repo_service/logs.py ("DATE TIME LEVEL logger [id]: message"), or uvicorn's own "LEVEL:    message".
        level = re.compile(r"^(?:\S+ \S+ )?(ERROR|CRITICAL|WARNING):? ")
        for node in self.nodes:
            found: dict[str, int] = {}
            metrics = httpx.get(node.url + "/metrics", verify=self.contexts[node.name], timeout=30).text
            for line in metrics.splitlines():
                match = re.match(r'fwrepo_http_requests_total\{(.*)\} ([0-9.e+]+)$', line)
                if match and re.search(r'status="5\d\d"', match.group(1)):
                    found[f"HTTP 5xx in /metrics ({match.group(1)})"] = int(float(match.group(2)))
            warnings: Counter = Counter()
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            for line in text.splitlines():
                if "Traceback (most recent call last)" in line:
                    found["traceback in the log"] = found.get("traceback in the log", 0) + 1
                match = level.match(line)
                if match is None:
                    continue
                message = re.sub(r"\d+", "N", line[match.end():].strip())[:120]
                if match.group(1) == "WARNING":
                    warnings[message] += 1
                else:
                    found[f"log {match.group(1)}: {message}"] = found.get(f"log {match.group(1)}: {message}", 0) + 1
            self.server_errors[node.name] = found
            self.warnings[node.name] = warnings

    # -- report

    def error_total(self) -> int:
        return sum(self.stats.errors.values()) + sum(sum(found.values()) for found in self.server_errors.values())

    def grew(self) -> list[str]:
        return [name for name, memory in self.memory.items() if memory.grew]

    def tables(self) -> str:
        elapsed, stats = self.load_seconds or 1.0, self.stats
        lines = [
            "| operation | count | per s | p50 ms | p95 ms | max ms | what else |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name in REPORTED:
            values = stats.latencies[name]
            extra = ""
            if name in ("grant", "grant-batch"):
                extra = f"{stats.items['grants']:,} grants in all ({stats.items['grants'] / elapsed:.1f}/s)" if name == "grant-batch" else ""
            elif name.endswith("-download"):
                total = stats.items[f"{name} bytes"]
                extra = (f"{total / MB:,.0f} MB, {total / elapsed / MB:.1f} MB/s; {stats.items[f'{name} resumed']} "
                         "cut off and resumed on the other node")
            elif name == "events":
                extra = f"{stats.items['events']:,} events ({stats.items['events'] / elapsed:.0f}/s)"
            elif name == "revoke":
                extra = "the DELETE alone"
            elif name.startswith("refused-"):
                extra = "GET answered 410" if name == "refused-https" else "login answered 530 (after pyftpdlib's failed-login delay)"
                extra += ": on the revoking node at once, and on the other node 2.5 s later"
            ms = lambda v: fmt(v * 1000 if v is not None else None, "{:.0f}")
            lines.append(f"| {name} | {len(values):,} | {len(values) / elapsed:.2f} | {ms(percentile(values, 0.5))} "
                         f"| {ms(percentile(values, 0.95))} | {ms(max(values) if values else None)} | {extra} |")
        lines += ["", "| errors | count | first example |", "| --- | ---: | --- |"]
        for (operation, kind), count in sorted(stats.errors.items()):
            lines.append(f"| {operation}: {kind} | {count} | {stats.examples[(operation, kind)].replace('|', '/')} |")
        for node, found in self.server_errors.items():
            for what, count in sorted(found.items()):
                lines.append(f"| {node}: {what.replace('|', '/')} | {count} | |")
        if not self.error_total():
            lines.append("| none (client: unexpected status, wrong bytes, exceptions; servers: 5xx in /metrics, "
                         "ERROR lines and tracebacks in the log) | 0 | |")
        to_mb = kib_to_mb
        lines += [
            "",
            ("| node | RSS MB idle | at the start of the load | at the end | growth | max sampled | VmHWM "
             "| slope after warm-up | CPU s | result |"),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, memory in self.memory.items():
            lines.append(
                f"| {name} | {to_mb(memory.idle_kib):.0f} | {to_mb(memory.start_kib):.0f} | {to_mb(memory.end_kib):.0f} "
                f"| {memory.growth_mb:+.1f} | {to_mb(memory.max_kib):.0f} | {fmt(to_mb(memory.hwm_kib), '{:.0f}')} "
                f"| {memory.slope_mb_min:+.2f} MB/min | {self.server_cpu[name]:.0f} "
                f"| {'GREW' if memory.grew else 'within noise'} (limit {memory.limit_mb:.0f} MB) |"
            )
        verdicts = [Verdict("errors", str(self.error_total()), "0", "FAIL" if self.error_total() else "PASS")]
        verdicts += [Verdict(f"{name}: RSS growth, start of the load to its end", f"{memory.growth_mb:+.1f} MB",
                             f"<= {memory.limit_mb:.0f} MB", "FAIL" if memory.grew else "PASS")
                     for name, memory in self.memory.items()]
        return "\n".join(lines + verdict_rows(verdicts))

    def missed(self) -> bool:
        return bool(self.error_total() or self.grew())

    def summary(self) -> str:
        return self.tables()

    def render(self) -> str:
        args = self.args
        minutes = args.duration / 60
        memory = next(iter(self.memory.values()))
        warnings = {name: sum(counter.values()) for name, counter in self.warnings.items()}
        weights = ", ".join(f"{name} {weight}" for name, weight in zip(OPERATIONS, WEIGHTS, strict=True))
        intro = [
            (f"Written by `bench/soak.py --duration {args.duration:g} --workers {args.workers}` on {self.when:%Y-%m-%d %H:%M} UTC: "
             f"**a {minutes:g}-minute run** (the default is 10 minutes; the whole run with set-up took {self.elapsed() / 60:.1f} min, "
             f"of which {self.turns.waited / 60:.1f} min waiting for other benchmarks and pytest)."),
            "",
            (f"Two `fwrepo serve` nodes (HTTPS with each its own development certificate, FTPS on each its own port, "
             "FWREPO_LOG_LEVEL=warning) on one scratch PostgreSQL database (created for the run, dropped after it), one "
             "bucket of a throwaway Ceph RGW (`tests/support/s3servers.py`, memstore), one FWREPO_KEYS_DIR, "
             "FWREPO_KEY_PASSPHRASE and FWREPO_TOKEN_SECRET: two nodes of one service, as `tests/test_replicas.py` sets "
             f"them up. Two published images, {args.image_mib} MiB and 256 KiB, uploaded before the load. "
             f"{args.workers} worker threads in one client process each pick an operation at random (weights: {weights}) "
             "alternating between the nodes, one after the other without pause:"),
            "",
            "- **grant** / **grant-batch**: `POST /api/v1/grants` / `/batch` (2-20 chargers), https or ftps, 201 and the "
            "right number of locations expected.",
            ("- **https-download**: a grant's location on one node (httpx, 64 KiB reads); 70% are cut off at a random "
             "byte (the connection closed mid-body) and resumed with `Range: bytes=N-` on the other node (206 and the "
             "right `Content-Range` expected); the SHA-256 of the whole image is checked. Latency is the whole download, "
             "both pieces."),
            ("- **ftps-download**: ftplib `FTP_TLS` (AUTH TLS, PROT P, each worker from its own 127.0.x.y address) on one "
             "node; 50% are cut off at a random byte (data and control connection closed, no ABOR) and resumed on the "
             "other node with `REST`; SHA-256 checked. Each login (connect, AUTH TLS, USER/PASS, PBSZ/PROT) is also an "
             "**ftps-login** sample."),
            ("- **events**: `POST /api/v1/events` with 10-60 grants' FirmwareStatusNotification sequences (1-5 of "
             "Downloading ... Booted each); accepted + duplicates must equal the events sent."),
            (f"- **revoke**: `DELETE /api/v1/grants/{{id}}` on one node, then the grant must be refused there at once "
             f"(HTTPS 410, or FTPS `530` at login); {REVOCATION_BOUND:g} s later a worker checks that the other node "
             "refuses it too. The revoke row times the DELETE alone, the **refused-https** / **refused-ftps** rows "
             "each check of a refusal."),
            "",
            ("An error is any unexpected status, wrong byte count or digest, or exception in the client, plus any 5xx "
             "counted in a node's `/metrics` and any ERROR line or traceback in its log. Each node's VmRSS is sampled "
             f"every second: *at the start of the load* is the median over {memory.start_window[0]:.0f}-"
             f"{memory.start_window[1]:.0f} s (after a warm-up in which caches, pools and allocator arenas fill), "
             f"*at the end* the median over the last {memory.end_window[1] - memory.end_window[0]:.0f} s; growth beyond "
             f"max({RSS_GROWTH_MB:.0f} MB, {RSS_GROWTH_SHARE:.0%} of the start) counts as more than noise. The slope is "
             "a least-squares fit over all samples after the warm-up. p50/p95 are of each operation's wall time in the "
             "client, per s is completed operations per second of the load."),
            "",
        ]
        shared = (
            f"The client, both nodes, PostgreSQL and Ceph share the machine's {os.cpu_count()} CPUs and the workers "
            f"run without pause: the client used {self.client_cpu:.0f} CPU s and the two nodes "
            f"{sum(self.server_cpu.values()):.0f} CPU s in the {self.load_seconds:.0f} s of load, "
            f"{(self.client_cpu + sum(self.server_cpu.values())) / max(self.load_seconds * (os.cpu_count() or 1), 1):.0%} "
            "of the machine before PostgreSQL and Ceph; rates and latencies are those of this shared machine."
        )
        body = [self.tables(), ""]
        body.append("Warnings in the nodes' logs (not errors): " + (", ".join(
            f"{name} {count}" for name, count in warnings.items()) if any(warnings.values()) else "none") + ".")
        for name, counter in self.warnings.items():
            for message, count in counter.most_common(3):
                body.append(f"- {name}, {count} x: `{message}`")
        body.append("")
        return render_section(self.section, "Soak", intro, self.machine, shared, self.notes, body)




# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, "soak", max_wait=3600)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--workers", type=int, default=6, help="client threads (default 6)")
    parser.add_argument("--image-mib", type=int, default=8, help="size of the large image, MiB (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the workers' choices (default 1)")
    parser.add_argument("--database-url", default=os.environ.get("FWREPO_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
                        help=f"PostgreSQL server for the scratch database (default {DEFAULT_DATABASE_URL})")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.workers <= 0 or args.image_mib <= 0:
        parser.error("--duration, --workers and --image-mib must be positive")
    if args.workers > 250:
        parser.error("--workers: at most 250 (one loopback address each)")
    return args


if __name__ == "__main__":
    sys.exit(main(Soak, parse_args(None)))
