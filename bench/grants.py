"""Grant issuing throughput of fwrepo, next to the floor of what issuing needs.

One run issues 100,000 grants in 10 batches of 10,000 through the HTTPS API
(`POST /api/v1/grants/batch`, httpx with the server's development CA, every
reply's JSON parsed and its count checked) against `fwrepo serve` on SQLite
and on PostgreSQL, --repeat times each (a fresh server, data directory and
database per run; the rounds interleave the two), and takes the median. As a
floor, in the same run and in this process: signing 100,000 download tokens
with `TokenSigner.issue`, and inserting 100,000 rows into the `grant` table of
a SQLite copy of the server's database in one transaction (stdlib sqlite3).

Targets: 100k grants in < 10 s on SQLite; PostgreSQL no worse than 2 x SQLite.
Where one is missed, an extra (unmeasured) run is profiled with py-spy and the
section says where the server's time went. Rewrites the `grants` section of
docs/benchmarks.md.

    .venv/bin/python bench/grants.py [--repeat 3] [--no-doc] [--profile auto|always|never]

Before every measured run it waits until no other benchmark (`bench/...`) and
no pytest is running, and repeats a run that other load disturbed. Everything
it starts (servers, scratch PostgreSQL databases, py-spy) and every file it
writes are stopped/removed at the end, also on errors and Ctrl-C. Exit status:
0 all targets met, 1 a target missed, 2 the benchmark itself failed, 130
interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: upload.py's helpers
import upload
from upload import MB, FwrepoServer, say

ROOT = upload.ROOT
DOC = upload.DOC
SECTION = "grants"

TOTAL = 100_000
BATCH = 10_000
TARGET_SQLITE_SECONDS = 10.0  # 100k grants on SQLite in less than this
TARGET_PG_RATIO = 2.0  # PostgreSQL seconds per 100k <= 2 x SQLite's
BUSY_LIMIT = 0.25  # share of all CPUs busy with other work that makes us wait
PG_URL = "postgresql://postgres@127.0.0.1:5432"
BACKENDS = ("sqlite", "postgresql")


# --------------------------------------------------------------------------- taking turns


def proc_table() -> dict[int, tuple[int, float, int, str]]:
    """pid -> (parent pid, CPU seconds, start time in ticks, command line) of every process."""
    table: dict[int, tuple[int, float, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / upload.CLK_TCK,
            int(fields[19]),
            cmdline,
        )
    return table


def descendants(table: dict[int, tuple[int, float, int, str]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Turns:
    """Waits for other benchmarks and pytest runs to finish, and notices when they overlap a run.

    Other benchmarks are what `pgrep -f 'bench/|pytest'` finds, minus this
    process, its ancestors (the shell that started it) and its descendants,
    each with its whole process tree (servers, Ceph daemons). One that is
    itself only waiting (no CPU for a while) does not hold us up, so two
    benchmarks that both wait for the other cannot wait forever: an older one
    must be idle for 10 s, a newer one for 3 s.
    """

    def __init__(self, notes: list[str], max_wait: float = 1800) -> None:
        self.notes = notes
        self.max_wait = max_wait
        self.me = os.getpid()
        self.my_start = proc_table()[self.me][2]
        self.waited = 0.0

    def _family(self, table: dict[int, tuple[int, float, int, str]]) -> set[int]:
        family = descendants(table, self.me)
        pid = self.me
        while pid in table and pid > 1:
            family.add(pid)
            pid = table[pid][0]
        return family

    def foreign(self) -> dict[int, set[int]]:
        """Root pid -> its process tree, for every other benchmark or pytest run."""
        found = subprocess.run(["pgrep", "-f", "bench/|pytest"], capture_output=True, text=True, check=False).stdout
        table = proc_table()
        family = self._family(table)
        matches = {int(p) for p in found.split()} - family
        matches &= table.keys()
        roots: dict[int, set[int]] = {}
        for pid in sorted(matches, key=lambda p: table[p][2]):
            if any(pid in tree for tree in roots.values()):
                continue
            roots[pid] = descendants(table, pid) - family
        return roots

    @staticmethod
    def tree_cpu(pids: Iterable[int]) -> float:
        return sum(upload.proc_cpu_seconds(pid) for pid in pids)

    def describe(self, roots: dict[int, set[int]]) -> str:
        table = proc_table()
        return "; ".join(f"{pid} {' '.join(table.get(pid, (0, 0, 0, '?'))[3].split())[:100]}" for pid in roots)

    def wait(self, label: str) -> None:
        began = time.monotonic()
        idle_for = 0
        last_said = 0.0
        while True:
            roots = self.foreign()
            if not roots:
                busy = upload.busy_fraction(1.0)
                if busy <= BUSY_LIMIT:
                    break
                why = f"{busy:.0%} of the CPUs busy with other work"
            else:
                before = {root: self.tree_cpu(tree) for root, tree in roots.items()}
                time.sleep(1.0)
                active = [root for root, tree in roots.items() if self.tree_cpu(tree) - before[root] > 0.05]
                idle_for = 0 if active else idle_for + 1
                older = any(proc_table().get(root, (0, 0, 0, ""))[2] < self.my_start for root in roots)
                if idle_for >= (10 if older else 3) and upload.busy_fraction(1.0) <= BUSY_LIMIT:
                    break  # they are waiting too, probably for us
                why = f"other benchmark/pytest running: {self.describe(roots)}"
            now = time.monotonic()
            if now - began > self.max_wait:
                self.notes.append(f"Waited {self.max_wait / 60:.0f} min for a quiet machine before {label} and "
                                  f"then ran anyway ({why}).")
                break
            if now - last_said > 30:
                say(f"waiting before {label}: {why}")
                last_said = now
        self.waited += time.monotonic() - began

    def snapshot(self) -> dict[int, float]:
        """CPU seconds of every process in another benchmark's tree, now."""
        return {pid: upload.proc_cpu_seconds(pid) for tree in self.foreign().values() for pid in tree}

    def foreign_cpu_since(self, snapshot: dict[int, float]) -> float:
        now = self.snapshot()
        return sum(max(cpu - snapshot.get(pid, 0.0), 0.0) for pid, cpu in now.items())


