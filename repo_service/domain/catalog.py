"""The firmware catalog: records, their life (uploaded → published → yanked), and their bytes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func
from sqlmodel import Session, col, select

from repo_service.db.models import Firmware, FirmwareModel
from repo_service.db.session import Database
from repo_service.domain.clock import Clock, utc_now
from repo_service.errors import Conflict, InvalidInput, NotFound
from repo_service.storage import Storage

MAX_PAGE = 500


class Status(StrEnum):
    UPLOADED = "uploaded"
    PUBLISHED = "published"
    YANKED = "yanked"


@dataclass(frozen=True)
class FirmwareRecord:
    id: str
    vendor: str
    models: tuple[str, ...]
    hardware_revisions: tuple[str, ...]
    version: str
    channel: str
    status: Status
    size: int
    sha256: str
    filename: str
    min_version: str | None
    release_notes: str
    uploaded_by: str | None
    created_at: datetime
    published_at: datetime | None
    yanked_at: datetime | None
    yank_reason: str | None
    storage_key: str


@dataclass(frozen=True)
class CatalogFilter:
    vendor: str | None = None
    model: str | None = None
    status: Status | None = None
    channel: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[FirmwareRecord]
    total: int
    limit: int
    offset: int


def parse_status(text: str) -> Status:
    try:
        return Status(text)
    except ValueError:
        raise InvalidInput("status", f"must be one of {', '.join(Status)}, got {text!r}") from None


def to_record(row: Firmware, models: list[str]) -> FirmwareRecord:
    return FirmwareRecord(
        id=row.id,
        vendor=row.vendor,
        models=tuple(sorted(models)),
        hardware_revisions=tuple(row.hardware_revisions),
        version=row.version,
        channel=row.channel,
        status=Status(row.status),
        size=row.size,
        sha256=row.sha256,
        filename=row.filename,
        min_version=row.min_version,
        release_notes=row.release_notes,
        uploaded_by=row.uploaded_by,
        created_at=row.created_at,
        published_at=row.published_at,
        yanked_at=row.yanked_at,
        yank_reason=row.yank_reason,
        storage_key=row.storage_key,
    )


def load_records(session: Session, rows: list[Firmware]) -> list[FirmwareRecord]:
    """Records for rows, with their models fetched in one query."""
    if not rows:
        return []
    links = session.exec(select(FirmwareModel).where(col(FirmwareModel.firmware_id).in_([row.id for row in rows]))).all()
    models: dict[str, list[str]] = {}
    for link in links:
        models.setdefault(link.firmware_id, []).append(link.model)
    return [to_record(row, models.get(row.id, [])) for row in rows]


class Catalog:
    def __init__(self, database: Database, storage: Storage, clock: Clock = utc_now) -> None:
        self.database = database
        self.storage = storage
        self.clock = clock

    def get(self, firmware_id: str) -> FirmwareRecord:
        with self.database.session() as session:
            row = session.get(Firmware, firmware_id)
            if row is None:
                raise NotFound(f"no firmware with id {firmware_id}")
            return load_records(session, [row])[0]

    def list(self, where: CatalogFilter, limit: int = 50, offset: int = 0) -> Page:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE}")
        if offset < 0:
            raise InvalidInput("offset", "must not be negative")
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
        with self.database.session() as session:
            total = session.exec(select(func.count()).select_from(query.subquery())).one()
            rows = session.exec(
                query.order_by(col(Firmware.created_at).desc(), col(Firmware.id)).limit(limit).offset(offset)
            ).all()
            return Page(items=load_records(session, list(rows)), total=total, limit=limit, offset=offset)

    def publish(self, firmware_id: str) -> FirmwareRecord:
        with self.database.session() as session:
            row = self._lock(session, firmware_id)
            if row.status == Status.YANKED:
                raise Conflict(f"firmware {firmware_id} was yanked and cannot be published again")
            if row.status == Status.UPLOADED:
                row.status = Status.PUBLISHED.value
                row.published_at = self.clock()
                session.add(row)
            return load_records(session, [row])[0]

    def yank(self, firmware_id: str, reason: str) -> FirmwareRecord:
        reason = reason.strip() if isinstance(reason, str) else ""
        if not reason:
            raise InvalidInput("reason", "a yank needs a reason, for the people who will ask why")
        if len(reason) > 2000:
            raise InvalidInput("reason", "must be at most 2000 characters")
        with self.database.session() as session:
            row = self._lock(session, firmware_id)
            if row.status != Status.YANKED:
                row.status = Status.YANKED.value
                row.yanked_at = self.clock()
                row.yank_reason = reason
                session.add(row)
            return load_records(session, [row])[0]

    def open_content(self, firmware_id: str, start: int = 0, length: int | None = None) -> tuple[FirmwareRecord, Iterator[bytes]]:
        record = self.get(firmware_id)
        return record, self.storage.read(record.storage_key, start, length)

    @staticmethod
    def _lock(session: Session, firmware_id: str) -> Firmware:
        row = session.exec(select(Firmware).where(Firmware.id == firmware_id).with_for_update()).first()
        if row is None:
            raise NotFound(f"no firmware with id {firmware_id}")
        return row
