"""Update jobs: what became of a grant, from the charger's status events and fwrepo's own download records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from repo_service.db.models import DownloadRecord, Grant, GrantEvent
from repo_service.db.session import Database
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.grants import MAX_GRANT_ID, Grants
from repo_service.domain.versions import parse_version
from repo_service.errors import InvalidInput, NotFound

# Every FirmwareStatus of OCPP 1.6 (with the security extension's SignedFirmwareStatus values)
# and FirmwareStatusEnumType of OCPP 2.0.1: the three lists are the same fourteen words.
OCPP_STATUSES = (
    "Downloaded", "DownloadFailed", "Downloading", "DownloadScheduled", "DownloadPaused", "Idle",
    "InstallationFailed", "Installing", "Installed", "InstallRebooting", "InstallScheduled",
    "InstallVerificationFailed", "InvalidSignature", "SignatureVerified",
)
# Not an OCPP status: the CSMS's word that the charger sent BootNotification with this firmwareVersion.
BOOTED = "Booted"
STATUSES = {status.lower(): status for status in (*OCPP_STATUSES, BOOTED)}
# A charger's clock may run ahead of ours by this much; later than that is a mistake, not a report.
CLOCK_SKEW = timedelta(minutes=5)
MAX_INFO = 255  # OCPP 2.0.1 statusInfo's additionalInfo is at most 512; 1.6 has none
MAX_EVENTS = 10_000
# Grant ids per IN (...) list: well under SQLite's limit of bound parameters.
QUERY_CHUNK = 5_000


class JobState(StrEnum):
    GRANTED = "granted"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    INSTALLING = "installing"
    SUCCEEDED = "succeeded"
    DOWNLOAD_FAILED = "download_failed"
    INVALID_SIGNATURE = "invalid_signature"
    INSTALLATION_FAILED = "installation_failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"


FAILURES = frozenset({JobState.DOWNLOAD_FAILED, JobState.INVALID_SIGNATURE, JobState.INSTALLATION_FAILED,
                      JobState.ROLLED_BACK, JobState.TIMED_OUT})
FINISHED = FAILURES | {JobState.SUCCEEDED}

# What each status says about the job; statuses not here (Idle, Booted) are read in derive_job.
_STATE_OF = {
    "Downloading": JobState.DOWNLOADING, "DownloadScheduled": JobState.DOWNLOADING,
    "DownloadPaused": JobState.DOWNLOADING,
    "Downloaded": JobState.DOWNLOADED, "SignatureVerified": JobState.DOWNLOADED,
    "DownloadFailed": JobState.DOWNLOAD_FAILED,
    "InvalidSignature": JobState.INVALID_SIGNATURE, "InstallVerificationFailed": JobState.INVALID_SIGNATURE,
    "InstallScheduled": JobState.INSTALLING, "Installing": JobState.INSTALLING,
    "InstallRebooting": JobState.INSTALLING, "Installed": JobState.INSTALLING,
    "InstallationFailed": JobState.INSTALLATION_FAILED,
}


@dataclass(frozen=True)
class StatusEvent:
    status: str
    timestamp: datetime
    info: str | None = None
    firmware_version: str | None = None


@dataclass(frozen=True)
class Transfer:
    """What fwrepo's download records say about one attempt."""

    started_at: datetime
    ended_at: datetime
    bytes_sent: int
    completed: bool


@dataclass(frozen=True)
class Job:
    state: JobState
    granted_at: datetime
    first_byte_at: datetime | None
    last_byte_at: datetime | None
    booted_at: datetime | None
    events: tuple[StatusEvent, ...]
    bytes_served: int = 0
    # Nothing the charger may still do changes the outcome (a failed download with retries left is not final).
    final: bool = False
    # When the job last moved (or was due to start): the timeout counts from here.
    progress_at: datetime | None = None

    @property
    def download_seconds(self) -> float | None:
        if self.first_byte_at is None or self.last_byte_at is None:
            return None
        return (self.last_byte_at - self.first_byte_at).total_seconds()

    @property
    def completion_seconds(self) -> float | None:
        if self.booted_at is None or self.state != JobState.SUCCEEDED:
            return None
        return (self.booted_at - self.granted_at).total_seconds()


