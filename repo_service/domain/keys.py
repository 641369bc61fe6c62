"""Each tenant's signing keys: made, imported, rotated, revoked, and used.

A tenant signs its builds with a key set of its own, under a root of its own: each operator's chargers trust
its root and no other tenant's. Every method acts in the tenant of the current scope
(``repo_service.db.tenancy``), as the other domain services do.

The registry (which keys exist, which is each tenant's active one, their certificates) is in the database,
shared by every node; each private key is a PKCS#8 file encrypted with the installation's key passphrase,
mode 0600, under the keys directory; the default tenant's where they were before tenants existed:

    keys/
      root-ca.pem            development root certificate (what the default tenant's chargers trust)
      root-ca.key            its private key, encrypted (development PKI only)
      signing-<id>.pem       a signing certificate followed by its chain up to the root
      signing-<id>.key       its private key, encrypted
      dev-passphrase         development only: the generated passphrase
      tenants/<name>/        the same files (root-ca.*, signing-<id>.*) of every other tenant
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import func
from sqlmodel import col, select

from repo_service.db.models import Firmware, FirmwareSignature, SigningKey
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, OWN_ROWS, acting_in, current_scope, own_rows
from repo_service.domain import pki
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.owner_files import read_or_create_secret, write_private
from repo_service.errors import Conflict, NotFound

log = logging.getLogger(__name__)

ROOT_DAYS = 20 * 365
SIGNING_DAYS = 3 * 365
DEV_PASSPHRASE_FILE = "dev-passphrase"


class KeyStatus(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class NoSigningKey(Conflict):
    """Publishing needs an active signing key and there is none."""


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    algorithm: str
    status: KeyStatus
    origin: str
    fingerprint: str
    not_before: datetime
    not_after: datetime
    created_at: datetime
    revoked_at: datetime | None
    certificate_pem: str
    chain_pem: str
    signed: int = 0


def _record(row: SigningKey, signed: int = 0) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        tenant=row.tenant,
        algorithm=row.algorithm,
        status=KeyStatus(row.status),
        origin=row.origin,
        fingerprint=row.fingerprint,
        not_before=row.not_before,
        not_after=row.not_after,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        certificate_pem=row.certificate_pem,
        chain_pem=row.chain_pem,
        signed=signed,
    )


def development_passphrase(keys_dir: Path) -> bytes:
    """The generated development passphrase, made once into a 0600 file."""
    return read_or_create_secret(keys_dir / DEV_PASSPHRASE_FILE)


def _write_public(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class SigningKeys:
    def __init__(self, database: Database, audit: Audit, keys_dir: Path, passphrase: bytes,
                 algorithm: str = "ecdsa-p256", clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.keys_dir = keys_dir
        self.passphrase = passphrase
        self.algorithm = algorithm
        self.clock = clock
        self._private_keys: dict[str, pki.PrivateKey] = {}

    # -- where a tenant's files are ---------------------------------------------------------

    def tenant_dir(self, tenant: str) -> Path:
        """The directory of tenant's key files: the keys directory itself for the default tenant."""
        if tenant == EVERY_TENANT:
            raise ValueError("signing keys belong to one tenant: act in it")
        return self.keys_dir if tenant == DEFAULT_TENANT else self.keys_dir / "tenants" / tenant

    @property
    def root_certificate_path(self) -> Path:
        """The development root of the current scope's tenant (what its chargers trust)."""
        return self.tenant_dir(current_scope()) / "root-ca.pem"

    # -- making and bringing in keys ------------------------------------------------------

    def init_development(self, by: Performer) -> KeyRecord:
        """Create the tenant's development root CA and a first signing key; a no-op when it has an active key."""
        active = self.active()
        if active is not None:
            return active
        tenant = current_scope()
        directory = self.tenant_dir(tenant)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.root_certificate_path.exists():
            now = self.clock()
            root_key = pki.generate_key(self.algorithm)
            # The tenant in the root's name: an operator (or a charger's log) tells one tenant's root from another's.
            name = "fwrepo development firmware-signing root" + ("" if tenant == DEFAULT_TENANT else f" of {tenant}")
            root = pki.make_root(root_key, name, now, ROOT_DAYS)
            write_private(directory / "root-ca.key", pki.encrypt_private_key(root_key, self.passphrase))
            _write_public(self.root_certificate_path, pki.pem(root).encode())
        return self._register_generated(by, "key_init")

    def rotate(self, by: Performer, algorithm: str | None = None) -> KeyRecord:
        """A new signing key under the development root; the active one retires (its signatures stay valid)."""
        return self._register_generated(by, "key_rotate", algorithm)

    def _register_generated(self, by: Performer, action: str, algorithm: str | None = None) -> KeyRecord:
        tenant = current_scope()
        root_key_path = self.tenant_dir(tenant) / "root-ca.key"
        if not root_key_path.exists():
            raise Conflict(
                f"no root CA key{_of(tenant)} here to issue a new signing certificate (imported keys are rotated by "
                f"importing the next one: fwrepo keys import{tenant_option(tenant)})"
            )
        root_key = pki.load_private_key(root_key_path.read_bytes(), self.passphrase, "root-ca.key")
        root = x509.load_pem_x509_certificate(self.root_certificate_path.read_bytes())
        algorithm = pki.parse_algorithm(algorithm or self.algorithm)
        key = pki.generate_key(algorithm)
        key_id = secrets.token_hex(6)
        certificate = pki.make_signing_certificate(
            key, root_key, root, f"fwrepo firmware signing {key_id}", self.clock(), SIGNING_DAYS
        )
        chain = pki.CheckedChain(leaf=certificate, intermediates=(), root=root)
        return self._register(key_id, key, algorithm, chain, "generated", by, action)

    def import_key(self, certificates_pem: bytes, key_pem: bytes, key_passphrase: bytes | None,
                   by: Performer, padding: str | None = None, padding_field: str = "scheme") -> KeyRecord:
        """Bring in a production key; an RSA key signs with padding (default PKCS#1 v1.5), which the key
        cannot tell, so the importer says it (padding_field is what the caller calls it, for refusals)."""
        key = pki.load_private_key(key_pem, key_passphrase, "key")
        algorithm = pki.algorithm_of(key, padding_name=padding, padding_field=padding_field)
        chain = pki.check_signing_chain(key, pki.load_certificates(certificates_pem, "cert"), self.clock())
        return self._register(secrets.token_hex(6), key, algorithm, chain, "imported", by, "key_import")

    def import_pkcs12(self, data: bytes, password: bytes | None, by: Performer, padding: str | None = None,
                      padding_field: str = "scheme") -> KeyRecord:
        """import_key, from a PKCS#12 file."""
        try:
            key, certificate, additional = pkcs12.load_key_and_certificates(data, password)
        except ValueError:
            raise pki.KeyMaterialError("pkcs12", "cannot be read: not PKCS#12, or the password is wrong") from None
        if key is None or certificate is None:
            raise pki.KeyMaterialError("pkcs12", "must hold a private key and its certificate")
        algorithm = pki.algorithm_of(key, padding_name=padding, padding_field=padding_field)  # type: ignore[arg-type]
        chain = pki.check_signing_chain(key, [certificate, *additional], self.clock(), "pkcs12")  # type: ignore[arg-type]
        return self._register(secrets.token_hex(6), key, algorithm, chain, "imported", by, "key_import")  # type: ignore[arg-type]

    def _register(self, key_id: str, key: pki.PrivateKey, algorithm: str, chain: pki.CheckedChain, origin: str,
                  by: Performer, action: str) -> KeyRecord:
        directory = self.tenant_dir(current_scope())
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(directory / f"signing-{key_id}.key", pki.encrypt_private_key(key, self.passphrase))
        chain_pem = "".join(pki.pem(cert) for cert in (*chain.intermediates, chain.root))
        _write_public(directory / f"signing-{key_id}.pem", (pki.pem(chain.leaf) + chain_pem).encode())
        row = SigningKey(
            id=key_id,
            algorithm=algorithm,
            status=KeyStatus.ACTIVE.value,
            origin=origin,
            certificate_pem=pki.pem(chain.leaf),
            chain_pem=chain_pem,
            fingerprint=pki.fingerprint(chain.leaf),
            not_before=chain.leaf.not_valid_before_utc,
            not_after=chain.leaf.not_valid_after_utc,
            created_at=self.clock(),
        )
        with self.database.session(exclusive=True) as session:
            for active in session.exec(own_rows(select(SigningKey).where(SigningKey.status == KeyStatus.ACTIVE.value))):
                active.status = KeyStatus.RETIRED.value
                session.add(active)
            session.add(row)
            session.flush()
            detail = {"algorithm": row.algorithm} | ({"fingerprint": row.fingerprint} if origin == "imported" else {})
            self.audit.record(by, action, f"signing key {key_id}", session, **detail)
        self._private_keys[key_id] = key
        return _record(row)

    # -- the registry ---------------------------------------------------------------------

    def active(self) -> KeyRecord | None:
        with self.database.session() as session:
            row = session.exec(own_rows(select(SigningKey).where(SigningKey.status == KeyStatus.ACTIVE.value))).first()
            return _record(row) if row else None

    def list(self) -> list[KeyRecord]:
        with self.database.session() as session:
            counts = dict(
                session.exec(
                    select(FirmwareSignature.key_id, func.count()).group_by(FirmwareSignature.key_id)
                ).all()
            )
            rows = session.exec(own_rows(select(SigningKey).order_by(col(SigningKey.created_at)))).all()
            return [_record(row, counts.get(row.id, 0)) for row in rows]

    def revoke(self, key_id: str, by: Performer) -> KeyRecord:
        """Stop a key: it signs nothing more, and its signatures no longer count."""
        with self.database.session(exclusive=True) as session:
            # Its own tenant's key only: a key of a tenant sharing builds here is read, never changed.
            row = session.get(SigningKey, key_id, execution_options=OWN_ROWS)
            if row is None:
                raise NotFound(f"no signing key with id {key_id}")
            if row.status != KeyStatus.REVOKED:
                row.status = KeyStatus.REVOKED.value
                row.revoked_at = self.clock()
                session.add(row)
                session.flush()
                self.audit.record(by, "key_revoke", f"signing key {key_id}", session)
        self._private_keys.pop(key_id, None)
        return self.get(key_id)

    def get(self, key_id: str) -> KeyRecord:
        with self.database.session() as session:
            row = session.get(SigningKey, key_id)
            if row is None:
                raise NotFound(f"no signing key with id {key_id}")
            return _record(row)

    def check_ready(self) -> None:
        """NoSigningKey unless this node can sign with the default tenant's active key and every other tenant's
        now (readiness): a node without a tenant's key files would refuse that tenant's publications."""
        if self.active() is None:
            raise NoSigningKey("no active signing key")
        with acting_in(EVERY_TENANT), self.database.session() as session:
            rows = session.exec(select(SigningKey).where(SigningKey.status == KeyStatus.ACTIVE.value)).all()
        for row in rows:
            self._private_key(_record(row))

    # -- signing --------------------------------------------------------------------------

    def _private_key(self, key: KeyRecord) -> pki.PrivateKey:
        if key.id not in self._private_keys:
            path = self.tenant_dir(key.tenant) / f"signing-{key.id}.key"
            if not path.exists():
                raise NoSigningKey(f"signing key {key.id} of tenant {key.tenant} has no private key file at {path} "
                                   "on this node")
            self._private_keys[key.id] = pki.load_private_key(path.read_bytes(), self.passphrase, path.name)
        return self._private_keys[key.id]

    def sign_image(self, sha256_hex: str) -> tuple[KeyRecord, str]:
        """Sign an image's digest with the tenant's active key (read from the registry, so a rotation elsewhere
        bites)."""
        active = self.active()
        if active is None:
            tenant = current_scope()
            raise NoSigningKey(f"no active signing key{_of(tenant)}: bring one in with `fwrepo keys import"
                               f"{tenant_option(tenant)} --cert CHAIN.pem --key KEY.pem`, or in development make one "
                               f"with `fwrepo keys init{tenant_option(tenant)}`")
        return active, pki.sign_digest(self._private_key(active), active.algorithm, sha256_hex)

    def sign_document(self, key_id: str, document: bytes) -> str:
        """Sign a document (a manifest's canonical JSON) with the tenant's key, in the key's scheme."""
        key = self.get(key_id)
        if key.status == KeyStatus.REVOKED:
            raise NoSigningKey(f"signing key {key_id} is revoked")
        return pki.sign_bytes(self._private_key(key), key.algorithm, document)

    def resign(self, by: Performer) -> int:
        """Sign the tenant's published firmware not yet signed by its active key with it; returns how many."""
        tenant = current_scope()
        with self.database.session(exclusive=True) as session:
            active = session.exec(own_rows(select(SigningKey).where(
                SigningKey.status == KeyStatus.ACTIVE.value))).first()
            if active is None:
                raise NoSigningKey(f"no active signing key{_of(tenant)} to re-sign with")
            signed_by_active = select(FirmwareSignature.firmware_id).where(FirmwareSignature.key_id == active.id)
            # Its own builds: one another tenant shares here is that tenant's to sign.
            rows = session.exec(own_rows(
                select(Firmware).where(Firmware.status == "published", col(Firmware.id).not_in(signed_by_active))
            )).all()
            key = self._private_key(_record(active))
            now = self.clock()
            for row in rows:
                session.add(
                    FirmwareSignature(firmware_id=row.id, key_id=active.id,
                                      signature=pki.sign_digest(key, active.algorithm, row.sha256), created_at=now)
                )
            session.flush()
            self.audit.record(by, "key_resign", "published firmware", session, count=len(rows))
            return len(rows)


def _of(tenant: str) -> str:
    """How a message names tenant: as it did before tenants existed for the default one."""
    return "" if tenant == DEFAULT_TENANT else f" in tenant {tenant}"


def tenant_option(tenant: str) -> str:
    """The option a suggested command takes to act in tenant (none for the default tenant)."""
    return "" if tenant == DEFAULT_TENANT else f" --tenant {tenant}"


def open_signing_keys(database: Database, audit: Audit, keys_dir: Path, passphrase: str | None, algorithm: str,
                      clock: Clock = utc_now) -> tuple[SigningKeys, bool]:
    """The signing keys with their passphrase; True when it is the generated development one."""
    if passphrase:
        return SigningKeys(database, audit, keys_dir, passphrase.encode(), algorithm, clock), False
    return SigningKeys(database, audit, keys_dir, development_passphrase(keys_dir), algorithm, clock), True
