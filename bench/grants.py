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
import json
import math
import os
import re
import shutil
import sqlite3
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness import MB, say
from harness.machine import machine_facts
from harness.procs import Meter, raise_open_files
from harness.profiles import Profile, ProfileSummary, render_profiles
from harness.report import Sample, Series, Verdict, ceiling_verdict, fact_lines, fmt, kib_to_mb, missed, render_section
from harness.report import verdict_rows
from harness.run import Benchmark, argument_parser, interleaved, main, profile_flag, profile_options
from harness.servers import BATCH, FwrepoServer, start_fwrepo
from harness.stores import DEFAULT_DATABASE_URL, drop_database, postgres_unavailable, postgres_version, scratch_database

TOTAL = 100_000
TARGET_SQLITE_SECONDS = 10.0  # 100k grants on SQLite in less than this
TARGET_PG_RATIO = 2.0  # PostgreSQL seconds per 100k <= 2 x SQLite's
BACKENDS = ("sqlite", "postgresql")


@dataclass
class Floor:
    tokens: float = 0.0  # s for 100k TokenSigner.issue
    sqlite_insert: float = 0.0  # s for 100k rows, stdlib sqlite3, one transaction
    fwrepo_insert: float = 0.0  # s for 100k rows the way Grants.issue does it (SQLAlchemy, 10 x 10k)
    locations: float = 0.0  # s for 100k Grants.location (token + URL)

    @property
    def total(self) -> float:
        return self.tokens + self.sqlite_insert


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


