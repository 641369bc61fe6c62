"""The firmware catalog: records, their life (uploaded → published → yanked), and their bytes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, func
from sqlmodel import Session, col, select

from repo_service.db.models import Firmware, FirmwareModel, FirmwareSignature, Grant, SigningKey
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, acting_in, acting_in_transaction, current_scope
from repo_service.domain.audit import MAX_OFFSET, Performer
from repo_service.domain.clock import Clock, rfc3339, utc_now
from repo_service.domain.keys import NoSigningKey, SigningKeys, tenant_option
from repo_service.domain.pki import canonical_json
from repo_service.domain.revocations import Revocations
from repo_service.errors import Conflict, Forbidden, InvalidInput, NotFound
from repo_service.storage import Storage
from repo_service.storage.base import TENANTS_PREFIX

MAX_PAGE = 500
# A yank reason is read by people deciding whether a charger may keep the build: a paragraph, not a document.
MAX_YANK_REASON = 2000


class Status(StrEnum):
    UPLOADED = "uploaded"
    PUBLISHED = "published"
    YANKED = "yanked"


@dataclass(frozen=True)
class FirmwareRecord:
    id: str
    # Whose build it is: the reader's own tenant, or one that shares its catalog with it (tenancy.py).
    tenant: str
    vendor: str
    models: tuple[str, ...]
    hardware_revisions: tuple[str, ...]
    version: str
    channel: str
    status: Status
    size: int
    sha256: str
    # None for a build stored before fwrepo computed MD5s, until `fwrepo storage checksum` ran.
    md5: str | None
    filename: str
    min_version: str | None
    release_notes: str
    uploaded_by: str | None
    created_at: datetime
    published_at: datetime | None
    yanked_at: datetime | None
    yank_reason: str | None
    signed_by: str | None
    # The repository's signature (what goes into OCPP SignedUpdateFirmware), by a key not revoked.
    signature: str | None
    signing_certificate: str | None
    signing_key_id: str | None
    signing_algorithm: str | None
    storage_key: str


MAX_SEARCH_WORDS = 8


@dataclass(frozen=True)
class CatalogFilter:
    vendor: str | None = None
    model: str | None = None
    status: Status | None = None
    channel: str | None = None
    # Words each found in the vendor, version, file name or release notes (the console's search box).
    search: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[FirmwareRecord]
    total: int
    limit: int
    offset: int


# Where builds are stored: the default tenant's under firmware/ as before tenants existed (an installation needs
# no data move), every other tenant's under tenants/NAME/, so one tenant's objects can be listed, copied, billed
# or removed apart, and an S3 backend may give each tenant a bucket (FWREPO_S3_TENANT_BUCKET).
FIRMWARE_PREFIX = "firmware/"


def storage_prefix(tenant: str) -> str:
    """Where tenant's builds are stored."""
    return FIRMWARE_PREFIX if tenant == DEFAULT_TENANT else f"{TENANTS_PREFIX}{tenant}/{FIRMWARE_PREFIX}"


def parse_status(text: str) -> Status:
    try:
        return Status(text)
    except ValueError:
        raise InvalidInput("status", f"must be one of {', '.join(Status)}, got {text!r}") from None


@dataclass(frozen=True)
class CurrentSignature:
    signature: str
    certificate_pem: str
    key_id: str
    algorithm: str


def to_record(row: Firmware, models: list[str], signature: CurrentSignature | None) -> FirmwareRecord:
    return FirmwareRecord(
        id=row.id,
        tenant=row.tenant,
        vendor=row.vendor,
        models=tuple(sorted(models)),
        hardware_revisions=tuple(row.hardware_revisions),
        version=row.version,
        channel=row.channel,
        status=Status(row.status),
        size=row.size,
        sha256=row.sha256,
        md5=row.md5,
        filename=row.filename,
        min_version=row.min_version,
        release_notes=row.release_notes,
        uploaded_by=row.uploaded_by,
        created_at=row.created_at,
        published_at=row.published_at,
        yanked_at=row.yanked_at,
        yank_reason=row.yank_reason,
        signed_by=row.signed_by,
        signature=signature.signature if signature else None,
        signing_certificate=signature.certificate_pem if signature else None,
        signing_key_id=signature.key_id if signature else None,
        signing_algorithm=signature.algorithm if signature else None,
        storage_key=row.storage_key,
    )


