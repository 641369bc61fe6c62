"""Signed checkpoints of the audit chain's head: what makes a rewritten or truncated trail show.

Whoever can write the audit table can change a row and recompute every later
hash, or cut rows off the end, and the chain alone still holds. So every
FWREPO_AUDIT_CHECKPOINT_INTERVAL seconds one node (a lease) signs the head,
(seq, hash of row seq, time), with an Ed25519 key that lives in a file, never
in the database, and at shutdown each node signs it once more. A checkpoint
goes to three places: an append-only file of the node's (the checkpoint log),
the process log (syslog, journald, a log shipper), and the database (one
place that gathers every node's). `verify_trail` checks every checkpoint's
signature against the public key and the chain against every checkpoint: a
rewrite breaks the hash a checkpoint signed, a truncation leaves a checkpoint
past the chain's end. What stays unprotected is the rows after the newest
checkpoint that survives outside the database: one interval while a writer
runs.

Ed25519 because verifying needs only the public key (an auditor offline,
with the log and a dump, holds no secret), its signatures are deterministic
and short, and there are no parameters to get wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import col, func, select

from repo_service.db.models import AuditCheckpoint, AuditEvent, Tenant
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, acting_in
from repo_service.domain import leases
from repo_service.domain.audit import GENESIS, Anchor, Audit, Break
from repo_service.domain.background import repeating
from repo_service.domain.clock import Clock, parse_moment, rfc3339, utc_now
from repo_service.domain.owner_files import write_private
from repo_service.errors import FwrepoError, InvalidInput

log = logging.getLogger(__name__)

# Domain separation: a signature by this key over these bytes can mean nothing but an audit checkpoint.
PURPOSE = "fwrepo audit checkpoint v1"
PERIODIC, SHUTDOWN = "periodic", "shutdown"
LEASE = "audit-checkpoint"
# The process log line that carries a checkpoint, so that a copy of the logs is a checkpoint log too.
LOG_PREFIX = "audit checkpoint "
PAGE = 5000


@dataclass(frozen=True)
class Checkpoint:
    """Row `seq` of tenant's audit chain had `hash` at `at`, as `node` saw it and signed with key `key_id`."""

    seq: int
    hash: str
    at: datetime
    reason: str
    node: str
    key_id: str
    signature: str
    tenant: str = DEFAULT_TENANT

    @staticmethod
    def signed_bytes(seq: int, digest: str, at: datetime, reason: str, node: str, tenant: str) -> bytes:
        # The default tenant's checkpoints are signed as they were before there were tenants, so the logs
        # of a single operator's installation stay valid; another tenant's name is signed with its head.
        named = [tenant] if tenant != DEFAULT_TENANT else []
        return json.dumps([PURPOSE, seq, digest, rfc3339(at), reason, node, *named], separators=(",", ":")).encode()

    def line(self) -> str:
        """The checkpoint as one line of the checkpoint log."""
        named = {"tenant": self.tenant} if self.tenant != DEFAULT_TENANT else {}
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": rfc3339(self.at), "reason": self.reason,
                           "node": self.node, "key": self.key_id, "signature": self.signature, **named},
                          separators=(",", ":"))

    def forgery(self, trusted: Sequence[Ed25519PublicKey]) -> str | None:
        """Why no trusted key signed this checkpoint, or None when one did."""
        keys = [key for key in trusted if key_id(key) == self.key_id]
        if not keys:
            return (f"the checkpoint of {rfc3339(self.at)} for row {self.seq} is signed by key {self.key_id}, "
                    "not the audit key: it is forged (or give that key's public half with --public-key)")
        try:
            signature = base64.b64decode(self.signature, validate=True)
            keys[0].verify(signature, self.signed_bytes(self.seq, self.hash, self.at, self.reason, self.node,
                                                        self.tenant))
        except (InvalidSignature, ValueError):
            return f"the checkpoint of {rfc3339(self.at)} for row {self.seq} has a bad signature: it is forged"
        return None


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: the start of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(private_key_path: Path) -> Path:
    """Where the public half of a checkpoint key made by fwrepo is written, for verifying elsewhere."""
    return private_key_path.with_name(private_key_path.name.removesuffix(".pem") + ".pub.pem")


