"""Quotas per tenant: the bytes and builds it may store, and the grants it may issue in any 60 seconds.

A limit is a column of the tenant's row (None: no limit). Use is never kept as a counter that could drift: it is
counted from the tenant's own rows (its builds' sizes, its grants of the last minute) in the transaction that
adds to it, after taking the tenant's row with FOR NO KEY UPDATE. So two nodes adding at once are served one
after the other, and the second counts what the first added (on SQLite the caller's transaction holds the
write lock from its start, which serialises the same way). NO KEY UPDATE, not UPDATE: the foreign keys of the
rows being inserted take KEY SHARE on the same tenant row, which UPDATE would wait for (a deadlock of two uploads).

Checks before that transaction (an upload's declared length, its bytes as they arrive) read without the lock:
they let a doomed upload stop early, and the locked count has the last word.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, TypeVar

from sqlalchemy import func
from sqlmodel import Session, col, select

from repo_service.db.models import Firmware, Grant, Tenant
from repo_service.db.session import Database
from repo_service.db.tenancy import EVERY_TENANT, acting_in, current_scope
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.tenants import tenant_named
from repo_service.errors import InvalidInput, NotFound, QuotaExceeded, RateLimited

# The grants-per-minute quota counts the grants issued in the last WINDOW.
WINDOW = timedelta(seconds=60)
# The largest limit a column holds: stored bytes are a BIGINT, the counts an INTEGER.
_MAX_BYTES = 2**63 - 1
_MAX_COUNT = 2**31 - 1
Refusal = TypeVar("Refusal", bound=Exception)


class Quota(StrEnum):
    STORED_BYTES = "stored_bytes"
    BUILDS = "builds"
    GRANTS_PER_MINUTE = "grants_per_minute"

    @property
    def column(self) -> str:
        return f"max_{self.value}"

    @property
    def largest(self) -> int:
        return _MAX_BYTES if self is Quota.STORED_BYTES else _MAX_COUNT


@dataclass(frozen=True)
class Usage:
    """A tenant's limits and what it uses of each, as of one read."""

    tenant: str
    limits: Mapping[Quota, int | None]
    stored_bytes: int
    builds: int
    grants_last_minute: int

    def used(self, quota: Quota) -> int:
        return {Quota.STORED_BYTES: self.stored_bytes, Quota.BUILDS: self.builds,
                Quota.GRANTS_PER_MINUTE: self.grants_last_minute}[quota]


def parse_limit(quota: Quota, text: str, field: str) -> int | None:
    """A limit as an operator types it in field: a whole number, or "none" to lift the quota."""
    if text.strip().lower() == "none":
        return None
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise InvalidInput(field, f"must be a whole number of at least 0, or none to lift it; got {text[:40]!r}")
    if len(value) > 19 or int(value) > quota.largest:
        raise InvalidInput(field, f"must be at most {quota.largest}")
    return int(value)


@dataclass(frozen=True)
class Room:
    """What a tenant with a stored-bytes quota has stored, and its limit."""

    stored: int
    limit: int

    @property
    def left(self) -> int:
        return self.limit - self.stored


class QuotaObserver(Protocol):
    """Told of each refusal a quota made (metrics); must be quick and must not raise."""

    def quota_refused(self, tenant: str, quota: Quota) -> None: ...


