"""Storage scrub: every stored image read back and compared with what the catalog says it is."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from sqlmodel import select

from repo_service.db.models import Firmware, PendingWrite
from repo_service.domain.catalog import Catalog
from repo_service.errors import NotFound

PREFIX = "firmware/"


@dataclass(frozen=True)
class Finding:
    kind: str  # missing, corrupted, extra
    key: str
    detail: str


def scrub(catalog: Catalog) -> Iterator[Finding]:
    """What is wrong, object by object; nothing when storage and catalog agree. Reads every byte once."""
    with catalog.database.session() as session:
        expected = {row.storage_key: row for row in session.exec(select(Firmware)).all()}
        in_flight = set(session.exec(select(PendingWrite.storage_key)).all())
    stored = set(catalog.storage.keys(PREFIX))
    for key in sorted(expected):
        firmware = expected[key]
        if key not in stored:
            yield Finding("missing", key, f"firmware {firmware.id} ({firmware.vendor} {firmware.version}) has no bytes")
            continue
        digest, size = hashlib.sha256(), 0
        try:
            for block in catalog.storage.read(key):
                digest.update(block)
                size += len(block)
        except NotFound:
            yield Finding("missing", key, f"firmware {firmware.id} vanished while being read")
            continue
        if size != firmware.size or digest.hexdigest() != firmware.sha256:
            yield Finding("corrupted", key, f"firmware {firmware.id}: {size} bytes with SHA-256 {digest.hexdigest()}, "
                          f"the catalog says {firmware.size} bytes with SHA-256 {firmware.sha256}")
    for key in sorted(stored - expected.keys() - in_flight):
        yield Finding("extra", key, "stored, but no firmware record names it (an interrupted upload? see storage sweep)")
