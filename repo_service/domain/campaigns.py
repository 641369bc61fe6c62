"""Campaigns: one firmware rolled out wave by wave, halting by itself when a wave fails too often."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import secrets
import statistics
import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Row, Select, case, func, or_, update
from sqlalchemy import event as orm_event
from sqlmodel import Session, col, select

from repo_service.db.models import (
    Campaign,
    CampaignCharger,
    Dispatch,
    Grant,
    GrantEvent,
)
from repo_service.db.session import Database, without_jit
from repo_service.db.tenancy import EVERY_TENANT, acting_in, current_scope
from repo_service.db.types import epoch_microseconds, microseconds_between
from repo_service.domain import leases
from repo_service.domain.audit import Performer
from repo_service.domain.background import repeating
from repo_service.domain.catalog import FirmwareRecord
from repo_service.domain.clock import Clock, rfc3339, utc_now
from repo_service.domain.documents import (
    binding,
    charger_id,
    protocol_and_mode,
    refuse_unknown,
    required_string,
    retry_plan,
)
from repo_service.domain.grants import (
    DEFAULT_LIFETIME,
    RETRY_PLAN_MARGIN,
    GrantRecord,
    Grants,
    retry_plan_end,
)
from repo_service.domain.ocpp import grant_json
from repo_service.domain.update_jobs import (
    FAILURES,
    QUERY_CHUNK,
    Job,
    JobState,
    UpdateJobs,
    completion_seconds,
    download_seconds,
)
from repo_service.domain.versions import parse_version
from repo_service.domain.webhooks import (
    CAMPAIGN_CANCELLED,
    CAMPAIGN_COMPLETED,
    CAMPAIGN_HALTED,
    GRANTS_DUE,
    JOB_FINISHED,
    WAVE_STARTED,
    Outbox,
)
from repo_service.errors import Conflict, InvalidInput, NotFound

MAX_CHARGERS = 100_000
# How often deadlines are looked at: a timed-out job or a failed download made final shows this late at most.
TICK_SECONDS = 5.0
# Jobs derived again per tick; more wait for the next round.
TICK_BATCH = 20_000
MAX_WAVES = 20
DEFAULT_THRESHOLD = 0.1
# Due grants per reply: each carries its OCPP payloads, certificate included (a few KB).
DUE_PAGE = 1_000
MAX_DUE_PAGE = 10_000
# How skip reasons are counted in reports: the reason's opening words, and the name they are counted under.
SKIP_KINDS = (("already on", "already_on_target"), ("model", "model"), ("hardware revision", "hardware_revision"),
              ("on ", "below_min_version"))
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# Who sends each charger its UpdateFirmware: the CSMS, which polls for due grants (or takes grants.due
# webhooks), or fwrepo itself through a CSMS it drives (repo_service/csms/).
CSMS_DISPATCH = "csms"
DISPATCHES = (CSMS_DISPATCH, "citrineos")
OCPP_VERSIONS = ("1.6", "2.0.1")
DEFAULT_OCPP_VERSION = "2.0.1"
# What members(state=) takes: a job's state, or how a charger without a job stands.
MEMBER_STATES = (*(state.value for state in JobState), "skipped", "pending")
MEMBERS_PAGE = 100
MAX_MEMBERS_PAGE = 1_000
# Chargers per read of member_rows: a few MB of rows at a time, however large the campaign.
MEMBER_CHUNK = 5_000
# A progress line of more points than a plot is wide in pixels shows nothing more.
PROGRESS_POINTS = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CampaignStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


@dataclass(frozen=True)
class ChargerEntry:
    charger_id: str
    current_version: str
    model: str | None
    hardware_revision: str | None
    time_zone: str
    serial: str | None = None
    ocpp_version: str | None = None


@dataclass(frozen=True)
class CampaignRequest:
    firmware_id: str
    chargers: tuple[ChargerEntry, ...]
    protocol: str
    ftps_mode: str | None
    waves: tuple[str | int, ...]
    thresholds: tuple[float, ...]
    window: tuple[str, str] | None
    retries: int
    retry_interval: int
    bind: str | None = None
    dispatch: str = CSMS_DISPATCH


@dataclass(frozen=True)
class WaveReport:
    number: int
    chargers: int
    states: dict[str, int]
    failure_rate: float | None
    threshold: float


@dataclass(frozen=True)
class JobSummary:
    """What many update jobs add up to."""

    jobs: int
    states: dict[str, int]
    finished: int
    success_rate: float | None
    download_seconds: dict[str, float | None]
    completion_seconds: dict[str, float | None]
    bytes_served: int

    @classmethod
    def of(cls, jobs: Sequence[Job]) -> JobSummary:
        states = Counter(job.state.value for job in jobs)
        finished = sum(job.final for job in jobs)
        return cls(
            jobs=len(jobs), states=dict(states), finished=finished,
            success_rate=states[JobState.SUCCEEDED.value] / finished if finished else None,
            download_seconds=percentiles([job.download_seconds for job in jobs if job.download_seconds is not None]),
            completion_seconds=percentiles([job.completion_seconds for job in jobs
                                            if job.completion_seconds is not None]),
            bytes_served=sum(job.bytes_served for job in jobs),
        )


@dataclass(frozen=True)
class CampaignReport:
    id: str
    firmware_id: str
    status: str
    status_reason: str | None
    current_wave: int
    waves: list[WaveReport]
    chargers: int
    skipped: dict[str, int]
    # Chargers of waves not started yet: no grant, no job.
    pending: int
    summary: JobSummary
    created_at: datetime
    dispatch: str = CSMS_DISPATCH
    # Dispatched campaigns: how many UpdateFirmware requests are pending, sent, refused, not_connected.
    dispatches: dict[str, int] | None = None


@dataclass(frozen=True)
class CampaignMemberRow:
    """One charger of a campaign as its stored job columns say (what _store() last wrote), no events replayed."""

    position: int
    charger_id: str
    # Counted from 1; None for a skipped charger.
    wave: int | None
    # The job's state; None for a charger without a job: skipped, or its wave has not started (pending).
    state: str | None
    skip_reason: str | None
    grant_id: int | None
    granted_at: datetime | None
    first_byte_at: datetime | None
    last_byte_at: datetime | None
    booted_at: datetime | None
    bytes_served: int
    # The firmwareVersion the campaign was given for it (jobs.csv has it).
    current_version: str

    @property
    def listed_state(self) -> str:
        """The state, or "skipped" / "pending" for a charger without a job: the values members(state=) takes."""
        if self.state is not None:
            return self.state
        return "skipped" if self.wave is None else "pending"

    @property
    def download_seconds(self) -> float | None:
        return download_seconds(self.first_byte_at, self.last_byte_at)

    @property
    def completion_seconds(self) -> float | None:
        return completion_seconds(self.state, self.granted_at, self.booted_at)


@dataclass(frozen=True)
class CampaignTimings:
    """What a campaign's plots are drawn from."""

    # Job.download_seconds and Job.completion_seconds of every job that has one, ascending.
    download_seconds: list[float]
    completion_seconds: list[float]
    # (moment, jobs finished by then, of which succeeded), cumulative and in time order; see Campaigns.timings.
    progress: list[tuple[datetime, int, int]]


