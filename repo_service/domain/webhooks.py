"""Webhooks: endpoints a CSMS registers, the outbox its events are written to, and the worker that sends them.

An event is written to the outbox by the transaction that decided it (a wave starting, a campaign halting,
a job finishing, due grants handed out), so it is delivered if and only if the change it tells of was
committed. Sending happens later, on a thread of every serving node: a delivery is claimed in the database
before it is sent, so of several nodes exactly one sends it, and the request or event that caused it never
waits for a receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event as orm_event
from sqlalchemy import func, or_, update
from sqlmodel import Session, col, select

from repo_service.db.models import Webhook, WebhookAttempt, WebhookDelivery
from repo_service.db.session import Database, insert_or_ignore
from repo_service.db.tenancy import EVERY_TENANT, acting_in
from repo_service.domain.audit import Audit, Performer
from repo_service.domain.background import repeating
from repo_service.domain.clock import Clock, rfc3339, utc_now
from repo_service.domain.documents import refuse_unknown
from repo_service.domain.outbound import Answer, is_loopback_host, post, refusal_of_literal
from repo_service.domain.sealed import Sealer, Unsealable
from repo_service.errors import InvalidInput, NotFound, SettingsError

GRANTS_DUE = "grants.due"
WAVE_STARTED = "wave.started"
CAMPAIGN_HALTED = "campaign.halted"
CAMPAIGN_COMPLETED = "campaign.completed"
CAMPAIGN_CANCELLED = "campaign.cancelled"
JOB_FINISHED = "job.finished"
EVENTS = (GRANTS_DUE, WAVE_STARTED, CAMPAIGN_HALTED, CAMPAIGN_COMPLETED, CAMPAIGN_CANCELLED, JOB_FINISHED)
MAX_WEBHOOKS = 20
MAX_URL = 500
# At least 192 bits of a random secret written as text; at most what fits a header line comfortably.
MIN_SECRET, MAX_SECRET = 24, 128
MAX_RETRY_WAIT = timedelta(hours=1)
# Attempts in flight per node: a receiver that never answers holds one for FWREPO_WEBHOOK_TIMEOUT, the
# others go on.
PARALLEL_SENDS = 8
DELIVERY_LOG_PAGE = 100
MAX_DELIVERY_LOG_PAGE = 1_000

log = logging.getLogger(__name__)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class WebhookRequest:
    url: str
    events: tuple[str, ...]
    secret: str


@dataclass(frozen=True)
class WebhookRecord:
    id: str
    url: str
    events: tuple[str, ...]
    created_at: datetime
    created_by: str | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class AttemptRecord:
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    event: str
    status: str
    attempts: int
    created_at: datetime
    # When the next attempt is due; None once the delivery is no longer pending.
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    log: tuple[AttemptRecord, ...]


def parse_webhook_request(document: Mapping[str, Any], *, allow_http: bool, allow_private: bool) -> WebhookRequest:
    refuse_unknown(document, ("url", "events", "secret"))
    url = document.get("url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL or not url.isascii() or not url.isprintable():
        raise InvalidInput("url", f"is required: an https:// URL of at most {MAX_URL} ASCII characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (an out-of-range or non-numeric port raises here)
    except ValueError as error:
        raise InvalidInput("url", f"is not a URL: {error}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInput("url", "must be an https:// URL with a host")
    if parts.username is not None or parts.fragment:
        raise InvalidInput("url", "must not carry a user name, password or #fragment")
    if parts.scheme == "http" and not (allow_http or is_loopback_host(parts.hostname)):
        raise InvalidInput("url", "must be https:// (http:// only to a loopback address, or with "
                           "FWREPO_WEBHOOK_ALLOW_HTTP)")
    # A literal address is refused now; a name is checked each time it is resolved, at delivery.
    refusal = None if allow_private else refusal_of_literal(parts.hostname)
    if refusal is not None:
        raise InvalidInput("url", f"{parts.hostname} is a {refusal} address: webhooks go to public addresses "
                           "(FWREPO_WEBHOOK_ALLOW_PRIVATE)")
    events = document.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidInput("events", f"must be a non-empty list of {', '.join(EVENTS)}")
    for index, name in enumerate(events):
        if name not in EVENTS:
            # Named as a whole, as every list of plain values is (charger_ids); the message says which.
            raise InvalidInput("events", f"item {index}, {str(name)[:40]!r}, is not an event; expected one of "
                               f"{', '.join(EVENTS)}")
    secret = document.get("secret")
    if (not isinstance(secret, str) or not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isascii()
            or not secret.isprintable()):
        raise InvalidInput("secret", f"must be {MIN_SECRET}-{MAX_SECRET} printable ASCII characters "
                           "(e.g. `openssl rand -hex 32`)")
    return WebhookRequest(url, tuple(dict.fromkeys(events)), secret)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The Fwrepo-Signature header: HMAC-SHA256 over timestamp + "." + body, hex, versioned."""
    return "v1=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def retry_wait(attempts: int, base: timedelta) -> timedelta:
    """How long after the attempts-th failed attempt the next one is made: base, then doubling, capped."""
    return min(base * 2 ** (attempts - 1), MAX_RETRY_WAIT)


