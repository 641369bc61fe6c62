"""Update jobs: what became of a grant, from the charger's status events and fwrepo's own download records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Row
from sqlmodel import Session, col, select

from repo_service.db.models import CampaignCharger, DownloadRecord, Grant, GrantEvent
from repo_service.db.session import Database, insert_or_ignore
from repo_service.domain.audit import Act, Audit, Performer
from repo_service.domain.catalog import Catalog
from repo_service.domain.clock import Clock, parse_moment, rfc3339, utc_now
from repo_service.domain.documents import charger_id as valid_charger_id
from repo_service.domain.documents import refuse_unknown
from repo_service.domain.downloads import Downloads
from repo_service.domain.grants import MAX_GRANT_ID
from repo_service.domain.versions import parse_version
from repo_service.errors import InvalidInput, NotFound

# Every FirmwareStatus of OCPP 1.6 (with the security extension's SignedFirmwareStatus values)
# and FirmwareStatusEnumType of OCPP 2.0.1: the three lists are the same fourteen words.
OCPP_STATUSES = (
    "Downloaded", "DownloadFailed", "Downloading", "DownloadScheduled", "DownloadPaused", "Idle",
    "InstallationFailed", "Installing", "Installed", "InstallRebooting", "InstallScheduled",
    "InstallVerificationFailed", "InvalidSignature", "SignatureVerified",
)
# PublishFirmwareStatusEnumType of OCPP 2.0.1 (and 2.1): a local controller fetching a build to serve it to the
# chargers behind it. The download words are FirmwareStatus's and mean the same for the job; the others are its own.
PUBLISH_STATUSES = (
    "Idle", "DownloadScheduled", "Downloading", "Downloaded", "Published", "DownloadFailed", "DownloadPaused",
    "InvalidChecksum", "ChecksumVerified", "PublishFailed",
)
PUBLISH_NOTIFICATION = "PublishFirmwareStatusNotification"
# An event's notification names the OCPP message it forwards when that is not the charger's own firmware story;
# absent, it is FirmwareStatusNotification (or its security-extension twin), a boot, an answer or a security event.
NOTIFICATIONS = {"FirmwareStatusNotification": OCPP_STATUSES, PUBLISH_NOTIFICATION: PUBLISH_STATUSES}
# Not an OCPP status: the CSMS's word that the charger sent BootNotification with this firmwareVersion.
BOOTED = "Booted"
# The charger's answer to UpdateFirmware (UpdateFirmwareStatusEnumType of 2.0.1; 1.6's empty answer is Accepted),
# and the firmware kinds of SecurityEventNotification: a CSMS may report these as events too.
ANSWERS = ("Accepted", "AcceptedCanceled", "Rejected", "InvalidCertificate", "RevokedCertificate")
SECURITY_EVENTS = ("InvalidFirmwareSignature", "InvalidFirmwareSigningCertificate", "FirmwareUpdated")
# Not an OCPP word: fwrepo's, when it dispatched the request itself and the CSMS never reached the charger.
NOT_CONNECTED = "NotConnected"
EXTRA_STATUSES = (*ANSWERS, *SECURITY_EVENTS, NOT_CONNECTED)
CHARGER_STATUSES = (*OCPP_STATUSES, *EXTRA_STATUSES, BOOTED)
STATUSES = {status.lower(): status for status in (*CHARGER_STATUSES, *PUBLISH_STATUSES)}
# A charger's clock may run ahead of ours by this much; later than that is a mistake, not a report.
CLOCK_SKEW = timedelta(minutes=5)
MAX_INFO = 255  # free text: the techInfo of a security event, a CSMS's note; 1.6 has none
# OCPP 2.1 FirmwareStatusNotification's (and both versions' PublishFirmwareStatusNotification's) StatusInfoType.
MAX_REASON_CODE = 20
MAX_ADDITIONAL_INFO = 1024
STATUS_INFO_FIELDS = ("reason_code", "additional_info")
EVENT_FIELDS = ("status", "timestamp", "info", "status_info", "notification", "firmware_version")
# A bulk event names its grant by either (they are the same number: the grant id is OCPP's requestId).
GRANT_KEYS = ("grant_id", "request_id")
MAX_EVENTS = 10_000
# Grant ids per IN (...) list: well under SQLite's limit of bound parameters.
QUERY_CHUNK = 5_000
# A charger's update history: its newest grants, each read with its events and downloads and derived again.
HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 500


class JobState(StrEnum):
    GRANTED = "granted"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    INSTALLING = "installing"
    SUCCEEDED = "succeeded"
    DOWNLOAD_FAILED = "download_failed"
    INVALID_SIGNATURE = "invalid_signature"
    INSTALLATION_FAILED = "installation_failed"
    REJECTED = "rejected"
    CERTIFICATE_REFUSED = "certificate_refused"
    NOT_CONNECTED = "not_connected"
    INVALID_CHECKSUM = "invalid_checksum"
    PUBLISH_FAILED = "publish_failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"


FAILURES = frozenset({JobState.DOWNLOAD_FAILED, JobState.INVALID_SIGNATURE, JobState.INSTALLATION_FAILED,
                      JobState.ROLLED_BACK, JobState.TIMED_OUT, JobState.REJECTED, JobState.CERTIFICATE_REFUSED,
                      JobState.NOT_CONNECTED, JobState.INVALID_CHECKSUM, JobState.PUBLISH_FAILED})
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
    # The charger refused the request (or, dispatched by fwrepo, never got it): nothing more will happen.
    "Rejected": JobState.REJECTED,
    "InvalidCertificate": JobState.CERTIFICATE_REFUSED, "RevokedCertificate": JobState.CERTIFICATE_REFUSED,
    "NotConnected": JobState.NOT_CONNECTED,
    "InvalidFirmwareSignature": JobState.INVALID_SIGNATURE,
    "InvalidFirmwareSigningCertificate": JobState.INVALID_SIGNATURE,
    # A local controller's PublishFirmware: serving the build to its chargers is its success (OCPP 2.0.1 L03).
    "ChecksumVerified": JobState.DOWNLOADED, "Published": JobState.SUCCEEDED,
    "InvalidChecksum": JobState.INVALID_CHECKSUM, "PublishFailed": JobState.PUBLISH_FAILED,
}


@dataclass(frozen=True)
class StatusInfo:
    """OCPP's StatusInfoType: a predefined reason code (case-insensitive in OCPP) and free text."""

    reason_code: str
    additional_info: str | None = None