# -- reading a request -----------------------------------------------------------------------


def parse_campaign_request(document: Mapping[str, Any]) -> CampaignRequest:
    known = {"firmware_id", "chargers", "protocol", "ftps_mode", "waves", "failure_threshold", "window",
             "retries", "retry_interval", "bind", "dispatch"}
    refuse_unknown(document, known)
    firmware_id = required_string(document, "firmware_id")
    raw_chargers = document.get("chargers")
    if not isinstance(raw_chargers, list) or not raw_chargers:
        raise InvalidInput("chargers", "must be a non-empty list of {charger_id, current_version, ...}")
    if len(raw_chargers) > MAX_CHARGERS:
        raise InvalidInput("chargers", f"at most {MAX_CHARGERS} per campaign, got {len(raw_chargers)}")
    chargers = tuple(_charger(entry, f"chargers[{index}].") for index, entry in enumerate(raw_chargers))
    seen: set[str] = set()
    for index, charger in enumerate(chargers):
        if charger.charger_id in seen:
            raise InvalidInput(f"chargers[{index}].charger_id", f"{charger.charger_id!r} appears more than once")
        seen.add(charger.charger_id)
    protocol, ftps_mode = protocol_and_mode(document)
    waves = _waves(document.get("waves", ["100%"]))
    thresholds = _thresholds(document.get("failure_threshold", DEFAULT_THRESHOLD), len(waves))
    window = _window(document["window"]) if "window" in document else None
    retries, retry_interval = retry_plan(document)
    bind = binding(document, next((f"chargers[{index}].serial" for index, charger in enumerate(chargers)
                                   if charger.serial is not None), None))
    dispatch = document.get("dispatch", CSMS_DISPATCH)
    if dispatch not in DISPATCHES:
        raise InvalidInput("dispatch", f"must be one of {', '.join(DISPATCHES)}, got {str(dispatch)[:40]!r}")
    return CampaignRequest(firmware_id, chargers, protocol, ftps_mode, waves, thresholds, window, retries,
                           retry_interval, bind, dispatch)


CHARGER_COLUMNS = ("charger_id", "current_version", "model", "hardware_revision", "time_zone", "serial",
                   "ocpp_version")


