"""Answering a charger's question: is there newer firmware I may install?"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select

from repo_service.db.models import Firmware, FirmwareModel, FirmwareSignature
from repo_service.db.tenancy import current_scope
from repo_service.domain.catalog import Catalog, FirmwareRecord, Status, load_records, valid_signatures
from repo_service.domain.uploads import check_name
from repo_service.domain.versions import parse_version
from repo_service.errors import InvalidInput


@dataclass(frozen=True)
class UpdateQuery:
    vendor: str
    model: str
    current_version: str
    hardware_revision: str | None = None
    channel: str = "stable"


def find_update(catalog: Catalog, query: UpdateQuery) -> FirmwareRecord | None:
    """The newest published firmware for this charger that it may install over its current version.

    A build whose ``min_version`` the charger has not reached is passed over
    for an older one it can install: that older build is the stepping stone.
    A build limited to some hardware revisions is offered only to a charger
    that names one of them.
    """
    vendor = check_name("vendor", query.vendor)
    model = check_name("model", query.model)
    if not query.current_version.strip():
        raise InvalidInput("current_version", "is required")
    current = parse_version(query.current_version.strip(), "current_version")
    with catalog.database.session() as session:
        rows = session.exec(
            select(Firmware).where(
                Firmware.vendor == vendor,
                Firmware.status == Status.PUBLISHED.value,
                Firmware.channel == query.channel,
                col(Firmware.id).in_(select(FirmwareModel.firmware_id).where(FirmwareModel.model == model)),
                # A build whose only signatures are by revoked keys is not offered until re-signed.
                col(Firmware.id).in_(valid_signatures().with_only_columns(col(FirmwareSignature.firmware_id))),
            )
        ).all()
        candidates = []
        for row in rows:
            version = parse_version(row.version)
            if version <= current:
                continue
            if row.min_version is not None and current < parse_version(row.min_version):
                continue
            if row.hardware_revisions and query.hardware_revision not in row.hardware_revisions:
                continue
            candidates.append((version, row))
        if not candidates:
            return None
        # Of the same version shared by a maker and uploaded by the charger's own tenant, its own is offered.
        scope = current_scope()
        newest = max(candidates, key=lambda candidate: (candidate[0].key, candidate[1].tenant == scope))[1]
        return load_records(session, [newest])[0]
