"""Grants: one charger's right to fetch one firmware, what the CSMS puts into OCPP ``location``."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from sqlalchemy import insert, update
from sqlmodel import Session, col, func, select

from repo_service.db.models import DownloadRecord, Grant
from repo_service.db.session import Database
from repo_service.domain.audit import Act, Audit
from repo_service.domain.catalog import Catalog, FirmwareRecord, Status
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.documents import refuse_unknown, required_string
from repo_service.domain.ftp_logins import MODES, FtpLogin, FtpsEndpoint, digest
from repo_service.domain.tokens import InvalidToken, TokenSigner
from repo_service.errors import Conflict, FwrepoError, InvalidInput, NotFound

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

MAX_BATCH = 10_000
# Grant ids are OCPP requestIds, and a 32-bit integer column.
MAX_GRANT_ID = 2**31 - 1
MAX_LOCATION = 255
# After the charger's last retry it may still be mid-download; one hour covers a slow cellular link.
RETRY_PLAN_MARGIN = timedelta(hours=1)
DEFAULT_LIFETIME = timedelta(hours=24)
DEFAULT_RETRIES = 3
DEFAULT_RETRY_INTERVAL = 600
# How long one node trusts what it read about a grant: the bound on how late a revocation bites.
STATUS_CACHE_SECONDS = 2.0
# Forged-token refusals recorded one by one per flush (about a second); the rest are counted in the log.
MAX_FORGED_RECORDS_PER_FLUSH = 100
# Download records reach the database at most this late (and at shutdown).
FLUSH_SECONDS = 1.0
PROTOCOLS = ("https", "ftps")


def _shortened(name: str, room: int) -> str:
    """name cut to room characters, keeping its extension; a placeholder when nothing is left."""
    if len(name) > room:
        stem, dot, extension = name.rpartition(".")
        keep = room - len(dot + extension)
        name = stem[:keep] + dot + extension if stem and keep > 0 else name[:room]
    return name or "firmware.bin"


def _audit_act(attempt: DownloadAttempt) -> Act:
    who = f"charger {attempt.charger_id}@{attempt.client_address}" if attempt.charger_id else \
        f"anonymous@{attempt.client_address}"
    subject = f"grant {attempt.grant_id}" if attempt.grant_id is not None else "no grant"
    if attempt.refusal is not None:
        return Act(who, "refusal", subject, {"protocol": attempt.protocol, "reason": attempt.refusal.value})
    return Act(who, "download", subject, {"protocol": attempt.protocol, "bytes": attempt.bytes_sent,
                                         "completed": attempt.completed, "range_start": attempt.range_start})


class _Recent(Generic[K, V]):
    """What was read from the database, trusted for a few seconds; bounded so that it cannot grow without end."""

    def __init__(self, seconds: float, limit: int = 100_000) -> None:
        self.seconds = seconds
        self.limit = limit
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None or time.monotonic() - item[0] >= self.seconds:
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        now = time.monotonic()
        # Kept in the order they were put: what expired is at the front and leaves at once,
        # so the cache holds a few seconds of lookups, not everything up to the limit.
        self._items.pop(key, None)
        self._items[key] = (now, value)
        while self._items:
            oldest = next(iter(self._items))
            if now - self._items[oldest][0] < self.seconds and len(self._items) <= self.limit:
                break
            del self._items[oldest]

    def forget(self, key: K) -> None:
        self._items.pop(key, None)


class Refusal(StrEnum):
    FORGED = "forged"
    EXPIRED = "expired"
    REVOKED = "revoked"
    YANKED = "yanked"
    USED_UP = "used_up"
    UNSIGNED = "unsigned"
    BANNED = "banned"  # an FTPS address after repeated failed logins


class DownloadRefused(FwrepoError):
    """A token that does not open the download. The reason is for the audit, never for the client."""

    def __init__(self, reason: Refusal, grant_id: int | None = None, charger_id: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.grant_id = grant_id
        self.charger_id = charger_id


@dataclass(frozen=True)
class GrantRequest:
    firmware_id: str
    charger_ids: tuple[str, ...]
    protocol: str
    retrieve_date: datetime
    expires_at: datetime
    retries: int
    retry_interval: int
    max_downloads: int | None
    install_date: datetime | None
    ftps_mode: str | None = None


@dataclass(frozen=True)
class GrantRecord:
    id: int
    firmware_id: str
    charger_id: str
    protocol: str
    location: str
    created_at: datetime
    retrieve_date: datetime
    expires_at: datetime
    retries: int
    retry_interval: int
    max_downloads: int | None
    downloads_completed: int
    revoked_at: datetime | None
    revoke_reason: str | None
    install_date: datetime | None = None


@dataclass(frozen=True)
class DownloadAttempt:
    grant_id: int | None
    charger_id: str | None
    client_address: str
    protocol: str
    range_start: int | None
    range_end: int | None
    bytes_sent: int
    completed: bool
    refusal: Refusal | None
    started_at: datetime
    duration_ms: int


@dataclass(frozen=True)
class Permit:
    """What a valid token opens: this grant's firmware, now."""

    grant_id: int
    charger_id: str
    firmware: FirmwareRecord


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _integer(document: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = document.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(name, f"must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput(name, f"must be between {low} and {high}, got {value}")
    return value


def _moment(document: Mapping[str, Any], name: str) -> datetime | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(name, "must be an ISO 8601 date-time such as 2026-12-01T02:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(name, f"{value!r} is not an ISO 8601 date-time such as 2026-12-01T02:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidInput(name, "needs a time zone (end it with Z for UTC)")
    try:
        # OCPP payloads are written in UTC with a Z: convert, never relabel.
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(name, f"{value!r} is out of range") from None


def charger_id_field(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string")
    if len(value) > 64 or not (value.isascii() and value.isprintable()) or value != value.strip():
        raise InvalidInput(field, f"{value[:80]!r} must be 1-64 printable ASCII characters without surrounding spaces")
    return value


def parse_grant_request(
    document: Mapping[str, Any], *, batch: bool, now: datetime, max_lifetime: timedelta
) -> GrantRequest:
    """Check a grant request; raise InvalidInput naming the first bad field."""
    known = {"firmware_id", "protocol", "ftps_mode", "expires_in", "retrieve_date", "install_date", "retries",
             "retry_interval", "max_downloads", "charger_ids" if batch else "charger_id"}
    refuse_unknown(document, known)
    firmware_id = required_string(document, "firmware_id")
    if batch:
        raw = document.get("charger_ids")
        if not isinstance(raw, list) or not raw:
            raise InvalidInput("charger_ids", "must be a non-empty list of charger ids")
        if len(raw) > MAX_BATCH:
            raise InvalidInput("charger_ids", f"at most {MAX_BATCH} per batch, got {len(raw)}")
        charger_ids = tuple(charger_id_field(value, "charger_ids") for value in raw)
        if len(set(charger_ids)) != len(charger_ids):
            seen: set[str] = set()
            duplicate = next(value for value in charger_ids if value in seen or seen.add(value))  # type: ignore[func-returns-value]
            raise InvalidInput("charger_ids", f"{duplicate!r} appears more than once")
    else:
        charger_ids = (charger_id_field(document.get("charger_id"), "charger_id"),)
    protocol = document.get("protocol", "https")
    if protocol not in PROTOCOLS:
        raise InvalidInput("protocol", f"must be one of {', '.join(PROTOCOLS)}")
    ftps_mode = document.get("ftps_mode")
    if ftps_mode is not None:
        if protocol != "ftps":
            raise InvalidInput("ftps_mode", 'applies only to protocol "ftps"')
        if ftps_mode not in MODES:
            raise InvalidInput("ftps_mode", f"must be one of {', '.join(MODES)}")
    retrieve_date = _moment(document, "retrieve_date") or now
    if retrieve_date < now - timedelta(hours=1):
        raise InvalidInput("retrieve_date", f"{iso(retrieve_date)} is more than an hour in the past")
    retries = _integer(document, "retries", DEFAULT_RETRIES, 0, 100)
    retry_interval = _integer(document, "retry_interval", DEFAULT_RETRY_INTERVAL, 0, 7 * 86400)
    assert retries is not None and retry_interval is not None
    try:
        plan_end = retrieve_date + timedelta(seconds=retries * retry_interval) + RETRY_PLAN_MARGIN
    except OverflowError:
        raise InvalidInput("retrieve_date", f"{iso(retrieve_date)} is too far in the future") from None
    expires_in = _integer(document, "expires_in", None, 60, int(max_lifetime.total_seconds()))
    if expires_in is None:
        expires_at = max(now + DEFAULT_LIFETIME, plan_end)
    else:
        expires_at = now + timedelta(seconds=expires_in)
        if expires_at < plan_end:
            raise InvalidInput(
                "expires_in",
                f"the grant would expire at {iso(expires_at)}, before the charger's retry plan ends at {iso(plan_end)} "
                f"(retrieve_date + retries × retry_interval + {int(RETRY_PLAN_MARGIN.total_seconds())} s margin)",
            )
    if expires_at - now > max_lifetime:
        raise InvalidInput(
            "retrieve_date", f"the grant would live until {iso(expires_at)}, longer than the {max_lifetime} allowed"
        )
    install_date = _moment(document, "install_date")
    if install_date is not None and install_date < retrieve_date:
        raise InvalidInput("install_date", f"{iso(install_date)} is before retrieve_date {iso(retrieve_date)}")
    if install_date is not None and install_date - now > max_lifetime:
        raise InvalidInput("install_date", f"{iso(install_date)} is further ahead than the {max_lifetime} a grant may live")
    return GrantRequest(
        firmware_id=firmware_id,
        charger_ids=charger_ids,
        protocol=protocol,
        retrieve_date=retrieve_date,
        expires_at=expires_at,
        retries=retries,
        retry_interval=retry_interval,
        max_downloads=_integer(document, "max_downloads", None, 1, 1000),
        install_date=install_date,
        ftps_mode=ftps_mode,
    )


def ocpp_payloads(grant: GrantRecord, firmware: FirmwareRecord) -> dict[str, Any]:
    """The three requests a CSMS sends, ready as JSON (OCPP 1.6, 1.6 security extension, 2.0.1)."""
    signed_firmware: dict[str, Any] = {
        "location": grant.location,
        "retrieveDateTime": iso(grant.retrieve_date),
        "signingCertificate": firmware.signing_certificate,
        "signature": firmware.signature,
    }
    if grant.install_date is not None:
        signed_firmware["installDateTime"] = iso(grant.install_date)
    retry_plan = {"retries": grant.retries, "retryInterval": grant.retry_interval}
    return {
        "update_firmware": {"location": grant.location, "retrieveDate": iso(grant.retrieve_date), **retry_plan},
        "signed_update_firmware": {"requestId": grant.id, **retry_plan, "firmware": signed_firmware},
        "update_firmware_v201": {"requestId": grant.id, **retry_plan, "firmware": dict(signed_firmware)},
    }


class GrantObserver(Protocol):
    """Told of grants made and transfers recorded (metrics); must be quick and must not raise."""

    def issued(self, protocol: str, count: int) -> None: ...

    def recorded(self, attempt: DownloadAttempt) -> None: ...


class Grants:
    def __init__(self, database: Database, catalog: Catalog, tokens: TokenSigner, public_url: str,
                 max_lifetime: timedelta, clock: Clock = utc_now, ftps: FtpsEndpoint | None = None) -> None:
        self.database = database
        self.ftps = ftps
        self.catalog = catalog
        self.tokens = tokens
        self.public_url = public_url.rstrip("/")
        self.max_lifetime = max_lifetime
        self.clock = clock
        self._grant_cache: _Recent[int, Grant] = _Recent(STATUS_CACHE_SECONDS)
        self._firmware_cache: _Recent[str, FirmwareRecord] = _Recent(STATUS_CACHE_SECONDS)
        self._forged_dropped = 0
        self._forged_pending = 0
        self._pending: list[DownloadAttempt] = []
        self._pending_lock = threading.Lock()
        self.observers: list[GrantObserver] = []
        # Set by the services: download attempts reach the audit trail with the batch they are written in.
        self.audit: Audit | None = None

    # -- issuing ----------------------------------------------------------------------------

    def parse(self, document: Mapping[str, Any], *, batch: bool) -> GrantRequest:
        request = parse_grant_request(document, batch=batch, now=self.clock(), max_lifetime=self.max_lifetime)
        if request.protocol == "ftps" and self.ftps is None:
            raise InvalidInput("protocol", "ftps is switched off on this server (FWREPO_FTPS=false)")
        return request

    def issue(self, request: GrantRequest, created_by: str | None) -> tuple[FirmwareRecord, list[GrantRecord]]:
        firmware = self.grantable(request.firmware_id)
        logins = [FtpLogin.new() for _ in request.charger_ids] if request.protocol == "ftps" else []
        with self.database.session() as session:
            ids = self.insert(
                session, firmware, [(charger_id, request.retrieve_date, request.expires_at)
                                    for charger_id in request.charger_ids],
                protocol=request.protocol, retries=request.retries, retry_interval=request.retry_interval,
                max_downloads=request.max_downloads, install_date=request.install_date, created_by=created_by,
                logins=logins,
            )
        if logins:
            locations = self._ftps_locations(logins, firmware, request.ftps_mode)
        else:
            locations = [self.location(grant_id, request.expires_at, firmware.filename) for grant_id in ids]
        template = GrantRecord(
            id=0, firmware_id=firmware.id, charger_id="", protocol=request.protocol, location="",
            created_at=self.clock(), retrieve_date=request.retrieve_date, expires_at=request.expires_at,
            retries=request.retries, retry_interval=request.retry_interval, max_downloads=request.max_downloads,
            downloads_completed=0, revoked_at=None, revoke_reason=None, install_date=request.install_date,
        )
        grants = [
            replace(template, id=grant_id, charger_id=charger_id, location=location)
            for grant_id, charger_id, location in zip(ids, request.charger_ids, locations, strict=True)
        ]
        return firmware, grants

    def insert(
        self, session: Session, firmware: FirmwareRecord, plan: Sequence[tuple[str, datetime, datetime]], *,
        protocol: str, retries: int, retry_interval: int, max_downloads: int | None = None,
        install_date: datetime | None = None, created_by: str | None = None, logins: Sequence[FtpLogin] = (),
    ) -> list[int]:
        """Insert one grant per (charger, retrieve_date, expires_at) in the caller's transaction; their ids.

        An FTPS grant inserted without a login cannot be logged into until deliver() gives it one.
        """
        if not plan:
            return []  # a campaign wave that adds nobody (3 chargers in waves of 1 %, 2 %, 100 %)
        now = self.clock()
        rows = [
            {
                "firmware_id": firmware.id, "charger_id": charger_id, "protocol": protocol, "created_at": now,
                "retrieve_date": retrieve_date, "install_date": install_date, "expires_at": expires_at,
                "retries": retries, "retry_interval": retry_interval, "max_downloads": max_downloads,
                "downloads_completed": 0, "created_by": created_by,
                "login_hash": logins[index].user_hash if logins else None,
                "password_hash": logins[index].password_hash if logins else None,
            }
            for index, (charger_id, retrieve_date, expires_at) in enumerate(plan)
        ]
        # One statement for the whole batch: SQLAlchemy sends it as multi-row INSERT ... RETURNING.
        ids = list(session.execute(insert(Grant).returning(Grant.id, sort_by_parameter_order=True), rows).scalars())
        for observer in self.observers:
            observer.issued(protocol, len(ids))
        return ids

    def deliver(self, session: Session, rows: Sequence[Grant], firmware: FirmwareRecord,
                ftps_mode: str | None = None) -> list[GrantRecord]:
        """Grants made earlier (a campaign's), with their locations; an FTPS grant gets a fresh login now."""
        records = [self._record(row, firmware.filename) for row in rows]
        ftps_rows = [index for index, row in enumerate(rows) if row.protocol == "ftps"]
        if not ftps_rows:
            return records
        logins = [FtpLogin.new() for _ in ftps_rows]
        for index, login in zip(ftps_rows, logins, strict=True):
            session.execute(update(Grant).where(col(Grant.id) == rows[index].id)
                            .values(login_hash=login.user_hash, password_hash=login.password_hash))
        for index, location in zip(ftps_rows, self._ftps_locations(logins, firmware, ftps_mode), strict=True):
            records[index] = replace(records[index], location=location)
        return records

    def _ftps_locations(self, logins: Sequence[FtpLogin], firmware: FirmwareRecord, mode: str | None) -> list[str]:
        if self.ftps is None:
            raise InvalidInput("protocol", "ftps is switched off on this server (FWREPO_FTPS=false)")
        name = self.ftp_filename(firmware.filename)
        return [self.ftps.prefix(mode or self.ftps.default_mode, login.user, login.password) + name
                for login in logins]

    def grantable(self, firmware_id: str) -> FirmwareRecord:
        try:
            firmware = self.catalog.get(firmware_id)
        except NotFound:
            raise InvalidInput("firmware_id", f"no firmware with id {firmware_id}") from None
        if firmware.status != Status.PUBLISHED:
            raise Conflict(f"firmware {firmware_id} is {firmware.status.value}: only published firmware can be granted")
        if firmware.signature is None:
            raise Conflict(f"firmware {firmware_id} has no valid signature: re-sign it (fwrepo keys resign)")
        return firmware

    def location(self, grant_id: int, expires_at: datetime, filename: str) -> str:
        """https://HOST/d/TOKEN/FILENAME, at most 255 printable ASCII characters."""
        prefix = f"{self.public_url}/d/{self.tokens.issue(grant_id, expires_at)}/"
        return prefix + _shortened(quote(filename, safe=""), MAX_LOCATION - len(prefix))

    def ftp_filename(self, filename: str) -> str:
        """The name an FTPS grant's file has in its location and in the server's one-file view."""
        assert self.ftps is not None
        return _shortened(quote(filename, safe=""), MAX_LOCATION - self.ftps.longest_prefix)

    # -- reading and revoking ---------------------------------------------------------------

    def get(self, grant_id: int) -> tuple[GrantRecord, list[DownloadAttempt]]:
        self.flush()
        with self.database.session() as session:
            row = session.get(Grant, grant_id)
            if row is None:
                raise NotFound(f"no grant with id {grant_id}")
            downloads = session.exec(
                select(DownloadRecord).where(DownloadRecord.grant_id == grant_id).order_by(col(DownloadRecord.id))
            ).all()
        firmware = self.catalog.get(row.firmware_id)
        attempts = [
            DownloadAttempt(
                grant_id=download.grant_id, charger_id=download.charger_id, client_address=download.client_address,
                protocol=download.protocol, range_start=download.range_start, range_end=download.range_end,
                bytes_sent=download.bytes_sent, completed=download.completed,
                refusal=Refusal(download.refusal) if download.refusal else None,
                started_at=download.started_at, duration_ms=download.duration_ms,
            )
            for download in downloads
        ]
        return self._record(row, firmware.filename), attempts

    def _record(self, row: Grant, filename: str) -> GrantRecord:
        assert row.id is not None
        return GrantRecord(
            id=row.id, firmware_id=row.firmware_id, charger_id=row.charger_id, protocol=row.protocol,
            location=self._stored_location(row, filename), created_at=row.created_at,
            retrieve_date=row.retrieve_date, expires_at=row.expires_at, retries=row.retries,
            retry_interval=row.retry_interval, max_downloads=row.max_downloads,
            downloads_completed=row.downloads_completed, revoked_at=row.revoked_at, revoke_reason=row.revoke_reason,
            install_date=row.install_date,
        )

    def _stored_location(self, row: Grant, filename: str) -> str:
        if row.protocol != "ftps":
            return self.location(row.id or 0, row.expires_at, filename)
        if self.ftps is None:
            return ""
        # Only hashes of the login are kept: the full location is shown once, when the grant is issued.
        prefix = self.ftps.prefix(self.ftps.default_mode, "USER", "PASSWORD")
        return prefix + self.ftp_filename(filename)

    def revoke(self, grant_id: int, reason: str = "revoked by the CSMS") -> None:
        with self.database.session(exclusive=True) as session:
            row = session.get(Grant, grant_id)
            if row is None:
                raise NotFound(f"no grant with id {grant_id}")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                row.revoke_reason = reason
                session.add(row)
        self._grant_cache.forget(grant_id)

    # -- downloads ---------------------------------------------------------------------------

    def authorize(self, token: str) -> Permit:
        """Open a download: the token first (no database), then the grant's state (cached briefly)."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            raise DownloadRefused(Refusal.FORGED) from None
        if claims.expires_at <= self.clock():
            raise DownloadRefused(Refusal.EXPIRED, claims.grant_id)
        return self.permit(claims.grant_id)

    def login(self, user: str, password: str) -> Permit:
        """Open an FTPS session: the one-time login of an FTPS grant, then the grant's state."""
        with self.database.session() as session:
            row = session.exec(select(Grant).where(col(Grant.login_hash) == digest(user))).first()
        if row is None or row.password_hash is None or not hmac.compare_digest(row.password_hash, digest(password)):
            raise DownloadRefused(Refusal.FORGED)
        assert row.id is not None
        return self.permit(row.id)

    def permit(self, grant_id: int) -> Permit:
        """What the grant opens now; DownloadRefused, whose reason only the audit sees, when nothing."""
        state = self._state(grant_id)
        if state is None:
            raise DownloadRefused(Refusal.FORGED, grant_id)
        grant, firmware = state
        if grant.revoked_at is not None:
            raise DownloadRefused(Refusal.REVOKED, grant_id, grant.charger_id)
        if grant.expires_at <= self.clock():
            raise DownloadRefused(Refusal.EXPIRED, grant_id, grant.charger_id)
        if grant.max_downloads is not None and grant.downloads_completed >= grant.max_downloads:
            raise DownloadRefused(Refusal.USED_UP, grant_id, grant.charger_id)
        if firmware.status == Status.YANKED:
            raise DownloadRefused(Refusal.YANKED, grant_id, grant.charger_id)
        if firmware.signature is None:
            raise DownloadRefused(Refusal.UNSIGNED, grant_id, grant.charger_id)
        return Permit(grant_id=grant_id, charger_id=grant.charger_id, firmware=firmware)

    def _state(self, grant_id: int) -> tuple[Grant, FirmwareRecord] | None:
        """The grant and its firmware as the database has them, at most STATUS_CACHE_SECONDS old.

        A charger fetching an image as thousands of small ranges costs one
        database read per grant every few seconds, not one per request; a
        campaign's grants share one cached firmware record.
        """
        row = self._grant_cache.get(grant_id)
        if row is None:
            with self.database.session() as session:
                row = session.get(Grant, grant_id)
            if row is None:
                return None
            self._grant_cache.put(grant_id, row)
        firmware = self._firmware_cache.get(row.firmware_id)
        if firmware is None:
            firmware = self.catalog.get(row.firmware_id)
            self._firmware_cache.put(row.firmware_id, firmware)
        return row, firmware

    def record(self, attempt: DownloadAttempt) -> None:
        """Queue an attempt; `flush` writes the queue in one transaction (no write per request)."""
        for observer in self.observers:
            observer.recorded(attempt)
        with self._pending_lock:
            if attempt.refusal is Refusal.FORGED and self._forged_pending >= MAX_FORGED_RECORDS_PER_FLUSH:
                # Someone guessing tokens must not turn each guess into a database row.
                self._forged_dropped += 1
                return
            self._forged_pending += attempt.refusal is Refusal.FORGED
            self._pending.append(attempt)

    def failed_logins(self, address: str, seconds: float) -> int:
        """Wrong FTPS logins from an address in the last seconds, as every node has recorded them."""
        since = self.clock() - timedelta(seconds=seconds)
        with self.database.session() as session:
            return session.exec(select(func.count()).select_from(DownloadRecord).where(
                DownloadRecord.client_address == address[:64], DownloadRecord.protocol == "ftps",
                DownloadRecord.refusal == Refusal.FORGED.value, col(DownloadRecord.started_at) >= since)).one()

    @contextmanager
    def recording(self) -> Iterator[None]:
        """While the block runs, queued download records reach the database every FLUSH_SECONDS, and at its end."""
        stopped = threading.Event()

        def flush_until_stopped() -> None:
            while not stopped.wait(FLUSH_SECONDS):
                try:
                    self.flush()
                except Exception:  # a database hiccup must not end the recording; the next round retries
                    log.exception("could not write download records; will retry")

        flusher = threading.Thread(target=flush_until_stopped, name="download-records", daemon=True)
        flusher.start()
        try:
            yield
        finally:
            stopped.set()
            flusher.join()
            self.flush()

    def flush(self) -> int:
        with self._pending_lock:
            attempts, self._pending = self._pending, []
            dropped, self._forged_dropped, self._forged_pending = self._forged_dropped, 0, 0
        if dropped:
            log.warning("%d more forged download tokens were refused and not recorded one by one", dropped)
        if not attempts:
            return 0
        try:
            self._write(attempts)
        except Exception:
            # Keep them for the next round rather than lose records and counts.
            with self._pending_lock:
                self._pending[:0] = attempts
            raise
        return len(attempts)

    def _write(self, attempts: list[DownloadAttempt]) -> None:
        completed: dict[int, int] = {}
        for attempt in attempts:
            if attempt.completed and attempt.grant_id is not None:
                completed[attempt.grant_id] = completed.get(attempt.grant_id, 0) + 1
        with self.database.session() as session:
            session.execute(
                insert(DownloadRecord),
                [
                    {
                        "grant_id": attempt.grant_id, "charger_id": attempt.charger_id,
                        "client_address": attempt.client_address[:64], "protocol": attempt.protocol,
                        "range_start": attempt.range_start, "range_end": attempt.range_end,
                        "bytes_sent": attempt.bytes_sent, "completed": attempt.completed,
                        "refusal": attempt.refusal.value if attempt.refusal else None,
                        "started_at": attempt.started_at, "duration_ms": attempt.duration_ms,
                    }
                    for attempt in attempts
                ],
            )
            for grant_id, count in completed.items():
                session.execute(
                    update(Grant).where(col(Grant.id) == grant_id).values(downloads_completed=Grant.downloads_completed + count)
                )
            if self.audit is not None:
                # In the same transaction: a record and its audit event are written together or not at all.
                self.audit.append([_audit_act(attempt) for attempt in attempts], session)
        for grant_id in completed:
            self._grant_cache.forget(grant_id)