def chargers_from_csv(text: str) -> list[dict[str, str]]:
    """A campaign's chargers from CSV with a header row naming CHARGER_COLUMNS (charger_id and current_version
    required, the rest optional; an empty cell is left out), as the "chargers" list of a campaign request.
    Errors name the line: a spreadsheet's user finds it there, not at an index."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = reader.fieldnames or []
    unknown = [name for name in header if name not in CHARGER_COLUMNS]
    if unknown or not {"charger_id", "current_version"} <= set(header):
        raise InvalidInput("chargers", f"the CSV's first line must name its columns, charger_id and current_version "
                           f"among them, from {', '.join(CHARGER_COLUMNS)}; got {', '.join(header)[:200] or 'none'}")
    chargers = []
    for entry in reader:
        if None in entry:
            raise InvalidInput("chargers", f"line {reader.line_num} has more cells than the header names")
        if len(chargers) == MAX_CHARGERS:
            raise InvalidInput("chargers", f"at most {MAX_CHARGERS} per campaign")
        chargers.append({name: value.strip() for name, value in entry.items() if value and value.strip()})
    if not chargers:
        raise InvalidInput("chargers", "the CSV names no charger: one line per charger after the header")
    return chargers


def _charger(entry: object, prefix: str) -> ChargerEntry:
    if not isinstance(entry, Mapping):
        raise InvalidInput(prefix.rstrip("."), "must be an object with charger_id and current_version")
    refuse_unknown(entry, CHARGER_COLUMNS, prefix)
    identity = charger_id(entry.get("charger_id"), prefix + "charger_id")
    version = entry.get("current_version")
    if not isinstance(version, str) or not 1 <= len(version) <= 50:
        raise InvalidInput(prefix + "current_version", "is required: the firmwareVersion of its last BootNotification")
    for name in ("model", "hardware_revision"):
        value = entry.get(name, "")
        if name in entry and (not isinstance(value, str) or not 1 <= len(value) <= 50):
            raise InvalidInput(prefix + name, "must be a string of 1-50 characters")
    zone = entry.get("time_zone", "UTC")
    if not isinstance(zone, str) or not 1 <= len(zone) <= 64:
        raise InvalidInput(prefix + "time_zone", "must be an IANA time zone such as Europe/Berlin")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(prefix + "time_zone", f"{zone!r} is not an IANA time zone such as Europe/Berlin") from None
    serial = charger_id(entry["serial"], prefix + "serial") if "serial" in entry else None
    ocpp_version = entry.get("ocpp_version")
    if "ocpp_version" in entry and ocpp_version not in OCPP_VERSIONS:
        raise InvalidInput(prefix + "ocpp_version", f"must be one of {', '.join(OCPP_VERSIONS)}, "
                           f"got {str(ocpp_version)[:20]!r}")
    return ChargerEntry(identity, version, entry.get("model"), entry.get("hardware_revision"), zone, serial,
                        ocpp_version)


def _waves(raw: object) -> tuple[str | int, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_WAVES:
        raise InvalidInput("waves", f'must be a list of 1-{MAX_WAVES} cumulative sizes such as ["1%", "10%", "100%"]')
    for wave in raw:
        valid_share = isinstance(wave, str) and re.fullmatch(r"(100|[1-9][0-9]?)(\.[0-9]+)?%", wave) is not None
        valid_count = isinstance(wave, int) and not isinstance(wave, bool) and wave >= 1
        if not (valid_share or valid_count):
            raise InvalidInput("waves", f"{wave!r} is neither a share such as \"10%\" nor a count of chargers")
    return tuple(raw)


def _thresholds(raw: object, waves: int) -> tuple[float, ...]:
    values = raw if isinstance(raw, list) else [raw] * waves
    if len(values) != waves:
        raise InvalidInput("failure_threshold", f"needs one value per wave ({waves}) or a single value")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InvalidInput("failure_threshold", f"{value!r} is not a fraction between 0 and 1 (0.05 = 5 %)")
    return tuple(float(value) for value in values)


def _window(raw: object) -> tuple[str, str]:
    if not isinstance(raw, Mapping) or set(raw) != {"start", "end"}:
        raise InvalidInput("window", 'must be {"start": "01:00", "end": "05:00"} in each charger\'s local time')
    start, end = raw["start"], raw["end"]
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, str) or not _CLOCK.fullmatch(value):
            raise InvalidInput(f"window.{name}", f"{value!r} is not a time of day HH:MM")
    if start == end:
        raise InvalidInput("window", "start and end are the same time: the window would be empty")
    return start, end


# -- planning ------------------------------------------------------------------------------


def wave_ends(waves: Sequence[str | int], eligible: int) -> list[int]:
    """Cumulative charger counts at the end of each wave; the last reaches every eligible charger."""
    ends = []
    for wave in waves:
        count = math.ceil(float(wave[:-1]) / 100 * eligible) if isinstance(wave, str) else wave
        ends.append(min(max(count, ends[-1] if ends else 0, 1), eligible))
    ends[-1] = eligible
    return ends


def skip_reason(charger: ChargerEntry, firmware: FirmwareRecord) -> str | None:
    """Why this charger gets nothing from the campaign, or None when it should get the firmware."""
    target = parse_version(firmware.version)
    try:
        current = parse_version(charger.current_version, "current_version")
    except InvalidInput:
        current = None
    if current is not None and current == target:
        return f"already on {firmware.version}"
    if charger.model is not None and firmware.models and charger.model not in firmware.models:
        return f"model {charger.model} is not among the firmware's models ({', '.join(firmware.models)})"
    if (charger.hardware_revision is not None and firmware.hardware_revisions
            and charger.hardware_revision not in firmware.hardware_revisions):
        return f"hardware revision {charger.hardware_revision} is not supported"
    if firmware.min_version is not None and current is not None and current < parse_version(firmware.min_version):
        return f"on {charger.current_version}, older than the firmware's min_version {firmware.min_version}"
    return None


def retrieve_date(charger_id: str, time_zone: str, window: tuple[str, str] | None, now: datetime) -> datetime:
    """When the charger should fetch: now, or a moment in its next maintenance window spread by its id.

    The spread is the same for a charger every time (a hash of its id), so the
    chargers of one time zone do not all start at the window's first minute.
    """
    if window is None:
        return now
    spread = int.from_bytes(hashlib.sha256(charger_id.encode()).digest()[:4]) / 2**32
    zone = ZoneInfo(time_zone)
    start_clock, end_clock = (time.fromisoformat(value) for value in window)
    today = now.astimezone(zone).date()
    for day in (today - timedelta(days=1), today, today + timedelta(days=1)):
        start, end = _window_on(day, start_clock, end_clock, zone)
        if end > now:
            begin = max(start, now)
            return begin + (end - begin) * spread
    raise AssertionError("a daily window always has an occurrence within two days")


def _window_on(day: date, start: time, end: time, zone: ZoneInfo) -> tuple[datetime, datetime]:
    # A window such as 23:00-02:00 crosses midnight: it ends on the next day.
    end_day = day + timedelta(days=1) if end <= start else day
    return datetime.combine(day, start, zone).astimezone(UTC), datetime.combine(end_day, end, zone).astimezone(UTC)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None}
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]}


def _finished_json(grant_id: int, job: Job, member: CampaignCharger | None) -> dict[str, Any]:
    """job.finished's data: the outcome and its times (the full job is GET /api/v1/grants/{id}/job)."""
    return {
        "grant_id": grant_id, "request_id": grant_id, "campaign_id": member.campaign_id if member else None,
        "charger_id": member.charger_id if member else None, "state": job.state.value,
        "first_byte": rfc3339(job.first_byte_at) if job.first_byte_at else None,
        "last_byte": rfc3339(job.last_byte_at) if job.last_byte_at else None,
        "boot_confirmed": rfc3339(job.booted_at) if job.booted_at else None,
    }


_MEMBER_COLUMNS = (
    CampaignCharger.position, CampaignCharger.charger_id, CampaignCharger.wave, CampaignCharger.state,
    CampaignCharger.skip_reason, CampaignCharger.grant_id, CampaignCharger.granted_at, CampaignCharger.first_byte_at,
    CampaignCharger.last_byte_at, CampaignCharger.booted_at, CampaignCharger.bytes_served,
    CampaignCharger.current_version,
)


def _member_row(row: Any) -> CampaignMemberRow:
    # A charger has a job once its wave granted it one: without granted_at, whatever the state column says,
    # it has none (skipped, or its wave has not started).
    has_job = row.state is not None and row.granted_at is not None
    return CampaignMemberRow(
        row.position, row.charger_id, row.wave + 1 if row.wave is not None else None,
        row.state if has_job else None, row.skip_reason, row.grant_id, row.granted_at, row.first_byte_at,
        row.last_byte_at, row.booted_at, row.bytes_served, row.current_version)


def _listed_as(state: str | None) -> tuple[Any, ...]:
    """The conditions for chargers whose CampaignMemberRow.listed_state is state (None: every charger)."""
    if state is None:
        return ()
    if state == "skipped":
        return (col(CampaignCharger.wave).is_(None),)
    if state == "pending":
        return (col(CampaignCharger.wave).is_not(None),
                or_(col(CampaignCharger.state).is_(None), col(CampaignCharger.granted_at).is_(None)))
    return CampaignCharger.state == state, col(CampaignCharger.granted_at).is_not(None)


def _member_columns(session: Session, statement: Select[Any]) -> Sequence[Row[Any]]:
    """Columns of campaign_charger alone, read without the ORM, whose per-row work doubled the time of a
    100,000-row read. Only for rows of a campaign this session has found in its scope: the table has no tenant
    column, so the ORM would add no tenant criteria to it anyway (tenancy.py), and on PostgreSQL row-level
    security holds the connection either way."""
    return session.connection().execute(statement).all()