@dataclass(frozen=True)
class StatusEvent:
    status: str
    timestamp: datetime
    info: str | None = None
    firmware_version: str | None = None
    status_info: StatusInfo | None = None
    # PUBLISH_NOTIFICATION for a local controller's publish statuses; None for the charger's own firmware.
    notification: str | None = None


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
    # When the clock alone would change the job (it times out, or a failed download becomes final), if nothing
    # more is heard: a campaign derives the job again then. None once the job is final.
    due_at: datetime | None = None

    @property
    def download_seconds(self) -> float | None:
        return download_seconds(self.first_byte_at, self.last_byte_at)

    @property
    def completion_seconds(self) -> float | None:
        return completion_seconds(self.state.value, self.granted_at, self.booted_at)


def download_seconds(first_byte_at: datetime | None, last_byte_at: datetime | None) -> float | None:
    """From a job's first byte served to its last; None until both are known."""
    if first_byte_at is None or last_byte_at is None:
        return None
    return (last_byte_at - first_byte_at).total_seconds()


def completion_seconds(state: str | None, granted_at: datetime | None, booted_at: datetime | None) -> float | None:
    """From a job's grant to the boot on the new build, for a job that succeeded; None otherwise."""
    if booted_at is None or granted_at is None or state != JobState.SUCCEEDED:
        return None
    return (booted_at - granted_at).total_seconds()