def open_checkpoint_key(path: Path) -> Ed25519PrivateKey:
    """The key in path that signs checkpoints, made on first use (0600, its public half beside it)."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # Written aside, then linked into place: nodes sharing the keys directory that start together
        # see the whole key or none, and the first one's stays.
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(temporary, pem)
            os.link(temporary, path)
        except FileExistsError:
            pass  # another node made it first: use theirs
        except OSError as error:
            raise FwrepoError(f"FWREPO_AUDIT_KEY: there is no audit checkpoint key at {path} and none can be made "
                              f"there ({error.strerror}); make one with `openssl genpkey -algorithm ed25519 -out "
                              f"{path}` where it is writable and give every node that same file") from None
        else:
            public = public_key_path(path)
            # Not secret, but nothing under the data directory is for every local user to read.
            with os.fdopen(os.open(public, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640), "wb") as file:
                file.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
            log.warning("made the audit checkpoint key %s; every node must use this same file (FWREPO_AUDIT_KEY), "
                        "and `fwrepo audit verify --public-key %s` checks checkpoints without it", path, public)
        finally:
            temporary.unlink(missing_ok=True)
    return _private_key(path)


def _private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise FwrepoError(f"FWREPO_AUDIT_KEY: cannot read {path}: {error.strerror}") from None
    except (ValueError, TypeError):
        raise FwrepoError(f"FWREPO_AUDIT_KEY: {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FwrepoError(f"FWREPO_AUDIT_KEY: {path} is not an Ed25519 key (`openssl genpkey -algorithm ed25519`)")
    return key


def trusted_keys(public_key_files: Sequence[Path], private_key_file: Path) -> list[Ed25519PublicKey]:
    """The keys whose checkpoints count: the public keys given, else the public half of the private key file."""
    if not public_key_files:
        if not private_key_file.exists():
            raise FwrepoError(f"no audit key at {private_key_file} (FWREPO_AUDIT_KEY) to check the checkpoints "
                              "with: give its public half with --public-key FILE")
        return [_private_key(private_key_file).public_key()]
    keys = []
    for path in public_key_files:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as error:
            raise FwrepoError(f"--public-key {path}: {error.strerror}") from None
        except ValueError:
            raise FwrepoError(f"--public-key {path}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise FwrepoError(f"--public-key {path}: not an Ed25519 public key")
        keys.append(key)
    return keys


def append_line(path: Path, line: str) -> None:
    """Add one line to an append-only file, on disk before returning.

    Opened per line with O_APPEND, so the file may be rotated underneath and may carry the append-only
    attribute (`chattr +a`), which lets this process add lines but not rewrite or shorten it. A line torn
    by a crash is closed first, so it spoils only itself.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(descriptor).st_size
        torn = size > 0 and os.pread(descriptor, 1, size - 1) != b"\n"
        os.write(descriptor, (("\n" if torn else "") + line + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class CheckpointLines:
    """The checkpoints in a checkpoint log, or in a copy of the process log, read as they are iterated.

    A line may be the checkpoint alone (the checkpoint log), end in one (syslog: a prefix, then the
    message), or be a JSON log record whose message ends in one (FWREPO_LOG_FORMAT=json). Lines without a
    checkpoint are counted in `other`, not fatal: they carry no signature, so they can neither vouch nor
    accuse.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = lines
        self.other = 0

    def __iter__(self) -> Iterator[Checkpoint]:
        for line in self.lines:
            if not line.strip():
                continue
            checkpoint = _checkpoint_in(line)
            if checkpoint is None:
                self.other += 1
            else:
                yield checkpoint


def _checkpoint_in(text: str) -> Checkpoint | None:
    start = text.find("{")
    if start < 0:
        return None
    try:
        document = json.loads(text[start:])
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("message"), str):
        return _checkpoint_in(document["message"])
    return _parsed(document)


def _parsed(document: dict[str, Any]) -> Checkpoint | None:
    fields = {"seq": int, "hash": str, "at": str, "reason": str, "node": str, "key": str, "signature": str}
    if any(type(document.get(name)) is not kind for name, kind in fields.items()):
        return None
    tenant = document.get("tenant", DEFAULT_TENANT)
    if type(tenant) is not str:
        return None
    try:
        at = parse_moment(document["at"], "at")
    except InvalidInput:
        return None
    return Checkpoint(document["seq"], document["hash"], at, document["reason"], document["node"], document["key"],
                      document["signature"], tenant)


def stored_checkpoints(database: Database) -> Iterator[Checkpoint]:
    """The checkpoints the database holds, every tenant's and every node's (anyone who can write the database
    can delete them)."""
    after = 0
    while True:
        with acting_in(EVERY_TENANT), database.session() as session:
            page = session.exec(select(AuditCheckpoint).where(col(AuditCheckpoint.id) > after)
                                .order_by(col(AuditCheckpoint.id)).limit(PAGE)).all()
        if not page:
            return
        for row in page:
            yield Checkpoint(row.seq, row.hash, row.at, row.reason, row.node, row.key_id, row.signature, row.tenant)
        after = page[-1].id or after


class CheckpointWriter:
    """Signs the audit chain's head: once per interval on one node of many, and once on each node's way out."""

    def __init__(self, database: Database, key: Ed25519PrivateKey, log_path: Path, interval: float,
                 clock: Clock = utc_now) -> None:
        self.database = database
        self.key = key
        self.key_id = key_id(key.public_key())
        self.log_path = log_path
        self.interval = interval
        self.clock = clock

    def write(self, reason: str) -> list[Checkpoint]:
        """Sign every tenant's head as it is now, and keep the checkpoints in the log file, the process log and
        the database."""
        with acting_in(EVERY_TENANT), self.database.session() as session:
            newest = (select(AuditEvent.tenant, func.max(AuditEvent.seq).label("seq"))
                      .group_by(col(AuditEvent.tenant)).subquery())
            heads = {tenant: (seq, digest) for tenant, seq, digest in session.exec(
                select(AuditEvent.tenant, AuditEvent.seq, AuditEvent.hash)
                .join(newest, (col(AuditEvent.tenant) == newest.c.tenant) & (col(AuditEvent.seq) == newest.c.seq)))}
            tenants = session.exec(select(Tenant.name).order_by(col(Tenant.name))).all()
        # Stamped after the heads were read: the rows they name were committed by then.
        at = self.clock().replace(microsecond=0)
        checkpoints = []
        for tenant in tenants:
            seq, digest = heads.get(tenant, (0, GENESIS))
            signature = self.key.sign(Checkpoint.signed_bytes(seq, digest, at, reason, leases.HOLDER, tenant))
            checkpoint = Checkpoint(seq, digest, at, reason, leases.HOLDER, self.key_id,
                                    base64.b64encode(signature).decode(), tenant)
            append_line(self.log_path, checkpoint.line())
            log.info("%s%s", LOG_PREFIX, checkpoint.line())
            checkpoints.append(checkpoint)
        with acting_in(EVERY_TENANT), self.database.session() as session:
            session.add_all(AuditCheckpoint(tenant=checkpoint.tenant, seq=checkpoint.seq, hash=checkpoint.hash, at=at,
                                            reason=reason, node=checkpoint.node, key_id=self.key_id,
                                            signature=checkpoint.signature) for checkpoint in checkpoints)
        return checkpoints

    def round(self) -> list[Checkpoint] | None:
        """One periodic checkpoint, if this node holds this round's lease (None when another node does)."""
        if not leases.take(self.database, LEASE, self.interval, self.clock()):
            return None
        return self.write(PERIODIC)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """While the block runs, a round every interval; when it ends, this node's shutdown checkpoint.

        The shutdown checkpoint is written after the block, so it covers what the block wrote last
        (the download records flushed on the way out).
        """
        self._warn_of_another_key()
        try:
            with repeating("audit-checkpoint", self.interval, self.round):
                yield
        finally:
            try:
                self.write(SHUTDOWN)
            except Exception:  # the database or the disk is gone: say so, and let the shutdown go on
                log.exception("the shutdown audit checkpoint could not be written")

    def _warn_of_another_key(self) -> None:
        """Say so when the newest checkpoint was signed with another key: nodes that do not share one key file
        make checkpoints that verify counts as forged (after a deliberate key change, once, it is expected)."""
        with acting_in(EVERY_TENANT), self.database.session() as session:
            newest = session.exec(select(AuditCheckpoint.key_id).order_by(col(AuditCheckpoint.id).desc())
                                  .limit(1)).first()
        if newest is not None and newest != self.key_id:
            log.warning("the newest audit checkpoint is signed with key %s, this node's key (FWREPO_AUDIT_KEY) is %s: "
                        "every node must use the same key file, or `fwrepo audit verify` calls the other's "
                        "checkpoints forged", newest, self.key_id)


@dataclass(frozen=True)
class TrailReport:
    """What `verify_trail` found for one tenant's chain: rows checked, checkpoints verified per source, the newest,
    the first break."""

    tenant: str
    events: int
    checkpoints: Mapping[str, int]
    newest: Checkpoint | None
    broken: Break | None


def verify_trail(audit: Audit, sources: Mapping[str, Iterable[Checkpoint]],
                 trust: Callable[[], Sequence[Ed25519PublicKey]], tenants: Sequence[str]) -> list[TrailReport]:
    """For each tenant: every checkpoint of its chain signed by a trusted key, and the chain intact and matching
    every one of them.

    `sources` name where checkpoints come from (the database, each log); they are read once, keeping
    one anchor per row, so a year of checkpoints needs no year of memory; checkpoints of other tenants'
    chains are passed over. `trust` gives the public keys and is called only if there is a checkpoint to check.
    """
    counts = {tenant: {name: 0 for name in sources} for tenant in tenants}
    anchors: dict[str, dict[int, Anchor]] = {tenant: {} for tenant in tenants}
    newest: dict[str, Checkpoint] = {}
    forged: dict[str, Break] = {}
    trusted: Sequence[Ed25519PublicKey] | None = None
    for name, checkpoints in sources.items():
        for checkpoint in checkpoints:
            tenant = checkpoint.tenant
            if tenant not in anchors or tenant in forged:
                continue
            counts[tenant][name] += 1
            trusted = trust() if trusted is None else trusted
            forgery = checkpoint.forgery(trusted)
            if forgery is not None:
                forged[tenant] = Break(checkpoint.seq, forgery)
                continue
            known = anchors[tenant].get(checkpoint.seq)
            if known is not None and known.hash != checkpoint.hash:
                first, second = sorted((known.at, checkpoint.at))
                forged[tenant] = Break(checkpoint.seq, (
                    f"the checkpoints of {rfc3339(first)} and {rfc3339(second)} sign different hashes for row "
                    f"{checkpoint.seq}: the chain was rewritten between them"))
                continue
            if known is None or checkpoint.at < known.at:
                anchors[tenant][checkpoint.seq] = Anchor(checkpoint.seq, checkpoint.hash, checkpoint.at)
            latest = newest.get(tenant)
            if latest is None or (checkpoint.at, checkpoint.seq) > (latest.at, latest.seq):
                newest[tenant] = checkpoint
    reports = []
    for tenant in tenants:
        if tenant in forged:
            reports.append(TrailReport(tenant, 0, counts[tenant], None, forged[tenant]))
            continue
        with acting_in(tenant):
            events, broken = audit.verify(anchors[tenant])
        reports.append(TrailReport(tenant, events, counts[tenant], newest.get(tenant), broken))
    return reports