def _job_times(session: Session, campaign_id: str, *, boots: bool = False) -> Sequence[Row[Any]]:
    """(microseconds from first to last byte, from grant to boot) of the campaign's jobs that have either, the
    second for succeeded jobs only (else None), and with boots the moment of each success's boot (microseconds
    since 1970): computed by the database, so 100,000 jobs make no datetime objects."""
    dialect = session.get_bind().dialect.name
    succeeded = CampaignCharger.state == JobState.SUCCEEDED.value
    columns = [
        microseconds_between(CampaignCharger.first_byte_at, CampaignCharger.last_byte_at, dialect),
        case((succeeded, microseconds_between(CampaignCharger.granted_at, CampaignCharger.booted_at, dialect))),
    ]
    if boots:
        columns.append(case((succeeded, epoch_microseconds(CampaignCharger.booted_at, dialect))))
    return _member_columns(session, select(*columns).where(
        CampaignCharger.campaign_id == campaign_id, col(CampaignCharger.state).is_not(None),
        col(CampaignCharger.granted_at).is_not(None),
        or_(col(CampaignCharger.last_byte_at).is_not(None), col(CampaignCharger.booted_at).is_not(None))))


def _report_groups(session: Session, campaign_id: str) -> Sequence[Row[Any]]:
    """The campaign's chargers counted by wave, state, finality, grant and skip reason, with the bytes served."""
    granted = col(CampaignCharger.granted_at).is_not(None)
    # One scan: only skipped chargers have a skip reason, so grouping by it adds a group per reason.
    # Each group's first position orders them: states and skip kinds are then counted in the order a
    # walk of the chargers meets them, as the report always listed them.
    groups = session.exec(select(
        CampaignCharger.wave, CampaignCharger.state, CampaignCharger.final, granted,
        CampaignCharger.skip_reason, func.count(), func.sum(CampaignCharger.bytes_served),
    ).where(CampaignCharger.campaign_id == campaign_id).group_by(
        CampaignCharger.wave, CampaignCharger.state, CampaignCharger.final, granted,
        CampaignCharger.skip_reason,
    ).order_by(func.min(CampaignCharger.position))).all()
    return groups


def _durations(times: Sequence[Row[Any]]) -> tuple[list[float], list[float]]:
    """Job.download_seconds and Job.completion_seconds of those jobs, each ascending: the microseconds divided as
    timedelta.total_seconds() divides them, so the figures are the same to the last digit."""
    return (sorted([row[0] / 1_000_000 for row in times if row[0] is not None]),
            sorted([row[1] / 1_000_000 for row in times if row[1] is not None]))


def _progress(start: int, succeeded: Sequence[int], failed: Sequence[int]) -> list[tuple[datetime, int, int]]:
    """Cumulative (moment, finished, succeeded) from start to the last job finished, in at most PROGRESS_POINTS
    evenly spaced points; the moments jobs succeeded and failed are given ascending, in microseconds since 1970."""
    if not succeeded and not failed:
        return []
    # A charger's clock may date its boot a little before the campaign began.
    start = min(start, *succeeded[:1], *failed[:1])
    # A list, not unpacked arguments: one job alone would make max() iterate over its moment.
    end = max([*succeeded[-1:], *failed[-1:]])
    steps = PROGRESS_POINTS - 1 if end > start else 1
    points = []
    for step in range(steps + 1):
        moment = start + (end - start) * step // steps
        successes = bisect_right(succeeded, moment)
        points.append((EPOCH + timedelta(microseconds=moment), successes + bisect_right(failed, moment), successes))
    return points


def _skip_kind(reason: str) -> str:
    for prefix, kind in SKIP_KINDS:
        if reason.startswith(prefix):
            return kind
    return "other"


# -- the service ------------------------------------------------------------------------------


class CampaignObserver(Protocol):
    """Told a campaign's job states whenever its report is computed (metrics)."""

    def campaign_states(self, campaign_id: str, states: Mapping[str, int]) -> None: ...


