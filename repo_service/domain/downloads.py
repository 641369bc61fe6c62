"""Downloads: who may fetch a grant's firmware (a token, an FTPS login), and the record of every transfer.

The HTTPS and FTPS adapters both open a download here (authorize or login), then begin, progress and
finish one transfer, or have it refused; this module alone writes download records, their audit events
and the transfer metrics. Records are queued and written in batches (about once a second, and at
shutdown), so that thousands of small Range requests cost no write each.

A grant with max_downloads N has a byte budget: N times the image, plus half an image for the overlaps
of honest resumes (a charger re-fetching the block its link dropped in). Each transfer reserves the bytes
it may send in the database, atomically and before its first byte; when it ends, what it did not send
is given back. So whatever mix of parallel connections, nodes, protocols and ranges is used, and across
a crash (a reservation is never given back then), at most N x size + size/2 bytes leave for the grant:
never N + 1 whole copies. A charger that resumes where its link dropped is never refused for it.
Separately, a copy counts as completed (downloads_completed) when its last byte reached the client as
far as the server can know, and a grant with N completed copies opens no more transfers.

A grant bound to the charger's client certificate opens only for that certificate (charger_certificates.py):
the adapters pass what the TLS connection presented to authorize, login and permit.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import insert, update
from sqlmodel import col, func, select

from repo_service.db.models import DownloadRecord, Grant
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, acting_in
from repo_service.domain.audit import Act, Audit
from repo_service.domain.background import repeating
from repo_service.domain.catalog import Catalog, FirmwareRecord, Status
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.ftp_logins import digest
from repo_service.domain.recent import Recent
from repo_service.domain.revocations import Revocations
from repo_service.domain.tenants import enabled
from repo_service.domain.tokens import InvalidToken, TokenSigner
from repo_service.errors import FwrepoError

if TYPE_CHECKING:  # charger_certificates needs Refusal from here
    from repo_service.domain.charger_certificates import ChargerCertificates

log = logging.getLogger(__name__)

# How long one node trusts what it read about a grant: the bound on how late a revocation bites elsewhere.
STATUS_CACHE_SECONDS = 2.0
# Forged-token refusals recorded one by one per flush (about a second); the rest are counted in the log.
MAX_FORGED_RECORDS_PER_FLUSH = 100
# Download records reach the database at most this late (and at shutdown).
FLUSH_SECONDS = 1.0


class Refusal(StrEnum):
    FORGED = "forged"
    EXPIRED = "expired"
    REVOKED = "revoked"
    YANKED = "yanked"
    USED_UP = "used_up"
    UNSIGNED = "unsigned"
    BANNED = "banned"  # an FTPS address after repeated failed logins
    # A grant bound to the charger's client certificate, asked without it or with one that does not do.
    NO_CERTIFICATE = "no_certificate"
    WRONG_CHARGER = "wrong_charger"
    CERT_EXPIRED = "cert_expired"
    CERT_REVOKED = "cert_revoked"
    # Not issued for TLS clients, issuer not in FWREPO_CHARGER_CA, or revocation status not to be had.
    CERT_UNVERIFIED = "cert_unverified"
    # The grant's tenant is disabled: the charger sees what a dead grant shows.
    TENANT_DISABLED = "tenant_disabled"


class DownloadRefused(FwrepoError):
    """A token or login that does not open the download. The reason is for the audit, never for the client."""

    def __init__(self, reason: Refusal, grant_id: int | None = None, charger_id: str | None = None,
                 tenant: str = DEFAULT_TENANT) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.grant_id = grant_id
        self.charger_id = charger_id
        # Whose trail records the refusal: the grant's tenant, or the platform's (default) when there is no grant.
        self.tenant = tenant


@dataclass(frozen=True)
class Permit:
    """What a valid token or login opens: this grant's firmware, now."""

    grant_id: int
    charger_id: str
    firmware: FirmwareRecord
    tenant: str
    max_downloads: int | None = None
    # Opened by the charger's own certificate: the bytes must go over that connection, not a presigned URL.
    bound: bool = False


def byte_budget(max_downloads: int, size: int) -> int:
    """The most bytes a grant with max_downloads may send, resumes' overlaps included (see the module's text)."""
    return max_downloads * size + size // 2


@dataclass(frozen=True)
class DownloadAttempt:
    """One download record: a transfer, or a refusal."""

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
    # Reserved bytes this transfer did not send, given back to the grant's budget when it is written.
    unused: int = 0
    # Whose audit trail gets it.
    tenant: str = DEFAULT_TENANT