def valid_signatures() -> Select:
    """Signatures by keys that are not revoked, newest first."""
    return (
        select(FirmwareSignature, SigningKey)
        .join(SigningKey, col(FirmwareSignature.key_id) == col(SigningKey.id))
        .where(SigningKey.status != "revoked")
        .order_by(col(FirmwareSignature.id).desc())
    )


def load_records(session: Session, rows: list[Firmware]) -> list[FirmwareRecord]:
    """Records for rows, with their models and current signatures fetched in one query each."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    links = session.exec(select(FirmwareModel).where(col(FirmwareModel.firmware_id).in_(ids))).all()
    models: dict[str, list[str]] = {}
    for link in links:
        models.setdefault(link.firmware_id, []).append(link.model)
    signatures: dict[str, CurrentSignature] = {}
    for signature, key in session.exec(valid_signatures().where(col(FirmwareSignature.firmware_id).in_(ids))).all():
        signatures.setdefault(signature.firmware_id, CurrentSignature(signature.signature, key.certificate_pem, key.id,
                                                                        key.algorithm))
    return [to_record(row, models.get(row.id, []), signatures.get(row.id)) for row in rows]


class Catalog:
    def __init__(self, database: Database, storage: Storage, signing_keys: SigningKeys, revocations: Revocations,
                 clock: Clock = utc_now) -> None:
        self.database = database
        self.storage = storage
        self.signing_keys = signing_keys
        self.revocations = revocations
        self.audit = signing_keys.audit
        self.clock = clock

    def get(self, firmware_id: str) -> FirmwareRecord:
        with self.database.session() as session:
            row = session.get(Firmware, firmware_id)
            if row is None:
                raise NotFound(f"no firmware with id {firmware_id}")
            return load_records(session, [row])[0]

    def granted(self, firmware_id: str) -> FirmwareRecord:
        """The build a grant or campaign of the caller's tenant was made for, given its firmware_id as read in
        the caller's scope, whoever's build it is: a grant keeps naming its build (the location's file name, the
        job's target version) after the share that let its tenant see the build has ended."""
        with acting_in(EVERY_TENANT):
            return self.get(firmware_id)

    def list(self, where: CatalogFilter, limit: int = 50, offset: int = 0) -> Page:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE}")
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput("offset", f"must be between 0 and {MAX_OFFSET}")
        query = select(Firmware)
        if where.vendor is not None:
            query = query.where(Firmware.vendor == where.vendor)
        if where.status is not None:
            query = query.where(Firmware.status == where.status.value)
        if where.channel is not None:
            query = query.where(Firmware.channel == where.channel)
        if where.model is not None:
            query = query.where(
                col(Firmware.id).in_(select(FirmwareModel.firmware_id).where(FirmwareModel.model == where.model))
            )
        for word in (where.search or "").split()[:MAX_SEARCH_WORDS]:
            # LIKE's own wildcards in the word are matched as themselves.
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(col(Firmware.vendor).ilike(pattern, escape="\\")
                                | col(Firmware.version).ilike(pattern, escape="\\")
                                | col(Firmware.filename).ilike(pattern, escape="\\")
                                | col(Firmware.release_notes).ilike(pattern, escape="\\"))
        with self.database.session() as session:
            total = session.exec(select(func.count()).select_from(query.subquery())).one()
            rows = session.exec(
                query.order_by(col(Firmware.created_at).desc(), col(Firmware.id)).limit(limit).offset(offset)
            ).all()
            return Page(items=load_records(session, list(rows)), total=total, limit=limit, offset=offset)

    def publish(self, firmware_id: str, by: Performer) -> FirmwareRecord:
        """Publish and sign with the active key: a published build always carries a signature."""
        with self.database.session(exclusive=True) as session:
            row = self._lock(session, firmware_id, "publish")
            by.require_vendor(row.vendor)
            if row.status == Status.YANKED:
                raise Conflict(f"firmware {firmware_id} was yanked and cannot be published again")
            if row.status == Status.UPLOADED:
                key, signature = self.signing_keys.sign_image(row.sha256)
                row.status = Status.PUBLISHED.value
                row.published_at = self.clock()
                session.add(row)
                session.add(
                    FirmwareSignature(firmware_id=row.id, key_id=key.id, signature=signature, created_at=self.clock())
                )
                session.flush()
                self.audit.record(by, "publish", f"firmware {row.id}", session, signing_key=key.id)
            return load_records(session, [row])[0]

    def manifest(self, firmware_id: str) -> dict[str, Any]:
        """A signed release manifest, so a CSMS can check the catalog offline."""
        record = self.get(firmware_id)
        if record.status != Status.PUBLISHED:
            raise Conflict(f"firmware {firmware_id} is {record.status.value}: only published firmware has a manifest")
        if record.signing_key_id is None:
            raise NoSigningKey(f"firmware {firmware_id} has no valid signature: re-sign it (fwrepo keys resign"
                               f"{tenant_option(current_scope())})")
        document = {
            "id": record.id,
            "vendor": record.vendor,
            "models": list(record.models),
            "hardware_revisions": list(record.hardware_revisions),
            "version": record.version,
            "channel": record.channel,
            "size": record.size,
            "sha256": record.sha256,
            "min_version": record.min_version,
            "created": rfc3339(record.created_at),
            "signing_key_id": record.signing_key_id,
            "signing_algorithm": record.signing_algorithm,
        }
        return {
            "manifest": document,
            "signature": self.signing_keys.sign_document(record.signing_key_id, canonical_json(document)),
            "signing_certificate": record.signing_certificate,
            "image_signature": record.signature,
        }

    def yank(self, firmware_id: str, reason: str, by: Performer) -> FirmwareRecord:
        reason = reason.strip() if isinstance(reason, str) else ""
        if not reason:
            raise InvalidInput("reason", "a yank needs a reason, for the people who will ask why")
        if len(reason) > MAX_YANK_REASON:
            raise InvalidInput("reason", f"must be at most {MAX_YANK_REASON} characters")
        with self.database.session(exclusive=True) as session:
            row = self._lock(session, firmware_id, "yank")
            by.require_vendor(row.vendor)
            if row.status != Status.YANKED:
                row.status = Status.YANKED.value
                row.yanked_at = self.clock()
                row.yank_reason = reason
                session.add(row)
                session.flush()
                self.audit.record(by, "yank", f"firmware {row.id}", session, reason=reason)
                self._revoke_everywhere(session, row, reason, by)
            return load_records(session, [row])[0]

    def _revoke_everywhere(self, session: Session, row: Firmware, reason: str, by: Performer) -> None:
        """A yanked build's grants die with it: its own tenant's and those of every tenant it was shared with,
        in the yank's transaction, each receiver told on its own trail."""
        with acting_in_transaction(session, EVERY_TENANT):
            revoked = self.revocations.revoke(session, col(Grant.firmware_id) == row.id, f"firmware yanked: {reason}",
                                              row.id)
        receivers = Counter(tenant for tenant in revoked.values() if tenant != row.tenant)
        for tenant, count in sorted(receivers.items()):
            with acting_in_transaction(session, tenant):
                self.audit.record(by, "shared_yank", f"firmware {row.id}", session, source=row.tenant, reason=reason,
                                  grants_revoked=count)

    def downloadable(self, firmware_id: str, by: Performer) -> FirmwareRecord:
        """The build whose bytes by may fetch: a key limited to vendors reads no other maker's images (in an
        operator's tenant, one maker's engineer must not take a competitor's firmware)."""
        record = self.get(firmware_id)
        by.require_vendor(record.vendor)
        return record

    @staticmethod
    def _lock(session: Session, firmware_id: str, act: str) -> Firmware:
        """The build, locked to be changed: only its own tenant's (a read FOR UPDATE sees no shared build)."""
        row = session.exec(select(Firmware).where(Firmware.id == firmware_id).with_for_update()).first()
        if row is not None:
            return row
        shared = session.get(Firmware, firmware_id)
        if shared is None:
            raise NotFound(f"no firmware with id {firmware_id}")
        # The caller sees the build (it is shared with its tenant), so saying whose it is tells nothing new.
        raise Forbidden(f"firmware {firmware_id} belongs to tenant {shared.tenant}, which shares it with this "
                        f"tenant: only {shared.tenant} may {act} it")