def parse_event(document: Mapping[str, Any], *, now: datetime, field_prefix: str = "",
                keys: tuple[str, ...] = ()) -> StatusEvent:
    """Check one status event (keys: the fields that name its grant in a bulk request); InvalidInput names the
    field (with its place in a bulk request)."""
    if not isinstance(document, Mapping):
        raise InvalidInput(field_prefix.rstrip(".") or "body", "must be a JSON object")
    refuse_unknown(document, (*EVENT_FIELDS, *keys), field_prefix)
    notification = document.get("notification")
    if "notification" in document and (not isinstance(notification, str) or notification not in NOTIFICATIONS):
        raise InvalidInput(f"{field_prefix}notification", f"must be one of {', '.join(NOTIFICATIONS)}, or absent")
    allowed = NOTIFICATIONS[notification] if notification is not None else CHARGER_STATUSES
    status = document.get("status")
    canonical = STATUSES.get(status.lower()) if isinstance(status, str) else None
    if canonical is None or canonical not in allowed:
        shown = str(status)[:60]
        if notification is not None:
            reason = f"{shown!r} is not a status of {notification}"
        elif canonical is not None:
            reason = f"{shown!r} is a status of {PUBLISH_NOTIFICATION}: send it with that notification"
        else:
            reason = f"{shown!r} is not an OCPP firmware status, answer or firmware security event, nor Booted"
        raise InvalidInput(f"{field_prefix}status", f"{reason}; expected one of {', '.join(allowed)}")
    raw_time = document.get("timestamp")
    if raw_time is None:
        raise InvalidInput(f"{field_prefix}timestamp", "must be an ISO 8601 date-time with a zone, as OCPP sends it")
    timestamp = parse_moment(raw_time, f"{field_prefix}timestamp")
    if timestamp > now + CLOCK_SKEW:
        raise InvalidInput(f"{field_prefix}timestamp", f"{raw_time} is in the future (more than {CLOCK_SKEW} ahead)")
    # Absent is no info; null is refused like any other wrong type (issue 13).
    info = document.get("info")
    if "info" in document and not _printable(info, MAX_INFO):
        raise InvalidInput(f"{field_prefix}info", f"must be printable text of at most {MAX_INFO} characters")
    status_info = _status_info(document, f"{field_prefix}status_info") if "status_info" in document else None
    version = document.get("firmware_version")
    if canonical == BOOTED:
        if not isinstance(version, str) or not version.strip() or len(version) > 50 or not version.isprintable():
            raise InvalidInput(f"{field_prefix}firmware_version",
                               "a Booted event needs the firmwareVersion the charger's BootNotification reported")
    elif "firmware_version" in document:
        raise InvalidInput(f"{field_prefix}firmware_version", "belongs to Booted events only")
    return StatusEvent(canonical, timestamp, info, version, status_info,
                       PUBLISH_NOTIFICATION if notification == PUBLISH_NOTIFICATION else None)


def _status_info(document: Mapping[str, Any], field: str) -> StatusInfo:
    """OCPP's statusInfo in snake_case: {reason_code, additional_info}, within OCPP 2.1's bounds."""
    status_info = document["status_info"]
    if not isinstance(status_info, Mapping):
        raise InvalidInput(field, "must be an object: reason_code and, optionally, additional_info")
    refuse_unknown(status_info, STATUS_INFO_FIELDS, f"{field}.")
    reason_code = status_info.get("reason_code")
    if not _printable(reason_code, MAX_REASON_CODE) or not reason_code:
        raise InvalidInput(f"{field}.reason_code", f"must be printable text of 1 to {MAX_REASON_CODE} characters")
    additional_info = status_info.get("additional_info")
    if "additional_info" in status_info and not _printable(additional_info, MAX_ADDITIONAL_INFO):
        raise InvalidInput(f"{field}.additional_info",
                           f"must be printable text of at most {MAX_ADDITIONAL_INFO} characters")
    return StatusInfo(reason_code, additional_info)


def _printable(value: Any, limit: int) -> bool:
    return isinstance(value, str) and len(value) <= limit and value.isprintable()


# The rules derive_job applies, in the order of a charger's story. tests/test_update_jobs.py generates
# status sequences as the OCPP 1.6, 1.6 security-extension and 2.0.1 flows allow them and checks each rule.
#
# 1. Order. Events are replayed by their timestamps (arrival order breaks ties); an event dated more than
#    CLOCK_SKEW before the grant is about something else and is left out. fwrepo's download records join the
#    story: a download that started moves a job still granted or downloading to downloading, one that served
#    the last byte moves it to downloaded (also after a failed download: the charger's retry got through).
#    They never undo what the charger itself said later.
# 2. Last word. Before a boot has decided, each status sets the state it names (_STATE_OF): a later
#    report supersedes an earlier one, so a charger that retries after a failure moves on. A local
#    controller's publish statuses follow this rule alone: it never boots into the build, Published is its end.
# 3. The boot decides. A Booted event into the target version is success; into any other version after the
#    charger began installing (Installing, InstallRebooting, Installed, ...), a rollback; a reboot before
#    that says nothing about the update, and one after the charger itself named its failure
#    (InvalidSignature, InstallationFailed) keeps that failure. Once a boot has decided, statuses change
#    nothing (an Installed sent after the reboot, duplicates): only a later boot decides again, and after a
#    rollback only a new download (Downloading or DownloadScheduled) starts a new attempt. A charger that
#    booted the target stays succeeded whatever it reports, unless it boots another version afterwards
#    (an A/B system falling back).
# 4. DownloadFailed, in both conventions. Some chargers report it after every attempt, others once after
#    their own 1 + retries attempts. The job is download_failed at once, and final when the charger has
#    reported 1 + retries of them, or when retry_interval + retry_grace has passed since the last one with
#    nothing since (the next attempt of a charger that reports each one would have shown by then). A
#    download fwrepo serves more than CLOCK_SKEW after the report is a new attempt and reopens the job;
#    one closer to it only moves the deadline (it may be the failed attempt, seen through a slow clock).
# 5. Silence. A job that is not final and has heard nothing for the timeout (counted from its last event,
#    download or retrieve date) is timed_out; anything heard later replays the story again.
_REOPENS_AFTER_ROLLBACK = frozenset({"Downloading", "DownloadScheduled"})
_NAMED_FAILURES = frozenset({JobState.INVALID_SIGNATURE, JobState.INSTALLATION_FAILED})


