"""API clients, their keys and roles: who may do what.

A key is shown once, when it is made, and stored only as its SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlmodel import select

from repo_service.db.models import ApiClient
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, EVERY_TENANT, acting_in
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.tenants import enabled
from repo_service.domain.uploads import check_name
from repo_service.errors import Forbidden, InvalidInput, NotFound, Unauthenticated

KEY_PREFIX = "fwr_"


class Role(StrEnum):
    RELEASE = "release"
    CSMS = "csms"
    ADMIN = "admin"
    PLATFORM = "platform"


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
    MANAGE_TENANTS = "manage tenants"
    MANAGE_USERS = "manage console users and API clients"


# Release engineers own the builds; a CSMS only reads what it needs to offer
# updates, and registers the webhooks that push it what it would poll for; admins may do everything inside
# their tenant; the platform role manages tenants and reads across them, and changes nothing inside one.
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.RELEASE: frozenset(
        {Action.READ_CATALOG, Action.DOWNLOAD_CONTENT, Action.UPLOAD, Action.PUBLISH, Action.YANK, Action.QUERY_UPDATES}
    ),
    Role.CSMS: frozenset({Action.READ_CATALOG, Action.QUERY_UPDATES, Action.GRANT, Action.MANAGE_WEBHOOKS}),
    Role.ADMIN: frozenset(Action) - {Action.MANAGE_TENANTS},
    Role.PLATFORM: frozenset({Action.MANAGE_TENANTS, Action.READ_CATALOG, Action.READ_AUDIT}),
}


@dataclass(frozen=True)
class Actor:
    """The authenticated caller of one request."""

    client_id: str
    name: str
    role: Role
    tenant: str = DEFAULT_TENANT
    vendors: frozenset[str] | None = None
    # A person signed in to the console (repo_service.domain.users), not an API key.
    user: bool = False

    @property
    def performer(self) -> Performer:
        if self.user:
            return Performer.user(self.client_id, self.name)
        return Performer.client(self.client_id, self.name, self.vendors)

    @property
    def scope(self) -> str:
        """The tenant scope the caller's requests run in: its tenant's, or every tenant's for the platform."""
        return EVERY_TENANT if self.role is Role.PLATFORM else self.tenant

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
    tenant: str
    vendors: tuple[str, ...] | None


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _record(row: ApiClient) -> ClientRecord:
    return ClientRecord(row.id, row.name, Role(row.role), row.key_prefix, row.created_at, row.revoked_at, row.tenant,
                        tuple(row.vendors) if row.vendors is not None else None)


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

    def create(self, name: str, role: Role, by: Performer, tenant: str = DEFAULT_TENANT,
               vendors: Sequence[str] = ()) -> tuple[ClientRecord, str]:
        """Make a client of tenant (a release key limited to vendors, if any are named) and return it with its
        key, which is not stored anywhere."""
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise InvalidInput("name", "must be 1-100 printable characters")
        if role is Role.PLATFORM and tenant != DEFAULT_TENANT:
            raise InvalidInput("role", f"platform keys belong to the {DEFAULT_TENANT} tenant: they act across tenants")
        limited = sorted({check_name("vendor", vendor) for vendor in vendors}) or None
        if limited is not None and role is not Role.RELEASE:
            raise InvalidInput("vendor", f"only release keys are limited to vendors, not {role} keys")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiClient(
            id=secrets.token_hex(6),
            name=name,
            role=role.value,
            key_hash=_hash_key(key),
            key_prefix=key[: len(KEY_PREFIX) + 4],
            created_at=self.clock(),
            tenant=tenant,
            vendors=limited,
        )
        # Exclusive: it reads (the tenant, the trail's last row) and then writes; on SQLite a deferred transaction
        # whose snapshot another process's commit (a serving node's audit checkpoint) overtook in between fails at
        # its first write with "database is locked", without waiting.
        with acting_in(tenant), self.database.session(exclusive=True) as session:
            if not enabled(session, tenant):
                raise NotFound(f"no enabled tenant named {tenant[:70]}: `fwrepo tenants list` shows them")
            session.add(row)
            session.flush()
            self.audit.record(by, "client_create", f"client {row.id}", session, name=row.name, role=row.role,
                              **({"vendors": limited} if limited else {}))
        return _record(row), key

    def list(self, tenant: str | None = None) -> list[ClientRecord]:
        """Every tenant's clients, or tenant's."""
        with acting_in(tenant or EVERY_TENANT), self.database.session() as session:
            rows = session.exec(select(ApiClient).order_by(ApiClient.created_at, ApiClient.id)).all()
            return [_record(row) for row in rows]

    def revoke(self, client_id: str, by: Performer, within: str = EVERY_TENANT) -> ClientRecord:
        """Revoke a key of the within scope (the operator at the machine: every tenant's; a tenant's admin in the
        console: its own, another's id being unknown)."""
        with acting_in(within), self.database.session(exclusive=True) as session:
            row = session.get(ApiClient, client_id)
            if row is None:
                raise NotFound(f"no client with id {client_id}")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                session.add(row)
                session.flush()
                with acting_in(row.tenant):
                    self.audit.record(by, "client_revoke", f"client {row.id}", session, name=row.name)
            return _record(row)

    def authenticate(self, key: str | None) -> Actor:
        if not key:
            raise Unauthenticated("an API key is required: send Authorization: Bearer KEY")
        # Malformed keys get the same answer as unknown ones: nothing to learn.
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            raise Unauthenticated("the API key is not valid")
        # The key says which tenant it acts in: found among every tenant's, and refused with its tenant disabled.
        with acting_in(EVERY_TENANT), self.database.session() as session:
            row = session.exec(select(ApiClient).where(ApiClient.key_hash == _hash_key(key))).first()
            if row is None or row.revoked_at is not None or not enabled(session, row.tenant):
                raise Unauthenticated("the API key is not valid")
        return Actor(client_id=row.id, name=row.name, role=Role(row.role), tenant=row.tenant,
                     vendors=frozenset(row.vendors) if row.vendors is not None else None)
