"""Taking in a firmware image: its description, its bytes, and the rule that stored bytes never change."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from repo_service.db.models import Firmware, FirmwareModel, PendingWrite
from repo_service.db.tenancy import current_scope, own_rows
from repo_service.domain import pki
from repo_service.domain.audit import Performer
from repo_service.domain.catalog import Catalog, FirmwareRecord, Status, load_records, storage_prefix
from repo_service.domain.quotas import Quotas, Room
from repo_service.domain.signers import Signers
from repo_service.domain.versions import parse_version
from repo_service.errors import Conflict, InvalidInput, QuotaExceeded, StorageUnavailable, TooLarge
from repo_service.storage import StoredObject

log = logging.getLogger(__name__)

# OCPP 2.0.1 allows 50 characters for a vendor name; 1.6 allows 20 for vendor and model.
MAX_NAME = 50
MAX_LIST = 100
MAX_RELEASE_NOTES = 64 * 1024
_CHANNEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")

REQUIRED_FIELDS = frozenset({"vendor", "models", "version"})
SINGLE_FIELDS = frozenset({"vendor", "version", "channel", "min_version", "release_notes", "sha256", "signature"})
LIST_FIELDS = frozenset({"models", "hardware_revisions"})
FIELDS = SINGLE_FIELDS | LIST_FIELDS


@dataclass(frozen=True)
class UploadRequest:
    vendor: str
    models: tuple[str, ...]
    version: str
    version_canonical: str
    hardware_revisions: tuple[str, ...] = ()
    channel: str = "stable"
    min_version: str | None = None
    release_notes: str = ""
    sha256: str | None = None
    # DER bytes of the release engineer's signature over the image, if one came with it.
    signature: bytes | None = None


@dataclass(frozen=True)
class UploadOutcome:
    firmware: FirmwareRecord
    created: bool


def check_name(field: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(field, f"must be at most {MAX_NAME} characters")
    if not (value.isascii() and value.isprintable()):
        raise InvalidInput(field, "must be printable ASCII, as OCPP identifiers are")
    return value


def _names(field: str, values: Sequence[str], required: bool) -> tuple[str, ...]:
    # Repeated form fields and comma-separated lists both work: `-F models=A -F models=B` or `-F models=A,B`.
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                name = check_name(field, part)
                if name not in names:
                    names.append(name)
    if required and not names:
        raise InvalidInput(field, "at least one is required")
    if len(names) > MAX_LIST:
        raise InvalidInput(field, f"at most {MAX_LIST} are allowed")
    return tuple(names)


def parse_upload_fields(fields: Mapping[str, Sequence[str]]) -> UploadRequest:
    """Check an upload's form fields; raise InvalidInput naming the first bad one."""
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown field; expected some of {', '.join(sorted(FIELDS))}")
    for name in REQUIRED_FIELDS:
        if not any(value.strip() for value in fields.get(name, ())):
            raise InvalidInput(name, "is required")
    single: dict[str, str] = {}
    for name in SINGLE_FIELDS & set(fields):
        if len(fields[name]) > 1:
            raise InvalidInput(name, "was given more than once")
        single[name] = fields[name][0]
    vendor = check_name("vendor", single["vendor"])
    version = parse_version(single["version"].strip(), "version")
    channel = single.get("channel", "stable").strip() or "stable"
    if not _CHANNEL.fullmatch(channel):
        raise InvalidInput("channel", "must be 1-32 lowercase letters, digits or dashes")
    min_version = None
    if single.get("min_version", "").strip():
        minimum = parse_version(single["min_version"].strip(), "min_version")
        if minimum > version:
            raise InvalidInput("min_version", f"{minimum.text} is newer than the version itself ({version.text})")
        min_version = minimum.text
    release_notes = single.get("release_notes", "")
    if len(release_notes.encode()) > MAX_RELEASE_NOTES:
        raise InvalidInput("release_notes", f"must be at most {MAX_RELEASE_NOTES} bytes")
    declared = single.get("sha256", "").strip() or None
    if declared is not None and not _SHA256.fullmatch(declared):
        raise InvalidInput("sha256", "must be 64 hexadecimal characters")
    signature = single.get("signature", "").strip()
    return UploadRequest(
        vendor=vendor,
        models=_names("models", fields["models"], required=True),
        version=version.text,
        version_canonical=version.canonical,
        hardware_revisions=_names("hardware_revisions", fields.get("hardware_revisions", ()), required=False),
        channel=channel,
        min_version=min_version,
        release_notes=release_notes,
        sha256=declared.lower() if declared else None,
        signature=pki.decode_signature(signature) if signature else None,
    )