class DownloadObserver(Protocol):
    """Told of transfers as they begin and end (metrics); must be quick and must not raise."""

    def transfer_began(self, protocol: str) -> None: ...

    def recorded(self, attempt: DownloadAttempt) -> None: ...


class Transfer:
    """One transfer of a permit's firmware from `start` for `length` bytes, from begin() to finish()."""

    def __init__(self, downloads: Downloads, permit: Permit, protocol: str, client_address: str, start: int,
                 length: int, reserved: int) -> None:
        self.downloads = downloads
        self.permit = permit
        self.protocol = protocol
        self.client_address = client_address
        self.start = start
        self.length = length
        self.reserved = reserved
        self.started_at = downloads.clock()
        self.bytes_sent = 0
        self._began = time.monotonic()
        self._finished = False

    def progress(self, count: int) -> None:
        """count more bytes went to the client."""
        self.bytes_sent += count

    def finish(self, confirmed: bool, bytes_sent: int | None = None) -> None:
        """The transfer ended; confirmed when the client is known to have received what was sent.

        It completes the download when the image's last byte reached the client: the whole image, or the
        last piece of a resumed one (ranges and resumes are parts of one download, which counts once).
        Finishing again changes nothing.
        """
        if self._finished:
            return
        self._finished = True
        sent = min(self.bytes_sent if bytes_sent is None else bytes_sent, self.length)
        reached_end = sent > 0 and self.start + sent == self.permit.firmware.size
        self._record(sent, reached_end and confirmed, unused=self.reserved - min(sent, self.reserved))

    def handed_off(self) -> None:
        """Storage sends the bytes (a redirect): what it sends is not known, so nothing is given back."""
        if not self._finished:
            self._finished = True
            self._record(0, False, unused=0)

    def _record(self, sent: int, completed: bool, unused: int) -> None:
        self.downloads.record(DownloadAttempt(
            grant_id=self.permit.grant_id, charger_id=self.permit.charger_id, client_address=self.client_address,
            protocol=self.protocol, range_start=self.start, range_end=self.start + sent - 1 if sent else None,
            bytes_sent=sent, completed=completed, refusal=None, started_at=self.started_at,
            duration_ms=int((time.monotonic() - self._began) * 1000), unused=unused, tenant=self.permit.tenant,
        ))