class Outbox:
    """Where a domain transaction writes the events it decided: one delivery per webhook subscribed to each."""

    def __init__(self, sealer: Sealer, clock: Clock = utc_now) -> None:
        self.sealer = sealer
        self.clock = clock
        # Set when this node commits deliveries: its worker sends them at once instead of at its next round.
        self.wake = threading.Event()

    def subscribers(self, session: Session, event: str) -> list[str]:
        """The live webhooks that take this event."""
        live = session.exec(select(Webhook.id, Webhook.events).where(col(Webhook.deleted_at).is_(None))).all()
        return [webhook_id for webhook_id, events in live if event in events]

    def enqueue(self, session: Session, event: str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Write this event's deliveries in the caller's transaction; items are (key, data), one per occurrence.

        The key names the occurrence (campaign and wave, grant and state): the same occurrence decided twice
        (two nodes, a repeated tick) is delivered once.
        """
        webhooks = self.subscribers(session, event) if items else []
        if not webhooks:
            return
        now = self.clock()
        rows = []
        for key, data in items:
            event_id = f"{event}:{key}"
            body = json.dumps({"id": event_id, "event": event, "created_at": rfc3339(now), "data": data},
                              separators=(",", ":")).encode()
            # Keyed with the event's name: a campaign's halt and its later cancel are two deliveries.
            rows += [{"webhook_id": webhook_id, "event": event, "event_key": event_id[:128],
                      "body_sealed": self.sealer.seal(body), "status": DeliveryStatus.PENDING.value, "attempts": 0,
                      "created_at": now, "next_attempt_at": now} for webhook_id in webhooks]
        session.execute(insert_or_ignore(session, WebhookDelivery), rows)
        orm_event.listen(session, "after_commit", lambda _: self.wake.set(), once=True)


@dataclass(frozen=True)
class _Claimed:
    """A delivery this node holds (under its token) while it sends it."""

    id: int
    token: str
    webhook_id: str
    event: str
    attempts: int
    url: str
    secret: bytes
    body: bytes


class Webhooks:
    def __init__(self, database: Database, audit: Audit, outbox: Outbox, *, push_due: Callable[[], object], timeout: int,
                 max_attempts: int, retry_base: int, interval: int, allow_http: bool, allow_private: bool,
                 receiver_ca: Path | None = None, clock: Clock = utc_now) -> None:
        self.database = database
        self.audit = audit
        self.outbox = outbox
        self.sealer = outbox.sealer
        # Campaigns.push_due: hands out due grants into the outbox, as ?due=now hands them out to a poll.
        self.push_due = push_due
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_base = timedelta(seconds=retry_base)
        self.interval = interval
        self.allow_http = allow_http
        self.allow_private = allow_private
        # Made once: loading the system's CA certificates for every attempt would cost more than the attempt.
        try:
            self.tls = ssl.create_default_context(cafile=str(receiver_ca) if receiver_ca else None)
        except (OSError, ssl.SSLError) as error:
            raise SettingsError("FWREPO_WEBHOOK_CA", f"cannot read CA certificates from {receiver_ca}: {error}") from None
        self.clock = clock
        self._in_flight = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- endpoints ----------------------------------------------------------------------------

    def parse(self, document: Mapping[str, Any]) -> WebhookRequest:
        return parse_webhook_request(document, allow_http=self.allow_http, allow_private=self.allow_private)

    def create(self, request: WebhookRequest, by: Performer) -> WebhookRecord:
        """Register an endpoint; its secret is sealed and never shown again."""
        with self.database.session(exclusive=True) as session:
            live = session.exec(select(func.count()).select_from(Webhook).where(
                col(Webhook.deleted_at).is_(None))).one()
            if live >= MAX_WEBHOOKS:
                raise InvalidInput("url", f"at most {MAX_WEBHOOKS} webhooks may be registered; delete one first")
            row = Webhook(id=secrets.token_hex(8), url=request.url, events=list(request.events),
                          secret_sealed=self.sealer.seal(request.secret.encode()), created_at=self.clock(),
                          created_by=by.client_id)
            session.add(row)
            session.flush()
            # The URL and events, never the secret.
            self.audit.record(by, "webhook_create", f"webhook {row.id}", session, url=row.url, events=row.events)
            return _webhook_record(row)

    def list(self) -> list[WebhookRecord]:
        with self.database.session() as session:
            rows = session.exec(select(Webhook).where(col(Webhook.deleted_at).is_(None))
                                .order_by(col(Webhook.created_at), col(Webhook.id))).all()
            return [_webhook_record(row) for row in rows]

    def get(self, webhook_id: str) -> WebhookRecord:
        with self.database.session() as session:
            return _webhook_record(self._webhook(session, webhook_id))

    def delete(self, webhook_id: str, by: Performer) -> WebhookRecord:
        """Stop sending to an endpoint: its pending deliveries are cancelled; its log stays readable."""
        with self.database.session(exclusive=True) as session:
            row = self._webhook(session, webhook_id)
            if row.deleted_at is None:
                row.deleted_at = self.clock()
                session.add(row)
                session.execute(update(WebhookDelivery).where(
                    col(WebhookDelivery.webhook_id) == webhook_id,
                    col(WebhookDelivery.status) == DeliveryStatus.PENDING.value,
                ).values(status=DeliveryStatus.CANCELLED.value))
                session.flush()
                self.audit.record(by, "webhook_delete", f"webhook {row.id}", session, url=row.url)
            return _webhook_record(row)

    def deliveries(self, webhook_id: str, limit: int = DELIVERY_LOG_PAGE) -> list[DeliveryRecord]:
        """The newest deliveries to an endpoint, each with every attempt made."""
        if not 1 <= limit <= MAX_DELIVERY_LOG_PAGE:
            raise InvalidInput("limit", f"must be between 1 and {MAX_DELIVERY_LOG_PAGE}")
        with self.database.session() as session:
            self._webhook(session, webhook_id)
            rows = session.exec(select(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook_id)
                                .order_by(col(WebhookDelivery.id).desc()).limit(limit)).all()
            attempts: dict[int, list[AttemptRecord]] = {}
            for attempt in session.exec(select(WebhookAttempt).where(
                    col(WebhookAttempt.delivery_id).in_([row.id for row in rows])).order_by(col(WebhookAttempt.id))):
                attempts.setdefault(attempt.delivery_id, []).append(
                    AttemptRecord(attempt.at, attempt.status_code, attempt.error, attempt.duration_ms))
        return [DeliveryRecord(row.id, row.event, row.status, row.attempts, row.created_at,
                               row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
                               row.delivered_at, tuple(attempts.get(row.id, ()))) for row in rows if row.id]

    @staticmethod
    def _webhook(session: Session, webhook_id: str) -> Webhook:
        row = session.get(Webhook, webhook_id)
        if row is None:
            raise NotFound(f"no webhook with id {webhook_id}")
        return row

    # -- the worker ---------------------------------------------------------------------------

    @contextmanager
    def sending(self) -> Iterator[None]:
        """While the block runs, push due grants and send deliveries: every FWREPO_WEBHOOK_INTERVAL, and at
        once when this node commits an event."""
        with ThreadPoolExecutor(PARALLEL_SENDS, thread_name_prefix="webhook-send") as pool:
            self._pool = pool
            try:
                with repeating("webhooks", self.interval, self.work, self.outbox.wake):
                    yield
            finally:
                self._pool = None

    def work(self) -> None:
        """One round: due grants into the outbox, then as many ready deliveries as there are free senders."""
        self.push_due()
        with self._lock:
            free = PARALLEL_SENDS - self._in_flight
        for claimed in self._claim(free) if free > 0 else []:
            with self._lock:
                self._in_flight += 1
            assert self._pool is not None
            self._pool.submit(self._send, claimed)

    def _claim(self, limit: int) -> list[_Claimed]:
        now = self.clock()
        token = secrets.token_hex(16)
        # Held longer than an attempt can last: no other node takes it while this one may still be sending.
        until = now + timedelta(seconds=2 * self.timeout + 5)
        unclaimed = or_(col(WebhookDelivery.claimed_until).is_(None), col(WebhookDelivery.claimed_until) < now)
        # Every tenant's deliveries: each goes to the endpoint its own tenant registered.
        with acting_in(EVERY_TENANT), self.database.session() as session:
            ready = (select(WebhookDelivery.id).where(
                col(WebhookDelivery.status) == DeliveryStatus.PENDING.value,
                col(WebhookDelivery.next_attempt_at) <= now, unclaimed,
            ).order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id)).limit(limit)
                .with_for_update(skip_locked=True))
            # The conditional update is the claim: a row another node claimed meanwhile no longer matches
            # (PostgreSQL re-checks the condition on the row it waited for; SQLite has one writer at a time).
            ids = list(session.execute(update(WebhookDelivery).where(
                col(WebhookDelivery.id).in_(ready), col(WebhookDelivery.status) == DeliveryStatus.PENDING.value,
                unclaimed).values(claim_token=token, claimed_until=until).returning(WebhookDelivery.id)).scalars())
            if not ids:
                return []
            rows = session.exec(select(WebhookDelivery, Webhook).join(
                Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id)).where(
                col(WebhookDelivery.id).in_(ids))).all()
            claimed, unreadable = [], []
            for delivery, webhook in rows:
                try:
                    claimed.append(_Claimed(delivery.id or 0, token, webhook.id, delivery.event, delivery.attempts,
                                            webhook.url, self.sealer.open(webhook.secret_sealed),
                                            self.sealer.open(delivery.body_sealed)))
                except Unsealable:
                    unreadable.append(delivery.id or 0)
            if unreadable:
                # Sealed under another FWREPO_TOKEN_SECRET: no attempt could sign it. It fails now, saying why,
                # rather than hold up the deliveries claimed with it round after round.
                session.add_all([WebhookAttempt(delivery_id=delivery_id, at=now, error=f"unreadable: {Unsealable()}"
                                                " (register the webhook again)", duration_ms=0)
                                 for delivery_id in unreadable])
                session.execute(update(WebhookDelivery).where(col(WebhookDelivery.id).in_(unreadable)).values(
                    status=DeliveryStatus.FAILED.value, claim_token=None, claimed_until=None))
            return claimed

    def _send(self, claimed: _Claimed) -> None:
        try:
            timestamp = str(int(self.clock().timestamp()))
            headers = {"Fwrepo-Event": claimed.event, "Fwrepo-Delivery": str(claimed.id),
                       "Fwrepo-Timestamp": timestamp,
                       "Fwrepo-Signature": signature(claimed.secret, timestamp, claimed.body)}
            started = self.clock()
            answer = post(claimed.url, claimed.body, headers, deadline=self.timeout, allow_http=self.allow_http,
                          allow_private=self.allow_private, tls=self.tls)
            self._record(claimed, started, answer)
        except Exception:  # a database hiccup: the claim runs out and the delivery is tried again
            log.exception("webhook %s delivery %s: recording the attempt failed", claimed.webhook_id,
                               claimed.id)
        finally:
            with self._lock:
                self._in_flight -= 1
            self.outbox.wake.set()

    def _record(self, claimed: _Claimed, started: datetime, answer: Answer) -> None:
        attempts = claimed.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "claim_token": None, "claimed_until": None}
        if answer.delivered:
            values.update(status=DeliveryStatus.DELIVERED.value, delivered_at=self.clock())
        elif attempts >= self.max_attempts:
            values.update(status=DeliveryStatus.FAILED.value)
        else:
            values.update(next_attempt_at=self.clock() + retry_wait(attempts, self.retry_base))
        with acting_in(EVERY_TENANT), self.database.session() as session:
            session.add(WebhookAttempt(delivery_id=claimed.id, at=started, status_code=answer.status_code,
                                       error=answer.error, duration_ms=answer.duration_ms))
            session.execute(update(WebhookDelivery).where(col(WebhookDelivery.id) == claimed.id,
                                                          col(WebhookDelivery.claim_token) == claimed.token)
                            .values(**values))
        # The webhook's id, never its URL (it may carry a token of the CSMS's) nor the body.
        log.info("webhook %s delivery %s (%s) attempt %d: %s", claimed.webhook_id, claimed.id, claimed.event,
                      attempts, answer.status_code if answer.status_code is not None else answer.error)


def _webhook_record(row: Webhook) -> WebhookRecord:
    return WebhookRecord(row.id, row.url, tuple(row.events), row.created_at, row.created_by, row.deleted_at)