class _Download(StrEnum):
    """fwrepo's own view of a transfer, placed in the story beside the charger's reports."""

    STARTED = "started"
    SERVED_WHOLE = "served_whole"


def derive_job(
    *, target_version: str, granted_at: datetime, retrieve_date: datetime, events: Iterable[StatusEvent],
    transfers: Sequence[Transfer], now: datetime, timeout: timedelta, retries: int = 0, retry_interval: int = 0,
    retry_grace: timedelta = timedelta(0),
) -> Job:
    """The job's state from the charger's status events and fwrepo's transfers (the rules above)."""
    ordered = tuple(sorted((event for event in events if event.timestamp >= granted_at - CLOCK_SKEW),
                           key=lambda event: event.timestamp))
    served = [transfer for transfer in transfers if transfer.bytes_sent > 0]
    first_byte = min((transfer.started_at for transfer in served), default=None)
    last_byte = min((transfer.ended_at for transfer in served if transfer.completed), default=None)
    happenings: list[tuple[datetime, _Download | StatusEvent]] = [(event.timestamp, event) for event in ordered]
    happenings += [(transfer.started_at, _Download.STARTED) for transfer in served]
    happenings += [(transfer.ended_at, _Download.SERVED_WHOLE) for transfer in served if transfer.completed]
    happenings.sort(key=lambda happening: happening[0])
    state, booted_at, installing_seen, boot_decided = JobState.GRANTED, None, False, False
    failed_reports, last_failure, download_since_failure = 0, None, None
    last_activity = max(granted_at, retrieve_date)
    for moment, happening in happenings:
        last_activity = max(last_activity, moment)
        if isinstance(happening, _Download):
            if state in (JobState.GRANTED, JobState.DOWNLOADING):
                state = JobState.DOWNLOADED if happening == _Download.SERVED_WHOLE else JobState.DOWNLOADING
            elif state == JobState.DOWNLOAD_FAILED:
                assert last_failure is not None
                download_since_failure = moment
                if happening == _Download.SERVED_WHOLE:
                    state = JobState.DOWNLOADED
                elif moment > last_failure + CLOCK_SKEW:
                    # A new attempt; one closer to the report may be the failed attempt itself, seen
                    # through a charger's clock that runs behind ours.
                    state = JobState.DOWNLOADING
            continue
        if happening.status == BOOTED:
            assert happening.firmware_version is not None
            if _same_version(happening.firmware_version, target_version):
                state, booted_at, boot_decided = JobState.SUCCEEDED, happening.timestamp, True
            elif (installing_seen or state == JobState.SUCCEEDED) and state not in _NAMED_FAILURES:
                state, boot_decided = JobState.ROLLED_BACK, True
            continue
        if happening.status == "DownloadFailed":
            failed_reports, last_failure, download_since_failure = failed_reports + 1, moment, None
        new_state = _STATE_OF.get(happening.status)
        if new_state is None:
            # Idle (the charger is doing nothing), an accepted request, FirmwareUpdated: the timeline's alone
            continue
        if boot_decided:
            if state != JobState.ROLLED_BACK or happening.status not in _REOPENS_AFTER_ROLLBACK:
                continue
            boot_decided, installing_seen = False, False
        installing_seen = installing_seen or new_state == JobState.INSTALLING
        state = new_state
    due_at = last_activity + timeout
    if state == JobState.DOWNLOAD_FAILED:
        assert last_failure is not None
        next_attempt = last_failure + timedelta(seconds=retry_interval)
        gave_up_at = max(next_attempt, download_since_failure or next_attempt) + retry_grace
        final = failed_reports >= 1 + retries or now >= gave_up_at
        due_at = min(due_at, gave_up_at)
    else:
        final = state in FINISHED
    if not final and now > last_activity + timeout:
        state, final = JobState.TIMED_OUT, True
    return Job(state, granted_at, first_byte, last_byte, booted_at, ordered,
               sum(transfer.bytes_sent for transfer in transfers), final, None if final else due_at)