class Downloads:
    def __init__(self, database: Database, catalog: Catalog, tokens: TokenSigner, revocations: Revocations,
                 audit: Audit, clock: Clock = utc_now, certificates: ChargerCertificates | None = None) -> None:
        self.database = database
        self.certificates = certificates
        self.catalog = catalog
        self.tokens = tokens
        self.audit = audit
        self.clock = clock
        self.observers: list[DownloadObserver] = []
        self._grant_cache: Recent[int, tuple[Grant, bool]] = Recent(STATUS_CACHE_SECONDS)
        self._firmware_cache: Recent[str, FirmwareRecord] = Recent(STATUS_CACHE_SECONDS)
        self._forged_dropped = 0
        self._forged_pending = 0
        self._pending: list[DownloadAttempt] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # Set when a transfer gives reserved bytes back: they reach the database at once, not within the
        # second, so a charger resuming right after its link dropped finds its budget as it left it.
        self._give_back = threading.Event()
        revocations.listeners.append(self._forget)

    # -- opening a download ------------------------------------------------------------------

    def authorize(self, token: str, certificate: bytes | None = None) -> Permit:
        """Open an HTTPS download: the token first (no database), then the grant's state (cached briefly).

        ``certificate`` is the DER client certificate of the TLS connection, if it presented one."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            raise DownloadRefused(Refusal.FORGED) from None
        if claims.expires_at <= self.clock():
            raise DownloadRefused(Refusal.EXPIRED, claims.grant_id)
        return self.permit(claims.grant_id, certificate)

    def login(self, user: str, password: str, certificate: bytes | None = None) -> Permit:
        """Open an FTPS session: the one-time login of an FTPS grant, then the grant's state."""
        # A login names no tenant: it is looked for among every tenant's grants.
        with acting_in(EVERY_TENANT), self.database.session() as session:
            row = session.exec(select(Grant).where(col(Grant.login_hash) == digest(user))).first()
        if row is None or row.password_hash is None or not hmac.compare_digest(row.password_hash, digest(password)):
            raise DownloadRefused(Refusal.FORGED)
        assert row.id is not None
        return self.permit(row.id, certificate)

    def permit(self, grant_id: int, certificate: bytes | None = None) -> Permit:
        """What the grant opens now; DownloadRefused, whose reason only the audit sees, when nothing."""
        state = self._state(grant_id)
        if state is None:
            raise DownloadRefused(Refusal.FORGED, grant_id)
        grant, firmware, tenant_enabled = state

        def refused(reason: Refusal) -> DownloadRefused:
            return DownloadRefused(reason, grant_id, grant.charger_id, grant.tenant)

        if not tenant_enabled:
            raise refused(Refusal.TENANT_DISABLED)
        if grant.revoked_at is not None:
            raise refused(Refusal.REVOKED)
        if grant.expires_at <= self.clock():
            raise refused(Refusal.EXPIRED)
        if grant.max_downloads is not None and grant.downloads_completed >= grant.max_downloads:
            raise refused(Refusal.USED_UP)
        if firmware.status == Status.YANKED:
            raise refused(Refusal.YANKED)
        if firmware.signature is None:
            raise refused(Refusal.UNSIGNED)
        if grant.bind is not None:
            # Checked on every request, not cached: a certificate revoked since the last one must not pass.
            refusal = (self.certificates.refusal(certificate, grant.charger_serial or grant.charger_id)
                       if self.certificates is not None else Refusal.CERT_UNVERIFIED)
            if refusal is not None:
                raise refused(refusal)
        return Permit(grant_id=grant_id, charger_id=grant.charger_id, firmware=firmware, tenant=grant.tenant,
                      max_downloads=grant.max_downloads, bound=grant.bind is not None)

    def _state(self, grant_id: int) -> tuple[Grant, FirmwareRecord, bool] | None:
        """The grant, its firmware and whether its tenant is enabled, as the database has them, at most
        STATUS_CACHE_SECONDS old.

        A charger fetching an image as thousands of small ranges costs one
        database read per grant every few seconds, not one per request; a
        campaign's grants share one cached firmware record. A token or login names no tenant: the grant is
        looked for among every tenant's.
        """
        cached = self._grant_cache.get(grant_id)
        if cached is None:
            with acting_in(EVERY_TENANT), self.database.session() as session:
                row = session.get(Grant, grant_id)
                if row is None:
                    return None
                cached = (row, enabled(session, row.tenant))
            self._grant_cache.put(grant_id, cached)
        row, tenant_enabled = cached
        firmware = self._firmware_cache.get(row.firmware_id)
        if firmware is None:
            with acting_in(EVERY_TENANT):
                firmware = self.catalog.get(row.firmware_id)
            self._firmware_cache.put(row.firmware_id, firmware)
        return row, firmware, tenant_enabled

    def _forget(self, grant_ids: Sequence[int], firmware_id: str | None) -> None:
        for grant_id in grant_ids:
            self._grant_cache.forget(grant_id)
        if firmware_id is not None:
            self._firmware_cache.forget(firmware_id)

    # -- transfers and refusals --------------------------------------------------------------

    def begin(self, permit: Permit, protocol: str, client_address: str, start: int, length: int) -> Transfer:
        """Open a transfer of `length` bytes from `start`; for a grant with max_downloads, its bytes are reserved
        now, in the database, or DownloadRefused(USED_UP) when the grant's budget cannot hold them."""
        reserved = 0
        if permit.max_downloads is not None and length > 0:
            self._reserve(permit, length)
            reserved = length
        for observer in self.observers:
            observer.transfer_began(protocol)
        return Transfer(self, permit, protocol, client_address, start, length, reserved)

    def _reserve(self, permit: Permit, length: int) -> None:
        # What this node's ended transfers give back may still be queued: then write it and ask once more.
        if self._take(permit, length):
            return
        self.flush()
        if self._take(permit, length):
            return
        self._grant_cache.forget(permit.grant_id)
        raise DownloadRefused(Refusal.USED_UP, permit.grant_id, permit.charger_id)

    def _take(self, permit: Permit, length: int) -> bool:
        assert permit.max_downloads is not None
        budget = byte_budget(permit.max_downloads, permit.firmware.size)
        with acting_in(permit.tenant), self.database.session() as session:
            # One conditional update: two transfers on two nodes cannot both take the last of the budget.
            return session.execute(update(Grant).where(
                col(Grant.id) == permit.grant_id, Grant.bytes_reserved + length <= budget,
                col(Grant.downloads_completed) < permit.max_downloads,
            ).values(bytes_reserved=Grant.bytes_reserved + length)).rowcount == 1

    def refuse(self, refusal: DownloadRefused, protocol: str, client_address: str) -> None:
        """Record a refused download or login, with its reason."""
        self.record(DownloadAttempt(
            grant_id=refusal.grant_id, charger_id=refusal.charger_id, client_address=client_address,
            protocol=protocol, range_start=None, range_end=None, bytes_sent=0, completed=False,
            refusal=refusal.reason, started_at=self.clock(), duration_ms=0, tenant=refusal.tenant,
        ))

    def record(self, attempt: DownloadAttempt) -> None:
        """Queue an attempt; `flush` writes the queue in one transaction (no write per request)."""
        for observer in self.observers:
            observer.recorded(attempt)
        if attempt.unused:
            self._give_back.set()
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
        with acting_in(EVERY_TENANT), self.database.session() as session:
            return session.exec(select(func.count()).select_from(DownloadRecord).where(
                DownloadRecord.client_address == address[:64], DownloadRecord.protocol == "ftps",
                DownloadRecord.refusal == Refusal.FORGED.value, col(DownloadRecord.started_at) >= since)).one()

    def attempts(self, grant_id: int) -> list[DownloadAttempt]:
        """A grant's download records, oldest first (those still queued included)."""
        self.flush()
        with self.database.session() as session:
            rows = session.exec(select(DownloadRecord).where(DownloadRecord.grant_id == grant_id)
                                .order_by(col(DownloadRecord.id))).all()
        return [
            DownloadAttempt(
                grant_id=row.grant_id, charger_id=row.charger_id, client_address=row.client_address,
                protocol=row.protocol, range_start=row.range_start, range_end=row.range_end,
                bytes_sent=row.bytes_sent, completed=row.completed,
                refusal=Refusal(row.refusal) if row.refusal else None, started_at=row.started_at,
                duration_ms=row.duration_ms,
            )
            for row in rows
        ]

    # -- writing the records -----------------------------------------------------------------

    @contextmanager
    def recording(self) -> Iterator[None]:
        """While the block runs, queued download records reach the database every FLUSH_SECONDS, and at its end."""
        try:
            with repeating("download-records", FLUSH_SECONDS, self.flush, self._give_back):
                yield
        finally:
            self.flush()

    def flush(self) -> int:
        """Write the queued records; when it returns, every record queued before the call is written
        (one flush at a time: a caller never returns while another's batch is still on its way)."""
        with self._flush_lock:
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
        unused: dict[int, int] = {}
        for attempt in attempts:
            if attempt.completed and attempt.grant_id is not None:
                completed[attempt.grant_id] = completed.get(attempt.grant_id, 0) + 1
            if attempt.unused and attempt.grant_id is not None:
                unused[attempt.grant_id] = unused.get(attempt.grant_id, 0) + attempt.unused
        with acting_in(EVERY_TENANT), self.database.session() as session:
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
            for grant_id, count in unused.items():
                session.execute(
                    update(Grant).where(col(Grant.id) == grant_id).values(bytes_reserved=Grant.bytes_reserved - count)
                )
            # In the same transaction: a record and its audit event are written together or not at all,
            # each on the trail of the grant's tenant.
            for tenant in dict.fromkeys(attempt.tenant for attempt in attempts):
                with acting_in(tenant):
                    self.audit.append([_audit_act(attempt) for attempt in attempts if attempt.tenant == tenant],
                                      session)
        for grant_id in completed:
            self._grant_cache.forget(grant_id)


def _audit_act(attempt: DownloadAttempt) -> Act:
    who = f"charger {attempt.charger_id}@{attempt.client_address}" if attempt.charger_id else \
        f"anonymous@{attempt.client_address}"
    subject = f"grant {attempt.grant_id}" if attempt.grant_id is not None else "no grant"
    if attempt.refusal is not None:
        return Act(who, "refusal", subject, {"protocol": attempt.protocol, "reason": attempt.refusal.value})
    return Act(who, "download", subject, {"protocol": attempt.protocol, "bytes": attempt.bytes_sent,
                                         "completed": attempt.completed, "range_start": attempt.range_start})