class Campaigns:
    def __init__(self, database: Database, grants: Grants, jobs: UpdateJobs, outbox: Outbox,
                 clock: Clock = utc_now) -> None:
        self.database = database
        self.grants = grants
        self.jobs = jobs
        # Webhook events are written here by the transaction that decides them.
        self.outbox = outbox
        self.audit = grants.audit
        self.clock = clock
        self.observers: list[CampaignObserver] = []
        # The dispatches besides "csms" this service can carry out (a CSMS connector is configured), each with
        # the event that wakes its worker when a wave of such a campaign starts.
        self.dispatchers: dict[str, threading.Event] = {}

    def create(self, request: CampaignRequest, by: Performer) -> CampaignReport:
        firmware = self.grants.grantable(request.firmware_id)
        self.grants.require_protocol(request.protocol)
        self.grants.require_binding(request.bind)
        self.grants.require_location_fits(request.protocol, [charger.ocpp_version for charger in request.chargers],
                                          "chargers")
        if request.dispatch != CSMS_DISPATCH and request.dispatch not in self.dispatchers:
            raise InvalidInput("dispatch", f"{request.dispatch} dispatch needs FWREPO_{request.dispatch.upper()}_URL "
                               "set on the service")
        # The longest a grant may wait for its window (a day) plus the charger's whole retry plan.
        longest = timedelta(days=1, seconds=request.retries * request.retry_interval) + RETRY_PLAN_MARGIN
        if longest > self.grants.max_lifetime:
            raise InvalidInput("retries", f"a day's wait for the window plus retries x retry_interval "
                               f"({longest}) is longer than the {self.grants.max_lifetime} a grant may live")
        reasons = [skip_reason(charger, firmware) for charger in request.chargers]
        eligible = sum(reason is None for reason in reasons)
        if eligible == 0:
            raise InvalidInput("chargers", "no charger needs this firmware: every one was skipped "
                               f"(first: {request.chargers[0].charger_id}: {reasons[0]})")
        ends = wave_ends(request.waves, eligible)
        campaign_id = secrets.token_hex(8)
        with self.database.session() as session:
            session.add(Campaign(
                id=campaign_id, firmware_id=firmware.id, protocol=request.protocol, ftps_mode=request.ftps_mode,
                retries=request.retries, retry_interval=request.retry_interval, wave_ends=ends,
                thresholds=list(request.thresholds), window_start=request.window[0] if request.window else None,
                window_end=request.window[1] if request.window else None, status=CampaignStatus.RUNNING.value,
                current_wave=0, created_at=self.clock(), created_by=by.client_id, bind=request.bind,
                dispatch=request.dispatch,
            ))
            session.flush()
            members, position = [], 0
            for index, (charger, reason) in enumerate(zip(request.chargers, reasons, strict=True)):
                wave = None
                if reason is None:
                    wave = next(number for number, end in enumerate(ends) if position < end)
                    position += 1
                members.append(CampaignCharger(
                    campaign_id=campaign_id, position=index, charger_id=charger.charger_id,
                    current_version=charger.current_version, model=charger.model,
                    hardware_revision=charger.hardware_revision, time_zone=charger.time_zone, wave=wave,
                    skip_reason=reason, serial=charger.serial, ocpp_version=charger.ocpp_version,
                ))
            session.add_all(members)
            session.flush()
            self._start_wave(session, session.get(Campaign, campaign_id), firmware, 0)
            self.audit.record(by, "campaign", f"campaign {campaign_id}", session, firmware=firmware.id,
                              chargers=len(request.chargers), dispatch=request.dispatch)
        return self.report(campaign_id)

    def _start_wave(self, session: Session, campaign: Campaign | None, firmware: FirmwareRecord, wave: int) -> None:
        """Start one wave, in the transaction that decided it starts: its grants, as many as fit the tenant's
        grants-per-minute quota (the rest wait for the tick, see _grant_waiting)."""
        assert campaign is not None
        issued = self._grant_wave(session, campaign, firmware, wave)
        self.outbox.enqueue(session, WAVE_STARTED, [(f"{campaign.id}:{wave + 1}", {
            "campaign_id": campaign.id, "wave": wave + 1, "waves": len(campaign.wave_ends), "grants": issued})])

    def _grant_wave(self, session: Session, campaign: Campaign, firmware: FirmwareRecord, wave: int) -> int:
        """Grant the wave's chargers that have none yet, in order, as many as the tenant's quota lets through now;
        how many. A wave larger than the quota waits for the rest rather than failing: it finishes only once all
        its chargers were granted and have finished."""
        room = self.grants.quotas.grants_left(session)
        waiting = select(CampaignCharger).where(
            CampaignCharger.campaign_id == campaign.id, CampaignCharger.wave == wave,
            col(CampaignCharger.grant_id).is_(None)).order_by(col(CampaignCharger.position))
        members = session.exec(waiting if room is None else waiting.limit(room)).all()
        now = self.clock()
        window = (campaign.window_start, campaign.window_end) if campaign.window_start and campaign.window_end else None
        plan = []
        for member in members:
            retrieve = retrieve_date(member.charger_id, member.time_zone, window, now)
            plan_end = retry_plan_end(retrieve, campaign.retries, campaign.retry_interval)
            plan.append((member.charger_id, retrieve, max(now + DEFAULT_LIFETIME, plan_end)))
        ids = self.grants.insert(session, firmware, plan, protocol=campaign.protocol, retries=campaign.retries,
                                 retry_interval=campaign.retry_interval, created_by=campaign.created_by,
                                 bind=campaign.bind, serials=[member.serial for member in members])
        for member, grant_id, (_, retrieve, _) in zip(members, ids, plan, strict=True):
            member.grant_id, member.state, member.granted_at = grant_id, JobState.GRANTED.value, now
            member.due_at = max(now, retrieve) + self.jobs.timeout
            session.add(member)
        if ids and campaign.dispatch in self.dispatchers:
            wake = self.dispatchers[campaign.dispatch]
            orm_event.listen(session, "after_commit", lambda _: wake.set(), once=True)
        return len(ids)

    def _grant_waiting(self, campaign_id: str) -> None:
        """Grant what the current wave still waits for, if the tenant's quota has room again."""
        running = select(Campaign.current_wave).where(Campaign.id == campaign_id,
                                                      Campaign.status == CampaignStatus.RUNNING.value)
        waiting = select(func.count()).select_from(CampaignCharger).where(
            CampaignCharger.campaign_id == campaign_id, col(CampaignCharger.wave).in_(running),
            col(CampaignCharger.grant_id).is_(None))
        # Read first: the tick asks this of every running campaign, and almost none waits; only one that does
        # takes SQLite's write lock (and the tenant's row) to grant.
        with self.database.session() as session:
            if not session.exec(waiting).one():
                return
        with self.database.session(exclusive=True) as session:
            campaign = self._campaign(session, campaign_id)
            if campaign.status == CampaignStatus.RUNNING and session.exec(waiting).one():
                self._grant_wave(session, campaign, self.grants.catalog.get(campaign.firmware_id),
                                 campaign.current_wave)

    def due(self, campaign_id: str, limit: int = DUE_PAGE) -> list[GrantRecord]:
        """Up to limit grants whose retrieve_date has come and that no CSMS was handed yet; each is handed out once.

        Handing out is the only thing this changes: waves move on events, steering and the tick, never here.
        """
        if not 1 <= limit <= MAX_DUE_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_DUE_PAGE}")
        # It reads, then claims: on SQLite that needs the write lock from the start (see Database.session).
        with self.database.session(exclusive=True) as session:
            campaign = self._campaign(session, campaign_id)
            if campaign.dispatch != CSMS_DISPATCH:
                raise Conflict(f"campaign {campaign_id} is dispatched by fwrepo through {campaign.dispatch}: "
                               "its grants are sent, not handed out")
            return self._hand_out(session, campaign, limit)

    def push_due(self) -> int:
        """grants.due: what ?due=now would hand out, handed out instead to the webhooks that take it, in the
        transaction that claims the grants; so a grant goes once, to a poll or to the webhooks. How many."""
        with self.database.session() as session:
            if not self.outbox.subscribers(session, GRANTS_DUE):
                return 0

        def into_outbox(session: Session, campaign: Campaign, grants: list[GrantRecord]) -> None:
            firmware = self.grants.catalog.get(grants[0].firmware_id)
            self.outbox.enqueue(session, GRANTS_DUE, [(f"{campaign.id}:{grants[0].id}", {
                "campaign_id": campaign.id, "grants": [grant_json(grant, firmware) for grant in grants]})])

        # Checked in each claiming transaction: a webhook deleted meanwhile leaves the grants to polls.
        return self.hand_out_running(CSMS_DISPATCH, into_outbox,
                                     still=lambda session: self.outbox.subscribers(session, GRANTS_DUE))

    def hand_out_running(self, dispatch: str, take: Callable[[Session, Campaign, list[GrantRecord]], None],
                         still: Callable[[Session], bool] = lambda session: True) -> int:
        """Every running campaign of this dispatch: its due grants handed out a page at a time, each page given to
        take() in the transaction that claims it, while still() holds there. How many."""
        # Every tenant's campaigns are found; each is then handed out in its own tenant's scope, so its grants
        # reach only its tenant's webhooks.
        with acting_in(EVERY_TENANT), self.database.session() as session:
            running = list(session.exec(select(Campaign.id, Campaign.tenant).where(
                Campaign.status == CampaignStatus.RUNNING.value, Campaign.dispatch == dispatch)).all())
        handed = 0
        for campaign_id, tenant in running:
            while True:
                with acting_in(tenant), self.database.session(exclusive=True) as session:
                    if not still(session):
                        return handed
                    campaign = self._campaign(session, campaign_id)
                    grants = self._hand_out(session, campaign, DUE_PAGE)
                    if grants:
                        take(session, campaign, grants)
                handed += len(grants)
                if len(grants) < DUE_PAGE:
                    break
        return handed

    def _hand_out(self, session: Session, campaign: Campaign, limit: int) -> list[GrantRecord]:
        """Claim up to limit due grants no one was handed yet, in the caller's transaction (which holds the
        write lock on SQLite), and return them with their locations."""
        if campaign.status != CampaignStatus.RUNNING:
            return []
        campaign_id = campaign.id
        now = self.clock()
        running = select(Campaign.id).where(Campaign.id == campaign_id,
                                            Campaign.status == CampaignStatus.RUNNING.value)
        due_now = (select(CampaignCharger.id).join(Grant, col(Grant.id) == col(CampaignCharger.grant_id)).where(
            col(CampaignCharger.campaign_id).in_(running), col(CampaignCharger.delivered_at).is_(None),
            col(Grant.retrieve_date) <= now, col(Grant.revoked_at).is_(None),
        ).order_by(col(CampaignCharger.grant_id)).limit(limit))
        # Claimed with a conditional update: two CSMS workers (or nodes) never get the same grant.
        claimed = sorted(grant_id for grant_id in session.execute(
            update(CampaignCharger).where(col(CampaignCharger.id).in_(due_now),
                                          col(CampaignCharger.delivered_at).is_(None))
            .values(delivered_at=now).returning(CampaignCharger.grant_id)
        ).scalars() if grant_id is not None)
        if not claimed:
            return []
        rows = list(session.exec(select(Grant).where(col(Grant.id).in_(claimed)).order_by(col(Grant.id))).all())
        firmware = self.grants.catalog.get(campaign.firmware_id)
        return self.grants.deliver(session, rows, firmware, campaign.ftps_mode)

    def settle(self, grant_ids: Sequence[int]) -> dict[int, Job]:
        """What was just reported about these grants: their jobs derived once, stored, and their waves decided."""
        jobs = self.jobs.jobs(list(grant_ids))
        for campaign_id in sorted(self._store(jobs)):
            self.advance(campaign_id)
        return jobs

    def tick(self) -> int:
        """Deadlines: jobs that the clock alone has changed (timed out, a failed download now final) are derived
        again and their waves decided. Every node calls this; a lease makes one of them act per round.
        Returns how many jobs were derived again (0 when another node holds the round)."""
        now = self.clock()
        if not leases.take(self.database, "campaign-tick", TICK_SECONDS, now):
            return 0
        # Found across tenants, then derived and decided tenant by tenant: what a job's end sends (webhooks)
        # and records (the audit trail) is its own tenant's.
        with acting_in(EVERY_TENANT), self.database.session() as session:
            running = select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING.value)
            due = session.exec(select(CampaignCharger.grant_id, Campaign.tenant).join(
                Campaign, col(Campaign.id) == col(CampaignCharger.campaign_id)).where(
                col(CampaignCharger.campaign_id).in_(running), col(CampaignCharger.final).is_(False),
                col(CampaignCharger.due_at) <= now).limit(TICK_BATCH)).all()
            campaigns = session.exec(select(Campaign.id, Campaign.tenant).where(
                Campaign.status == CampaignStatus.RUNNING.value)).all()
        for tenant in dict.fromkeys([tenant for _, tenant in due] + [tenant for _, tenant in campaigns]):
            with acting_in(tenant):
                self._store(self.jobs.jobs([grant_id for grant_id, owner in due
                                            if owner == tenant and grant_id is not None]))
                for campaign_id, owner in campaigns:
                    if owner == tenant:
                        self.advance(campaign_id)
        return len(due)

    def ticking(self) -> AbstractContextManager[None]:
        """While the block runs, tick() every TICK_SECONDS in a thread of its own."""
        return repeating("campaign-tick", TICK_SECONDS, self.tick)

    def _store(self, jobs: Mapping[int, Job]) -> set[str]:
        """Store these campaign jobs as derived, and write job.finished for each job that became final (of a
        campaign or not); the campaigns they belong to."""
        if not jobs:
            return set()
        # It reads, then writes: on SQLite that needs the write lock from the start, or two of these
        # (an event batch and the tick) each holding a read would deadlock on upgrading it.
        with self.database.session(exclusive=True) as session:
            members = {member.grant_id: member for member in session.exec(select(CampaignCharger).where(
                col(CampaignCharger.grant_id).in_(list(jobs)))).all()}
            # Keyed by grant and state: a final job derived again (another event, a tick) is not sent again.
            self.outbox.enqueue(session, JOB_FINISHED, [
                (f"{grant_id}:{job.state.value}", _finished_json(grant_id, job, members.get(grant_id)))
                for grant_id, job in jobs.items()
                if job.final and not (grant_id in members and members[grant_id].final)])
            for grant_id, job in jobs.items():
                member = members.get(grant_id)
                if member is None:
                    continue
                member.state, member.final, member.due_at = job.state.value, job.final, job.due_at
                member.first_byte_at, member.last_byte_at = job.first_byte_at, job.last_byte_at
                member.booted_at, member.bytes_served = job.booted_at, job.bytes_served
                session.add(member)
            return {member.campaign_id for member in members.values()}

    def advance(self, campaign_id: str) -> None:
        """Halt a failing wave, start the next one of a finished wave, or finish the campaign: each at most once.

        It judges the jobs as stored; the callers (events, the tick, resume) have stored them first. A wave
        that adds nobody (3 chargers in waves of 1 %, 2 %, 100 %) is finished as soon as it starts.
        """
        self._grant_waiting(campaign_id)
        while self._advance_once(campaign_id):
            pass

    def _advance_once(self, campaign_id: str) -> bool:
        """One decision on the current wave; True when it started the next wave."""
        with self.database.session() as session:
            campaign = self._campaign(session, campaign_id)
            if campaign.status != CampaignStatus.RUNNING:
                return False
            wave = campaign.current_wave
            counts = session.exec(select(CampaignCharger.state, CampaignCharger.final, func.count()).where(
                CampaignCharger.campaign_id == campaign_id, CampaignCharger.wave == wave,
            ).group_by(CampaignCharger.state, CampaignCharger.final)).all()
        size = sum(count for _, _, count in counts)
        finished = sum(count for _, final, count in counts if final)
        failures = Counter({JobState(state): count for state, final, count in counts if final and state in FAILURES})
        failed = sum(failures.values())
        threshold = campaign.thresholds[wave]
        with self.database.session(exclusive=True) as session:
            # Whatever node decides, only the one whose update still finds this wave running acts on it.
            still = (col(Campaign.id) == campaign_id, col(Campaign.status) == CampaignStatus.RUNNING.value,
                     col(Campaign.current_wave) == wave)
            if size and failed / size > threshold:
                worst = ", ".join(f"{count} {state.value}" for state, count in failures.most_common())
                reason = (f"wave {wave + 1}: {failed} of {size} chargers failed ({failed / size:.0%}), more than "
                          f"its threshold of {threshold:.0%} ({worst})")
                halted = session.execute(update(Campaign).where(*still).values(
                    status=CampaignStatus.HALTED.value, status_reason=reason)).rowcount
                if halted:
                    self.outbox.enqueue(session, CAMPAIGN_HALTED, [(campaign_id, {
                        "campaign_id": campaign_id, "wave": wave + 1, "status_reason": reason})])
                return False
            if finished < size:
                return False
            if wave + 1 == len(campaign.wave_ends):
                completed = session.execute(update(Campaign).where(*still).values(
                    status=CampaignStatus.COMPLETED.value, status_reason="every wave finished")).rowcount
                if completed:
                    self.outbox.enqueue(session, CAMPAIGN_COMPLETED, [(campaign_id, {
                        "campaign_id": campaign_id, "waves": len(campaign.wave_ends)})])
                return False
            moved = session.execute(update(Campaign).where(*still).values(current_wave=wave + 1)).rowcount
            if moved != 1:
                return False
            firmware = self.grants.catalog.get(campaign.firmware_id)
            self._start_wave(session, session.get(Campaign, campaign_id), firmware, wave + 1)
            return True

    def set_status(self, campaign_id: str, action: str, by: Performer) -> CampaignReport:
        """pause, resume or cancel; cancel revokes every grant no charger has finished downloading.

        A halted campaign cannot be resumed (its failures are real): cancel it and start a new one.
        """
        transitions = {
            "pause": ({CampaignStatus.RUNNING}, CampaignStatus.PAUSED),
            "resume": ({CampaignStatus.PAUSED}, CampaignStatus.RUNNING),
            "cancel": ({CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.HALTED}, CampaignStatus.CANCELLED),
        }
        allowed, target = transitions[action]
        with self.database.session(exclusive=True) as session:
            campaign = session.exec(select(Campaign).where(Campaign.id == campaign_id).with_for_update()).first()
            if campaign is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            if campaign.status not in allowed:
                raise Conflict(f"campaign {campaign_id} is {campaign.status}: it cannot {action}")
            campaign.status = target.value
            campaign.status_reason = f"{action} by request"
            session.add(campaign)
            session.flush()
            if action == "cancel":
                members = select(CampaignCharger.grant_id).where(CampaignCharger.campaign_id == campaign_id)
                self.grants.revocations.revoke(
                    session, col(Grant.id).in_(members) & (col(Grant.downloads_completed) == 0),
                    f"campaign {campaign_id} cancelled")
                self.outbox.enqueue(session, CAMPAIGN_CANCELLED, [(campaign_id, {"campaign_id": campaign_id})])
            self.audit.record(by, f"campaign_{action}", f"campaign {campaign_id}", session)
        if action == "resume":
            # While paused, events were stored but decided nothing: decide now.
            self.advance(campaign_id)
        return self.report(campaign_id)

    def list(self) -> list[Campaign]:
        with self.database.session() as session:
            return list(session.exec(select(Campaign).order_by(col(Campaign.created_at).desc())).all())

    def report(self, campaign_id: str) -> CampaignReport:
        """The campaign from its stored job states, summed by the database: no charger is loaded as an object and
        no event replayed, so a page showing a 100,000-charger campaign stays fast."""
        with self.database.session() as session:
            without_jit(session)
            campaign = self._campaign(session, campaign_id)
            groups = _report_groups(session, campaign_id)
            download_seconds, completion_seconds = _durations(_job_times(session, campaign_id))
        return self._reported(campaign, groups, download_seconds, completion_seconds)

    def overview(self, campaign_id: str) -> tuple[CampaignReport, CampaignTimings]:
        """report() and timings() together, the times read once for both (the campaign's console page shows
        both: a second read of 100,000 jobs' times would be half its cost)."""
        timings = self.timings(campaign_id)
        with self.database.session() as session:
            without_jit(session)
            campaign = self._campaign(session, campaign_id)
            groups = _report_groups(session, campaign_id)
        return self._reported(campaign, groups, timings.download_seconds, timings.completion_seconds), timings

    def _reported(self, campaign: Campaign, groups: Sequence[Row[Any]], download_seconds: list[float],
                  completion_seconds: list[float]) -> CampaignReport:
        """The report of campaign from its chargers' groups (_report_groups) and its jobs' times."""
        wave_sizes: Counter[int] = Counter()
        wave_states: dict[int, Counter[str]] = {number: Counter() for number in range(len(campaign.thresholds))}
        wave_failed: Counter[int] = Counter()
        states: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        chargers = pending = finished = bytes_served = 0
        for wave, state, final, has_grant, reason, count, served in groups:
            chargers += count
            if reason:
                skipped[_skip_kind(reason)] += count
            if wave is not None:
                wave_sizes[wave] += count
            if state is None or not has_grant:
                # No job (see _member_row): a wave not started yet, or skipped.
                pending += count if wave is not None else 0
                continue
            states[state] += count
            finished += count if final else 0
            bytes_served += int(served or 0)
            if wave is not None:
                wave_states[wave][state] += count
                wave_failed[wave] += count if final and state in FAILURES else 0
        waves = [WaveReport(number + 1, wave_sizes[number], dict(wave_states[number]),
                            wave_failed[number] / wave_sizes[number]
                            if wave_states[number] and wave_sizes[number] else None, threshold)
                 for number, threshold in enumerate(campaign.thresholds)]
        jobs = sum(states.values())
        summary = JobSummary(
            jobs=jobs, states=dict(states), finished=finished,
            success_rate=states[JobState.SUCCEEDED.value] / finished if finished else None,
            download_seconds=percentiles(download_seconds), completion_seconds=percentiles(completion_seconds),
            bytes_served=bytes_served,
        )
        for observer in self.observers:
            observer.campaign_states(campaign.id, summary.states)
        return CampaignReport(
            id=campaign.id, firmware_id=campaign.firmware_id, status=campaign.status,
            status_reason=campaign.status_reason, current_wave=campaign.current_wave + 1, waves=waves,
            chargers=chargers, skipped=dict(skipped), pending=pending, summary=summary,
            created_at=campaign.created_at,
            dispatch=campaign.dispatch,
            dispatches=self._dispatches(campaign) if campaign.dispatch != CSMS_DISPATCH else None,
        )

    def members(self, campaign_id: str, *, offset: int = 0, limit: int = MEMBERS_PAGE,
                state: str | None = None) -> tuple[list[CampaignMemberRow], int]:
        """One page of the campaign's chargers in their order in the request, and how many match state (None:
        all of them). state is a job state, "skipped" or "pending" (CampaignMemberRow.listed_state)."""
        if state is not None and state not in MEMBER_STATES:
            raise InvalidInput("state", f"must be one of {', '.join(MEMBER_STATES)}, got {str(state)[:40]!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput("offset", "must be a whole number of chargers, 0 or more")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_MEMBERS_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_MEMBERS_PAGE}")
        where = (CampaignCharger.campaign_id == campaign_id, *_listed_as(state))
        with self.database.session() as session:
            without_jit(session)
            self._campaign(session, campaign_id)
            total = session.exec(select(func.count()).select_from(CampaignCharger).where(*where)).one()
            rows = session.exec(select(*_MEMBER_COLUMNS).where(*where).order_by(col(CampaignCharger.position))
                                .offset(offset).limit(limit)).all()
        return [_member_row(row) for row in rows], total

    def member_rows(self, campaign_id: str) -> Iterator[CampaignMemberRow]:
        """Every charger of the campaign in order, read MEMBER_CHUNK at a time: for an export of 100,000 that
        never holds them all. NotFound is raised here, before the first row, so a reply can still say 404."""
        with self.database.session() as session:
            self._campaign(session, campaign_id)
        # The rows are read as the caller consumes them, maybe later and in another thread (a streamed reply):
        # each chunk is read in the scope of this call, and in a short transaction of its own rather than one
        # held open while a slow client reads.
        scope = current_scope()

        def chunks() -> Iterator[CampaignMemberRow]:
            after = -1
            while True:
                with acting_in(scope), self.database.session() as session:
                    without_jit(session)
                    self._campaign(session, campaign_id)
                    rows = _member_columns(session, select(*_MEMBER_COLUMNS).where(
                        CampaignCharger.campaign_id == campaign_id, col(CampaignCharger.position) > after,
                    ).order_by(col(CampaignCharger.position)).limit(MEMBER_CHUNK))
                yield from (_member_row(row) for row in rows)
                if len(rows) < MEMBER_CHUNK:
                    return
                after = rows[-1].position

        return chunks()

    def timings(self, campaign_id: str) -> CampaignTimings:
        """The campaign's download and completion seconds, and its progress over time, from the stored job columns.

        A job's "finished at" (it is final):
        - succeeded: booted_at, the boot into the target version that decided it;
        - timed out: the latest of its last status event, first and last byte, grant and retrieve date, plus
          the job timeout (derive_job's silence rule: that is when it timed out);
        - any other failure: the latest of its last status event (the report that failed it), first and last byte
          and grant: the stored columns do not keep when it became final, and the charger's last word is when
          it failed.
        progress starts at the campaign's creation with nothing finished and ends at the last job finished, in
        at most PROGRESS_POINTS evenly spaced points; empty while no job has finished.
        """
        with self.database.session() as session:
            without_jit(session)
            campaign = self._campaign(session, campaign_id)
            times = _job_times(session, campaign_id, boots=True)
            micros = partial(epoch_microseconds, dialect=session.get_bind().dialect.name)
            has_job = (CampaignCharger.campaign_id == campaign_id, col(CampaignCharger.granted_at).is_not(None))
            failed = session.exec(select(
                CampaignCharger.grant_id, CampaignCharger.state, micros(CampaignCharger.granted_at),
                micros(CampaignCharger.first_byte_at), micros(CampaignCharger.last_byte_at),
            ).where(*has_job, col(CampaignCharger.final).is_(True),
                    CampaignCharger.state != JobState.SUCCEEDED.value)).all()
            # Looked up by grant, a chunk at a time, rather than joined: a join of a campaign's chargers with
            # every event was planned as minutes of nested loops on PostgreSQL before its statistics caught up.
            last_heard: dict[int, int] = {}
            retrieve: dict[int, int] = {}
            for first in range(0, len(failed), QUERY_CHUNK):
                chunk = failed[first : first + QUERY_CHUNK]
                last_heard.update(session.exec(select(GrantEvent.grant_id, func.max(micros(GrantEvent.timestamp)))
                                               .where(col(GrantEvent.grant_id).in_([row[0] for row in chunk]))
                                               .group_by(col(GrantEvent.grant_id))).all())
                timed_out = [row[0] for row in chunk if row[1] == JobState.TIMED_OUT]
                if timed_out:
                    retrieve.update(session.exec(select(Grant.id, micros(Grant.retrieve_date))
                                                 .where(col(Grant.id).in_(timed_out))).all())
        timeout = self.jobs.timeout // timedelta(microseconds=1)
        failed_at = []
        for grant_id, state, *moments in failed:
            latest = max(moment for moment in (*moments, last_heard.get(grant_id)) if moment is not None)
            failed_at.append(max(latest, retrieve[grant_id]) + timeout if state == JobState.TIMED_OUT else latest)
        start = (campaign.created_at - EPOCH) // timedelta(microseconds=1)
        boots = sorted([booted for _, _, booted in times if booted is not None])
        return CampaignTimings(*_durations(times), _progress(start, boots, sorted(failed_at)))

    def firmware_stats(self, firmware_id: str) -> tuple[JobSummary, int]:
        """Every grant of a firmware as one job summary, and how many campaigns it was rolled out in."""
        firmware = self.grants.catalog.get(firmware_id)
        with self.database.session() as session:
            grant_ids = list(session.exec(select(Grant.id).where(Grant.firmware_id == firmware.id)).all())
            campaigns = len(session.exec(select(Campaign.id).where(Campaign.firmware_id == firmware.id)).all())
        jobs = self.jobs.jobs([grant_id for grant_id in grant_ids if grant_id is not None])
        return JobSummary.of(list(jobs.values())), campaigns

    def _dispatches(self, campaign: Campaign) -> dict[str, int]:
        with self.database.session() as session:
            return {status: count for status, count in session.exec(
                select(Dispatch.status, func.count()).where(Dispatch.campaign_id == campaign.id)
                .group_by(col(Dispatch.status))).all()}

    @staticmethod
    def _campaign(session: Session, campaign_id: str) -> Campaign:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        return campaign