def parse_event(document: Mapping[str, Any], *, now: datetime, field_prefix: str = "") -> StatusEvent:
    """Check one status event; InvalidInput names the field (with its place in a bulk request)."""
    if not isinstance(document, Mapping):
        raise InvalidInput(field_prefix.rstrip(".") or "body", "must be a JSON object")
    status = document.get("status")
    canonical = STATUSES.get(status.lower()) if isinstance(status, str) else None
    if canonical is None:
        raise InvalidInput(f"{field_prefix}status", f"{status!r} is not an OCPP firmware status nor Booted; "
                           f"expected one of {', '.join((*OCPP_STATUSES, BOOTED))}")
    raw_time = document.get("timestamp")
    try:
        timestamp = datetime.fromisoformat(raw_time.replace("Z", "+00:00")) if isinstance(raw_time, str) else None
    except ValueError:
        timestamp = None
    if timestamp is None or timestamp.tzinfo is None:
        raise InvalidInput(f"{field_prefix}timestamp", "must be an ISO 8601 date-time with a zone, as OCPP sends it")
    try:
        timestamp = timestamp.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{field_prefix}timestamp", f"{raw_time} is out of range") from None
    if timestamp > now + CLOCK_SKEW:
        raise InvalidInput(f"{field_prefix}timestamp", f"{raw_time} is in the future (more than {CLOCK_SKEW} ahead)")
    info = document.get("info")
    if info is not None and (not isinstance(info, str) or len(info) > MAX_INFO or not info.isprintable()):
        raise InvalidInput(f"{field_prefix}info", f"must be printable text of at most {MAX_INFO} characters")
    version = document.get("firmware_version")
    if canonical == BOOTED:
        if not isinstance(version, str) or not version.strip() or len(version) > 50 or not version.isprintable():
            raise InvalidInput(f"{field_prefix}firmware_version",
                               "a Booted event needs the firmwareVersion the charger's BootNotification reported")
    elif version is not None:
        raise InvalidInput(f"{field_prefix}firmware_version", "belongs to Booted events only")
    return StatusEvent(canonical, timestamp, info, version)


def derive_job(
    *, target_version: str, granted_at: datetime, retrieve_date: datetime, events: Iterable[StatusEvent],
    transfers: Sequence[Transfer], now: datetime, timeout: timedelta, retries: int = 0,
) -> Job:
    """The job's state: status events and transfers replayed in time order, the last word counting.

    A failed download is final only once the charger has used up its retries
    (1 + retries attempts); until then it is a failure the charger may still mend.
    """
    # A report from before the grant existed is about something else (an older update, a wrong clock).
    ordered = tuple(sorted((event for event in events if event.timestamp >= granted_at - CLOCK_SKEW),
                           key=lambda event: event.timestamp))
    served = [transfer for transfer in transfers if transfer.bytes_sent > 0]
    first_byte = min((transfer.started_at for transfer in served), default=None)
    last_byte = min((transfer.ended_at for transfer in served if transfer.completed), default=None)
    happenings: list[tuple[datetime, JobState | StatusEvent]] = [(event.timestamp, event) for event in ordered]
    if first_byte is not None:
        happenings.append((first_byte, JobState.DOWNLOADING))
    if last_byte is not None:
        happenings.append((last_byte, JobState.DOWNLOADED))
    happenings.sort(key=lambda happening: happening[0])
    state, booted_at, installing_seen = JobState.GRANTED, None, False
    last_activity = max(granted_at, retrieve_date)
    for moment, happening in happenings:
        last_activity = max(last_activity, moment)
        if isinstance(happening, JobState):
            # fwrepo's own view of the download never undoes what the charger said later in the
            # story; a download it served whole after a failed one does move the job on.
            if state in (JobState.GRANTED, JobState.DOWNLOADING) or (
                    state == JobState.DOWNLOAD_FAILED and happening == JobState.DOWNLOADED):
                state = happening
            continue
        if happening.status == BOOTED:
            assert happening.firmware_version is not None
            if _same_version(happening.firmware_version, target_version):
                state, booted_at = JobState.SUCCEEDED, happening.timestamp
            elif installing_seen:
                state = JobState.ROLLED_BACK
            continue
        new_state = _STATE_OF.get(happening.status)
        if new_state is None or state == JobState.SUCCEEDED:
            continue
        installing_seen = installing_seen or new_state == JobState.INSTALLING
        state = new_state
    failed_downloads = sum(event.status == "DownloadFailed" for event in ordered)
    final = state in FINISHED and not (state == JobState.DOWNLOAD_FAILED and failed_downloads <= retries)
    if not final and now > last_activity + timeout:
        state, final = JobState.TIMED_OUT, True
    return Job(state, granted_at, first_byte, last_byte, booted_at, ordered,
               sum(transfer.bytes_sent for transfer in transfers), final, last_activity)


def _same_version(reported: str, target: str) -> bool:
    try:
        return parse_version(reported) == parse_version(target)
    except InvalidInput:
        return reported.strip() == target


@dataclass(frozen=True)
class Recorded:
    accepted: int
    duplicates: int
    grant_ids: list[int]


