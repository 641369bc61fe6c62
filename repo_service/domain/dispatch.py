"""Dispatch by fwrepo: campaigns created with a CSMS's name as `dispatch` are carried out by fwrepo itself.

When a grant falls due it becomes a `dispatch` row (in the transaction that hands it out, so it is handed out
once, as a poll would be), and a worker sends the charger's UpdateFirmware through the CSMS's connector
(repo_service/csms/). What the CSMS reports back (the charger's answer, its status notifications, its boot,
its firmware security events) is matched to the grant here and recorded as that grant's events, so jobs,
waves, halts and reports work as they do for a CSMS that reports them itself.

A row is sent once: several nodes claim rows as webhook deliveries are claimed (SKIP LOCKED and a
conditional update), and a send whose outcome is unknown (the CSMS's answer was lost) is sent again only if
the CSMS did not report the request going out in the meantime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, or_, update
from sqlmodel import Session, col, select

from repo_service.csms import Connector, Heard, Kind, Sent
from repo_service.db.models import Campaign, CampaignCharger, Dispatch, Grant
from repo_service.db.session import Database
from repo_service.db.tenancy import EVERY_TENANT, acting_in
from repo_service.domain.audit import Performer
from repo_service.domain.background import repeating
from repo_service.domain.campaigns import (
    DEFAULT_OCPP_VERSION,
    Campaigns,
    CampaignStatus,
)
from repo_service.domain.clock import Clock, rfc3339, utc_now
from repo_service.domain.grants import GrantRecord
from repo_service.domain.ocpp import update_firmware_requests
from repo_service.domain.sealed import Sealer
from repo_service.domain.status_events import StatusEvents
from repo_service.errors import InvalidInput

log = logging.getLogger(__name__)

SEND_PAGE = 100
LONGEST_WAIT = timedelta(hours=1)
# The job vocabulary's words for what fwrepo itself learned while sending (see update_jobs.py).
NOT_CONNECTED_EVENT = "NotConnected"
REFUSED_EVENT = "Rejected"


class DispatchStatus(StrEnum):
    PENDING = "pending"  # to be sent, at next_attempt_at
    SENT = "sent"  # the CSMS sent the CALL to the charger
    REFUSED = "refused"  # the CSMS will never send it (its answer is in error)
    NOT_CONNECTED = "not_connected"  # the charger was not connected at any of the tries
    CANCELLED = "cancelled"  # its grant was revoked before it went out


@dataclass(frozen=True)
class _Claimed:
    grant_id: int
    token: str
    charger_id: str
    ocpp_version: str
    attempts: int
    misses: int
    request: Mapping[str, Any]


def location_digest(location: str) -> str:
    return hashlib.sha256(location.encode()).hexdigest()


class Dispatcher:
    def __init__(self, database: Database, campaigns: Campaigns, events: StatusEvents, connector: Connector,
                 sealer: Sealer, *, retry_base: int, connect_tries: int, timeout: int, interval: float = 2.0,
                 clock: Clock = utc_now) -> None:
        self.database = database
        self.campaigns = campaigns
        self.events = events
        # Who the audit trail names as having reported a charger's firmware security event.
        self.performer = Performer(f"csms {connector.name} (dispatch)")
        self.connector = connector
        self.sealer = sealer
        self.retry_base = timedelta(seconds=retry_base)
        self.connect_tries = connect_tries
        # A claim outlives the longest send, so that no other node takes a row this one may still be sending.
        self.claim_for = timedelta(seconds=2 * timeout + 5)
        self.interval = interval
        self.clock = clock
        self.wake = threading.Event()

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the block runs: listen to the CSMS, and send what is due every interval (at once when a charger
        waited for is heard from, or when what was heard moved a campaign on)."""
        with self.connector.listening(self.heard), repeating("dispatch", self.interval, self.work, self.wake):
            yield

    # -- sending ------------------------------------------------------------------------------

    def work(self) -> None:
        """One round: due grants become dispatches, then every ready dispatch is sent (every tenant's: a
        dispatch is sent for the grant's campaign, and what comes of it is recorded in the grant's tenant)."""
        self.campaigns.hand_out_running(self.connector.name, self._enqueue)
        with acting_in(EVERY_TENANT):
            self._cancel_revoked()
            while claimed := self._claim(SEND_PAGE):
                for one in claimed:
                    self._send(one)
                if len(claimed) < SEND_PAGE:
                    break

    def _enqueue(self, session: Session, campaign: Campaign, grants: list[GrantRecord]) -> None:
        """Due grants, just handed out in this transaction: the request each charger is to get, in its version."""
        firmware = self.campaigns.grants.catalog.get(campaign.firmware_id)
        versions = dict(session.exec(select(CampaignCharger.grant_id, CampaignCharger.ocpp_version).where(
            CampaignCharger.campaign_id == campaign.id,
            col(CampaignCharger.grant_id).in_([grant.id for grant in grants]))).all())
        now = self.clock()
        for grant in grants:
            version = versions.get(grant.id) or DEFAULT_OCPP_VERSION
            requests = update_firmware_requests(grant, firmware)
            request = requests["update_firmware_v201"] if version == "2.0.1" else requests["update_firmware"]
            session.add(Dispatch(
                grant_id=grant.id, campaign_id=campaign.id, charger_id=grant.charger_id, csms=self.connector.name,
                ocpp_version=version, status=DispatchStatus.PENDING.value, next_attempt_at=now,
                body_sealed=self.sealer.seal(json.dumps(request).encode()),
                location_digest=location_digest(grant.location), created_at=now))

    def _cancel_revoked(self) -> None:
        """Pending requests whose grant was revoked (a cancelled campaign, a yanked build) never go out."""
        revoked = exists().where(col(Grant.id) == col(Dispatch.grant_id), col(Grant.revoked_at).is_not(None))
        with self.database.session() as session:
            session.execute(update(Dispatch).where(col(Dispatch.status) == DispatchStatus.PENDING.value, revoked)
                            .values(status=DispatchStatus.CANCELLED.value))

    def _claim(self, limit: int) -> list[_Claimed]:
        now = self.clock()
        token = secrets.token_hex(16)
        unclaimed = or_(col(Dispatch.claimed_until).is_(None), col(Dispatch.claimed_until) < now)
        with self.database.session() as session:
            # Only for running campaigns and live grants: a paused campaign's sends wait; an expired grant's never go.
            ready = (select(Dispatch.grant_id)
                     .join(Grant, col(Grant.id) == col(Dispatch.grant_id))
                     .join(Campaign, col(Campaign.id) == col(Dispatch.campaign_id))
                     .where(col(Dispatch.status) == DispatchStatus.PENDING.value, col(Dispatch.csms) == self.connector.name,
                            col(Dispatch.next_attempt_at) <= now, unclaimed, col(Grant.revoked_at).is_(None),
                            col(Grant.expires_at) > now, col(Campaign.status) == CampaignStatus.RUNNING.value)
                     .order_by(col(Dispatch.next_attempt_at), col(Dispatch.grant_id)).limit(limit)
                     .with_for_update(skip_locked=True, of=Dispatch))
            # The conditional update is the claim (as for webhook deliveries, see webhooks.py).
            ids = list(session.execute(update(Dispatch).where(
                col(Dispatch.grant_id).in_(ready), col(Dispatch.status) == DispatchStatus.PENDING.value, unclaimed,
            ).values(claim_token=token, claimed_until=now + self.claim_for).returning(Dispatch.grant_id)).scalars())
            rows = session.exec(select(Dispatch).where(col(Dispatch.grant_id).in_(ids))).all() if ids else []
            return [_Claimed(row.grant_id, token, row.charger_id, row.ocpp_version, row.attempts, row.misses,
                             json.loads(self.sealer.open(row.body_sealed))) for row in rows]

    def _send(self, claimed: _Claimed) -> None:
        outcome = self.connector.send(claimed.charger_id, claimed.ocpp_version, claimed.request)
        now = self.clock()
        values: dict[str, Any] = {"claim_token": None, "claimed_until": None, "error": outcome.detail or None}
        event: str | None = None
        if outcome.sent is Sent.SENT:
            values.update(status=DispatchStatus.SENT.value, sent_at=now)
        elif outcome.sent is Sent.REFUSED:
            values.update(status=DispatchStatus.REFUSED.value)
            event = REFUSED_EVENT
        elif outcome.sent is Sent.NOT_CONNECTED:
            misses = claimed.misses + 1
            values.update(misses=misses, next_attempt_at=now + self._wait(misses))
            if misses >= self.connect_tries:
                values.update(status=DispatchStatus.NOT_CONNECTED.value)
                event = NOT_CONNECTED_EVENT
        else:  # UNREACHABLE, UNKNOWN: the CSMS is down or restarting; an unknown send may be matched meanwhile
            attempts = claimed.attempts + 1
            values.update(attempts=attempts, next_attempt_at=now + self._wait(attempts))
        with self.database.session() as session:
            # Still pending and still ours: the CSMS may have reported the request going out meanwhile.
            session.execute(update(Dispatch).where(
                col(Dispatch.grant_id) == claimed.grant_id, col(Dispatch.claim_token) == claimed.token,
            ).values(**values))
        log.info("dispatch of grant %d to %s through %s: %s %s", claimed.grant_id, claimed.charger_id,
                 self.connector.name, outcome.sent.value, outcome.detail)
        if event is not None:
            self._record([{"grant_id": claimed.grant_id, "status": event, "timestamp": rfc3339(now),
                           "info": outcome.detail[:200] or None}])

    def _wait(self, tries: int) -> timedelta:
        return min(self.retry_base * 2 ** (tries - 1), LONGEST_WAIT)

    # -- listening ----------------------------------------------------------------------------

    def heard(self, frame: Heard) -> None:
        """One fact the CSMS reported: matched to the grant it is about (if any of ours), recorded as its event."""
        with acting_in(EVERY_TENANT):
            self._heard(frame)

    def _heard(self, frame: Heard) -> None:
        if frame.kind is Kind.REQUEST_SENT:
            self._request_went_out(frame)
            return
        if frame.kind in (Kind.BOOTED, Kind.ALIVE):
            self._charger_is_here(frame)
        if frame.kind is Kind.ALIVE:
            return
        grant_id = self._grant_of(frame)
        if grant_id is None:
            return
        document: dict[str, Any] = {"grant_id": grant_id, "timestamp": rfc3339(frame.timestamp)}
        if frame.kind is Kind.BOOTED:
            if frame.firmware_version is None:
                return
            document.update(status="Booted", firmware_version=frame.firmware_version)
        else:
            document.update(status=frame.status)
            if frame.info:
                document.update(info=frame.info[:255])
            if frame.status_info:
                document.update(status_info=frame.status_info)
            if frame.notification:
                document.update(notification=frame.notification)
        self._record([document])

    def _record(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Events for grants of ours, each reported in its grant's tenant, as that tenant's CSMS would."""
        with self.database.session() as session:
            tenants = dict(session.exec(select(Grant.id, Grant.tenant).where(
                col(Grant.id).in_([document["grant_id"] for document in documents]))).all())
        for tenant in dict.fromkeys(tenants.values()):
            mine = [document for document in documents if tenants.get(document["grant_id"]) == tenant]
            try:
                with acting_in(tenant):
                    self.events.report_many(mine, self.performer)
            except InvalidInput as error:  # a status fwrepo does not know: logged, and nothing changes
                log.warning("%s reported what fwrepo cannot record (%s): %s", self.connector.name, error, mine)
                continue
            self.wake.set()  # a wave may have started

    def _request_went_out(self, frame: Heard) -> None:
        """The CSMS reports an UpdateFirmware went out: if it is ours, it is sent (even if its send's answer was
        lost), and the charger's answer will carry this correlation id."""
        if frame.location is None:
            return
        with self.database.session(exclusive=True) as session:
            row = session.exec(select(Dispatch).where(
                Dispatch.charger_id == frame.charger_id, Dispatch.csms == self.connector.name,
                Dispatch.location_digest == location_digest(frame.location))).first()
            if row is None:
                return
            row.correlation_id = frame.correlation_id
            if row.status == DispatchStatus.PENDING:
                row.status, row.sent_at = DispatchStatus.SENT.value, row.sent_at or frame.timestamp
            session.add(row)

    def _charger_is_here(self, frame: Heard) -> None:
        """A charger that was not connected when last tried is tried again now."""
        now = self.clock()
        waiting = (col(Dispatch.charger_id) == frame.charger_id, col(Dispatch.csms) == self.connector.name,
                   col(Dispatch.status) == DispatchStatus.PENDING.value, col(Dispatch.misses) > 0,
                   col(Dispatch.next_attempt_at) > now)
        # Every heartbeat of every charger comes here, and almost none is awaited: look before taking the write
        # lock (a row made waiting in between is tried at its backoff instead).
        with self.database.session() as session:
            if session.exec(select(Dispatch.grant_id).where(*waiting).limit(1)).first() is None:
                return
        with self.database.session() as session:
            woken = session.execute(update(Dispatch).where(*waiting).values(next_attempt_at=now)).rowcount
        if woken:
            self.wake.set()

    def _grant_of(self, frame: Heard) -> int | None:
        """Which of our grants a frame from a charger is about: the answer by its correlation id, a status by the
        requestId it names (OCPP 2.0.1), else the charger's latest request sent. Never another charger's grant:
        a frame naming one is ignored."""
        with self.database.session() as session:
            mine = select(Dispatch).where(Dispatch.charger_id == frame.charger_id, Dispatch.csms == self.connector.name)
            if frame.kind is Kind.ANSWER:
                row = session.exec(mine.where(Dispatch.correlation_id == frame.correlation_id)).first() \
                    if frame.correlation_id else None
            elif frame.request_id is not None:
                row = session.exec(mine.where(Dispatch.grant_id == frame.request_id)).first()
                if row is None:
                    log.info("%s: %s names request %d, not one fwrepo sent it", self.connector.name,
                             frame.charger_id, frame.request_id)
            else:
                row = session.exec(mine.where(Dispatch.status == DispatchStatus.SENT.value)
                                   .order_by(col(Dispatch.sent_at).desc(), col(Dispatch.grant_id).desc())).first()
            return row.grant_id if row is not None else None