class Quotas:
    def __init__(self, database: Database, audit: Audit, clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.clock = clock
        self.observers: list[QuotaObserver] = []

    # -- setting and reading ----------------------------------------------------------------

    def set(self, tenant: str, limits: Mapping[Quota, int | None], by: Performer) -> Usage:
        """Change some of a tenant's limits (None lifts one); the act goes on the tenant's trail."""
        with acting_in(tenant), self.database.session(exclusive=True) as session:
            row = tenant_named(session, tenant)
            for quota, limit in limits.items():
                setattr(row, quota.column, limit)
            session.add(row)
            session.flush()
            self.audit.record(by, "tenant_quota", f"tenant {tenant}", session,
                              **{quota.value: limit for quota, limit in limits.items()})
        return self.usage(tenant)[0]

    def usage(self, tenant: str | None = None) -> list[Usage]:
        """Limits and use of one tenant, or of every tenant (by name)."""
        now = self.clock()
        with acting_in(EVERY_TENANT), self.database.session() as session:
            tenants = select(Tenant).order_by(col(Tenant.name))
            if tenant is not None:
                tenants = tenants.where(Tenant.name == tenant)
            rows = session.exec(tenants).all()
            if tenant is not None and not rows:
                raise NotFound(f"no tenant named {tenant[:70]}")
            stored = {name: (int(total or 0), count) for name, total, count in session.exec(
                select(Firmware.tenant, func.sum(Firmware.size), func.count()).group_by(Firmware.tenant)).all()}
            # One count per tenant, each a range of ix_grant_tenant_created_at: grouping the whole table by tenant
            # would read every grant ever made at each scrape.
            return [Usage(row.name, _limits(row), *stored.get(row.name, (0, 0)), session.exec(
                select(func.count()).select_from(Grant).where(
                    Grant.tenant == row.name, col(Grant.created_at) > now - WINDOW)).one()) for row in rows]

    # -- builds -----------------------------------------------------------------------------

    def bytes_left(self, size: int, exact: bool = False) -> Room | None:
        """Before an upload of a new build is stored: refuse it if the tenant's builds are at their quota, or if
        size more bytes (exact, or at least that many) would pass its stored-bytes quota; else the room it has
        (None: no limit on bytes), for the upload to stop at."""
        with self.database.session() as session:
            # Every build has at least one byte (an empty one is refused).
            return self._room_for_build(session, max(size, 1), lock=False, exact=exact)

    def hold_build(self, session: Session, size: int) -> None:
        """In the transaction that records a build of size bytes, before it does: refuse it if it does not fit."""
        self._room_for_build(session, size, lock=True, exact=True)

    def overflowed(self, room: Room, received: int) -> QuotaExceeded:
        """The refusal of an upload whose bytes, still arriving, passed the room bytes_left gave it."""
        return self._refused(QuotaExceeded(
            Quota.STORED_BYTES.value, room.stored, room.limit,
            f"stored bytes quota of tenant {current_scope()}: {room.stored} bytes stored, the upload passed "
            f"{received} bytes, more than the {room.left} left under its limit of {room.limit}; nothing was stored"),
            Quota.STORED_BYTES)

    def _room_for_build(self, session: Session, size: int, lock: bool, exact: bool) -> Room | None:
        row = self._tenant(session)
        if row.max_builds is None and row.max_stored_bytes is None:
            return None
        if lock:
            self._lock(session)
        stored, builds = self._stored(session)
        if row.max_builds is not None and builds + 1 > row.max_builds:
            raise self._refused(QuotaExceeded(
                Quota.BUILDS.value, builds, row.max_builds,
                f"builds quota of tenant {row.name}: it holds {builds} builds, its limit is {row.max_builds}; "
                "nothing was stored"), Quota.BUILDS)
        if row.max_stored_bytes is None:
            return None
        if stored + size > row.max_stored_bytes:
            raise self._refused(QuotaExceeded(
                Quota.STORED_BYTES.value, stored, row.max_stored_bytes,
                f"stored bytes quota of tenant {row.name}: {stored} bytes stored, this build of "
                f"{'' if exact else 'at least '}{size} bytes would pass its limit of {row.max_stored_bytes}; "
                "nothing was stored"), Quota.STORED_BYTES)
        return Room(stored, row.max_stored_bytes)

    @staticmethod
    def _stored(session: Session) -> tuple[int, int]:
        total, count = session.exec(select(func.sum(Firmware.size), func.count()).where(
            Firmware.tenant == current_scope())).one()
        return int(total or 0), count

    # -- grants -----------------------------------------------------------------------------

    def hold_grants(self, session: Session, count: int) -> None:
        """In the transaction that issues count grants, before it does: refuse them (RateLimited, with the seconds
        until enough grants of the last minute fall out of it) if they would pass the grants-per-minute quota."""
        row, used, now = self._window(session)
        limit = row.max_grants_per_minute
        if limit is None or used + count <= limit:
            return
        if count > limit:
            # Waiting would not help: say so instead of a Retry-After that never comes true.
            raise self._refused(InvalidInput("charger_id", f"tenant {row.name} may issue no grants: its grants per "
                                             "minute quota is 0") if limit == 0 else InvalidInput(
                "charger_ids", f"{count} grants at once are more than the {limit} per minute tenant {row.name} may "
                "issue: split the batch"), Quota.GRANTS_PER_MINUTE)
        # The grants still in the window, oldest first: once the (used + count - limit)th falls out, they fit.
        leaving = session.exec(select(Grant.created_at).where(
            Grant.tenant == row.name, col(Grant.created_at) > now - WINDOW).order_by(col(Grant.created_at))
            .offset(used + count - limit - 1).limit(1)).one()
        retry_after = max(1, math.ceil((leaving + WINDOW - now).total_seconds()))
        raise self._refused(RateLimited(
            Quota.GRANTS_PER_MINUTE.value, used, limit, retry_after,
            f"grants per minute quota of tenant {row.name}: {used} grants in the last {WINDOW.seconds} s, {count} "
            f"more would pass its limit of {limit}; try again in {retry_after} s"), Quota.GRANTS_PER_MINUTE)

    def grants_left(self, session: Session) -> int | None:
        """How many grants the tenant may issue now, in the caller's transaction (None: no limit); for a campaign's
        wave, which issues what fits and the rest later instead of failing."""
        row, used, _ = self._window(session)
        return None if row.max_grants_per_minute is None else max(0, row.max_grants_per_minute - used)

    def _window(self, session: Session) -> tuple[Tenant, int, datetime]:
        row = self._tenant(session)
        if row.max_grants_per_minute is None:
            return row, 0, self.clock()
        self._lock(session)
        now = self.clock()
        used = session.exec(select(func.count()).select_from(Grant).where(
            Grant.tenant == row.name, col(Grant.created_at) > now - WINDOW)).one()
        return row, used, now

    # -- shared -----------------------------------------------------------------------------

    @staticmethod
    def _tenant(session: Session) -> Tenant:
        tenant = current_scope()
        if tenant == EVERY_TENANT:
            raise ValueError("a quota is checked in the scope of the tenant that uses it")
        return tenant_named(session, tenant)

    @staticmethod
    def _lock(session: Session) -> None:
        session.exec(select(Tenant.name).where(Tenant.name == current_scope()).with_for_update(key_share=True)).one()

    def _refused(self, error: Refusal, quota: Quota) -> Refusal:
        for observer in self.observers:
            observer.quota_refused(current_scope(), quota)
        return error


def _limits(row: Tenant) -> dict[Quota, int | None]:
    return {quota: getattr(row, quota.column) for quota in Quota}
