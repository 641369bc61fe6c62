"""Storage scrub: every stored image read back and compared with what the catalog says it is; and the MD5s
of builds stored before fwrepo computed them, filled in by reading each image once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlmodel import col, select, update

from repo_service.db.models import Firmware, PendingWrite, Tenant
from repo_service.db.tenancy import acting_in
from repo_service.domain.audit import Performer
from repo_service.domain.catalog import Catalog, storage_prefix
from repo_service.errors import NotFound
from repo_service.storage.base import Digest, StoredObject


@dataclass(frozen=True)
class Finding:
    kind: str  # missing, corrupted, extra
    key: str
    detail: str


def scrub(catalog: Catalog) -> Iterator[Finding]:
    """What is wrong, object by object, in every tenant's storage the session sees; nothing when storage and
    catalog agree. Reads every byte once."""
    with catalog.database.session() as session:
        expected = {row.storage_key: row for row in session.exec(select(Firmware)).all()}
        in_flight = set(session.exec(select(PendingWrite.storage_key)).all())
        tenants = session.exec(select(Tenant.name)).all()
    # Tenant by tenant: with a bucket per tenant there is no one listing that holds them all.
    stored = {key for tenant in tenants for key in catalog.storage.keys(storage_prefix(tenant))}
    for key in sorted(expected):
        firmware = expected[key]
        if key not in stored:
            yield Finding("missing", key, f"firmware {firmware.id} ({firmware.vendor} {firmware.version}) has no bytes")
            continue
        finding = _read_back(catalog, firmware)
        if isinstance(finding, Finding):
            yield finding
    for key in sorted(stored - expected.keys() - in_flight):
        yield Finding("extra", key, "stored, but no firmware record names it (an interrupted upload? see storage sweep)")


def _read_back(catalog: Catalog, firmware: Firmware) -> StoredObject | Finding:
    """The stored object's digests when it is the bytes the catalog describes, else what is wrong with it."""
    key = firmware.storage_key
    digest = Digest()
    try:
        for _ in digest.observe(catalog.storage.read(key)):
            pass
    except NotFound:
        return Finding("missing", key, f"firmware {firmware.id} vanished while being read")
    stored = digest.result(key)
    if stored.size != firmware.size or stored.sha256 != firmware.sha256:
        return Finding("corrupted", key, f"firmware {firmware.id}: {stored.size} bytes with SHA-256 {stored.sha256}, "
                       f"the catalog says {firmware.size} bytes with SHA-256 {firmware.sha256}")
    return stored


def fill_checksums(catalog: Catalog, by: Performer) -> Iterator[tuple[str, StoredObject | Finding]]:
    """Read each build without an MD5 once and record it; (firmware id, its digests or what is wrong) for each.

    Only bytes that still match the catalog's SHA-256 get an MD5: a PublishFirmware checksum over corrupted bytes
    would send a local controller bad firmware with a checksum that vouches for it.
    """
    with catalog.database.session() as session:
        rows = session.exec(select(Firmware).where(col(Firmware.md5).is_(None)).order_by(col(Firmware.id))).all()
    for firmware in rows:
        result = _read_back(catalog, firmware)
        if isinstance(result, StoredObject):
            with acting_in(firmware.tenant), catalog.database.session() as session:
                # Another run may have filled it meanwhile: the same bytes, the same MD5, recorded once.
                if session.execute(update(Firmware).where(col(Firmware.id) == firmware.id, col(Firmware.md5).is_(None))
                                   .values(md5=result.md5)).rowcount:
                    catalog.audit.record(by, "checksum", f"firmware {firmware.id}", session, md5=result.md5)
        yield firmware.id, result