def safe_filename(name: str | None, request: UploadRequest) -> str:
    """A file name that is printable ASCII without separators: it ends up in charger URLs."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_FILENAME.sub("_", base).lstrip("._")[:100]
    if not base:
        base = _UNSAFE_FILENAME.sub("_", f"{request.vendor}-{request.version}.bin").lstrip("._")[:100]
    return base


class _SameBytes(Exception):
    """The version exists with exactly these bytes: not an error, the upload is a no-op."""

    def __init__(self, record: FirmwareRecord) -> None:
        self.record = record


def _listed(names: Sequence[str], none: str) -> str:
    return ", ".join(names) or none


def _quoted(text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return repr(shown) if text else "none"


def _refuse_other_metadata(record: FirmwareRecord, request: UploadRequest, signed_by: str | None) -> None:
    """The same bytes described otherwise are refused, naming each difference: a stored build's description does
    not change under the chargers and campaigns that already use it, and dropping the new one would be silent."""
    differences = [
        (label, stored, sent)
        for label, differ, stored, sent in (
            ("models", set(record.models) != set(request.models),
             _listed(record.models, "none"), _listed(request.models, "none")),
            ("hardware revisions", set(record.hardware_revisions) != set(request.hardware_revisions),
             _listed(record.hardware_revisions, "any"), _listed(request.hardware_revisions, "any")),
            ("channel", record.channel != request.channel, record.channel, request.channel),
            ("min version", record.min_version != request.min_version,
             record.min_version or "none", request.min_version or "none"),
            ("release notes", record.release_notes != request.release_notes,
             _quoted(record.release_notes), _quoted(request.release_notes)),
            ("signer", record.signed_by != signed_by, record.signed_by or "unsigned", signed_by or "unsigned"),
        )
        if differ
    ]
    if not differences:
        return
    stored = ", ".join(f"{label} {value}" for label, value, _ in differences)
    sent = "; ".join(f"{label}: {value}" for label, _, value in differences)
    raise Conflict(
        f"already stored as {record.vendor} {record.version} ({record.id}) with {stored}; this upload differs in "
        f"{sent}. A stored build's metadata never changes: send it as stored, or upload under a new version"
    )


class Uploads:
    def __init__(self, catalog: Catalog, signers: Signers, quotas: Quotas, max_bytes: int,
                 require_signature: bool = False) -> None:
        self.catalog = catalog
        self.signers = signers
        self.quotas = quotas
        self.max_bytes = max_bytes
        self.require_signature = require_signature

    def upload(
        self,
        content: Iterable[bytes],
        describe: Callable[[], tuple[UploadRequest, str | None]],
        by: Performer,
        size_at_least: int = 0,
        described_early: UploadRequest | None = None,
    ) -> UploadOutcome:
        """Store an image and its record, or nothing at all.

        ``describe`` is called once the bytes have all arrived, because a form
        may send its fields after the file; it returns the request and the
        client's file name.

        The tenant's quotas are checked when the build is recorded, and before: when the fields came before the
        file (described_early) and name a version not stored yet, before any byte is stored (with size_at_least,
        what the request's length says the image has at least) and again as its bytes arrive. Not without them: a
        retry of a build already stored must still get its 200, whatever the tenant holds now.
        """
        catalog = self.catalog
        room = None
        if described_early is not None and self._stored_version(described_early) is None:
            room = self.quotas.bytes_left(size_at_least)
        firmware_id = secrets.token_hex(8)
        # An upload acts in one tenant (its key's): the bytes go where that tenant's builds are stored.
        key = storage_prefix(current_scope()) + firmware_id
        with catalog.database.session() as session:
            session.add(PendingWrite(storage_key=key, started_at=catalog.clock()))
        described: list[tuple[UploadRequest, str | None, str | None]] = []

        def check(stored: StoredObject) -> None:
            request, filename = describe()
            by.require_vendor(request.vendor)
            if stored.size == 0:
                raise InvalidInput("file", "is empty")
            if request.sha256 and not hmac.compare_digest(request.sha256, stored.sha256):
                raise InvalidInput(
                    "sha256", f"declared {request.sha256} but the uploaded bytes have SHA-256 {stored.sha256}"
                )
            signed_by = self._uploader_signer(request, stored.sha256)
            described.append((request, filename, signed_by))
            self._refuse_other_bytes(request, stored.sha256, signed_by)
            # A new build: refused here, before storage makes the object visible, if it does not fit.
            self.quotas.bytes_left(stored.size, exact=True)

        try:
            stored = catalog.storage.write(key, self._limited(content, room), check)
        except _SameBytes as same:
            self._forget_pending(key)
            return UploadOutcome(same.record, created=False)
        except BaseException as error:
            self._forget_pending(key)
            # Operators see why an upload left nothing behind; tests wait for this line.
            log.info("upload %s abandoned, nothing stored: %s", firmware_id, error)
            raise
        request, filename, signed_by = described[0]
        try:
            record = self._insert(
                firmware_id, key, stored, request, safe_filename(filename, request), by, signed_by
            )
        except IntegrityError:
            # Another upload of the same version won the race between our check and insert.
            self._forget_pending(key)
            try:
                self._refuse_other_bytes(request, stored.sha256, signed_by)
            except _SameBytes as same:
                return UploadOutcome(same.record, created=False)
            raise
        except QuotaExceeded as error:
            # Another upload of the tenant's took the room between check and insert.
            self._forget_pending(key)
            log.info("upload %s abandoned, nothing stored: %s", firmware_id, error)
            raise
        return UploadOutcome(record, created=True)

    def _limited(self, chunks: Iterable[bytes], room: Room | None) -> Iterator[bytes]:
        total = 0
        for chunk in chunks:
            total += len(chunk)
            if total > self.max_bytes:
                raise TooLarge("file", f"is larger than the {self.max_bytes} bytes this repository accepts")
            if room is not None and total > room.left:
                raise self.quotas.overflowed(room, total)
            yield chunk

    def _uploader_signer(self, request: UploadRequest, sha256: str) -> str | None:
        if request.signature is None:
            if self.require_signature:
                raise InvalidInput(
                    "signature",
                    "is required: this repository accepts only images signed by a registered release engineer's key",
                )
            return None
        signer = self.signers.identify(sha256, request.signature)
        if signer is None:
            raise InvalidInput("signature", "does not verify over this image with any registered signer's key")
        return signer

    def _refuse_other_bytes(self, request: UploadRequest, sha256: str, signed_by: str | None) -> None:
        """Nothing stored under this version: go on; these bytes and this description: the upload is a no-op;
        anything else is refused, saying what differs."""
        with self.catalog.database.session() as session:
            row = self._stored_version(request, session)
            if row is None:
                return
            if hmac.compare_digest(row.sha256, sha256):
                record = load_records(session, [row])[0]
                _refuse_other_metadata(record, request, signed_by)
                raise _SameBytes(record)
            raise Conflict(
                f"{request.vendor} {row.version} is already stored with other bytes (SHA-256 {row.sha256}); "
                "a version's bytes never change: upload under a new version"
            )

    def _stored_version(self, request: UploadRequest, session: Session | None = None) -> Firmware | None:
        if session is None:
            with self.catalog.database.session() as own:
                return self._stored_version(request, own)
        # A version is unique within its tenant: a build of it that another tenant shares here is no clash.
        return session.exec(own_rows(select(Firmware).where(
            Firmware.vendor == request.vendor, Firmware.version_canonical == request.version_canonical))).first()

    def _insert(
        self,
        firmware_id: str,
        key: str,
        stored: StoredObject,
        request: UploadRequest,
        filename: str,
        by: Performer,
        signed_by: str | None,
    ) -> FirmwareRecord:
        row = Firmware(
            id=firmware_id,
            vendor=request.vendor,
            version=request.version,
            version_canonical=request.version_canonical,
            channel=request.channel,
            status=Status.UPLOADED.value,
            size=stored.size,
            sha256=stored.sha256,
            md5=stored.md5,
            storage_key=key,
            filename=filename,
            min_version=request.min_version,
            hardware_revisions=list(request.hardware_revisions),
            release_notes=request.release_notes,
            uploaded_by=by.client_id,
            signed_by=signed_by,
            created_at=self.catalog.clock(),
        )
        # Exclusive: on SQLite the quota's count and the insert must not interleave with another upload's.
        with self.catalog.database.session(exclusive=True) as session:
            self.quotas.hold_build(session, stored.size)
            session.add(row)
            session.flush()
            session.add_all(FirmwareModel(firmware_id=firmware_id, model=model) for model in request.models)
            session.exec(delete(PendingWrite).where(col(PendingWrite.storage_key) == key))
            session.flush()
            self.catalog.audit.record(by, "upload", f"firmware {firmware_id}", session, vendor=row.vendor,
                                      version=row.version, sha256=row.sha256, size=row.size)
            return load_records(session, [row])[0]

    def _forget_pending(self, key: str) -> bool:
        """Remove whatever a failed write left; keep the pending record if storage cannot be reached."""
        try:
            self.catalog.storage.delete(key)
        except StorageUnavailable as error:
            log.warning("left %s for `fwrepo storage sweep`: %s", key, error)
            return False
        with self.catalog.database.session() as session:
            session.exec(delete(PendingWrite).where(col(PendingWrite.storage_key) == key))
        return True

    def sweep(self, older_than: timedelta) -> list[str]:
        """Delete what interrupted writes left behind (a killed process, storage down at abort time)."""
        cutoff = self.catalog.clock() - older_than
        with self.catalog.database.session() as session:
            keys = session.exec(select(PendingWrite.storage_key).where(PendingWrite.started_at <= cutoff)).all()
        return [key for key in keys if self._forget_pending(key)]
