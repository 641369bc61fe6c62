"""Webhooks over HTTP: a CSMS registers endpoints, lists and deletes them, and reads what was delivered."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import DeliveryList, Webhook, WebhookList, WebhookRequest
from repo_service.domain.clients import Action
from repo_service.domain.clock import rfc3339
from repo_service.domain.webhooks import DELIVERY_LOG_PAGE, MAX_DELIVERY_LOG_PAGE, DeliveryRecord, WebhookRecord
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object
from repo_service.http.firmware import query_int
from repo_service.http.operations import Parameter, conforming, operation, reply
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


WEBHOOK_ID = Parameter("webhook_id", "path", "the webhook's id", {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                       required=True)
_NO_WEBHOOK = {404: "no such webhook"}


@operation(operation_id="createWebhook", summary="Register an endpoint fwrepo pushes events to (docs/webhooks.md)",
           tag="webhooks", action=Action.MANAGE_WEBHOOKS, request=WebhookRequest, replies={201: Webhook})
async def create(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_WEBHOOKS)
    webhooks = request.app.state.services.webhooks
    document = await json_object(request)
    # The domain checks first and names what is wrong in its words; the model then holds the body to the description.
    webhook_request = webhooks.parse(document)
    conforming(WebhookRequest, document)
    webhook = await run_in_threadpool(webhooks.create, webhook_request, actor.performer)
    return reply(Webhook, webhook_json(webhook), 201, {"Location": f"/api/v1/webhooks/{webhook.id}"})


@operation(operation_id="listWebhooks", summary="The live webhooks, oldest first", tag="webhooks",
           action=Action.MANAGE_WEBHOOKS, replies={200: WebhookList})
async def list_webhooks(request: Request) -> Response:
    await authorize(request, Action.MANAGE_WEBHOOKS)
    webhooks = await run_in_threadpool(request.app.state.services.webhooks.list)
    return reply(WebhookList, {"items": [webhook_json(webhook) for webhook in webhooks]})


@operation(operation_id="getWebhook", summary="One webhook (a deleted one too, with deleted_at)", tag="webhooks",
           action=Action.MANAGE_WEBHOOKS, parameters=(WEBHOOK_ID,), replies={200: Webhook}, errors=_NO_WEBHOOK)
async def show(request: Request) -> Response:
    await authorize(request, Action.MANAGE_WEBHOOKS)
    webhook = await run_in_threadpool(request.app.state.services.webhooks.get, _webhook_id(request))
    return reply(Webhook, webhook_json(webhook))


@operation(operation_id="deleteWebhook", summary="Stop pushing to a webhook; its pending deliveries are cancelled",
           tag="webhooks", action=Action.MANAGE_WEBHOOKS, parameters=(WEBHOOK_ID,), replies={200: Webhook},
           errors=_NO_WEBHOOK)
async def delete(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_WEBHOOKS)
    webhook = await run_in_threadpool(request.app.state.services.webhooks.delete, _webhook_id(request),
                                      actor.performer)
    return reply(Webhook, webhook_json(webhook))


@operation(operation_id="listWebhookDeliveries", summary="What was delivered to a webhook, newest first, with every attempt",
           tag="webhooks", action=Action.MANAGE_WEBHOOKS,
           parameters=(WEBHOOK_ID, Parameter("limit", "query", "deliveries to show",
                                             {"type": "integer", "minimum": 1, "maximum": MAX_DELIVERY_LOG_PAGE,
                                              "default": DELIVERY_LOG_PAGE})),
           replies={200: DeliveryList}, errors=_NO_WEBHOOK)
async def deliveries(request: Request) -> Response:
    await authorize(request, Action.MANAGE_WEBHOOKS)
    webhook_id = _webhook_id(request)
    found = await run_in_threadpool(request.app.state.services.webhooks.deliveries, webhook_id,
                                    query_int(request, "limit", DELIVERY_LOG_PAGE))
    return reply(DeliveryList, {"webhook_id": webhook_id, "items": [delivery_json(delivery) for delivery in found]})


ROUTES = [
    Route("/api/v1/webhooks", create, methods=["POST"]),
    Route("/api/v1/webhooks", list_webhooks, methods=["GET"]),
    Route("/api/v1/webhooks/{webhook_id}", show, methods=["GET"]),
    Route("/api/v1/webhooks/{webhook_id}", delete, methods=["DELETE"]),
    Route("/api/v1/webhooks/{webhook_id}/deliveries", deliveries, methods=["GET"]),
]
