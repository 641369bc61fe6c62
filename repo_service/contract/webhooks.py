"""Webhooks: the endpoints a CSMS registers, their delivery log, and the events fwrepo pushes.

WEBHOOK_EVENTS is the one place each event's payload model is registered;
repo_service.http.openapi describes every entry in the document's ``webhooks``
section (docs/webhooks.md says when each is sent and how it is signed).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from repo_service.contract.base import Body, Moment, Reply
from repo_service.contract.grants import Grant
from repo_service.domain.webhooks import (
    CAMPAIGN_CANCELLED, CAMPAIGN_COMPLETED, CAMPAIGN_HALTED, EVENTS, GRANTS_DUE, JOB_FINISHED, MAX_SECRET, MAX_URL,
    MIN_SECRET, WAVE_STARTED, DeliveryStatus,
)

EventName = Literal[tuple(EVENTS)]  # type: ignore[valid-type]


class WebhookRequest(Body):
    url: str = Field(max_length=MAX_URL, description="the receiver's HTTPS URL (public addresses only)")
    events: list[EventName] = Field(min_length=1, description="the events to push to it")
    secret: str = Field(min_length=MIN_SECRET, max_length=MAX_SECRET,
                        description="printable ASCII; signs every delivery (HMAC-SHA256); never shown back")


class Webhook(Reply):
    id: str
    url: str
    events: list[str]
    created_at: Moment
    deleted_at: Moment | None


class WebhookList(Reply):
    items: list[Webhook]


class DeliveryAttempt(Reply):
    at: Moment
    status_code: int | None = Field(description="the receiver's status; null when it did not answer")
    error: str | None = Field(description="why the attempt failed without an answer; null when it answered")
    duration_ms: int


class Delivery(Reply):
    id: int = Field(description="also sent as the Fwrepo-Delivery header")
    event: str
    status: Literal[tuple(DeliveryStatus)]  # type: ignore[valid-type]
    attempts: int
    created_at: Moment
    next_attempt_at: Moment | None
    delivered_at: Moment | None
    log: list[DeliveryAttempt]


class DeliveryList(Reply):
    webhook_id: str
    items: list[Delivery]


class DueGrantsData(Reply):
    campaign_id: str
    grants: list[Grant] = Field(description="each exactly as ?due=now returns it, handed out once")


class WaveStartedData(Reply):
    campaign_id: str
    wave: int = Field(description="counts from 1")
    waves: int
    grants: int = Field(description="grants the wave made")


class CampaignHaltedData(Reply):
    campaign_id: str
    wave: int
    status_reason: str


class CampaignCompletedData(Reply):
    campaign_id: str
    waves: int


class CampaignCancelledData(Reply):
    campaign_id: str


class JobFinishedData(Reply):
    grant_id: int
    request_id: int
    campaign_id: str | None = Field(description="null outside campaigns")
    charger_id: str | None = Field(description="null outside campaigns")
    state: str
    first_byte: Moment | None
    last_byte: Moment | None
    boot_confirmed: Moment | None


def _event(name: str, data: type[Reply]) -> type[Reply]:
    """The body of one event's delivery: {"id", "event", "created_at", "data"}."""
    fields = {
        "id": (str, Field(description="names the occurrence; the same for every webhook, so a repeat can be dropped")),
        "event": (Literal[name], ...),
        "created_at": (Moment, ...),
        "data": (data, ...),
    }
    title = "".join(part.capitalize() for part in name.split(".")) + "Event"
    return create_model(title, __base__=Reply, **fields)  # type: ignore[call-overload,no-any-return]


WEBHOOK_EVENTS: dict[str, type[Reply]] = {name: _event(name, data) for name, data in (
    (GRANTS_DUE, DueGrantsData), (WAVE_STARTED, WaveStartedData), (CAMPAIGN_HALTED, CampaignHaltedData),
    (CAMPAIGN_COMPLETED, CampaignCompletedData), (CAMPAIGN_CANCELLED, CampaignCancelledData),
    (JOB_FINISHED, JobFinishedData))}
