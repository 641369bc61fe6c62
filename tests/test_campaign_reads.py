"""The read side a console page calls in-process: a campaign's members page by page, its timings, a charger's
update history; on SQLite and PostgreSQL, with a clock the test moves."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from repo_service.db.models import DownloadRecord
from repo_service.db.tenancy import acting_in
from repo_service.domain import campaigns as campaigns_module
from repo_service.domain.audit import Performer
from repo_service.domain.campaigns import (
    MEMBER_STATES,
    CampaignMemberRow,
    parse_campaign_request,
)
from repo_service.domain.uploads import parse_upload_fields
from repo_service.errors import InvalidInput, NotFound
from repo_service.services import Services, build_services
from repo_service.settings import load_settings
from tests.support.databases import scratch_postgres

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
BY = Performer("tester")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Reads:
    services: Services
    clock: Clock


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def reads(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reads]:
    """Services of their own on an empty database of each kind, with a development signing key."""
    place = tmp_path_factory.mktemp("reads")
    urls = (iter([f"sqlite:///{place / 'fwrepo.sqlite3'}"]) if request.param == "sqlite"
            else scratch_postgres(request.getfixturevalue("postgres_server_url")))
    for url in urls:
        clock = Clock()
        services = build_services(load_settings({"FWREPO_DATA_DIR": str(place), "FWREPO_DATABASE_URL": url}), clock)
        services.signing_keys.init_development(BY)
        yield Reads(services, clock)
        services.database.dispose()


@dataclass
class Rollout:
    """A campaign of ten chargers (two skipped), waves of 4 and 4, the first wave's chargers in four stories."""

    id: str
    grants: dict[str, int]  # charger id -> grant id, of the first wave


@pytest.fixture
def rollout(reads: Reads) -> Rollout:
    services, clock = reads.services, reads.clock
    clock.now = T0
    build = services.uploads.upload([secrets.token_bytes(2_000)], lambda: (parse_upload_fields({
        "vendor": [f"V{secrets.token_hex(4)}"], "models": ["AC22"], "version": ["2.0.0"]}), "fw.bin"), BY).firmware
    services.catalog.publish(build.id, BY)
    prefix = secrets.token_hex(3)
    chargers = [{"charger_id": f"{prefix}-{n}", "current_version": "1.0.0", "model": "AC22"} for n in range(10)]
    chargers[2]["current_version"] = "2.0.0"  # already on the target: skipped
    chargers[5]["model"] = "DC50"  # not among the build's models: skipped
    campaign = services.campaigns.create(parse_campaign_request({
        "firmware_id": build.id, "chargers": chargers, "waves": ["50%", "100%"], "failure_threshold": 1.0}), BY)
    rows, _ = services.campaigns.members(campaign.id, state="granted")
    grants = {row.charger_id: row.grant_id for row in rows if row.grant_id is not None}
    assert list(grants) == [f"{prefix}-{n}" for n in (0, 1, 3, 4)]
    succeeding, failing, downloading, _silent = grants.values()
    # fwrepo's own download records, as Downloads writes them: two whole transfers.
    with services.database.session() as session:
        session.execute(insert(DownloadRecord), [
            {"grant_id": grant_id, "charger_id": "x", "client_address": "192.0.2.1", "protocol": "https",
             "bytes_sent": 2_000, "completed": True, "started_at": T0 + timedelta(seconds=10 + n),
             "duration_ms": 30_500 + n * 1_250}
            for n, grant_id in enumerate((succeeding, failing))])
    clock.now = T0 + timedelta(minutes=10)

    def event(grant_id: int, status: str, seconds: float, **more: str) -> dict:
        return {"grant_id": grant_id, "status": status, "timestamp": (T0 + timedelta(seconds=seconds)).isoformat(),
                **more}

    services.status_events.report_many([
        event(succeeding, "Installing", 60), event(succeeding, "Booted", 180, firmware_version="2.0.0"),
        event(failing, "Installing", 70), event(failing, "InstallationFailed", 95),
        event(downloading, "Downloading", 5),
    ], BY)
    return Rollout(campaign.id, grants)