def measured(turns: Turns, label: str, run: Callable[[], object], retries: int = 2) -> object:
    """Run one measurement on a quiet machine; repeat it when other benchmarks used CPU meanwhile."""
    for attempt in range(retries + 1):
        turns.wait(label)
        snapshot, began = turns.snapshot(), time.monotonic()
        result = run()
        foreign = turns.foreign_cpu_since(snapshot)
        seconds = time.monotonic() - began
        if foreign <= 0.1 * seconds + 0.2:
            return result
        if attempt < retries:
            say(f"  {label}: other benchmarks used {foreign:.1f} CPU s during the run; repeating it")
        else:
            turns.notes.append(f"{label}: other benchmarks used {foreign:.1f} CPU s during the run "
                               f"({retries + 1} attempts); kept the last one.")
    return result


# --------------------------------------------------------------------------- fwrepo helpers


def port_of(server: FwrepoServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def create_key(server: FwrepoServer, role: str, name: str = "bench") -> str:
    created = subprocess.run(
        [*upload.fwrepo_command(), "clients", "create", "--name", f"{name}-{role}", "--role", role],
        env=server.env(port_of(server)), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if created.returncode != 0:
        raise RuntimeError(f"fwrepo clients create --role {role} failed: {created.stderr.strip()}")
    return created.stdout.strip()


def start_tls_server(stack: ExitStack, name: str, data_dir: Path, settings: dict[str, str]) -> FwrepoServer:
    """`fwrepo serve` over HTTPS (its development certificate) with a release key (.key) and a csms key (.csms)."""
    server = FwrepoServer(name, data_dir, settings, tls=True)
    stack.callback(server.stop)
    server.start()
    server.csms = create_key(server, "csms")  # type: ignore[attr-defined]
    return server


def ssl_context(server: FwrepoServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.cacert))


def upload_firmware(server: FwrepoServer, path: Path, version: str, work: Path) -> dict:
    """Upload and publish one image (curl -F, as bench/upload.py does); the published record."""
    reply = work / f"reply-{server.name}.json"
    done = subprocess.run(
        ["curl", "-sS", "-o", str(reply), "-w", "%{http_code}", "--cacert", str(server.cacert),
         "-H", f"Authorization: Bearer {server.key}",
         "-F", "vendor=Bench", "-F", "models=BM-1", "-F", f"version={version}",
         "-F", f"file=@{path};type=application/octet-stream",
         server.url + "/api/v1/firmware"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    body = reply.read_text(errors="replace") if reply.exists() else ""
    if done.returncode != 0 or done.stdout.strip() not in ("200", "201"):
        raise RuntimeError(f"upload to {server.name} failed: curl exit {done.returncode}, HTTP {done.stdout.strip()}: "
                           f"{done.stderr.strip()} {body[:300]}" + server.describe_exit())
    record = json.loads(body)
    import httpx

    with httpx.Client(verify=ssl_context(server), timeout=120) as client:
        published = client.post(f"{server.url}/api/v1/firmware/{record['id']}/publish",
                                headers={"Authorization": f"Bearer {server.key}"})
    if published.status_code != 200:
        raise RuntimeError(f"publish on {server.name} failed: HTTP {published.status_code} {published.text[:300]}")
    return published.json()


def issue_grants(server: FwrepoServer, firmware_id: str, charger_ids: list[str], **options: str) -> list[dict]:
    """Grants for these chargers (batches of up to 10,000; options such as protocol="ftps" go into each request)."""
    import httpx

    grants: list[dict] = []
    with httpx.Client(verify=ssl_context(server), timeout=300) as client:
        for first in range(0, len(charger_ids), BATCH):
            chunk = charger_ids[first:first + BATCH]
            reply = client.post(f"{server.url}/api/v1/grants/batch",
                                headers={"Authorization": f"Bearer {server.csms}"},  # type: ignore[attr-defined]
                                json={"firmware_id": firmware_id, "charger_ids": chunk, **options})
            if reply.status_code != 201:
                raise RuntimeError(f"grants on {server.name}: HTTP {reply.status_code} {reply.text[:300]}")
            grants += reply.json()["grants"]
    return grants


# --------------------------------------------------------------------------- PostgreSQL


def psql(sql: str, database: str = "postgres") -> str:
    done = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", database,
         "-c", sql],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")
    return done.stdout.strip()


def postgres_unavailable() -> str | None:
    if shutil.which("psql") is None:
        return "psql not installed"
    try:
        psql("SELECT 1")
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        return f"PostgreSQL at 127.0.0.1:5432 not reachable as postgres: {error}"
    return None


def scratch_database(stack: ExitStack, name: str) -> str:
    """CREATE DATABASE name now, DROP it at clean-up; its URL."""
    psql(f'CREATE DATABASE "{name}"')
    stack.callback(drop_database, name)
    return f"{PG_URL}/{name}"


def drop_database(name: str) -> None:
    try:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"could not drop scratch database {name}: {error}", file=sys.stderr)


# --------------------------------------------------------------------------- py-spy


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class Profile:
    """`py-spy record -f raw` of a process while a block runs, stopped with SIGINT at its end."""

    def __init__(self, pid: int, out: Path, seconds: int, rate: int = 100) -> None:
        self.pid, self.out, self.seconds, self.rate = pid, out, seconds, rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.error = ""

    def __enter__(self) -> Self:
        tool = py_spy()
        if tool is None:
            self.error = "py-spy not installed"
            return self
        self.log = self.out.with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [tool, "record", "-p", str(self.pid), "-f", "raw", "-o", str(self.out), "-d", str(self.seconds),
                 "-r", str(self.rate)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        time.sleep(1.0)  # attached and sampling before the work starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            self.error = "py-spy wrote nothing: " + self.log.read_text(errors="replace").strip()[-300:]


def read_raw_profile(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) format: `frame;frame;... count` per line, root first."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


@dataclass
class ProfileSummary:
    samples: int
    rate: int
    categories: list[tuple[str, int]]  # (category, samples), largest first
    leaves: list[tuple[str, int]]  # (function (file), samples) of the innermost frames, largest first
    error: str = ""

    def seconds(self, samples: int) -> float:
        return samples / self.rate

    def share(self, name: str) -> float:
        return dict(self.categories).get(name, 0) / self.samples if self.samples else 0.0


def short_frame(frame: str) -> str:
    """`send (uvicorn/protocols/http/httptools_impl.py:123)` -> `send (uvicorn/protocols/http/httptools_impl.py)`."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    path = re.sub(r"^\.\d+/", "", path)  # /lib/python3.11/x.py -> x.py
    return f"{name} ({path})"


IDLE_LEAF = re.compile(r"^(Condition\.wait|Event\.wait|wait|_wait_for_tstate_lock) \(.*threading\.py")


def summarize_profile(path: Path, rate: int, categories: list[tuple[str, re.Pattern[str]]]) -> ProfileSummary:
    """Each sample goes to the category of its innermost frame that matches one (else 'other').

    Samples of threads parked in a threading wait (idle anyio worker threads,
    the download-record flusher) are left out: py-spy's idle detection does
    not catch them here.
    """
    stacks = read_raw_profile(path)
    counts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        if IDLE_LEAF.search(frames[-1]):
            continue
        total += count
        leaves[short_frame(frames[-1])] += count
        chosen = "other"
        for frame in reversed(frames):
            hit = next((name for name, pattern in categories if pattern.search(frame)), None)
            if hit is not None:
                chosen = hit
                break
        counts[chosen] += count
    return ProfileSummary(total, rate, counts.most_common(), leaves.most_common(12))


def render_profile(summary: ProfileSummary, title: str) -> list[str]:
    if summary.error:
        return [f"{title}: not profiled ({summary.error}).", ""]
    lines = [
        (f"{title} ({summary.samples} samples at {summary.rate} Hz = {summary.seconds(summary.samples):.1f} s of "
        "busy thread time, all threads, idle waits left out):"),
        "",
        "| where the server's time went | share | seconds |",
        "| --- | ---: | ---: |",
    ]
    for name, count in summary.categories:
        lines.append(f"| {name} | {count / summary.samples:.0%} | {summary.seconds(count):.1f} |")
    lines += ["", "| innermost frame (self time) | share |", "| --- | ---: |"]
    for name, count in summary.leaves[:8]:
        lines.append(f"| `{name}` | {count / summary.samples:.0%} |")
    lines.append("")
    return lines


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    seconds: float
    server_cpu: float
    client_cpu: float
    rss_max_kib: int
    reply_bytes: int = 0  # JSON received for the 100k


@dataclass
class Backend:
    name: str
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None

    def median(self, attribute: str = "seconds") -> float | None:
        return statistics.median(getattr(r, attribute) for r in self.runs) if self.runs else None


@dataclass
class Floor:
    tokens: float = 0.0  # s for 100k TokenSigner.issue
    sqlite_insert: float = 0.0  # s for 100k rows, stdlib sqlite3, one transaction
    fwrepo_insert: float = 0.0  # s for 100k rows the way Grants.issue does it (SQLAlchemy, 10 x 10k)
    locations: float = 0.0  # s for 100k Grants.location (token + URL)

    @property
    def total(self) -> float:
        return self.tokens + self.sqlite_insert


# --------------------------------------------------------------------------- the bench


GRANT_CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("token signing (TokenSigner.issue, itsdangerous, hmac)", re.compile(r"domain/tokens\.py|itsdangerous|hmac\.py")),
    ("JSON encoding of the reply (JSONResponse.render, json.dumps)", re.compile(r"^render \(.*starlette/responses|json/encoder")),
    ("JSON decoding of the request (json.loads)", re.compile(r"json/decoder|^loads \(json")),
    ("building reply dicts (grant_json, ocpp_payloads, iso)", re.compile(r"^(grant_json|ocpp_payloads|iso) ")),
    ("GrantRecord objects (dataclasses.replace)", re.compile(r"^replace \(.*dataclasses|^__init__ \(<string>")),
    ("location() besides the token (quote, f-strings)", re.compile(r"^location \(.*domain/grants")),
    ("SQL insert (SQLAlchemy + driver)", re.compile(r"sqlalchemy/|sqlite3|psycopg")),
    ("checking the request (parse_grant_request, _charger_id)", re.compile(r"^(parse_grant_request|_charger_id|_moment|_integer) ")),
    ("row dicts in Grants.issue", re.compile(r"^(<listcomp>|issue) \(.*domain/grants")),
    ("TLS and socket I/O (ssl, uvloop, uvicorn)", re.compile(r"ssl\.py|uvloop|uvicorn/protocols|asyncio/")),
    ("Starlette / anyio plumbing", re.compile(r"starlette/|anyio/")),
]


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        self.args = args
        self.work = work
        self.stack = stack
        self.notes: list[str] = []
        self.turns = Turns(self.notes)
        self.backends = {name: Backend(name) for name in BACKENDS}
        self.floor = Floor()
        self.floor_db: Path | None = None
        self.profiles: dict[str, ProfileSummary] = {}
        self.firmware_file = work / "bench-fw.bin"
        self.counter = 0
        self.pg_version = ""

    def setup(self) -> None:
        self.firmware_file.write_bytes(os.urandom(256 * 1024))
        reason = postgres_unavailable()
        if reason:
            self.backends["postgresql"].skipped = reason
            self.notes.append(f"PostgreSQL part not run: {reason}.")
        else:
            self.pg_version = psql("SHOW server_version")

    def fresh_server(self, backend: str, label: str) -> tuple[FwrepoServer, str]:
        """A new `fwrepo serve` on a new data directory (and new database) with one published firmware."""
        self.counter += 1
        settings: dict[str, str] = {}
        if backend == "postgresql":
            settings["FWREPO_DATABASE_URL"] = scratch_database(self.stack, f"fwrepo_bench_grants_{os.getpid()}_{self.counter}")
        server = start_tls_server(self.stack, f"{backend}-{label}", self.work / f"{backend}-{label}", settings)
        record = upload_firmware(server, self.firmware_file, f"1.0.{self.counter}", self.work)
        return server, record["id"]

    def bodies(self, firmware_id: str, run: str) -> list[bytes]:
        return [
            json.dumps({"firmware_id": firmware_id,
                        "charger_ids": [f"CP-{run}-{n:06d}" for n in range(first, first + BATCH)]}).encode()
            for first in range(0, TOTAL, BATCH)
        ]

    def issue_all(self, server: FwrepoServer, bodies: list[bytes]) -> tuple[float, int]:
        """The measured part: 10 batches over one keep-alive HTTPS connection, every reply parsed and checked."""
        import httpx

        headers = {"Authorization": f"Bearer {server.csms}", "Content-Type": "application/json"}  # type: ignore[attr-defined]
        with httpx.Client(verify=ssl_context(server), timeout=300) as client:
            client.get(server.url + "/healthz")  # TLS handshake outside the timing
            start, received = time.perf_counter(), 0
            for body in bodies:
                reply = client.post(server.url + "/api/v1/grants/batch", content=body, headers=headers)
                if reply.status_code != 201:
                    raise RuntimeError(f"{server.name}: HTTP {reply.status_code} {reply.text[:300]}"
                                       + server.describe_exit())
                received += len(reply.content)
                document = reply.json()
                if document["count"] != BATCH or len(document["grants"]) != BATCH:
                    raise RuntimeError(f"{server.name}: asked for {BATCH} grants, got count {document['count']}")
                if not document["grants"][-1]["location"].startswith(server.url + "/d/"):
                    raise RuntimeError(f"{server.name}: unexpected location {document['grants'][-1]['location']}")
            return time.perf_counter() - start, received

    def measure(self, backend: str, round_number: int) -> Run:
        server, firmware_id = self.fresh_server(backend, f"run{round_number}")
        if backend == "sqlite" and self.floor_db is None:
            self.floor_db = self.work / "floor.sqlite3"
            source = sqlite3.connect(server.data_dir / "fwrepo.sqlite3")
            target = sqlite3.connect(self.floor_db)
            source.backup(target)
            source.close()
            target.close()
            self.floor_firmware = firmware_id
        bodies = self.bodies(firmware_id, f"r{round_number}")

        def once() -> Run:
            server_before, client_before = upload.proc_cpu_seconds(server.pid), time.process_time()
            with upload.RssSampler(server.pid) as rss:
                seconds, received = self.issue_all(server, bodies)
            return Run(seconds, upload.proc_cpu_seconds(server.pid) - server_before,
                       time.process_time() - client_before, rss.max_kib, received)

        run = measured(self.turns, f"{backend} run {round_number}", once)
        server.stop()
        if backend == "postgresql":
            drop_database(f"fwrepo_bench_grants_{os.getpid()}_{self.counter}")
        shutil.rmtree(server.data_dir, ignore_errors=True)
        return run  # type: ignore[return-value]

    def measure_floor(self) -> None:
        from datetime import UTC, datetime, timedelta

        from sqlalchemy import insert

        from repo_service.db.models import Grant
        from repo_service.db.session import Database
        from repo_service.domain.tokens import TokenSigner

        assert self.floor_db is not None

        def once() -> Floor:
            floor = Floor()
            signer = TokenSigner(os.urandom(32))
            expires = datetime.now(UTC) + timedelta(hours=24)
            start = time.perf_counter()
            for grant_id in range(1, TOTAL + 1):
                signer.issue(grant_id, expires)
            floor.tokens = time.perf_counter() - start

            # Grants.location for 100k: the token plus the URL around it, as the server builds each one.
            from repo_service.domain.grants import Grants

            grants = Grants.__new__(Grants)
            grants.tokens, grants.public_url = signer, "https://127.0.0.1:8443"
            start = time.perf_counter()
            for grant_id in range(1, TOTAL + 1):
                grants.location(grant_id, expires, "bench-fw.bin")
            floor.locations = time.perf_counter() - start

            now = datetime.now(UTC)
            stamp = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S.%f")
            rows = [
                (self.floor_firmware, f"FLOOR-{n:06d}", "https", stamp(now), stamp(now), None, stamp(expires), 3, 600,
                 None, 0, None)
                for n in range(TOTAL)
            ]
            connection = sqlite3.connect(self.floor_db, isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                connection.execute(f"PRAGMA {pragma}")
            start = time.perf_counter()
            connection.execute("BEGIN")
            connection.executemany(
                'INSERT INTO "grant" (firmware_id, charger_id, protocol, created_at, retrieve_date, install_date, '
                "expires_at, retries, retry_interval, max_downloads, downloads_completed, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.execute("COMMIT")
            floor.sqlite_insert = time.perf_counter() - start
            connection.close()

            # The same rows the way Grants.issue writes them: SQLAlchemy insert ... RETURNING, 10 x 10,000.
            database = Database(f"sqlite:///{self.floor_db}")
            dict_rows = [
                {"firmware_id": self.floor_firmware, "charger_id": f"ORM-{n:06d}", "protocol": "https",
                 "created_at": now, "retrieve_date": now, "install_date": None, "expires_at": expires, "retries": 3,
                 "retry_interval": 600, "max_downloads": None, "downloads_completed": 0, "created_by": None}
                for n in range(TOTAL)
            ]
            with database.session() as session:  # connect (PRAGMAs) outside the timing
                session.execute(insert(Grant).returning(Grant.id, sort_by_parameter_order=True), dict_rows[:1])
            start = time.perf_counter()
            for first in range(1, TOTAL, BATCH):
                with database.session() as session:
                    session.execute(
                        insert(Grant).returning(Grant.id, sort_by_parameter_order=True), dict_rows[first:first + BATCH]
                    ).scalars().all()
            floor.fwrepo_insert = (time.perf_counter() - start) * TOTAL / (TOTAL - 1)
            database.dispose()
            return floor

        self.floor = measured(self.turns, "floor", once)  # type: ignore[assignment]
        say(f"floor: tokens {self.floor.tokens:.2f} s, sqlite3 insert {self.floor.sqlite_insert:.2f} s, "
            f"fwrepo's SQLAlchemy insert {self.floor.fwrepo_insert:.2f} s, locations {self.floor.locations:.2f} s "
            "per 100k")

    def run(self) -> None:
        backends = [b for b in BACKENDS if self.backends[b].skipped is None]
        for round_number in range(1, self.args.repeat + 1):
            for backend in backends if round_number % 2 else backends[::-1]:
                run = self.measure(backend, round_number)
                self.backends[backend].runs.append(run)
                say(f"round {round_number}/{self.args.repeat} {backend:10} {run.seconds:6.2f} s per 100k "
                    f"({TOTAL / run.seconds:7.0f} grants/s), server CPU {run.server_cpu:.1f} s, "
                    f"client CPU {run.client_cpu:.1f} s, server RSS max {run.rss_max_kib * 1024 / MB:.0f} MB")
        self.measure_floor()
        for backend in backends:
            if self.args.profile == "always" or (self.args.profile == "auto" and self.missed(backend)):
                self.profile(backend)

    def missed(self, backend: str) -> bool:
        return any(v.outcome == "FAIL" and backend in v.what.lower() for v in self.verdicts())

    def profile(self, backend: str) -> None:
        """An extra, unmeasured run under py-spy: where the server's time goes."""
        say(f"profiling {backend} with py-spy (an extra run, not counted)")
        server, firmware_id = self.fresh_server(backend, "profile")
        bodies = self.bodies(firmware_id, "profile")
        median = self.backends[backend].median() or 30
        out = self.work / f"profile-{backend}.raw"
        self.turns.wait(f"profiling {backend}")
        with Profile(server.pid, out, seconds=math.ceil(median * 2) + 10) as profile:
            seconds, _ = self.issue_all(server, bodies)
        summary = ProfileSummary(0, profile.rate, [], [], profile.error)
        if not profile.error:
            summary = summarize_profile(out, profile.rate, GRANT_CATEGORIES)
            if self.args.keep_profiles:
                self.args.keep_profiles.mkdir(parents=True, exist_ok=True)
                shutil.copy(out, self.args.keep_profiles / out.name)
        summary.run_seconds = seconds  # type: ignore[attr-defined]
        self.profiles[backend] = summary
        server.stop()
        say(f"  profiled run took {seconds:.2f} s; top: "
            + ", ".join(f"{name} {count / max(summary.samples, 1):.0%}" for name, count in summary.categories[:4]))

    # -- report

    def verdicts(self) -> list[upload.Verdict]:
        out = []
        sqlite = self.backends["sqlite"].median()
        pg = self.backends["postgresql"].median()
        if sqlite is None:
            out.append(upload.Verdict("SQLite: 100k grants", "-", f"< {TARGET_SQLITE_SECONDS:.0f} s", "not run"))
        else:
            out.append(upload.Verdict("SQLite: 100k grants", f"{sqlite:.2f} s", f"< {TARGET_SQLITE_SECONDS:.0f} s",
                                      "PASS" if sqlite < TARGET_SQLITE_SECONDS else "FAIL"))
        if pg is None or sqlite is None:
            out.append(upload.Verdict("PostgreSQL / SQLite (seconds per 100k)", "-", f"<= {TARGET_PG_RATIO}", "not run"))
        else:
            out.append(upload.Verdict("PostgreSQL / SQLite (seconds per 100k)", f"{pg / sqlite:.2f}",
                                      f"<= {TARGET_PG_RATIO}", "PASS" if pg / sqlite <= TARGET_PG_RATIO else "FAIL"))
        return out

    def table(self) -> str:
        fmt = upload.fmt
        lines = [
            ("| what | grants/s | s per 100k (median) | runs (s) | server CPU s | client CPU s | server max RSS MB "
             "| reply MB per 10k batch |"),
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for name, label in (("sqlite", "fwrepo HTTPS API, SQLite"), ("postgresql", "fwrepo HTTPS API, PostgreSQL")):
            backend = self.backends[name]
            if backend.skipped:
                lines.append(f"| {label} | not run | | | | | | |")
                continue
            median = backend.median()
            lines.append(
                f"| {label} | {fmt(TOTAL / median if median else None, '{:.0f}')} | {fmt(median, '{:.2f}')} "
                f"| {', '.join(f'{r.seconds:.2f}' for r in backend.runs)} | {fmt(backend.median('server_cpu'))} "
                f"| {fmt(backend.median('client_cpu'))} | {fmt(upload.kib_to_mb(backend.median('rss_max_kib')), '{:.0f}')} "
                f"| {fmt(backend.median('reply_bytes') / (TOTAL // BATCH) / MB)} |"
            )
        floor = self.floor
        for label, seconds in (
            ("floor: 100k `TokenSigner.issue`", floor.tokens),
            ("floor: 100k rows into `grant`, stdlib sqlite3, one transaction", floor.sqlite_insert),
            ("**floor: tokens + rows**", floor.total),
            ("info: 100k rows as `Grants.issue` writes them (SQLAlchemy insert ... RETURNING, 10 x 10k)", floor.fwrepo_insert),
            ("info: 100k `Grants.location` (token + URL)", floor.locations),
        ):
            lines.append(f"| {label} | {fmt(TOTAL / seconds if seconds else None, '{:.0f}')} | {fmt(seconds or None, '{:.2f}')} "
                         "| | | | | |")
        lines += ["", "| check | value | target | result |", "| --- | ---: | --- | --- |"]
        for verdict in self.verdicts():
            lines.append(f"| {verdict.what} | {verdict.value} | {verdict.target} | {verdict.outcome} |")
        sqlite = self.backends["sqlite"].median()
        if sqlite and floor.total:
            lines.append(f"| SQLite API / floor | {sqlite / floor.total:.1f} x | - | info |")
        return "\n".join(lines)


def machine_lines(work: Path, bench: Bench) -> list[str]:
    import httpx

    facts = upload.machine_facts(work)
    for name in ("boto3", "Ceph", "curl"):
        facts.pop(name, None)
    facts["SQLite"] = sqlite3.sqlite_version
    facts["PostgreSQL"] = bench.pg_version or "not available"
    facts["httpx"] = httpx.__version__
    return [f"- {name}: {value}" for name, value in facts.items()]


def render_section(bench: Bench, machine: list[str], when: dt.datetime, elapsed: float) -> str:
    args = bench.args
    lines = [
        f"<!-- bench:{SECTION}:start -->",
        "## Grants",
        "",
        (f"Written by `bench/grants.py --repeat {args.repeat}{'' if args.profile == 'auto' else ' --profile ' + args.profile}` on {when:%Y-%m-%d %H:%M} UTC (the run took "
        f"{elapsed / 60:.1f} min, of which {bench.turns.waited / 60:.1f} min waiting for other benchmarks)."),
        "",
        (f"{TOTAL:,} grants for one published firmware, issued as {TOTAL // BATCH} batches of {BATCH:,} charger ids "
         "through `POST /api/v1/grants/batch` of `fwrepo serve` (one uvicorn process, HTTPS with its development "
         "certificate) by one httpx client over one keep-alive connection; every reply's JSON parsed and its count and "
         "last location checked, all inside the timing. "
         f"{args.repeat} runs per database, each on a fresh server, data directory and database (the rounds "
         "interleave SQLite and PostgreSQL); the median counts. grants/s = 100,000 / seconds. Server CPU is its "
         "user+system seconds during the run, client CPU this process's (request bodies are built before the timing)."),
        "",
        ("- **SQLite**: the default, `DATA_DIR/fwrepo.sqlite3` (WAL, synchronous=NORMAL) on the disk below."),
        ("- **PostgreSQL**: the machine's server at 127.0.0.1:5432 (over TCP), a scratch database per run, "
         "dropped afterwards."),
        ("- **floor**, in this process, no HTTP: `TokenSigner.issue` 100,000 times (the signed token each location "
         "carries) and 100,000 rows into the `grant` table of a copy of a server's SQLite database with stdlib "
         "sqlite3 `executemany` in one transaction (rows built before the timing). The info rows show the same "
         "insert the way `Grants.issue` does it (SQLAlchemy 2 `insert(Grant).returning(...)`, 10 transactions of "
         "10,000) and 100,000 `Grants.location` calls."),
        "",
        "Machine:",
        "",
        *machine,
        "",
        (f"Client and server share the machine's {os.cpu_count()} CPUs; the PostgreSQL server too when it is used."),
        "",
    ]
    for note in bench.notes:
        lines += [f"**Note:** {note}", ""]
    lines += [bench.table(), ""]
    for backend, summary in bench.profiles.items():
        lines += render_profile(summary, f"py-spy profile of the server during an extra {backend} run of "
                                         f"{getattr(summary, 'run_seconds', 0):.1f} s")
    if bench.profiles:
        lines += grant_findings(bench.profiles)
    lines.append(f"<!-- bench:{SECTION}:end -->")
    return "\n".join(lines) + "\n"


# What to change in repo_service/ when a category dominates a profile (the benchmark changes nothing itself).
GRANT_ADVICE: dict[str, str] = {
    "SQL insert (SQLAlchemy + driver)": (
        "`Grants.issue` (repo_service/domain/grants.py) hands SQLAlchemy 10,000 row dicts, which it sends as "
        "`insertmanyvalues` pages of multi-row INSERT ... RETURNING: every value goes through the bind processors "
        "(`UtcDateTime.process_bind_param` and the dialect's DATETIME processor), and on PostgreSQL psycopg parses "
        "every page's ~100 KB statement again (`psycopg/_queries.py` `_split_query`: it caches only statements of "
        "at most 4096 characters and 50 parameters). All columns but `charger_id` are the same for the whole batch: "
        "one `INSERT INTO \"grant\" (...) SELECT :firmware_id, t.c, ... FROM unnest(CAST(:charger_ids AS text[])) "
        "WITH ORDINALITY AS t(c, n) ORDER BY t.n RETURNING id` (PostgreSQL; on SQLite `... FROM json_each(:charger_ids) "
        "ORDER BY key`) binds 12 values instead of 120,000 and keeps the statement short enough to be cached."
    ),
    "building reply dicts (grant_json, ocpp_payloads, iso)": (
        "`grant_json` (repo_service/http/grants.py) and `ocpp_payloads` (repo_service/domain/grants.py) call `iso()` "
        "(`strftime`) about 8 times per grant, for three timestamps that are the same for the whole batch, and build "
        "5 nested dicts per grant: in `issue_batch`, format the timestamps once and fill a per-batch template "
        "(only id, charger_id and location differ), or at least put `functools.lru_cache` on `iso`."
    ),
    "JSON encoding of the reply (JSONResponse.render, json.dumps)": (
        "A 10,000-grant reply is the size in the table: each grant repeats its location 3 times and the PEM "
        "`signingCertificate` plus `signature` twice (`ocpp_payloads`), although they are the same for every grant "
        "of the batch. Put them once at the top of the batch reply in `issue_batch` (or let the caller ask for "
        "locations only), and render with a faster encoder (orjson in a JSONResponse subclass)."
    ),
    "token signing (TokenSigner.issue, itsdangerous, hmac)": (
        "`TokenSigner.issue` (repo_service/domain/tokens.py) goes through itsdangerous `Signer.sign`, which derives "
        "the key again for every token (`Signer.get_signature` calls `derive_key()`: a second HMAC per token). Derive "
        "it once in `__init__` and sign with `hmac.new(derived, payload, sha256).digest()[:15]` plus base64url; "
        "`verify` can keep itsdangerous."
    ),
    "TLS and socket I/O (ssl, uvloop, uvicorn)": (
        "TLS encryption of the reply in the event-loop thread (Python's ssl module under uvloop); it shrinks with "
        "the reply (see the JSON row)."
    ),
    "GrantRecord objects (dataclasses.replace)": (
        "`Grants.issue` makes each `GrantRecord` with `dataclasses.replace` of a template (a generic, slow path): "
        "construct `GrantRecord(...)` directly, or return the template plus (id, charger_id, location) tuples."
    ),
}


def grant_findings(profiles: dict[str, ProfileSummary]) -> list[str]:
    """The categories that took at least 10% of a profiled run, largest first, with what to change."""
    shares: dict[str, float] = {}
    for summary in profiles.values():
        if summary.samples:
            for name, count in summary.categories:
                shares[name] = max(shares.get(name, 0.0), count / summary.samples)
    lines = [("What to change (suggestions, not made by this benchmark), for each part that took at least 10% of a "
             "profiled run:"), ""]
    for name, share in sorted(shares.items(), key=lambda item: -item[1]):
        if share >= 0.10 and name in GRANT_ADVICE:
            lines.append(f"- **{name}** (up to {share:.0%}): {GRANT_ADVICE[name]}")
    return lines + [""]


def write_section(path: Path, name: str, section: str) -> None:
    """Replace the text between this section's markers (re-read right now: others edit the file too)."""
    start_mark, end_mark = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else upload.DOC_HEADER
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_mark):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    partial = path.with_name(f"{path.name}.{name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


# --------------------------------------------------------------------------- main


def cleanup(stack: ExitStack) -> None:
    """upload.cleanup, which says what it does first; when stdout is gone (a closed pipe) clean up silently."""
    try:
        upload.cleanup(stack)
    except OSError:
        stack.close()


def run_guarded(script: str, stack: ExitStack, body: Callable[[], object]) -> int | None:
    """body() with SIGTERM/SIGHUP taken as Ctrl-C, then the clean-up of stack in any case.

    On an interruption or a failure it says so and returns the exit status (130, 2); None when body went through.
    """
    try:
        with upload.signals_as_interrupts():
            body()
    except KeyboardInterrupt:
        cleanup(stack)
        print("interrupted: everything started was stopped and removed", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - any failure: clean up, say why, exit 2
        cleanup(stack)
        print(f"bench/{script} failed: {error!r}", file=sys.stderr)
        return 2
    cleanup(stack)
    return None


def raise_open_files() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per database; the median counts (default 3)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="py-spy an extra run: when a target is missed (auto, default), always, never")
    parser.add_argument("--keep-profiles", type=Path, help="copy py-spy's raw profiles into this directory")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temporary directory goes")
    parser.add_argument("--doc", type=Path, default=DOC, help="file whose grants section is rewritten")
    parser.add_argument("--no-doc", action="store_true", help="print the results only")
    args = parser.parse_args(argv)
    if args.repeat <= 0:
        parser.error("--repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("curl") is None:
        print("bench/grants.py needs curl", file=sys.stderr)
        return 2
    started, when = time.monotonic(), dt.datetime.now(dt.UTC)
    stack = ExitStack()
    work = Path(tempfile.mkdtemp(prefix="fwrepo-grants.", dir=args.work_dir))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    bench = Bench(args, work, stack)
    machine: list[str] = []

    def body() -> None:
        raise_open_files()
        bench.setup()
        bench.turns.wait("the machine description")
        machine.extend(machine_lines(work, bench))
        bench.run()

    failed = run_guarded("grants.py", stack, body)
    if failed is not None:
        return failed
    say("")
    for note in bench.notes:
        say(f"note: {note}")
    say(bench.table())
    for backend, summary in bench.profiles.items():
        say("\n".join(render_profile(summary, f"profile {backend}")))
    if bench.profiles:
        say("\n".join(grant_findings(bench.profiles)))
    if not args.no_doc:
        write_section(args.doc, SECTION, render_section(bench, machine, when, time.monotonic() - started))
        say(f"\nwrote the grants section of {args.doc}")
    return 1 if any(v.outcome == "FAIL" for v in bench.verdicts()) else 0


if __name__ == "__main__":
    sys.exit(main())