class GrantIssuing(Benchmark):
    section = "grants"

    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        super().__init__(args, work, stack)
        self.backends = {name: Series(name) for name in BACKENDS}
        self.floor = Floor()
        self.floor_db: Path | None = None
        self.floor_firmware = ""
        self.profiles: dict[str, ProfileSummary] = {}
        self.firmware_file = work / "bench-fw.bin"
        self.counter = 0
        self.pg_version = ""
        self.machine: list[str] = []

    def measure(self) -> None:
        raise_open_files()
        self.firmware_file.write_bytes(os.urandom(256 * 1024))
        reason = postgres_unavailable(DEFAULT_DATABASE_URL)
        if reason:
            self.backends["postgresql"].skipped = reason
            self.notes.append(f"PostgreSQL part not run: {reason}.")
        else:
            self.pg_version = postgres_version(DEFAULT_DATABASE_URL)
        self.turns.wait("the machine description")
        import httpx

        self.machine = fact_lines({**machine_facts(self.work), "SQLite": sqlite3.sqlite_version,
                                   "PostgreSQL": self.pg_version or "not available", "httpx": httpx.__version__})
        self.run()

    def database_name(self) -> str:
        return f"fwrepo_bench_grants_{os.getpid()}_{self.counter}"

    def fresh_server(self, backend: str, label: str) -> tuple[FwrepoServer, str]:
        """A new `fwrepo serve` on a new data directory (and new database) with one published firmware."""
        self.counter += 1
        settings: dict[str, str] = {}
        if backend == "postgresql":
            settings["FWREPO_DATABASE_URL"] = scratch_database(self.stack, DEFAULT_DATABASE_URL, self.database_name())
        server = start_fwrepo(self.stack, f"{backend}-{label}", self.work / f"{backend}-{label}", settings)
        record = server.publish_firmware(self.firmware_file, f"1.0.{self.counter}")
        return server, record["id"]

    @staticmethod
    def bodies(firmware_id: str, run: str) -> list[bytes]:
        return [
            json.dumps({"firmware_id": firmware_id,
                        "charger_ids": [f"CP-{run}-{n:06d}" for n in range(first, first + BATCH)]}).encode()
            for first in range(0, TOTAL, BATCH)
        ]

    @staticmethod
    def issue_all(server: FwrepoServer, bodies: list[bytes]) -> tuple[float, int]:
        """The measured part: 10 batches over one keep-alive HTTPS connection, every reply parsed and checked."""
        import httpx

        headers = {"Authorization": f"Bearer {server.csms}", "Content-Type": "application/json"}
        with httpx.Client(verify=server.ssl_context(), timeout=300) as client:
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

    def measure_backend(self, backend: str, round_number: int) -> Sample:
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

        def once() -> Sample:
            with Meter(server.pid, client_cpu=time.process_time) as meter:
                seconds, received = self.issue_all(server, bodies)
            return meter.sample(seconds=seconds, reply_bytes=received)

        run = self.turns.measured(f"{backend} run {round_number}", once)
        server.stop()
        if backend == "postgresql":
            drop_database(DEFAULT_DATABASE_URL, self.database_name())
        shutil.rmtree(server.data_dir, ignore_errors=True)
        return run

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
            from repo_service.domain.grants import MAX_LOCATION, Grants

            grants = Grants.__new__(Grants)
            grants.tokens, grants.public_url = signer, "https://127.0.0.1:8443"
            grants.location_limit = MAX_LOCATION  # what the server's settings give a host this short
            start = time.perf_counter()
            for grant_id in range(1, TOTAL + 1):
                grants.location(grant_id, expires, "bench-fw.bin")
            floor.locations = time.perf_counter() - start

            now = datetime.now(UTC)
            stamp = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S.%f")
            rows = [
                (self.floor_firmware, f"FLOOR-{n:06d}", "https", stamp(now), stamp(now), None, stamp(expires), 3, 600,
                 None, 0, None, "default")
                for n in range(TOTAL)
            ]
            connection = sqlite3.connect(self.floor_db, isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                connection.execute(f"PRAGMA {pragma}")
            start = time.perf_counter()
            connection.execute("BEGIN")
            connection.executemany(
                'INSERT INTO "grant" (firmware_id, charger_id, protocol, created_at, retrieve_date, install_date, '
                "expires_at, retries, retry_interval, max_downloads, downloads_completed, created_by, tenant) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

        self.floor = self.turns.measured("floor", once)
        say(f"floor: tokens {self.floor.tokens:.2f} s, sqlite3 insert {self.floor.sqlite_insert:.2f} s, "
            f"fwrepo's SQLAlchemy insert {self.floor.fwrepo_insert:.2f} s, locations {self.floor.locations:.2f} s "
            "per 100k")

    def run(self) -> None:
        backends = [b for b in BACKENDS if self.backends[b].skipped is None]
        for round_number, backend in interleaved(backends, self.args.repeat):
            run = self.measure_backend(backend, round_number)
            self.backends[backend].samples.append(run)
            say(f"round {round_number}/{self.args.repeat} {backend:10} {run.seconds:6.2f} s per 100k "
                f"({TOTAL / run.seconds:7.0f} grants/s), {run.describe()}")
        self.measure_floor()
        for backend in backends:
            if self.args.profile == "always" or (self.args.profile == "auto" and self.missed_by(backend)):
                self.profile(backend)

    def missed_by(self, backend: str) -> bool:
        return any(v.outcome == "FAIL" and backend in v.what.lower() for v in self.verdicts())

    def profile(self, backend: str) -> None:
        """An extra, unmeasured run under py-spy: where the server's time goes."""
        say(f"profiling {backend} with py-spy (an extra run, not counted)")
        server, firmware_id = self.fresh_server(backend, "profile")
        bodies = self.bodies(firmware_id, "profile")
        median = self.backends[backend].median("seconds") or 30
        out = self.work / f"profile-{backend}.raw"
        self.turns.wait(f"profiling {backend}")
        with Profile(server.pid, out, seconds=math.ceil(median * 2) + 10) as profile:
            seconds, _ = self.issue_all(server, bodies)
        summary = self.profiles[backend] = profile.summary(GRANT_CATEGORIES, seconds, self.args.keep_profiles)
        server.stop()
        say(f"  profiled run took {seconds:.2f} s; top: {summary.top(4)}")

    # -- report

    def verdicts(self) -> list[Verdict]:
        sqlite = self.backends["sqlite"].median("seconds")
        pg = self.backends["postgresql"].median("seconds")
        return [
            ceiling_verdict("SQLite: 100k grants", sqlite, TARGET_SQLITE_SECONDS, " s", "{:.2f}"),
            ceiling_verdict("PostgreSQL / SQLite (seconds per 100k)", pg / sqlite if pg and sqlite else None,
                            TARGET_PG_RATIO, pattern="{:.2f}", inclusive=True),
        ]

    def missed(self) -> bool:
        return missed(self.verdicts())

    def table(self) -> str:
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
            median = backend.median("seconds")
            lines.append(
                f"| {label} | {fmt(TOTAL / median if median else None, '{:.0f}')} | {fmt(median, '{:.2f}')} "
                f"| {backend.runs('seconds', '{:.2f}')} | {fmt(backend.median('server_cpu'))} "
                f"| {fmt(backend.median('client_cpu'))} | {fmt(kib_to_mb(backend.median('rss_max_kib')), '{:.0f}')} "
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
        lines += verdict_rows(self.verdicts())
        sqlite = self.backends["sqlite"].median("seconds")
        if sqlite and floor.total:
            lines.append(f"| SQLite API / floor | {sqlite / floor.total:.1f} x | - | info |")
        return "\n".join(lines)

    def profile_lines(self, title: str) -> list[str]:
        return [*render_profiles(self.profiles, title), *grant_findings(self.profiles)]

    def summary(self) -> str:
        return "\n".join([self.table(), *self.profile_lines("profile {name}")])

    def render(self) -> str:
        args = self.args
        intro = [
            self.written_by(f"bench/grants.py --repeat {args.repeat}{profile_flag(args)}"),
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
        ]
        shared = f"Client and server share the machine's {os.cpu_count()} CPUs; the PostgreSQL server too when it is used."
        body = [self.table(), "", *self.profile_lines(
            "py-spy profile of the server during an extra {name} run of {seconds:.1f} s")]
        return render_section(self.section, "Grants", intro, self.machine, shared, self.notes, body)


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
    advice = [f"- **{name}** (up to {share:.0%}): {GRANT_ADVICE[name]}"
              for name, share in sorted(shares.items(), key=lambda item: -item[1])
              if share >= 0.10 and name in GRANT_ADVICE]
    if not advice:
        return []
    return [("What to change (suggestions, not made by this benchmark), for each part that took at least 10% of a "
             "profiled run:"), "", *advice, ""]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, "grants")
    parser.add_argument("--repeat", type=int, default=3, help="runs per database; the median counts (default 3)")
    profile_options(parser, ("auto", "always", "never"),
                    "py-spy an extra run: when a target is missed (auto, default), always, never")
    args = parser.parse_args(argv)
    if args.repeat <= 0:
        parser.error("--repeat must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main(GrantIssuing, parse_args(None)))