def test_members_come_in_pages_in_request_order_with_the_total_of_the_filter(reads: Reads, rollout: Rollout) -> None:
    campaigns = reads.services.campaigns
    everyone, total = campaigns.members(rollout.id, limit=1_000)
    assert total == 10 and [row.position for row in everyone] == list(range(10))
    assert [row.listed_state for row in everyone] == [
        "succeeded", "installation_failed", "skipped", "downloading", "granted", "skipped",
        "pending", "pending", "pending", "pending"]
    assert [row.wave for row in everyone] == [1, 1, None, 1, 1, None, 2, 2, 2, 2]
    page, total = campaigns.members(rollout.id, offset=3, limit=4)
    assert total == 10 and page == everyone[3:7]
    assert campaigns.members(rollout.id, offset=10) == ([], 10)
    for state, positions in [("pending", [6, 7, 8, 9]), ("skipped", [2, 5]), ("succeeded", [0]), ("rolled_back", [])]:
        rows, total = campaigns.members(rollout.id, state=state)
        assert [row.position for row in rows] == positions and total == len(positions)
    skipped, _ = campaigns.members(rollout.id, state="skipped")
    assert [row.skip_reason[:10] for row in skipped if row.skip_reason] == ["already on", "model DC50"]
    assert all(row.state is None and row.grant_id is None for row in skipped)
    # the export walks the same rows, a chunk at a time
    assert list(campaigns.member_rows(rollout.id)) == everyone


