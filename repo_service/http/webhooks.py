"""Webhooks over HTTP: a CSMS registers endpoints, lists and deletes them, and reads what was delivered."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from repo_service.domain.clients import Action
from repo_service.domain.clock import rfc3339
from repo_service.domain.webhooks import DELIVERY_LOG_PAGE, DeliveryRecord, WebhookRecord
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object
from repo_service.http.firmware import query_int
from repo_service.http.urls import path_id


def webhook_json(webhook: WebhookRecord) -> dict[str, Any]:
    # Never the secret: it was shown to no one but its sender, and is only used to sign.
    return {
        "id": webhook.id,
        "url": webhook.url,
        "events": list(webhook.events),
        "created_at": rfc3339(webhook.created_at),
        "deleted_at": rfc3339(webhook.deleted_at) if webhook.deleted_at else None,
    }


def delivery_json(delivery: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": rfc3339(delivery.created_at),
        "next_attempt_at": rfc3339(delivery.next_attempt_at) if delivery.next_attempt_at else None,
        "delivered_at": rfc3339(delivery.delivered_at) if delivery.delivered_at else None,
        "log": [{"at": rfc3339(attempt.at), "status_code": attempt.status_code, "error": attempt.error,
                 "duration_ms": attempt.duration_ms} for attempt in delivery.log],
    }


def _webhook_id(request: Request) -> str:
    return path_id(request, "webhook_id", "webhook")


async def create(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_WEBHOOKS)
    webhooks = request.app.state.services.webhooks
    webhook_request = webhooks.parse(await json_object(request))
    webhook = await run_in_threadpool(webhooks.create, webhook_request, actor.performer)
    return JSONResponse(webhook_json(webhook), status_code=201, headers={"Location": f"/api/v1/webhooks/{webhook.id}"})


async def list_webhooks(request: Request) -> Response:
    await authorize(request, Action.MANAGE_WEBHOOKS)
    webhooks = await run_in_threadpool(request.app.state.services.webhooks.list)
    return JSONResponse({"items": [webhook_json(webhook) for webhook in webhooks]})


async def show(request: Request) -> Response:
    await authorize(request, Action.MANAGE_WEBHOOKS)
    webhook = await run_in_threadpool(request.app.state.services.webhooks.get, _webhook_id(request))
    return JSONResponse(webhook_json(webhook))


async def delete(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_WEBHOOKS)
    webhook = await run_in_threadpool(request.app.state.services.webhooks.delete, _webhook_id(request),
                                      actor.performer)
    return JSONResponse(webhook_json(webhook))


async def deliveries(request: Request) -> Response:
    await authorize(request, Action.MANAGE_WEBHOOKS)
    webhook_id = _webhook_id(request)
    found = await run_in_threadpool(request.app.state.services.webhooks.deliveries, webhook_id,
                                    query_int(request, "limit", DELIVERY_LOG_PAGE))
    return JSONResponse({"webhook_id": webhook_id, "items": [delivery_json(delivery) for delivery in found]})


ROUTES = [
    Route("/api/v1/webhooks", create, methods=["POST"]),
    Route("/api/v1/webhooks", list_webhooks, methods=["GET"]),
    Route("/api/v1/webhooks/{webhook_id}", show, methods=["GET"]),
    Route("/api/v1/webhooks/{webhook_id}", delete, methods=["DELETE"]),
    Route("/api/v1/webhooks/{webhook_id}/deliveries", deliveries, methods=["GET"]),
]
