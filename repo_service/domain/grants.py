"""Grants: one charger's right to fetch one firmware, what the CSMS puts into OCPP ``location``.

Issuing, listing and revoking live here; using a grant (tokens, FTPS logins, transfers) is downloads.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy import func, insert, update
from sqlmodel import Session, col, select

from repo_service.db.models import Grant
from repo_service.db.session import Database
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.catalog import Catalog, FirmwareRecord, Status
from repo_service.domain.clock import Clock, rfc3339, utc_now
from repo_service.domain.documents import (
    binding, charger_id, moment, protocol_and_mode, refuse_unknown, required_string, retry_plan, whole_number,
)
from repo_service.domain.ftp_logins import FtpLogin, FtpsEndpoint
from repo_service.domain.ocpp import LOCATION_LIMITS
from repo_service.domain.quotas import Quotas
from repo_service.domain.revocations import Revocations
from repo_service.domain.tokens import TokenSigner
from repo_service.errors import Conflict, InvalidInput, NotFound, SettingsError

MAX_BATCH = 10_000
# Grant ids are OCPP requestIds, and a 32-bit integer column.
MAX_GRANT_ID = 2**31 - 1
# Locations are cut to fit OCPP 1.6 (our bar for its chargers' buffers) whenever FWREPO_PUBLIC_URL leaves a file
# name room there, else to fit 2.0.1, which also bounds the public URL (settings.py). FTPS logins always fit 1.6.
MAX_LOCATION = LOCATION_LIMITS["1.6"]
MAX_LONG_LOCATION = LOCATION_LIMITS["2.0.1"]
# Enough of a file name for a person to recognise the build and for the charger to see its extension.
MIN_FILENAME = 16
# The longest token: the largest grant number, expiring at the end of the last year a datetime holds.
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
MAX_DOWNLOADS = (1, 1000)
# An FTPS login is one-time: it delivers the image once (resumes included) unless the grant asks for more.
FTPS_DEFAULT_MAX_DOWNLOADS = 1
# After the charger's last retry it may still be mid-download; one hour covers a slow cellular link.
RETRY_PLAN_MARGIN = timedelta(hours=1)
DEFAULT_LIFETIME = timedelta(hours=24)


def _shortened(name: str, room: int) -> str:
    """name cut to room characters, keeping its extension; a placeholder when nothing is left."""
    if len(name) > room:
        stem, dot, extension = name.rpartition(".")
        keep = room - len(dot + extension)
        name = stem[:keep] + dot + extension if stem and keep > 0 else name[:room]
    return name or "firmware.bin"


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
    bind: str | None = None
    # One per charger id: the name its client certificate carries when that is not the id (OCPP: its serial).
    charger_serials: tuple[str | None, ...] = ()


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
    bind: str | None = None
    charger_serial: str | None = None


@dataclass(frozen=True)
class GrantLine:
    """A grant as a listing shows it: never its location."""

    id: int
    charger_id: str
    protocol: str
    created_at: datetime
    expires_at: datetime
    downloads_completed: int
    max_downloads: int | None
    revoked_at: datetime | None


def retry_plan_end(retrieve_date: datetime, retries: int, retry_interval: int) -> datetime:
    """When a charger that starts at retrieve_date and uses every retry may still be downloading."""
    return retrieve_date + timedelta(seconds=retries * retry_interval) + RETRY_PLAN_MARGIN


def default_max_downloads(protocol: str) -> int | None:
    """The complete downloads a grant allows when its request does not say: one for an FTPS login, else no limit."""
    return FTPS_DEFAULT_MAX_DOWNLOADS if protocol == "ftps" else None


def parse_grant_request(
    document: Mapping[str, Any], *, batch: bool, now: datetime, max_lifetime: timedelta
) -> GrantRequest:
    """Check a grant request; raise InvalidInput naming the first bad field."""
    known = {"firmware_id", "protocol", "ftps_mode", "expires_in", "retrieve_date", "install_date", "retries",
             "retry_interval", "max_downloads", "bind", *(("charger_ids", "charger_serials") if batch
                                                          else ("charger_id", "charger_serial"))}
    refuse_unknown(document, known)
    firmware_id = required_string(document, "firmware_id")
    if batch:
        raw = document.get("charger_ids")
        if not isinstance(raw, list) or not raw:
            raise InvalidInput("charger_ids", "must be a non-empty list of charger ids")
        if len(raw) > MAX_BATCH:
            raise InvalidInput("charger_ids", f"at most {MAX_BATCH} per batch, got {len(raw)}")
        charger_ids = tuple(charger_id(value, "charger_ids") for value in raw)
        if len(set(charger_ids)) != len(charger_ids):
            seen: set[str] = set()
            duplicate = next(value for value in charger_ids if value in seen or seen.add(value))  # type: ignore[func-returns-value]
            raise InvalidInput("charger_ids", f"{duplicate!r} appears more than once")
        serials = _serials_by_charger(document, charger_ids)
    else:
        charger_ids = (charger_id(document.get("charger_id"), "charger_id"),)
        serials = (charger_id(document["charger_serial"], "charger_serial") if "charger_serial" in document
                   else None,)
    bind = binding(document, ("charger_serials" if batch else "charger_serial") if any(serials) else None)
    protocol, ftps_mode = protocol_and_mode(document)
    retrieve_date = moment(document, "retrieve_date") or now
    if retrieve_date < now - timedelta(hours=1):
        raise InvalidInput("retrieve_date", f"{rfc3339(retrieve_date)} is more than an hour in the past")
    retries, retry_interval = retry_plan(document)
    try:
        plan_end = retry_plan_end(retrieve_date, retries, retry_interval)
    except OverflowError:
        raise InvalidInput("retrieve_date", f"{rfc3339(retrieve_date)} is too far in the future") from None
    expires_in = whole_number(document, "expires_in", None, (60, int(max_lifetime.total_seconds())))
    if expires_in is None:
        expires_at = max(now + DEFAULT_LIFETIME, plan_end)
    else:
        expires_at = now + timedelta(seconds=expires_in)
        if expires_at < plan_end:
            raise InvalidInput(
                "expires_in",
                f"the grant would expire at {rfc3339(expires_at)}, before the charger's retry plan ends at "
                f"{rfc3339(plan_end)} (retrieve_date + retries × retry_interval + "
                f"{int(RETRY_PLAN_MARGIN.total_seconds())} s margin)",
            )
    if expires_at - now > max_lifetime:
        raise InvalidInput(
            "retrieve_date", f"the grant would live until {rfc3339(expires_at)}, longer than the {max_lifetime} allowed"
        )
    install_date = moment(document, "install_date")
    if install_date is not None and install_date < retrieve_date:
        raise InvalidInput("install_date", f"{rfc3339(install_date)} is before retrieve_date {rfc3339(retrieve_date)}")
    if install_date is not None and install_date - now > max_lifetime:
        raise InvalidInput("install_date",
                           f"{rfc3339(install_date)} is further ahead than the {max_lifetime} a grant may live")
    max_downloads = whole_number(document, "max_downloads", None, MAX_DOWNLOADS)
    return GrantRequest(
        firmware_id=firmware_id,
        charger_ids=charger_ids,
        protocol=protocol,
        retrieve_date=retrieve_date,
        expires_at=expires_at,
        retries=retries,
        retry_interval=retry_interval,
        max_downloads=default_max_downloads(protocol) if max_downloads is None else max_downloads,
        install_date=install_date,
        ftps_mode=ftps_mode,
        bind=bind,
        charger_serials=serials,
    )


def _serials_by_charger(document: Mapping[str, Any], charger_ids: tuple[str, ...]) -> tuple[str | None, ...]:
    """A batch's charger_serials, {charger id: serial}, as one entry per charger id."""
    if "charger_serials" not in document:
        return (None,) * len(charger_ids)
    raw = document["charger_serials"]
    if not isinstance(raw, Mapping):
        raise InvalidInput("charger_serials", "must be an object mapping charger ids to certificate serials")
    unknown = next((key for key in raw if key not in set(charger_ids)), None)
    if unknown is not None:
        raise InvalidInput(f"charger_serials.{unknown[:64]}", "is not one of charger_ids")
    return tuple(charger_id(raw[identity], f"charger_serials.{identity}") if identity in raw else None
                 for identity in charger_ids)


