"""The audit trail: every security-relevant act once, each row chained to the one before by SHA-256.

A row's hash covers its sequence number, its content and the previous row's
hash, so changing a row, removing one or swapping two breaks the chain at
that point, and `fwrepo audit verify` names it. Each tenant's trail is a chain of its own
(an act goes on the chain of the tenant it is done in), so one tenant's
trail can be handed over and checked without another's. Appends are
serialised (a PostgreSQL advisory lock, SQLite's write lock) so concurrent
writers on several nodes still make one chain per tenant.

The chain alone cannot show a rewrite that recomputes every later hash, nor
rows cut from its end: whoever can write the table can do both. Anchors,
(seq, hash) pairs known from outside the database (the signed checkpoints of
`audit_checkpoints`), catch those: `verify` checks the chain against them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session, col, func, select

from repo_service.db.models import AuditEvent
from repo_service.db.session import Database
from repo_service.db.tenancy import EVERY_TENANT, current_scope
from repo_service.domain.clock import Clock, rfc3339, utc_now
from repo_service.errors import Forbidden, InvalidInput

GENESIS = "0" * 64
# Any fixed number: the advisory lock every fwrepo node takes to append to the chain.
APPEND_LOCK = 0x66777265706F  # "fwrepo"
MAX_PAGE = 1000
# The largest OFFSET SQLite and PostgreSQL take: a signed 64-bit integer.
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True)
class Performer:
    """Who performs an act, as the trail names them: an API client, or an operator at the machine."""

    label: str
    # The API client, kept with what it made (grants, campaigns); None for the command line.
    client_id: str | None = None
    # The only vendors whose builds it may upload, publish and yank; None: any.
    vendors: frozenset[str] | None = None

    @classmethod
    def client(cls, client_id: str, name: str, vendors: frozenset[str] | None = None) -> Performer:
        return cls(f"client {client_id} ({name})", client_id, vendors)

    @classmethod
    def user(cls, user_id: str, name: str) -> Performer:
        """A person signed in to the console; what it makes is kept with its user id as a client's is."""
        return cls(f"user {user_id} ({name})", user_id)

    def require_vendor(self, vendor: str) -> None:
        """Forbidden unless this performer may change builds of vendor."""
        if self.vendors is not None and vendor not in self.vendors:
            raise Forbidden(f"this key may act only on builds of {', '.join(sorted(self.vendors))}, "
                            f"not of {vendor}")


@dataclass(frozen=True)
class Act:
    actor: str
    action: str
    subject: str
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class Break:
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """Row `seq` had `hash` at `at`, as something outside the database remembers it (a signed checkpoint)."""

    seq: int
    hash: str
    at: datetime


def _rows(first: int, last: int) -> str:
    """Where a rewrite is, as the checkpoints around it bound it."""
    return f"row {first} was" if first == last else f"a row of {first}-{last} was"


def as_document(event: AuditEvent) -> dict[str, Any]:
    """One row as the trail shows it (the API's AuditEvent, `fwrepo audit list --json`)."""
    return {"tenant": event.tenant, "seq": event.seq, "at": rfc3339(event.at), "actor": event.actor, "action": event.action,
            "subject": event.subject, "detail": json.loads(event.detail), "hash": event.hash}