class UpdateJobs:
    """Status events stored once each, and the jobs derived from them."""

    def __init__(self, database: Database, grants: Grants, timeout: timedelta, clock: Clock = utc_now) -> None:
        self.database = database
        self.grants = grants
        self.timeout = timeout
        self.clock = clock

    def record(self, grant_id: int, document: Mapping[str, Any]) -> tuple[bool, Job]:
        """Store one event for a grant (NotFound if there is none); whether it was new, and the job now."""
        event = parse_event(document, now=self.clock())
        with self.database.session() as session:
            if session.get(Grant, grant_id) is None:
                raise NotFound(f"no grant with id {grant_id}")
        new = self._insert([(grant_id, event)]) == 1
        return new, self.job(grant_id)

    def record_many(self, documents: Sequence[Any]) -> Recorded:
        """Store up to MAX_EVENTS events keyed by grant_id or request_id (the same number); all or nothing."""
        if len(documents) > MAX_EVENTS:
            raise InvalidInput("events", f"at most {MAX_EVENTS} per request, got {len(documents)}")
        now = self.clock()
        keyed: list[tuple[int, StatusEvent]] = []
        for index, document in enumerate(documents):
            prefix = f"events[{index}]."
            event = parse_event(document, now=now, field_prefix=prefix)
            keyed.append((_grant_key(document, prefix), event))
        wanted = {grant_id for grant_id, _ in keyed}
        with self.database.session() as session:
            known = set(session.exec(select(Grant.id).where(col(Grant.id).in_(wanted))).all())
        for index, (grant_id, _) in enumerate(keyed):
            if grant_id not in known:
                raise InvalidInput(f"events[{index}].grant_id", f"no grant with id {grant_id}")
        accepted = self._insert(keyed)
        return Recorded(accepted, len(keyed) - accepted, sorted(wanted))

    def _insert(self, keyed: Sequence[tuple[int, StatusEvent]]) -> int:
        if not keyed:
            return 0
        received = self.clock()
        rows = [
            {"grant_id": grant_id, "status": event.status, "timestamp": event.timestamp, "info": event.info,
             "firmware_version": event.firmware_version, "received_at": received}
            for grant_id, event in keyed
        ]
        with self.database.session() as session:
            dialect = session.get_bind().dialect.name
            insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
            # Duplicates (the same grant, status and time) are dropped by the database, not by a read first.
            statement = insert(GrantEvent).on_conflict_do_nothing().returning(GrantEvent.id)
            return len(session.execute(statement, rows).all())

    def job(self, grant_id: int) -> Job:
        jobs = self.jobs([grant_id])
        if grant_id not in jobs:
            raise NotFound(f"no grant with id {grant_id}")
        return jobs[grant_id]

    def jobs(self, grant_ids: Sequence[int]) -> dict[int, Job]:
        """The jobs of these grants (those that exist), read in a few queries however many there are."""
        self.grants.flush()
        grants: list[Grant] = []
        events: dict[int, list[StatusEvent]] = {}
        transfers: dict[int, list[Transfer]] = {}
        with self.database.session() as session:
            for start in range(0, len(grant_ids), QUERY_CHUNK):
                chunk = grant_ids[start : start + QUERY_CHUNK]
                grants += session.exec(select(Grant).where(col(Grant.id).in_(chunk))).all()
                # In arrival order, so that events of the same instant replay the same way every time.
                for row in session.exec(select(GrantEvent).where(col(GrantEvent.grant_id).in_(chunk))
                                        .order_by(col(GrantEvent.id))).all():
                    events.setdefault(row.grant_id, []).append(
                        StatusEvent(row.status, row.timestamp, row.info, row.firmware_version))
                served = select(DownloadRecord).where(col(DownloadRecord.grant_id).in_(chunk),
                                                      col(DownloadRecord.refusal).is_(None))
                for record in session.exec(served).all():
                    assert record.grant_id is not None
                    transfers.setdefault(record.grant_id, []).append(Transfer(
                        record.started_at, record.started_at + timedelta(milliseconds=record.duration_ms),
                        record.bytes_sent, record.completed))
        versions = {firmware_id: self.grants.catalog.get(firmware_id).version
                    for firmware_id in {grant.firmware_id for grant in grants}}
        now = self.clock()
        return {
            grant.id: derive_job(
                target_version=versions[grant.firmware_id], granted_at=grant.created_at,
                retrieve_date=grant.retrieve_date, events=events.get(grant.id, ()),
                transfers=transfers.get(grant.id, ()), now=now, timeout=self.timeout, retries=grant.retries,
            )
            for grant in grants if grant.id is not None
        }


def _grant_key(document: Mapping[str, Any], prefix: str) -> int:
    grant_id, request_id = document.get("grant_id"), document.get("request_id")
    if grant_id is not None and request_id is not None and grant_id != request_id:
        raise InvalidInput(f"{prefix}request_id", "differs from grant_id; they are the same number, give one")
    key = grant_id if grant_id is not None else request_id
    if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= MAX_GRANT_ID:
        raise InvalidInput(f"{prefix}grant_id", "each event needs grant_id or request_id, a grant number")
    return key