@pytest.mark.parametrize("chunk", [1, 3, 5, 10])
def test_the_export_reads_chunk_after_chunk_without_losing_or_repeating_a_charger(
        reads: Reads, rollout: Rollout, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(campaigns_module, "MEMBER_CHUNK", chunk)
    rows = list(reads.services.campaigns.member_rows(rollout.id))
    assert [row.position for row in rows] == list(range(10))


def test_a_members_row_carries_the_stored_job(reads: Reads, rollout: Rollout) -> None:
    [succeeded], _ = reads.services.campaigns.members(rollout.id, limit=1)
    assert succeeded == CampaignMemberRow(
        position=0, charger_id=succeeded.charger_id, wave=1, state="succeeded", skip_reason=None,
        grant_id=rollout.grants[succeeded.charger_id], granted_at=T0, first_byte_at=T0 + timedelta(seconds=10),
        last_byte_at=T0 + timedelta(seconds=40.5), booted_at=T0 + timedelta(seconds=180), bytes_served=2_000,
        current_version="1.0.0")
    assert (succeeded.download_seconds, succeeded.completion_seconds) == (30.5, 180.0)


@pytest.mark.parametrize(("arguments", "field"), [
    ({"state": "failed"}, "state"), ({"state": "SUCCEEDED"}, "state"), ({"state": ""}, "state"),
    ({"limit": 0}, "limit"), ({"limit": 1_001}, "limit"), ({"offset": -1}, "offset"),
])
def test_a_bad_filter_or_page_is_refused_naming_the_field(reads: Reads, rollout: Rollout, arguments: dict,
                                                          field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        reads.services.campaigns.members(rollout.id, **arguments)
    assert refused.value.field == field
    if field == "state":
        assert all(state in str(refused.value) for state in MEMBER_STATES)


def test_the_report_counts_what_the_members_show(reads: Reads, rollout: Rollout) -> None:
    report = reads.services.campaigns.report(rollout.id)
    assert (report.chargers, report.pending, report.skipped) == (10, 4, {"already_on_target": 1, "model": 1})
    assert report.summary.states == {"succeeded": 1, "installation_failed": 1, "downloading": 1, "granted": 1}
    assert (report.summary.jobs, report.summary.finished, report.summary.success_rate) == (4, 2, 0.5)
    assert report.summary.download_seconds == {"median": (30.5 + 31.75) / 2, "p95": 31.75}
    assert report.summary.completion_seconds == {"median": 180.0, "p95": 180.0}
    assert report.summary.bytes_served == 4_000
    assert [(wave.chargers, wave.states, wave.failure_rate) for wave in report.waves] == [
        (4, {"succeeded": 1, "installation_failed": 1, "downloading": 1, "granted": 1}, 0.25), (4, {}, None)]


def test_timings_are_the_jobs_durations_and_progress_ends_at_the_last_finished_job(reads: Reads,
                                                                                  rollout: Rollout) -> None:
    services = reads.services
    timings = services.campaigns.timings(rollout.id)
    jobs = services.jobs.jobs(list(rollout.grants.values())).values()
    assert timings.download_seconds == sorted(job.download_seconds for job in jobs if job.download_seconds is not None)
    assert timings.completion_seconds == [job.completion_seconds for job in jobs if job.completion_seconds is not None]
    assert timings.download_seconds == [30.5, 31.75] and timings.completion_seconds == [180.0]
    # from the campaign's start to the last job finished: the failure's report at 95 s, the boot at 180 s
    progress = timings.progress
    assert progress[0] == (T0, 0, 0) and progress[-1] == (T0 + timedelta(seconds=180), 2, 1)
    assert len(progress) == 200 and [point[0] for point in progress] == sorted(point[0] for point in progress)
    at_100_seconds = next(point for point in progress if point[0] >= T0 + timedelta(seconds=100))
    assert at_100_seconds[1:] == (1, 0)
    # the clock alone times the silent jobs out (the tick), a day after each last heard of them
    timeout = services.jobs.timeout
    reads.clock.now = T0 + timeout + timedelta(hours=1)
    services.campaigns.tick()
    progress = services.campaigns.timings(rollout.id).progress
    assert progress[-1] == (T0 + timedelta(seconds=5) + timeout, 4, 1)
    # a day in 199 steps: the two time-outs, 5 s apart, fall into the last one
    assert progress[-2][1:] == (2, 1) and progress[-2][0] == progress[-1][0] - (progress[-1][0] - T0) / 199


def test_the_overview_is_the_report_and_the_timings_from_one_read_of_the_times(reads: Reads,
                                                                              rollout: Rollout) -> None:
    campaigns = reads.services.campaigns
    assert campaigns.overview(rollout.id) == (campaigns.report(rollout.id), campaigns.timings(rollout.id))


def test_a_campaign_with_no_job_finished_has_no_progress_yet(reads: Reads, rollout: Rollout) -> None:
    services = reads.services
    before_any_event = services.campaigns.create(parse_campaign_request({
        "firmware_id": services.campaigns.report(rollout.id).firmware_id,
        "chargers": [{"charger_id": f"NEW-{secrets.token_hex(3)}", "current_version": "1.0.0"}]}), BY)
    timings = services.campaigns.timings(before_any_event.id)
    assert (timings.download_seconds, timings.completion_seconds, timings.progress) == ([], [], [])


def test_a_chargers_history_is_its_grants_newest_first_each_with_its_job(reads: Reads, rollout: Rollout) -> None:
    services, clock = reads.services, reads.clock
    charger = next(iter(rollout.grants))
    firmware_id = services.campaigns.report(rollout.id).firmware_id
    clock.now = T0 + timedelta(hours=2)
    _, [direct] = services.grants.issue(services.grants.parse(
        {"firmware_id": firmware_id, "charger_id": charger}, batch=False), BY)
    newest, oldest = services.jobs.history(charger)
    assert (newest.grant_id, newest.campaign_id, newest.created_at, newest.job.state.value) == (
        direct.id, None, T0 + timedelta(hours=2), "granted")
    assert (oldest.grant_id, oldest.campaign_id, oldest.version, oldest.job.state.value) == (
        rollout.grants[charger], rollout.id, "2.0.0", "succeeded")
    assert [(event.status, event.timestamp) for event in oldest.job.events] == [
        ("Installing", T0 + timedelta(seconds=60)), ("Booted", T0 + timedelta(seconds=180))]
    assert oldest.job == services.jobs.job(rollout.grants[charger])
    assert [update.grant_id for update in services.jobs.history(charger, limit=1)] == [direct.id]
    assert services.jobs.history("CP-never-granted") == []
    for limit in (0, 501):
        with pytest.raises(InvalidInput) as refused:
            services.jobs.history(charger, limit=limit)
        assert refused.value.field == "limit"
    with pytest.raises(InvalidInput) as refused:
        services.jobs.history(" CP\n")
    assert refused.value.field == "charger_id"


def test_another_tenants_campaign_and_charger_are_unknown(reads: Reads, rollout: Rollout) -> None:
    services = reads.services
    charger = next(iter(rollout.grants))
    with acting_in("other"):
        for read in (services.campaigns.report, services.campaigns.members, services.campaigns.timings,
                     services.campaigns.member_rows):
            with pytest.raises(NotFound):
                read(rollout.id)
        assert services.jobs.history(charger) == []
    assert services.jobs.history(charger)


def test_reads_change_nothing(reads: Reads, rollout: Rollout) -> None:
    """Reading derives nothing and stores nothing: the stored rows are the same after every read."""
    services = reads.services
    campaigns = services.campaigns

    def stored() -> tuple:
        return campaigns.members(rollout.id, limit=1_000), campaigns.report(rollout.id)

    before = stored()
    reads.clock.now = T0 + services.jobs.timeout * 3  # every job would time out if a read derived them
    campaigns.report(rollout.id)
    campaigns.timings(rollout.id)
    list(campaigns.member_rows(rollout.id))
    services.jobs.history(next(iter(rollout.grants)))
    assert stored() == before


def test_progress_of_a_single_finished_job_is_a_line_to_it() -> None:
    from repo_service.domain.campaigns import _progress

    points = _progress(0, [5_000_000], [])
    assert points[0][1:] == (0, 0) and points[-1][1:] == (1, 1)
    assert _progress(0, [], [7])[-1][1:] == (1, 0)
