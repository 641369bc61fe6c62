"""The reads a campaign's console page makes, timed in-process on a seeded 100,000-charger campaign.

bench/campaign.py times the whole rollout through HTTP; this one isolates the domain's read side, which a
console page calls on every view: Campaigns.report(), one page of Campaigns.members() (first, middle, and
filtered by state), Campaigns.timings(), and a full walk of Campaigns.member_rows() (what jobs.csv streams).

One run per database: SQLite (a file in a temporary directory) always; PostgreSQL when --database-url or
FWREPO_BENCH_DATABASE_URL names a server, on a scratch database owned by a role that is no superuser (so
row-level security applies as in production), dropped at the end. The campaign is made the way the service
makes one (an uploaded and published build, Campaigns.create with waves 90 %, 100 %: the second wave's chargers
pending, 1 % skipped as already on the target), then its stored job columns are set by one bulk UPDATE to a
mix of states and times, as events would have left them: reads look only at those columns. On PostgreSQL the
tables are then analyzed, as autovacuum would have done.

    .venv/bin/python bench/campaign_report.py [--chargers 100000] [--repeat 5] [--database-url URL]

Prints the median (and slowest) wall time of --repeat calls of each read after one warm-up call, and the
median CPU time of this process (SQLite's work included, PostgreSQL's server not): on a machine others share,
the CPU time is the steadier figure.

Then the page itself: a `fwrepo serve` (HTTPS, its development certificate) on the same database, a console
user signed in, and GET /console/campaigns/ID and its live region (what the page fetches every 2 s) timed as
a browser's requests, beside the baseline measured in the same run: the API's report of the same campaign,
GET /api/v1/campaigns/ID with a csms key. The issue's target for the page is under a second. Writes no doc:
docs/benchmarks.md's "Console" section is these lines.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from harness.servers import start_fwrepo
from harness.stores import scratch_database
from sqlalchemy import text, update
from sqlmodel import col, select

from repo_service.db.models import CampaignCharger
from repo_service.domain.audit import Performer
from repo_service.domain.campaigns import parse_campaign_request
from repo_service.domain.clients import Role
from repo_service.domain.uploads import parse_upload_fields
from repo_service.services import Services, build_services
from repo_service.settings import load_settings

TARGET_VERSION = "2.0.0"
CONSOLE_USER = "bench-console"
CONSOLE_PASSWORD = "bench console password"
BY = Performer("bench campaign_report")
# What the seeded jobs of the started wave are, by position modulo 100: mostly done, some failing, some under way.
STATES = ([("succeeded", True)] * 80 + [("installation_failed", True)] * 4 + [("download_failed", True)] * 3
          + [("downloading", False)] * 5 + [("installing", False)] * 4 + [("granted", False)] * 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("FWREPO_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fwrepo-bench-report-") as work:
        backends = [("sqlite", f"sqlite:///{Path(work) / 'sqlite' / 'fwrepo.sqlite3'}")]
        with ExitStack() as stack:
            if args.database_url:
                backends.append(("postgresql", scratch_database(stack, args.database_url,
                                                                f"fwrepo_bench_{secrets.token_hex(4)}", own_role=True)))
            for backend, url in backends:
                run(backend, url, Path(work) / backend, args.chargers, args.repeat)
    return 0


def run(backend: str, url: str, data_dir: Path, chargers: int, repeat: int) -> None:
    services = build_services(load_settings({"FWREPO_DATA_DIR": str(data_dir), "FWREPO_DATABASE_URL": url}))
    campaign_id = ""
    try:
        started = time.perf_counter()
        campaign_id = seed(services, chargers)
        if backend == "postgresql":
            # Statistics as autovacuum would have gathered them by the time anyone reads the campaign (a server
            # may run without it): the plans, and whether PostgreSQL JIT-compiles a query, depend on them.
            with services.database.session() as session:
                session.execute(text("ANALYZE"))
        print(f"{backend}: seeded {chargers:,} chargers in {time.perf_counter() - started:.1f} s", flush=True)
        campaigns = services.campaigns
        reads: dict[str, Callable[[], object]] = {
            "report()": lambda: campaigns.report(campaign_id),
            "members() first page of 100": lambda: campaigns.members(campaign_id),
            f"members() page of 100 at offset {chargers // 2:,}": lambda: campaigns.members(
                campaign_id, offset=chargers // 2),
            "members(state='installation_failed') page": lambda: campaigns.members(
                campaign_id, state="installation_failed"),
            "members(state='pending') last page": lambda: campaigns.members(
                campaign_id, state="pending", offset=max(0, chargers // 10 - 100)),
            "timings()": lambda: campaigns.timings(campaign_id),
            "member_rows() walked whole (jobs.csv)": lambda: sum(1 for _ in campaigns.member_rows(campaign_id)),
        }
        for name, read in reads.items():
            read()
            seconds, cpu = [], []
            for _ in range(repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                read()
                seconds.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            print(f"{backend}: {name:45} median {statistics.median(seconds) * 1000:7.1f} ms, slowest "
                  f"{max(seconds) * 1000:7.1f} ms; this process's CPU {statistics.median(cpu) * 1000:7.1f} ms",
                  flush=True)
        services.users.create(CONSOLE_USER, Role.CSMS, CONSOLE_PASSWORD, BY)
    finally:
        services.database.dispose()
    if campaign_id:
        page(backend, url, data_dir.with_name(f"{backend}-serve"), campaign_id, repeat)


def page(backend: str, url: str, data_dir: Path, campaign_id: str, repeat: int) -> None:
    """The campaign's console page and live region over HTTPS, and the API's report as the baseline."""
    with ExitStack() as stack:
        server = start_fwrepo(stack, "fwrepo", data_dir, {"FWREPO_DATABASE_URL": url, "FWREPO_FTPS": "false"})
        browser = stack.enter_context(httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=120))
        form = browser.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        signed = browser.post("/console/login", data={"csrf": token, "name": CONSOLE_USER,
                                                      "password": CONSOLE_PASSWORD})
        assert signed.status_code == 303, signed.text
        api = stack.enter_context(httpx.Client(base_url=server.url, verify=server.ssl_context(), timeout=120,
                                               headers={"Authorization": f"Bearer {server.csms}"}))
        requests = {"API report (baseline)": lambda: api.get(f"/api/v1/campaigns/{campaign_id}"),
                    "console page": lambda: browser.get(f"/console/campaigns/{campaign_id}"),
                    "console live region": lambda: browser.get(f"/console/campaigns/{campaign_id}/live")}
        medians = {}
        for name, request in requests.items():
            assert request().status_code == 200
            seconds = []
            for _ in range(repeat):
                start = time.perf_counter()
                reply = request()
                seconds.append(time.perf_counter() - start)
                assert reply.status_code == 200, reply.text[:300]
            medians[name] = statistics.median(seconds)
            ratio = medians[name] / medians["API report (baseline)"]
            print(f"{backend}: GET {name:30} median {medians[name] * 1000:7.1f} ms, slowest "
                  f"{max(seconds) * 1000:7.1f} ms, {ratio:.2f} x the API's report", flush=True)


def seed(services: Services, chargers: int) -> str:
    """A published build and a campaign of that many chargers, its first wave's jobs set to STATES."""
    services.signing_keys.init_development(BY)
    build = services.uploads.upload(
        [secrets.token_bytes(20_000)],
        lambda: (parse_upload_fields({"vendor": ["BENCH"], "models": ["AC22"], "version": [TARGET_VERSION]}), "fw.bin"),
        BY).firmware
    services.catalog.publish(build.id, BY)
    report = services.campaigns.create(parse_campaign_request({
        "firmware_id": build.id, "waves": ["90%", "100%"], "failure_threshold": 1.0,
        "chargers": [{"charger_id": f"CP-{n:06d}", "current_version": TARGET_VERSION if n % 100 == 99 else "1.9.0",
                      "model": "AC22"} for n in range(chargers)],
    }), BY)
    with services.database.session() as session:
        members = session.exec(select(CampaignCharger.id, CampaignCharger.position, CampaignCharger.granted_at).where(
            CampaignCharger.campaign_id == report.id, col(CampaignCharger.grant_id).is_not(None))).all()
        session.execute(update(CampaignCharger), [stored_job(*member) for member in members])
    return report.id


def stored_job(member_id: int, position: int, granted_at: datetime) -> dict[str, object]:
    """The columns Campaigns._store would have left for a job in STATES[position % 100], with spread-out times."""
    state, final = STATES[position % 100]
    row: dict[str, object] = {"id": member_id, "state": state, "final": final}
    if state == "granted":
        return row
    first_byte = granted_at + timedelta(seconds=5 + position % 3_600)
    row.update(first_byte_at=first_byte, bytes_served=20_000)
    if state in ("downloading", "download_failed"):
        return row | {"bytes_served": 7_000}
    last_byte = first_byte + timedelta(seconds=20 + position % 97)
    row["last_byte_at"] = last_byte
    if state == "succeeded":
        row["booted_at"] = last_byte + timedelta(seconds=90 + position % 53)
    return row


if __name__ == "__main__":
    sys.exit(main())