class GrantObserver(Protocol):
    """Told of grants made (metrics); must be quick and must not raise."""

    def issued(self, protocol: str, count: int) -> None: ...


class Grants:
    def __init__(self, database: Database, catalog: Catalog, tokens: TokenSigner, revocations: Revocations,
                 audit: Audit, quotas: Quotas, public_url: str, max_lifetime: timedelta, clock: Clock = utc_now,
                 ftps: FtpsEndpoint | None = None, certificate_binding: bool = False) -> None:
        self.database = database
        self.certificate_binding = certificate_binding
        self.ftps = ftps
        self.catalog = catalog
        self.tokens = tokens
        self.revocations = revocations
        self.audit = audit
        self.quotas = quotas
        self.public_url = public_url.rstrip("/")
        longest_prefix = len(self._prefix(MAX_GRANT_ID, _LATEST))
        # One answer per deployment, not per grant: whether a campaign's 1.6 chargers can be served is known
        # before any of its grants exist.
        # (settings.MAX_PUBLIC_URL leaves a file name room within 2.0.1's limit.)
        self.location_limit = MAX_LOCATION if longest_prefix + MIN_FILENAME <= MAX_LOCATION else MAX_LONG_LOCATION
        if ftps is not None and ftps.longest_prefix + MIN_FILENAME > MAX_LOCATION:
            raise SettingsError("FWREPO_FTPS_PUBLIC_HOST", f"is too long: FTPS locations must stay within "
                                f"{MAX_LOCATION} characters with room for a file name")
        self.max_lifetime = max_lifetime
        self.clock = clock
        self.observers: list[GrantObserver] = []

    # -- issuing ----------------------------------------------------------------------------

    def parse(self, document: Mapping[str, Any], *, batch: bool) -> GrantRequest:
        request = parse_grant_request(document, batch=batch, now=self.clock(), max_lifetime=self.max_lifetime)
        self.require_protocol(request.protocol)
        self.require_binding(request.bind)
        return request

    def require_protocol(self, protocol: str) -> None:
        if protocol == "ftps" and self.ftps is None:
            raise InvalidInput("protocol", "ftps is switched off on this server (FWREPO_FTPS=false)")

    def require_binding(self, bind: str | None) -> None:
        if bind is not None and not self.certificate_binding:
            raise InvalidInput("bind", "this server has no charger CA to check certificates against "
                                       "(set FWREPO_CHARGER_CA)")

    def issue(self, request: GrantRequest, by: Performer) -> tuple[FirmwareRecord, list[GrantRecord]]:
        """Make one grant per charger of the request, audited as one act."""
        firmware = self.grantable(request.firmware_id)
        logins = [FtpLogin.new() for _ in request.charger_ids] if request.protocol == "ftps" else []
        # Exclusive: on SQLite the grants-per-minute count and the insert must not interleave with another issue's.
        with self.database.session(exclusive=True) as session:
            ids = self.insert(
                session, firmware, [(charger_id, request.retrieve_date, request.expires_at)
                                    for charger_id in request.charger_ids],
                protocol=request.protocol, retries=request.retries, retry_interval=request.retry_interval,
                max_downloads=request.max_downloads, install_date=request.install_date, created_by=by.client_id,
                logins=logins, bind=request.bind, serials=request.charger_serials,
            )
            subject = f"grant {ids[0]}" if len(ids) == 1 else f"grants {ids[0]}-{ids[-1]}"
            detail: dict[str, Any] = {"firmware": firmware.id, "protocol": request.protocol}
            detail |= {"charger": request.charger_ids[0]} if len(ids) == 1 else {"count": len(ids)}
            detail |= {"bind": request.bind} if request.bind else {}
            self.audit.record(by, "grant", subject, session, **detail)
        if logins:
            locations = self._ftps_locations(logins, firmware, request.ftps_mode)
        else:
            locations = [self.location(grant_id, request.expires_at, firmware.filename) for grant_id in ids]
        template = GrantRecord(
            id=0, firmware_id=firmware.id, charger_id="", protocol=request.protocol, location="",
            created_at=self.clock(), retrieve_date=request.retrieve_date, expires_at=request.expires_at,
            retries=request.retries, retry_interval=request.retry_interval, max_downloads=request.max_downloads,
            downloads_completed=0, revoked_at=None, revoke_reason=None, install_date=request.install_date,
            bind=request.bind,
        )
        grants = [
            replace(template, id=grant_id, charger_id=charger_id, location=location, charger_serial=serial)
            for grant_id, charger_id, location, serial in zip(ids, request.charger_ids, locations,
                                                              request.charger_serials, strict=True)
        ]
        return firmware, grants

    def insert(
        self, session: Session, firmware: FirmwareRecord, plan: Sequence[tuple[str, datetime, datetime]], *,
        protocol: str, retries: int, retry_interval: int, max_downloads: int | None = None,
        install_date: datetime | None = None, created_by: str | None = None, logins: Sequence[FtpLogin] = (),
        bind: str | None = None, serials: Sequence[str | None] = (),
    ) -> list[int]:
        """Insert one grant per (charger, retrieve_date, expires_at) in the caller's transaction; their ids.

        RateLimited if they would pass the tenant's grants-per-minute quota (a campaign's wave asks
        quotas.grants_left first and inserts what fits).

        An FTPS grant inserted without a login cannot be logged into until deliver() gives it one.
        max_downloads None is the protocol's default (a campaign's FTPS grants are one-time logins too).
        serials, when given, has one entry per charger: the name its certificate carries if not its id.
        """
        if not plan:
            return []  # a campaign wave that adds nobody (3 chargers in waves of 1 %, 2 %, 100 %)
        self.quotas.hold_grants(session, len(plan))
        now = self.clock()
        if max_downloads is None:
            max_downloads = default_max_downloads(protocol)
        rows = [
            {
                "firmware_id": firmware.id, "charger_id": charger_id, "protocol": protocol, "created_at": now,
                "retrieve_date": retrieve_date, "install_date": install_date, "expires_at": expires_at,
                "retries": retries, "retry_interval": retry_interval, "max_downloads": max_downloads,
                "downloads_completed": 0, "created_by": created_by,
                "login_hash": logins[index].user_hash if logins else None,
                "password_hash": logins[index].password_hash if logins else None,
                "bind": bind, "charger_serial": serials[index] if serials else None,
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
        """https://HOST/d/TOKEN/FILENAME, printable ASCII within location_limit characters."""
        prefix = self._prefix(grant_id, expires_at)
        return prefix + _shortened(quote(filename, safe=""), self.location_limit - len(prefix))

    def _prefix(self, grant_id: int, expires_at: datetime) -> str:
        return f"{self.public_url}/d/{self.tokens.issue(grant_id, expires_at)}/"

    def require_location_fits(self, protocol: str, ocpp_versions: Sequence[str | None], field: str) -> None:
        """Refuse chargers known to speak an OCPP version whose limit this server's locations exceed;
        field is the list they came in (chargers[3].ocpp_version)."""
        if protocol == "ftps":
            return  # FTPS locations are kept within 1.6's limit
        for index, version in enumerate(ocpp_versions):
            if version is not None and self.location_limit > LOCATION_LIMITS[version]:
                raise InvalidInput(
                    f"{field}[{index}].ocpp_version",
                    f"download locations here are up to {self.location_limit} characters (FWREPO_PUBLIC_URL is "
                    f"{len(self.public_url)}), longer than the {LOCATION_LIMITS[version]} OCPP {version} chargers "
                    "take: give them their own campaign with protocol ftps, or ask the operator for a shorter "
                    "FWREPO_PUBLIC_URL",
                )

    def ftp_filename(self, filename: str) -> str:
        """The name an FTPS grant's file has in its location and in the server's one-file view."""
        assert self.ftps is not None
        return _shortened(quote(filename, safe=""), MAX_LOCATION - self.ftps.longest_prefix)

    # -- reading and revoking ---------------------------------------------------------------

    def get(self, grant_id: int) -> GrantRecord:
        with self.database.session() as session:
            row = session.get(Grant, grant_id)
            if row is None:
                raise NotFound(f"no grant with id {grant_id}")
        return self._record(row, self.catalog.granted(row.firmware_id).filename)

    def of_firmware(self, firmware_id: str, limit: int = 20) -> tuple[list[GrantLine], int]:
        """The newest grants of a build, without their locations (a location is a live credential), and how
        many it has in all."""
        with self.database.session() as session:
            total = session.exec(select(func.count()).select_from(Grant).where(Grant.firmware_id == firmware_id)).one()
            rows = session.exec(select(Grant.id, Grant.charger_id, Grant.protocol, Grant.created_at, Grant.expires_at,
                                       Grant.downloads_completed, Grant.max_downloads, Grant.revoked_at)
                                .where(Grant.firmware_id == firmware_id)
                                .order_by(col(Grant.created_at).desc(), col(Grant.id).desc()).limit(limit)).all()
        return [GrantLine(*row) for row in rows], total

    def _record(self, row: Grant, filename: str) -> GrantRecord:
        assert row.id is not None
        return GrantRecord(
            id=row.id, firmware_id=row.firmware_id, charger_id=row.charger_id, protocol=row.protocol,
            location=self._stored_location(row, filename), created_at=row.created_at,
            retrieve_date=row.retrieve_date, expires_at=row.expires_at, retries=row.retries,
            retry_interval=row.retry_interval, max_downloads=row.max_downloads,
            downloads_completed=row.downloads_completed, revoked_at=row.revoked_at, revoke_reason=row.revoke_reason,
            install_date=row.install_date, bind=row.bind, charger_serial=row.charger_serial,
        )

    def _stored_location(self, row: Grant, filename: str) -> str:
        if row.protocol != "ftps":
            return self.location(row.id or 0, row.expires_at, filename)
        if self.ftps is None:
            return ""
        # Only hashes of the login are kept: the full location is shown once, when the grant is issued.
        prefix = self.ftps.prefix(self.ftps.default_mode, "USER", "PASSWORD")
        return prefix + self.ftp_filename(filename)

    def revoke(self, grant_id: int, by: Performer, reason: str = "revoked by the CSMS") -> GrantRecord:
        """Revoke one grant (again is no change); the grant as it now is."""
        with self.database.session(exclusive=True) as session:
            if session.get(Grant, grant_id) is None:
                raise NotFound(f"no grant with id {grant_id}")
            if self.revocations.revoke(session, col(Grant.id) == grant_id, reason):
                self.audit.record(by, "revoke", f"grant {grant_id}", session)
        return self.get(grant_id)
