"""Tenants: the parties one fwrepo serves (operators, or a maker's customers), whose rows never mix.

Which tenant a session acts in is ``repo_service.db.tenancy``'s scope; this is the registry of tenants and
the platform's acts on them. A disabled tenant keeps everything it has; its keys, download tokens and FTPS
logins are refused as if they did not exist, on every node at once (each request reads the flag).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from repo_service.db.models import Tenant
from repo_service.db.session import Database
from repo_service.db.tenancy import DEFAULT_TENANT, acting_in
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clock import Clock, utc_now
from repo_service.errors import Conflict, InvalidInput, NotFound

# A DNS label: usable as a storage prefix, a bucket name part and a URL segment as it is.
TENANT_NAME = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
_NAME = re.compile(TENANT_NAME)


@dataclass(frozen=True)
class TenantRecord:
    name: str
    created_at: datetime
    disabled_at: datetime | None


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput("tenant", f"must be 1-63 lowercase letters, digits and inner hyphens, got {name[:70]!r}")
    return name


def _record(row: Tenant) -> TenantRecord:
    return TenantRecord(row.name, row.created_at, row.disabled_at)


def tenant_named(session: Session, name: str) -> Tenant:
    """The tenant named name, read in the caller's transaction; NotFound when there is none."""
    row = session.get(Tenant, name)
    if row is None:
        raise NotFound(f"no tenant named {name[:70]}")
    return row


def enabled(session: Session, name: str) -> bool:
    """Whether name is a tenant whose keys and grants work (read in the caller's transaction)."""
    row = session.get(Tenant, name)
    return row is not None and row.disabled_at is None


class Tenants:
    def __init__(self, database: Database, audit: Audit, clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.clock = clock

    def create(self, name: str, by: Performer) -> TenantRecord:
        check_name(name)
        with self.database.session(exclusive=True) as session:
            if session.get(Tenant, name) is not None:
                raise Conflict(f"tenant {name} exists")
            row = Tenant(name=name, created_at=self.clock())
            session.add(row)
            session.flush()
        # The act goes on the new tenant's own trail, whose first row it is.
        with acting_in(name):
            self.audit.record(by, "tenant_create", f"tenant {name}")
        return _record(row)

    def list(self) -> list[TenantRecord]:
        with self.database.session() as session:
            return [_record(row) for row in session.exec(select(Tenant).order_by(col(Tenant.name))).all()]

    def get(self, name: str) -> TenantRecord:
        with self.database.session() as session:
            return _record(tenant_named(session, name))

    def disable(self, name: str, by: Performer) -> TenantRecord:
        """Stop the tenant's keys, download tokens and FTPS logins at once; keep all it has."""
        if name == DEFAULT_TENANT:
            raise InvalidInput("tenant", "the default tenant cannot be disabled: it holds the platform's own keys")
        with acting_in(name), self.database.session(exclusive=True) as session:
            row = tenant_named(session, name)
            if row.disabled_at is None:
                row.disabled_at = self.clock()
                session.add(row)
                session.flush()
                self.audit.record(by, "tenant_disable", f"tenant {name}", session)
            return _record(row)