def row_hash(seq: int, at: datetime, actor: str, action: str, subject: str, detail: str, prev_hash: str) -> str:
    content = json.dumps([seq, at.isoformat(), actor, action, subject, detail, prev_hash], separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


class Audit:
    def __init__(self, database: Database, clock: Clock = utc_now) -> None:
        self.database = database
        self.clock = clock

    def record(self, by: Performer, action: str, subject: str, session: Session | None = None, **detail: Any) -> None:
        """One act on the trail: in the transaction that performs it (after its writes), or in one of its own."""
        self.append([Act(by.label, action, subject, detail)], session)

    def append(self, acts: Sequence[Act], session: Session | None = None) -> None:
        """Chain acts on; in the caller's transaction when given one (then it must already hold a write)."""
        if not acts:
            return
        if session is None:
            with self.database.session(exclusive=True) as own:
                self._append(own, acts)
        else:
            self._append(session, acts)

    def _append(self, session: Session, acts: Sequence[Act]) -> None:
        tenant = current_scope()
        if tenant == EVERY_TENANT:
            raise ValueError("an act done in every tenant's scope must be recorded in the scope of its tenant")
        self._lock(session)
        last = session.exec(select(AuditEvent).where(AuditEvent.tenant == tenant)
                            .order_by(col(AuditEvent.seq).desc()).limit(1)).first()
        seq, previous = (last.seq, last.hash) if last else (0, GENESIS)
        at, rows = self.clock(), []
        for act in acts:
            seq += 1
            detail = json.dumps(dict(act.detail), sort_keys=True, default=str)
            actor, subject = act.actor[:80], act.subject[:128]
            digest = row_hash(seq, at, actor, act.action, subject, detail, previous)
            rows.append({"tenant": tenant, "seq": seq, "at": at, "actor": actor, "action": act.action, "subject": subject,
                         "detail": detail, "prev_hash": previous, "hash": digest})
            previous = digest
        session.execute(insert(AuditEvent), rows)

    @staticmethod
    def _lock(session: Session) -> None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK})

    def list(self, *, action: str | None = None, actor: str | None = None, subject: str | None = None,
             since: datetime | None = None, limit: int = 100, offset: int = 0) -> tuple[list[AuditEvent], int]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE}")
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput("offset", f"must be between 0 and {MAX_OFFSET}")
        query = select(AuditEvent)
        for column, value in ((AuditEvent.action, action), (AuditEvent.actor, actor), (AuditEvent.subject, subject)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(col(AuditEvent.at) >= since)
        with self.database.session() as session:
            total = session.exec(select(func.count()).select_from(query.subquery())).one()
            # Newest first; a platform key reads every tenant's chains at once, so by time, then by place in one.
            rows = session.exec(query.order_by(col(AuditEvent.at).desc(), col(AuditEvent.seq).desc())
                                .offset(offset).limit(limit)).all()
        return list(rows), total

    def verify(self, anchors: Mapping[int, Anchor] | None = None) -> tuple[int, Break | None]:
        """How many rows of the current scope's tenant were checked, and the first broken link (None when its
        chain holds).

        The row of each anchor (by seq) must still have the anchor's hash (else a row since the anchor
        before it was rewritten), and the chain must still reach the newest anchor (else its end was cut).
        """
        pinned = anchors or {}
        expected_seq, previous, count, last_pinned = 1, GENESIS, 0, 0
        for row in self._rows():
            count += 1
            if row.seq != expected_seq:
                return count, Break(expected_seq, f"row {expected_seq} is missing (the next row is {row.seq})")
            if row.prev_hash != previous:
                return count, Break(row.seq, f"row {row.seq} does not follow row {row.seq - 1} (rows reordered "
                                    "or the row before changed)")
            if row_hash(row.seq, row.at, row.actor, row.action, row.subject, row.detail, row.prev_hash) != row.hash:
                return count, Break(row.seq, f"row {row.seq} was changed after it was written")
            anchor = pinned.get(row.seq)
            if anchor is not None:
                if anchor.hash != row.hash:
                    return count, Break(row.seq, f"row {row.seq} is not the row the checkpoint of {rfc3339(anchor.at)} "
                                        f"signed: {_rows(last_pinned + 1, row.seq)} rewritten, and every later hash "
                                        "recomputed")
                last_pinned = row.seq
            expected_seq, previous = row.seq + 1, row.hash
        beyond = [seq for seq in pinned if seq >= expected_seq]
        if beyond:
            newest = pinned[max(beyond)]
            return count, Break(expected_seq, f"the chain ends at row {expected_seq - 1}, but the checkpoint of "
                                f"{rfc3339(newest.at)} signed row {newest.seq}: rows from {expected_seq} on were "
                                "removed from its end")
        return count, None

    def _rows(self) -> Iterator[AuditEvent]:
        after, tenant = 0, current_scope()
        if tenant == EVERY_TENANT:
            raise ValueError("each tenant's chain is verified on its own: verify in the scope of one")
        while True:
            with self.database.session() as session:
                page = session.exec(select(AuditEvent).where(AuditEvent.tenant == tenant, col(AuditEvent.seq) > after)
                                    .order_by(col(AuditEvent.seq)).limit(5000)).all()
            if not page:
                return
            yield from page
            after = page[-1].seq
