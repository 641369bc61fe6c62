"""Shared catalogs: a tenant shares its published builds with named other tenants (a maker hosting its customers).

A receiving tenant sees the source's published and yanked builds (never a draft) in its catalog and update
checks, and grants and campaigns them for its own chargers: those grants and campaigns are its own rows. It
changes nothing of the builds: publishing and yanking stay with their own tenant (``catalog``), whose yank
revokes every tenant's grants of the build. What a read sees is ``repo_service.db.tenancy``'s business; this is
the registry of shares and the platform's acts on it.

Ending a share takes back what it gave, at once, as a yank would: the receiver's live grants of the source's
builds are revoked and its unfinished campaigns of them cancelled, in the transaction that ends the share. Its
trail keeps the record of all it did with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from repo_service.db.models import Campaign, Firmware, Grant, TenantShare
from repo_service.db.session import Database
from repo_service.db.tenancy import EVERY_TENANT, acting_in, acting_in_transaction
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.campaigns import CAMPAIGN_CANCELLED, CampaignStatus
from repo_service.domain.clock import Clock, utc_now
from repo_service.domain.revocations import Revocations
from repo_service.domain.tenants import check_name, tenant_named
from repo_service.domain.webhooks import Outbox
from repo_service.errors import Conflict, InvalidInput, NotFound

UNFINISHED = (CampaignStatus.RUNNING.value, CampaignStatus.PAUSED.value, CampaignStatus.HALTED.value)


@dataclass(frozen=True)
class ShareRecord:
    source: str
    target: str
    created_at: datetime


@dataclass(frozen=True)
class Ended:
    """What ending one share took back from its receiver."""

    target: str
    grants_revoked: int
    campaigns_cancelled: tuple[str, ...]


class Shares:
    def __init__(self, database: Database, audit: Audit, revocations: Revocations, outbox: Outbox,
                 clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.revocations = revocations
        self.outbox = outbox
        self.clock = clock

    def share(self, source: str, targets: Sequence[str], by: Performer) -> list[ShareRecord]:
        """Share source's published builds with each target; a share that exists stays as it is. All shares,
        made now or before, of these targets."""
        targets = _targets(source, targets)
        # The platform's act on two tenants at once: each side is named in every statement, and each trail
        # gets the act in the same transaction.
        with acting_in(EVERY_TENANT), self.database.session(exclusive=True) as session:
            for name in (source, *targets):
                if tenant_named(session, name).disabled_at is not None:
                    raise Conflict(f"tenant {name} is disabled: it neither shares nor is shared with")
            existing = {row.target: row for row in session.exec(
                select(TenantShare).where(TenantShare.source == source, col(TenantShare.target).in_(targets))).all()}
            now = self.clock()
            made = [TenantShare(source=source, target=target, created_at=now)
                    for target in targets if target not in existing]
            session.add_all(made)
            session.flush()
            for row in made:
                self._record_on_both(session, by, "tenant_share", row.source, row.target)
            shares = existing | {row.target: row for row in made}
            return [_record(shares[target]) for target in targets]

    def unshare(self, source: str, targets: Sequence[str], by: Performer) -> list[Ended]:
        """End the shares of source with each target: each target's live grants of source's builds are revoked
        and its unfinished campaigns of them cancelled."""
        targets = _targets(source, targets)
        with acting_in(EVERY_TENANT), self.database.session(exclusive=True) as session:
            rows = []
            for target in targets:
                row = session.get(TenantShare, (source, target))
                if row is None:
                    raise NotFound(f"tenant {source} does not share its builds with {target[:70]}")
                rows.append(row)
            builds = select(Firmware.id).where(Firmware.tenant == source)
            ended = []
            for row in rows:
                session.delete(row)
                reason = f"tenant {source} stopped sharing its builds with tenant {row.target}"
                cancelled = tuple(session.execute(update(Campaign).where(
                    col(Campaign.tenant) == row.target, col(Campaign.firmware_id).in_(builds),
                    col(Campaign.status).in_(UNFINISHED)).values(status=CampaignStatus.CANCELLED.value,
                                                                  status_reason=reason).returning(Campaign.id)
                ).scalars())
                revoked = self.revocations.revoke(
                    session, (col(Grant.tenant) == row.target) & col(Grant.firmware_id).in_(builds), reason)
                with acting_in_transaction(session, row.target):
                    # In the receiver's scope: its webhooks alone hear of its campaigns.
                    self.outbox.enqueue(session, CAMPAIGN_CANCELLED,
                                        [(campaign_id, {"campaign_id": campaign_id}) for campaign_id in cancelled])
                ended.append(Ended(row.target, len(revoked), cancelled))
                self._record_on_both(session, by, "tenant_unshare", source, row.target, grants_revoked=len(revoked),
                                     campaigns_cancelled=list(cancelled))
            return ended

    def _record_on_both(self, session: Session, by: Performer, action: str, source: str, target: str,
                        **detail: object) -> None:
        """One act, on the trail of the tenant that shares and on that of the one shared with."""
        for tenant in (source, target):
            with acting_in_transaction(session, tenant):
                self.audit.record(by, action, f"tenant {source}", session, target=target, **detail)


def every_share(database: Database) -> list[ShareRecord]:
    with acting_in(EVERY_TENANT), database.session() as session:
        return [_record(row) for row in session.exec(select(TenantShare).order_by(
            col(TenantShare.source), col(TenantShare.target))).all()]


def _targets(source: str, targets: Sequence[str]) -> list[str]:
    check_name(source)
    if not targets:
        raise InvalidInput("with", "name at least one tenant to share with")
    for target in targets:
        check_name(target)
        if target == source:
            raise InvalidInput("with", f"tenant {source} cannot share with itself: its builds are its own already")
    return list(dict.fromkeys(targets))


def _record(row: TenantShare) -> ShareRecord:
    return ShareRecord(row.source, row.target, row.created_at)
