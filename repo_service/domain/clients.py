"""API clients, their keys and roles: who may do what.

A key is shown once, when it is made, and stored only as its SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlmodel import select

from repo_service.db.models import ApiClient
from repo_service.db.session import Database
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clock import Clock, utc_now
from repo_service.errors import Forbidden, InvalidInput, NotFound, Unauthenticated

KEY_PREFIX = "fwr_"


class Role(StrEnum):
    RELEASE = "release"
    CSMS = "csms"
    ADMIN = "admin"


class Action(StrEnum):
    READ_CATALOG = "read the catalog"
    DOWNLOAD_CONTENT = "download firmware content"
    UPLOAD = "upload firmware"
    PUBLISH = "publish firmware"
    YANK = "yank firmware"
    QUERY_UPDATES = "ask for updates"
    MANAGE_SIGNERS = "manage uploader signing keys"
    GRANT = "issue and revoke download grants"
    READ_AUDIT = "read the audit trail"
    MANAGE_WEBHOOKS = "manage webhooks"


# Release engineers own the builds; a CSMS only reads what it needs to offer
# updates, and registers the webhooks that push it what it would poll for; admins may do everything.
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.RELEASE: frozenset(
        {Action.READ_CATALOG, Action.DOWNLOAD_CONTENT, Action.UPLOAD, Action.PUBLISH, Action.YANK, Action.QUERY_UPDATES}
    ),
    Role.CSMS: frozenset({Action.READ_CATALOG, Action.QUERY_UPDATES, Action.GRANT, Action.MANAGE_WEBHOOKS}),
    Role.ADMIN: frozenset(Action),
}


@dataclass(frozen=True)
class Actor:
    """The authenticated caller of one request."""

    client_id: str
    name: str
    role: Role

    @property
    def performer(self) -> Performer:
        return Performer.client(self.client_id, self.name)

    def require(self, action: Action) -> None:
        if action not in PERMISSIONS[self.role]:
            raise Forbidden(f"role {self.role} may not {action}")


@dataclass(frozen=True)
class ClientRecord:
    id: str
    name: str
    role: Role
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _record(row: ApiClient) -> ClientRecord:
    return ClientRecord(row.id, row.name, Role(row.role), row.key_prefix, row.created_at, row.revoked_at)


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidInput("role", f"must be one of {', '.join(Role)}, got {text!r}") from None


class Clients:
    def __init__(self, database: Database, audit: Audit, clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.clock = clock

    def create(self, name: str, role: Role, by: Performer) -> tuple[ClientRecord, str]:
        """Make a client and return it with its key, which is not stored anywhere."""
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise InvalidInput("name", "must be 1-100 printable characters")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiClient(
            id=secrets.token_hex(6),
            name=name,
            role=role.value,
            key_hash=_hash_key(key),
            key_prefix=key[: len(KEY_PREFIX) + 4],
            created_at=self.clock(),
        )
        with self.database.session() as session:
            session.add(row)
            session.flush()
            self.audit.record(by, "client_create", f"client {row.id}", session, name=row.name, role=row.role)
        return _record(row), key

    def list(self) -> list[ClientRecord]:
        with self.database.session() as session:
            rows = session.exec(select(ApiClient).order_by(ApiClient.created_at, ApiClient.id)).all()
            return [_record(row) for row in rows]

    def revoke(self, client_id: str, by: Performer) -> ClientRecord:
        with self.database.session(exclusive=True) as session:
            row = session.get(ApiClient, client_id)
            if row is None:
                raise NotFound(f"no client with id {client_id}")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                session.add(row)
                session.flush()
                self.audit.record(by, "client_revoke", f"client {row.id}", session, name=row.name)
            return _record(row)

    def authenticate(self, key: str | None) -> Actor:
        if not key:
            raise Unauthenticated("an API key is required: send Authorization: Bearer KEY")
        # Malformed keys get the same answer as unknown ones: nothing to learn.
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            raise Unauthenticated("the API key is not valid")
        with self.database.session() as session:
            row = session.exec(select(ApiClient).where(ApiClient.key_hash == _hash_key(key))).first()
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("the API key is not valid")
        return Actor(client_id=row.id, name=row.name, role=Role(row.role))
