"""A 100,000-charger campaign through fwrepo's API, with simulated status events and no downloads.

One run per database (SQLite always; PostgreSQL when --database-url or
FWREPO_BENCH_DATABASE_URL names a server, on a scratch database created for
the run and dropped after it), each on a fresh `fwrepo serve` (HTTPS, its
development certificate) with one small published image:

  create     POST /api/v1/campaigns with --chargers chargers (body built before the timing)
  due        GET /api/v1/campaigns/{id}/grants?due=now, once per wave (each due grant is handed out once)
  events     POST /api/v1/events, batches of 10,000: Downloading, Downloaded, Installing,
             Installed, Booted per charger (5 x chargers events), in that order, wave by wave
  report     GET /api/v1/campaigns/{id} (checks: completed, every job succeeded)
  csv        GET /api/v1/campaigns/{id}/jobs.csv (checks: one row per charger)

plus the server's peak RSS (VmHWM) and its CPU seconds per phase. The waves
are `--waves` (default 1%,10%,100%, threshold 1.0: a wave starts when the
events of the one before have all arrived); `--waves 100%` is one wave.
There are no targets: the numbers are absolute. With --profile auto (the
default) the report and CSV calls are repeated under py-spy on the same server
and a second campaign's events (an extra, unmeasured run) are profiled, and
the section says where the time went (file:line of fwrepo's code).

    .venv/bin/python bench/campaign.py [--chargers 100000] [--waves 1%,10%,100%] [--database-url URL] [--no-doc]

Before every measured phase it waits until no other benchmark (`bench/...`)
and no pytest is running. Everything it starts (servers, the scratch
database, py-spy) and every file it writes are stopped/removed at the end,
also on errors and Ctrl-C. Rewrites the `campaign` section of
docs/benchmarks.md. Exit status: 0 done, 2 the benchmark failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from harness import MB, say
from harness.machine import machine_facts
from harness.procs import Meter, RssSampler, proc_cpu_seconds, proc_status_kib, raise_open_files
from harness.profiles import IDLE_LEAF, Profile, ProfileSummary, read_raw_profile, render_profile
from harness.report import fact_lines, fmt, kib_to_mb, render_section
from harness.run import Benchmark, argument_parser, main, profile_flag, profile_options
from harness.servers import FwrepoServer, start_fwrepo
from harness.stores import postgres_version, redact, scratch_database

BATCH = 10_000  # events per POST /api/v1/events (the API's maximum)
DUE_PAGE = 10_000  # due grants per GET .../grants?due=now&limit= (the API's maximum; its default is 1,000)
STATUSES = ("Downloading", "Downloaded", "Installing", "Installed", "Booted")
TARGET_VERSION = "2.0.0"
CATEGORIES = [(name, re.compile(pattern)) for name, pattern in [
    ("deriving jobs (update_jobs.derive_job, Job)", r"^(?:[\w<>]+\.)*(derive_job|<lambda>|_same_version|download_seconds|completion_seconds) \(.*domain/update_jobs|domain/versions\.py|^__init__ \(<string>"),
    ("reading grants and events (UpdateJobs.jobs: SQLAlchemy ORM + driver)", r"^(?:[\w<>]+\.)*jobs \(.*domain/update_jobs"),
    ("checking events (parse_event, record_many)", r"^(?:[\w<>]+\.)*(parse_event|record_many|_grant_key) \(.*domain/update_jobs"),
    ("inserting events (_insert: INSERT ... ON CONFLICT DO NOTHING RETURNING)", r"^(?:[\w<>]+\.)*_insert \(.*domain/update_jobs"),
    ("CSV writing (jobs_csv)", r"^(?:[\w<>]+\.)*jobs_csv \(|^writerow|csv\.py"),
    ("report summing (Campaigns.report, _stored_job, JobSummary.of, percentiles)", r"^(?:[\w<>]+\.)*(report(?:\.<locals>\.<\w+>)?|_stored_job|of|percentiles) \(.*domain/campaigns"),
    ("storing and judging job states (Campaigns.settle, advance)", r"^(?:[\w<>]+\.)*(settle|_store|advance|_advance_once) \(.*domain/campaigns"),
    ("campaign creation (parse_campaign_request, skip_reason, create)", r"^(?:[\w<>]+\.)*(parse_campaign_request|_charger|skip_reason|create|_start_wave|retrieve_date) \(.*domain/campaigns"),
    ("grant insert and hand-out (Grants.insert/deliver, due)", r"^(?:[\w<>]+\.)*(insert|deliver|_record|due) \(.*domain/(grants|campaigns)"),
    ("JSON encoding of replies", r"^render \(.*starlette/responses|json/encoder|^report_json|^grant_json|^ocpp_payloads"),
    ("JSON decoding of requests", r"json/decoder|^loads \(json"),
    ("SQL: SQLAlchemy ORM + driver (which caller: the file:line table)", r"sqlalchemy/|sqlite3|psycopg"),
    ("TLS and socket I/O (ssl, uvloop, uvicorn)", r"ssl\.py|uvloop|uvicorn/protocols|asyncio/"),
    ("Starlette / anyio plumbing", r"starlette/|anyio/"),
    ("event loop: uvloop in C (idle epoll wait or TLS/socket I/O)", r"^uvloop C loop"),
]]


# --------------------------------------------------------------------------- results


@dataclass
class Phase:
    seconds: float = 0.0
    server_cpu: float = 0.0
    calls: int = 0
    items: int = 0  # chargers, grants, events, rows
    reply_bytes: int = 0
    slowest: float = 0.0  # slowest single call


@dataclass
class Run:
    backend: str
    phases: dict[str, Phase] = field(default_factory=dict)
    wave_grants: list[int] = field(default_factory=list)
    due_pages: int = 0  # GET .../grants calls, the empty last page of each wave included
    batch_seconds: list[float] = field(default_factory=list)  # every events POST, in order
    wave_batches: list[int] = field(default_factory=list)  # events POSTs per wave
    rss_max_kib: int = 0
    peak_rss_kib: int = 0
    idle_rss_kib: int = 0
    skipped: str | None = None

    def phase(self, name: str) -> Phase:
        return self.phases.setdefault(name, Phase())


@dataclass
class Hotspot:
    title: str
    seconds: float
    summary: ProfileSummary
    lines: list[tuple[str, int]]  # innermost repo_service frame with its line, samples


# --------------------------------------------------------------------------- the bench


class Campaign(Benchmark):
    section = "campaign"

    def __init__(self, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
        super().__init__(args, work, stack)
        self.runs: dict[str, Run] = {"sqlite": Run("sqlite")}
        self.pg_version = ""
        if args.database_url:
            self.runs["postgresql"] = Run("postgresql")
        self.profiles: list[Hotspot] = []
        self.firmware_file = work / "bench-fw.bin"
        self.counter = 0
        self.waves = [int(w) if w.isdigit() else w for w in args.waves.split(",")]
        self.machine: list[str] = []

    def measure(self) -> None:
        raise_open_files()
        self.setup()
        self.turns.wait("the machine description")
        import httpx

        self.machine = fact_lines({**machine_facts(self.work), "SQLite": sqlite3.sqlite_version,
                                   "PostgreSQL": self.pg_version or "not available", "httpx": httpx.__version__})
        self.run()

    def setup(self) -> None:
        self.firmware_file.write_bytes(os.urandom(64 * 1024))
        if "postgresql" in self.runs:
            try:
                self.pg_version = postgres_version(self.args.database_url)
            except Exception as error:  # noqa: BLE001 - the SQLite part still runs
                self.runs["postgresql"].skipped = f"{urlsplit(self.args.database_url).hostname}: {error}"
                self.notes.append(f"PostgreSQL part not run: {error}.")

    def fresh_server(self, backend: str) -> tuple[FwrepoServer, str]:
        self.counter += 1
        settings: dict[str, str] = {}
        if backend == "postgresql":
            settings["FWREPO_DATABASE_URL"] = scratch_database(
                self.stack, self.args.database_url, f"fwrepo_bench_campaign_{os.getpid()}_{self.counter}")
        server = start_fwrepo(self.stack, f"{backend}-{self.counter}", self.work / f"{backend}-{self.counter}", settings)
        record = server.publish_firmware(self.firmware_file, TARGET_VERSION)
        return server, record["id"]

    def campaign_body(self, firmware_id: str, prefix: str) -> bytes:
        chargers = [{"charger_id": f"{prefix}-{n:06d}", "current_version": "1.9.0", "model": "BM-1"}
                    for n in range(self.args.chargers)]
        return json.dumps({"firmware_id": firmware_id, "chargers": chargers, "waves": self.waves,
                           "failure_threshold": 1.0}).encode()

    @staticmethod
    def event_bodies(grant_ids: list[int]) -> list[bytes]:
        """Every charger's five events, status by status, in batches of BATCH; Booted a moment ago."""
        now = dt.datetime.now(dt.UTC)
        events = []
        for step, status in enumerate(STATUSES):
            stamp = (now - dt.timedelta(seconds=30 * (len(STATUSES) - 1 - step))).isoformat().replace("+00:00", "Z")
            for grant_id in grant_ids:
                event = {"request_id": grant_id, "status": status, "timestamp": stamp}
                if status == "Booted":
                    event["firmware_version"] = TARGET_VERSION
                events.append(event)
        return [json.dumps({"events": events[first:first + BATCH]}).encode() for first in range(0, len(events), BATCH)]

    def timed(self, run: Run, name: str, server: FwrepoServer, call: Callable[[], tuple[int, int]]) -> None:
        """One call inside a phase: its wall time and the server's CPU go to the phase."""
        with Meter(server_cpu=lambda: proc_cpu_seconds(server.pid)) as meter:
            items, size = call()
        seconds = meter.seconds
        phase = run.phase(name)
        phase.seconds += seconds
        phase.server_cpu += meter.server_cpu or 0.0
        phase.calls += 1
        phase.items += items
        phase.reply_bytes += size
        phase.slowest = max(phase.slowest, seconds)
        if name == "events":
            run.batch_seconds.append(seconds)

    def disturbed(self, label: str, snapshot: dict[int, float], seconds: float) -> None:
        foreign = self.turns.disturbance(snapshot, seconds)
        if foreign is not None:
            self.notes.append(f"{label}: other benchmarks or pytest used {foreign:.1f} CPU s during it "
                              "(not repeated: a campaign's phases change its state).")

    def campaign(self, run: Run, server: FwrepoServer, firmware_id: str, prefix: str) -> str:
        """The whole campaign on one server, wave by wave; its id."""
        import httpx

        headers = {"Authorization": f"Bearer {server.csms}", "Content-Type": "application/json"}
        body = self.campaign_body(firmware_id, prefix)
        with httpx.Client(verify=server.ssl_context(), timeout=1800, headers=headers) as client:
            client.get(server.url + "/healthz")  # TLS handshake outside the timing
            campaign: dict = {}

            def create() -> tuple[int, int]:
                reply = client.post(server.url + "/api/v1/campaigns", content=body)
                check(reply, 201, server)
                campaign.update(reply.json())
                return self.args.chargers, len(reply.content)

            snapshot, began = self.turns.quiet(f"{run.backend}: creating the campaign"), time.monotonic()
            self.timed(run, "create", server, create)
            self.disturbed(f"{run.backend} create", snapshot, time.monotonic() - began)
            say(f"  created campaign {campaign['id']} with {self.args.chargers:,} chargers in "
                f"{run.phase('create').seconds:.2f} s; waves {[w['chargers'] for w in campaign['waves']]}")
            for wave in range(len(campaign["waves"])):
                handed: list[dict] = []

                def due() -> tuple[int, int]:
                    """Pages of DUE_PAGE until an empty one: each due grant is handed out once."""
                    size = 0
                    while True:
                        reply = client.get(f"{server.url}/api/v1/campaigns/{campaign['id']}/grants",
                                           params={"due": "now", "limit": DUE_PAGE})
                        check(reply, 200, server)
                        size += len(reply.content)
                        run.due_pages += 1
                        page = reply.json()["grants"]
                        if not page:
                            return len(handed), size
                        handed.extend(page)

                snapshot, began = self.turns.quiet(f"{run.backend}: due grants of wave {wave + 1}"), time.monotonic()
                self.timed(run, "due", server, due)
                expected = campaign["waves"][wave]["chargers"]
                if len(handed) != expected or len({g["id"] for g in handed}) != expected:
                    raise RuntimeError(f"wave {wave + 1}: {len(handed)} due grants, expected {expected}"
                                       + server.describe_exit())
                run.wave_grants.append(len(handed))
                bodies = self.event_bodies([grant["request_id"] for grant in handed])
                for batch in bodies:
                    def post(batch: bytes = batch) -> tuple[int, int]:
                        reply = client.post(server.url + "/api/v1/events", content=batch)
                        check(reply, 200, server)
                        count = reply.json()["accepted"]
                        if reply.json()["duplicates"]:
                            raise RuntimeError(f"events: {reply.json()} on {server.name}")
                        return count, len(reply.content)

                    self.timed(run, "events", server, post)
                run.wave_batches.append(len(bodies))
                self.disturbed(f"{run.backend} wave {wave + 1} (due grants and events)", snapshot,
                               time.monotonic() - began)
                say(f"  wave {wave + 1}: {len(handed):,} due grants, {len(bodies)} event batches "
                    f"({sum(run.batch_seconds[-len(bodies):]):.1f} s)")
        return campaign["id"]

    def reads(self, run: Run, server: FwrepoServer, campaign_id: str, record: bool = True) -> None:
        """The report and the CSV export of a finished campaign."""
        import httpx

        headers = {"Authorization": f"Bearer {server.csms}"}
        with httpx.Client(verify=server.ssl_context(), timeout=1800, headers=headers) as client:
            client.get(server.url + "/healthz")

            def report() -> tuple[int, int]:
                reply = client.get(f"{server.url}/api/v1/campaigns/{campaign_id}")
                check(reply, 200, server)
                document = reply.json()
                if document["status"] != "completed" or document["states"] != {"succeeded": self.args.chargers}:
                    raise RuntimeError(f"report: status {document['status']}, states {document['states']}")
                return document["jobs"], len(reply.content)

            def export() -> tuple[int, int]:
                reply = client.get(f"{server.url}/api/v1/campaigns/{campaign_id}/jobs.csv")
                check(reply, 200, server)
                rows = reply.text.count("\n") - 1
                if rows != self.args.chargers or ",succeeded," not in reply.text:
                    raise RuntimeError(f"CSV: {rows} rows, expected {self.args.chargers}")
                return rows, len(reply.content)

            for name, call in (("report", report), ("csv", export)):
                snapshot, began = self.turns.quiet(f"{run.backend}: {name}"), time.monotonic()
                self.timed(run, name, server, call)
                self.disturbed(f"{run.backend} {name}", snapshot, time.monotonic() - began)
                say(f"  {name}: {run.phase(name).seconds:.2f} s")

    def measure_backend(self, backend: str) -> None:
        run = self.runs[backend]
        say(f"-- {backend}")
        server, firmware_id = self.fresh_server(backend)
        run.idle_rss_kib = proc_status_kib(server.pid, "VmRSS") or 0
        with RssSampler(server.pid, interval=0.05) as rss:
            campaign_id = self.campaign(run, server, firmware_id, f"CP{self.counter}")
            events = run.phase("events")
            say(f"  events: {events.items:,} in {events.seconds:.1f} s = {events.items / events.seconds:,.0f}/s")
            self.reads(run, server, campaign_id)
        run.rss_max_kib = rss.max_kib or 0
        run.peak_rss_kib = proc_status_kib(server.pid, "VmHWM") or 0
        if self.args.profile != "never" and backend == "sqlite":
            self.profile(server, firmware_id, campaign_id)
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)

    def profile(self, server: FwrepoServer, firmware_id: str, campaign_id: str) -> None:
        """py-spy on the same server: report and CSV again, then a second campaign's events (not counted)."""
        say("  profiling with py-spy (extra calls, not counted)")
        scratch = Run("profile")
        out = self.work / "profile-reads.raw"
        self.turns.wait("profiling the report and the CSV")
        with Profile(server.pid, out, seconds=900) as profile:
            start = time.perf_counter()
            self.reads(scratch, server, campaign_id)
            seconds = time.perf_counter() - start
        self.keep(f"GET /api/v1/campaigns/{{id}} and GET .../jobs.csv once more ({seconds:.1f} s)", seconds, profile)
        self.profile_events(server, firmware_id)

    def profile_events(self, server: FwrepoServer, firmware_id: str) -> None:
        """A second campaign, one wave of everyone, and its first --profile-batches event batches under py-spy."""
        import httpx

        headers = {"Authorization": f"Bearer {server.csms}", "Content-Type": "application/json"}
        body = json.loads(self.campaign_body(firmware_id, "PROFILE"))
        body["waves"] = ["100%"]
        with httpx.Client(verify=server.ssl_context(), timeout=1800, headers=headers) as client:
            reply = client.post(server.url + "/api/v1/campaigns", json=body)
            check(reply, 201, server)
            campaign_id = reply.json()["id"]
            handed: list[dict] = []
            while page := client.get(f"{server.url}/api/v1/campaigns/{campaign_id}/grants",
                                     params={"due": "now", "limit": DUE_PAGE}).json()["grants"]:
                handed += page
            batches = self.event_bodies([grant["request_id"] for grant in handed])
            batches = batches[:self.args.profile_batches]
            out = self.work / "profile-events.raw"
            self.turns.wait("profiling events")
            with Profile(server.pid, out, seconds=3600) as profile:
                start = time.perf_counter()
                for batch in batches:
                    check(client.post(server.url + "/api/v1/events", content=batch), 200, server)
                seconds = time.perf_counter() - start
        self.keep(f"the first {len(batches)} event batches ({len(batches) * BATCH:,} Downloading events) of a second "
                  f"campaign of {self.args.chargers:,} chargers in one wave, on the same server ({seconds:.1f} s, "
                  f"{seconds / max(len(batches), 1):.1f} s per batch)", seconds, profile)

    def keep(self, title: str, seconds: float, profile: Profile) -> None:
        summary = profile.summary(CATEGORIES, seconds, self.args.keep_profiles, transform=without_idle)
        lines = innermost_lines(summary.path) if summary.path else []
        self.profiles.append(Hotspot(title, seconds, summary, lines))
        say(f"  profile: {title}; top: {summary.top(4)}")

    def run(self) -> None:
        for backend, run in self.runs.items():
            if run.skipped is None:
                self.measure_backend(backend)

    # -- report

    def table(self) -> str:
        lines = ["| phase | " + " | ".join(name for name, run in self.runs.items()) + " |",
                 "| --- |" + " ---: |" * len(self.runs)]

        def row(label: str, value: Callable[[Run], str]) -> None:
            lines.append(f"| {label} | " + " | ".join("not run" if run.skipped else value(run)
                                                       for run in self.runs.values()) + " |")

        def seconds(name: str) -> Callable[[Run], str]:
            return lambda run: (f"{run.phase(name).seconds:.2f} s (server CPU {run.phase(name).server_cpu:.1f} s)"
                                if name in run.phases else "-")

        n = self.args.chargers
        row(f"create: POST /api/v1/campaigns, {n:,} chargers", seconds("create"))
        row(f"due: GET .../grants?due=now&limit={DUE_PAGE:,}, all pages of all waves", seconds("due"))
        row("due: pages (each wave's empty last page included)", lambda run: str(run.due_pages))
        row("due grants per wave", lambda run: " + ".join(f"{g:,}" for g in run.wave_grants) or "-")
        row(f"events: {5 * n:,} in POST /api/v1/events of {BATCH:,}", seconds("events"))
        row("**events ingested per second**", lambda run: fmt(
            run.phase("events").items / run.phase("events").seconds if run.phase("events").seconds else None, "{:,.0f}"))
        row("events: first / median / slowest batch", lambda run: " / ".join(
            f"{s:.2f} s" for s in (run.batch_seconds[0], sorted(run.batch_seconds)[len(run.batch_seconds) // 2],
                                   max(run.batch_seconds))) if run.batch_seconds else "-")
        row("events: the last 10 batches (s each)", lambda run: ", ".join(f"{s:.2f}" for s in run.batch_seconds[-10:]))
        row("**report: GET /api/v1/campaigns/{id}**", seconds("report"))
        row("**CSV: GET .../jobs.csv**", seconds("csv"))
        row("CSV size", lambda run: fmt(run.phase("csv").reply_bytes / MB, "{:.1f} MB") if "csv" in run.phases else "-")
        row("server peak RSS (VmHWM / max sampled / idle)", lambda run: " / ".join(
            fmt(kib_to_mb(v), "{:.0f}") for v in (run.peak_rss_kib, run.rss_max_kib, run.idle_rss_kib)) + " MB")
        return "\n".join(lines)

    def summary(self) -> str:
        return "\n".join([self.table(), *render_hotspots(self), *what_bounds(self)])

    def render(self) -> str:
        args = self.args
        n = args.chargers
        intro = [
            self.written_by(command_line(args)),
            "",
            (f"One campaign of {n:,} chargers (all eligible: model BM-1, on 1.9.0, for a published {TARGET_VERSION} "
             f"image of 64 KiB) on a fresh `fwrepo serve` (one uvicorn process, HTTPS with its development certificate) "
             f"per database, driven by one httpx client over one keep-alive connection. Waves {args.waves} with "
             f"failure threshold 1.0: the due grants of each wave are pulled page by page (`GET .../grants?due=now&limit={DUE_PAGE}` "
             "until an empty page; each grant is handed out once), then "
             "every charger of the wave reports Downloading, Downloaded, Installing, Installed and Booted (the target "
             f"version), status by status, in `POST /api/v1/events` of {BATCH:,} events; the next wave starts when "
             "the last of them arrives (fwrepo starts it inside that request). Nothing is downloaded. Request bodies "
             "are built outside the timing; every reply is parsed and checked (each wave's grant count, accepted "
             "events, the report's `completed` with every job succeeded, one CSV row per charger). Server CPU is its "
             "user+system seconds during the phase. One run per database (a campaign cannot be re-run in place); "
             "no targets, absolute numbers."),
            "",
        ]
        shared = f"Client and server share the machine's {os.cpu_count()} CPUs; the PostgreSQL server too when it is used."
        body = [self.table(), "", *render_hotspots(self), *what_bounds(self)]
        return render_section(self.section, "Campaign", intro, self.machine, shared, self.notes, body)



def check(reply: object, status: int, server: FwrepoServer) -> None:
    if reply.status_code != status:
        raise RuntimeError(f"{reply.request.method} {reply.request.url.path}: HTTP {reply.status_code} "
                           f"{reply.text[:300]}" + server.describe_exit())


UVLOOP = "uvloop C loop: epoll wait or TLS/socket I/O, not told apart"


def without_idle(path: Path) -> Path:
    """The raw profile without the FTPS thread's idle poll; a bare event-loop sample becomes one UVLOOP frame.

    py-spy counts both as busy here: pyftpdlib's poll and uvloop's run loop
    wait in C, which its idle detection does not recognise.
    """
    kept = []
    for frames, count in read_raw_profile(path):
        if frames[-1].startswith(("poll (", "_BasePollEpoll.poll (")) and "pyftpdlib/ioloop" in frames[-1]:
            continue
        if frames[-1].startswith(("run (", "Runner.run (")) and "asyncio/runners" in frames[-1]:
            frames = [UVLOOP + " (uvloop)"]
        kept.append(f"{';'.join(frames)} {count}")
    filtered = path.with_suffix(".busy.raw")
    filtered.write_text("\n".join(kept) + "\n")
    return filtered


def innermost_lines(path: Path) -> list[tuple[str, int]]:
    """Samples by the innermost frame in fwrepo's own code (repo_service/...:line): where to look."""
    counts: Counter[str] = Counter()
    for frames, count in read_raw_profile(path):
        if IDLE_LEAF.search(frames[-1]):
            continue
        for frame in reversed(frames):
            if "repo_service/" in frame:
                name, _, where = frame.partition(" (")
                counts[f"{name} (repo_service/{where.split('repo_service/', 1)[1].rstrip(')')})"] += count
                break
    return counts.most_common(10)


def render_hotspots(bench: Campaign) -> list[str]:
    lines: list[str] = []
    for hotspot in bench.profiles:
        lines += render_profile(hotspot.summary, f"py-spy profile of the server (SQLite) during {hotspot.title}")
        if hotspot.lines:
            total = hotspot.summary.samples or 1
            lines += ["| innermost frame in repo_service (file:line) | share |", "| --- | ---: |"]
            lines += [f"| `{name}` | {count / total:.0%} |" for name, count in hotspot.lines]
            lines.append("")
    return lines


def what_bounds(bench: Campaign) -> list[str]:
    """What the numbers and profiles say, from this run's figures (the code as of commit 818ff7f)."""
    run = bench.runs["sqlite"]
    if not run.phases:
        return []
    events, report = run.phase("events"), run.phase("report")
    n = bench.args.chargers
    # Within the last (largest) wave, whose batches are all full but perhaps its last: does a batch grow as the
    # wave's events pile up? (Earlier waves have smaller, partly partial batches; the last batch of a wave also
    # starts the next wave, i.e. inserts its grants.)
    last_wave = run.batch_seconds[-run.wave_batches[-1]:] if run.wave_batches else run.batch_seconds
    tenth = max(1, len(last_wave) // 10)
    firsts, lasts = last_wave[:tenth], last_wave[-tenth:]
    first, last = sum(firsts) / len(firsts), sum(lasts) / len(lasts)
    growth = last / first if first else 0.0

    def top(prefix: str) -> str:
        for hotspot in bench.profiles:
            if hotspot.title.startswith(prefix) and hotspot.summary.samples and hotspot.summary.categories:
                name, count = hotspot.summary.categories[0]
                return f" Its profile above puts the largest share in {name} ({count / hotspot.summary.samples:.0%})."
        return ""

    lines = ["What bounds it (from this run's numbers and the profiles above):", ""]
    trend = (f"in the last wave ({len(last_wave)} batches) the last tenth of its batches took {last:.2f} s each "
             f"against {first:.2f} s for its first tenth ({growth:.1f}x)")
    if growth <= 1.5:
        shape = ("so a batch costs about what its own events cost, not what the wave or the events already "
                 "stored cost")
    else:
        shape = ("so batches grow within a wave, though not with the wave's size: the statuses arrive in order "
                 "(every charger's Downloading first, Booted last) and `UpdateJobs.jobs` reads every stored event "
                 "of the batch's grants, one per grant in a wave's first batches and five in its last; the GROUP BY "
                 "costs the same for every batch of a wave")
    ends, total = [], 0
    for count in run.wave_batches[:-1]:
        total += count
        ends.append(total - 1)
    slowest = run.batch_seconds.index(max(run.batch_seconds)) if run.batch_seconds else -1
    if slowest in ends:
        shape += (f"; the slowest batch ({max(run.batch_seconds):.2f} s) was the last of wave "
                  f"{ends.index(slowest) + 1}, which also starts the next wave inside that request (`_start_wave`: "
                  "that wave's grants inserted)")
    lines.append(
        f"- **Events**: each `POST /api/v1/events` checks and inserts its events (`record_many`, `_insert`), then "
        "`StatusEvents.report_many` calls `Campaigns.settle` (repo_service/domain/campaigns.py), which derives once "
        "the jobs of the grants the batch names (`UpdateJobs.jobs` on those grants' rows and events), stores each "
        "job's state on its `campaign_charger` row, and lets `advance` judge the wave with one `GROUP BY state, "
        "final` over its "
        f"charger rows. {events.items:,} events took {events.seconds:.0f} s (server CPU {events.server_cpu:.0f} s); "
        f"{trend}, {shape}." + top("the first"))
    due = run.phase("due")
    lines.append(
        f"- **Due grants**: every page (`Campaigns.due`, which decides nothing) claims its "
        "page with one conditional `UPDATE campaign_charger ... RETURNING grant_id` and hands the grants out "
        f"(`Grants.deliver`: grant rows, OCPP payloads); {run.due_pages} pages took {due.seconds:.1f} s in all.")
    per = report.seconds / n * 1e6 if n else 0.0
    lines.append(
        f"- **Report and CSV**: `Campaigns.report` (a read: it decides nothing) reads the {n:,} stored `campaign_charger` "
        "rows as ORM objects in one SELECT (no replay of grants or events), turns each into a `Job` "
        "(`_stored_job`) and sums states, waves and percentiles in Python (`JobSummary.of`); the report took "
        f"{report.seconds:.1f} s ({per:.0f} us per charger), i.e. it is bound by loading one ORM row per charger "
        "and summing in Python, linear in the campaign size. The CSV export calls the same `report` and then "
        "writes one row per charger." + top("GET"))
    return lines + [""]


def command_line(args: argparse.Namespace) -> str:
    """The command as it was given: the PostgreSQL URL from the flag or from the environment, as it came."""
    command = f"bench/campaign.py --chargers {args.chargers} --waves {args.waves}{profile_flag(args)}"
    if args.profile == "auto" and args.profile_batches != 5:
        command += f" --profile-batches {args.profile_batches}"
    if not args.database_url:
        return command
    if args.database_url_from_env:
        return f"FWREPO_BENCH_DATABASE_URL={redact(args.database_url)} {command}"
    return f"{command} --database-url {redact(args.database_url)}"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__, "campaign")
    parser.add_argument("--chargers", type=int, default=100_000, help="chargers in the campaign (default 100000)")
    parser.add_argument("--waves", default="1%,10%,100%", help="cumulative waves, comma-separated (default 1%%,10%%,100%%)")
    parser.add_argument("--database-url", default=os.environ.get("FWREPO_BENCH_DATABASE_URL", ""),
                        help="PostgreSQL server (postgresql://USER@HOST:PORT/DB) for a second run on a scratch "
                             "database; default $FWREPO_BENCH_DATABASE_URL, none: SQLite only")  # fmt: skip
    profile_options(parser, ("auto", "never"), "py-spy the report/CSV and a second campaign's events (auto, default) or not")
    parser.add_argument("--profile-batches", type=int, default=5,
                        help="event batches of the second campaign that py-spy watches (default 5)")
    args = parser.parse_args(argv)
    args.database_url_from_env = bool(args.database_url) and args.database_url == os.environ.get(
        "FWREPO_BENCH_DATABASE_URL") and "--database-url" not in " ".join(sys.argv[1:] if argv is None else argv)
    if not 1 <= args.chargers <= 100_000:
        parser.error("--chargers must be between 1 and 100000 (fwrepo's limit per campaign)")
    return args


if __name__ == "__main__":
    sys.exit(main(Campaign, parse_args(None)))
