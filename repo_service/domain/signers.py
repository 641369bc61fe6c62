"""Release engineers' public keys: an upload signed by one of them is known to be theirs."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from repo_service.db.models import Signer
from repo_service.db.session import Database
from repo_service.domain import pki
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clock import Clock, utc_now
from repo_service.errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class SignerRecord:
    id: str
    name: str
    algorithm: str
    fingerprint: str
    public_key_pem: str
    created_at: datetime


def _record(row: Signer) -> SignerRecord:
    key = serialization.load_pem_public_key(row.public_key_pem.encode())
    return SignerRecord(row.id, row.name, pki.algorithm_of(key), row.fingerprint, row.public_key_pem, row.created_at)  # type: ignore[arg-type]


class Signers:
    def __init__(self, database: Database, audit: Audit, clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.clock = clock

    def add(self, name: str, key_pem: bytes, by: Performer, key_field: str = "key") -> SignerRecord:
        """Trust an uploader's key; key_field is what the caller calls the key (the CLI's --key, the API's
        public_key), so that a refusal names it."""
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise InvalidInput("name", "must be 1-100 printable characters")
        key = pki.load_public_key(key_pem, key_field)
        public_pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        row = Signer(
            id=secrets.token_hex(6),
            name=name,
            public_key_pem=public_pem,
            fingerprint=hashlib.sha256(
                key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            ).hexdigest(),
            created_at=self.clock(),
        )
        try:
            with self.database.session() as session:
                session.add(row)
                session.flush()
                self.audit.record(by, "signer_add", f"signer {row.id}", session, name=name,
                                  fingerprint=row.fingerprint)
        except IntegrityError:
            raise Conflict(f"a signer named {name!r} exists already") from None
        return _record(row)

    def list(self) -> list[SignerRecord]:
        with self.database.session() as session:
            rows = session.exec(select(Signer).where(col(Signer.removed_at).is_(None)).order_by(col(Signer.name))).all()
            return [_record(row) for row in rows]

    def remove(self, signer_id_or_name: str, by: Performer) -> SignerRecord:
        """Stop trusting a key for new uploads (what it signed before stays recorded)."""
        with self.database.session(exclusive=True) as session:
            row = session.exec(
                select(Signer).where(
                    (Signer.id == signer_id_or_name) | (Signer.name == signer_id_or_name), col(Signer.removed_at).is_(None)
                )
            ).first()
            if row is None:
                raise NotFound(f"no signer {signer_id_or_name}")
            row.removed_at = self.clock()
            # The name is free again for a new key of the same engineer.
            row.name = f"{row.name[:70]} (removed {row.id})"
            session.add(row)
            session.flush()
            self.audit.record(by, "signer_remove", f"signer {row.id}", session)
            return _record(row)

    def identify(self, sha256_hex: str, signature: bytes) -> str | None:
        """The name of the registered signer whose key made this signature over the image, if any."""
        for signer in self.list():
            key = serialization.load_pem_public_key(signer.public_key_pem.encode())
            if pki.verify_digest_any_scheme(key, sha256_hex, signature):  # type: ignore[arg-type]
                return signer.name
        return None