def _same_version(reported: str, target: str) -> bool:
    try:
        return parse_version(reported) == parse_version(target)
    except InvalidInput:
        return reported.strip() == target


@dataclass(frozen=True)
class ChargerUpdate:
    """One grant a charger was given, with what became of it: a line of the charger's update history."""

    grant_id: int
    firmware_id: str
    # The build's version: what the job's boot is judged against.
    version: str
    protocol: str
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None
    # The campaign that granted it; None for a grant the CSMS asked for itself.
    campaign_id: str | None
    job: Job


@dataclass(frozen=True)
class Recorded:
    accepted: int
    duplicates: int
    grant_ids: list[int]


class UpdateJobs:
    """Status events stored once each, and the jobs derived from them."""

    def __init__(self, database: Database, catalog: Catalog, downloads: Downloads, audit: Audit, timeout: timedelta,
                 retry_grace: timedelta, clock: Clock = utc_now) -> None:
        self.database = database
        self.catalog = catalog
        self.downloads = downloads
        self.audit = audit
        self.timeout = timeout
        self.retry_grace = retry_grace
        self.clock = clock

    def record(self, grant_id: int, document: Mapping[str, Any], by: Performer) -> bool:
        """Store one event for a grant (NotFound if there is none); whether it was new."""
        event = parse_event(document, now=self.clock())
        with self.database.session() as session:
            if session.get(Grant, grant_id) is None:
                raise NotFound(f"no grant with id {grant_id}")
        return self._insert([(grant_id, event)], by) == 1

    def record_many(self, documents: Sequence[Any], by: Performer) -> Recorded:
        """Store up to MAX_EVENTS events keyed by grant_id or request_id (the same number); all or nothing."""
        if len(documents) > MAX_EVENTS:
            raise InvalidInput("events", f"at most {MAX_EVENTS} per request, got {len(documents)}")
        now = self.clock()
        keyed: list[tuple[int, StatusEvent]] = []
        for index, document in enumerate(documents):
            prefix = f"events[{index}]."
            event = parse_event(document, now=now, field_prefix=prefix, keys=GRANT_KEYS)
            keyed.append((_grant_key(document, prefix), event))
        wanted = {grant_id for grant_id, _ in keyed}
        with self.database.session() as session:
            known = set(session.exec(select(Grant.id).where(col(Grant.id).in_(wanted))).all())
        for index, (grant_id, _) in enumerate(keyed):
            if grant_id not in known:
                raise InvalidInput(f"events[{index}].grant_id", f"no grant with id {grant_id}")
        accepted = self._insert(keyed, by)
        return Recorded(accepted, len(keyed) - accepted, sorted(wanted))

    def _insert(self, keyed: Sequence[tuple[int, StatusEvent]], by: Performer) -> int:
        """Store the events not stored before, and audit the security events among them in the same transaction."""
        if not keyed:
            return 0
        received = self.clock()
        rows = [
            {"grant_id": grant_id, "status": event.status, "timestamp": event.timestamp, "info": event.info,
             "firmware_version": event.firmware_version, "received_at": received,
             "reason_code": event.status_info.reason_code if event.status_info else None,
             "additional_info": event.status_info.additional_info if event.status_info else None,
             "notification": event.notification}
            for grant_id, event in keyed
        ]
        with self.database.session() as session:
            # Duplicates (the same grant, status and time) are dropped by the database, not by a read first;
            # what it returns is what was new, so a security event posted twice is audited once.
            statement = insert_or_ignore(session, GrantEvent).returning(
                GrantEvent.grant_id, GrantEvent.status, GrantEvent.timestamp, GrantEvent.info)
            inserted = session.execute(statement, rows).all()
            alarms = [row for row in inserted if row.status in SECURITY_EVENTS]
            if alarms:
                self._audit_security_events(session, alarms, by)
            return len(inserted)

    def _audit_security_events(self, session: Session, alarms: Sequence[Row[Any]], by: Performer) -> None:
        """A charger's firmware security events on the trail, with the charger and build they concern: their grants
        read a chunk at a time, never one query per event (a batch may hold 10,000 events, few of them alarms)."""
        grant_ids = sorted({alarm.grant_id for alarm in alarms})
        grants = {grant.id: grant for start in range(0, len(grant_ids), QUERY_CHUNK)
                  for grant in session.exec(select(Grant).where(
                      col(Grant.id).in_(grant_ids[start : start + QUERY_CHUNK]))).all()}
        self.audit.append([
            Act(by.label, "security_event", f"grant {alarm.grant_id}", {
                "event": alarm.status, "charger": grants[alarm.grant_id].charger_id,
                "firmware": grants[alarm.grant_id].firmware_id, "timestamp": rfc3339(alarm.timestamp),
            } | ({"info": alarm.info} if alarm.info else {}))
            for alarm in alarms
        ], session)

    def job(self, grant_id: int) -> Job:
        jobs = self.jobs([grant_id])
        if grant_id not in jobs:
            raise NotFound(f"no grant with id {grant_id}")
        return jobs[grant_id]

    def history(self, charger_id: str, limit: int = HISTORY_PAGE) -> list[ChargerUpdate]:
        """The charger's newest grants (at most limit), newest first, each with its job as GET
        /api/v1/grants/{id}/job derives it (state, timeline, events); empty for a charger never granted anything.
        Grants are the caller's tenant's alone, as every read's."""
        charger = valid_charger_id(charger_id, "charger_id")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_HISTORY_PAGE}")
        with self.database.session() as session:
            grants = session.exec(select(Grant).where(Grant.charger_id == charger)
                                  .order_by(col(Grant.created_at).desc(), col(Grant.id).desc()).limit(limit)).all()
            ids = [grant.id for grant in grants if grant.id is not None]
            campaigns = dict(session.exec(select(CampaignCharger.grant_id, CampaignCharger.campaign_id).where(
                col(CampaignCharger.grant_id).in_(ids))).all())
        jobs = self.jobs(ids)
        versions = {firmware_id: self.catalog.granted(firmware_id).version
                    for firmware_id in {grant.firmware_id for grant in grants}}
        return [ChargerUpdate(grant.id, grant.firmware_id, versions[grant.firmware_id], grant.protocol,
                              grant.created_at, grant.revoked_at, grant.revoke_reason, campaigns.get(grant.id),
                              jobs[grant.id])
                for grant in grants if grant.id is not None]

    def jobs(self, grant_ids: Sequence[int]) -> dict[int, Job]:
        """The jobs of these grants (those that exist), read in a few queries however many there are."""
        self.downloads.flush()
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
                    status_info = StatusInfo(row.reason_code, row.additional_info) if row.reason_code else None
                    events.setdefault(row.grant_id, []).append(StatusEvent(
                        row.status, row.timestamp, row.info, row.firmware_version, status_info, row.notification))
                served = select(DownloadRecord).where(col(DownloadRecord.grant_id).in_(chunk),
                                                      col(DownloadRecord.refusal).is_(None))
                for record in session.exec(served).all():
                    assert record.grant_id is not None
                    transfers.setdefault(record.grant_id, []).append(Transfer(
                        record.started_at, record.started_at + timedelta(milliseconds=record.duration_ms),
                        record.bytes_sent, record.completed))
        versions = {firmware_id: self.catalog.granted(firmware_id).version
                    for firmware_id in {grant.firmware_id for grant in grants}}
        now = self.clock()
        return {
            grant.id: derive_job(
                target_version=versions[grant.firmware_id], granted_at=grant.created_at,
                retrieve_date=grant.retrieve_date, events=events.get(grant.id, ()),
                transfers=transfers.get(grant.id, ()), now=now, timeout=self.timeout, retries=grant.retries,
                retry_interval=grant.retry_interval, retry_grace=self.retry_grace,
            )
            for grant in grants if grant.id is not None
        }


def _grant_key(document: Mapping[str, Any], prefix: str) -> int:
    given = [name for name in GRANT_KEYS if name in document]
    if not given:
        raise InvalidInput(f"{prefix}grant_id", "each event needs grant_id or request_id, a grant number")
    for name in given:
        key = document[name]
        if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= MAX_GRANT_ID:
            raise InvalidInput(f"{prefix}{name}", f"must be a grant number between 1 and {MAX_GRANT_ID}")
    if len({document[name] for name in given}) > 1:
        raise InvalidInput(f"{prefix}request_id", "differs from grant_id; they are the same number, give one")
    return document[given[0]]
