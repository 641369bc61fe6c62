"""Asking for updates over HTTP: what the CSMS calls when a charger boots."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import UpdateOffer
from repo_service.domain.clients import Action
from repo_service.domain.updates import UpdateQuery, find_update
from repo_service.errors import InvalidInput
from repo_service.http.auth import authorize
from repo_service.http.firmware import firmware_json
from repo_service.http.operations import Parameter, operation, reply


@operation(operation_id="findUpdate", summary="The build a booting charger should move to, if any", tag="updates",
           action=Action.QUERY_UPDATES, replies={200: UpdateOffer}, parameters=(
               Parameter("vendor", "query", "BootNotification's chargePointVendor", required=True),
               Parameter("model", "query", "BootNotification's chargePointModel", required=True),
               Parameter("current_version", "query", "BootNotification's firmwareVersion", required=True),
               Parameter("hardware_revision", "query", "the charger's hardware revision, when it has one"),
               Parameter("channel", "query", "the release channel", {"type": "string", "default": "stable"})))
async def updates(request: Request) -> Response:
    await authorize(request, Action.QUERY_UPDATES)
    params = request.query_params
    for name in ("vendor", "model", "current_version"):
        if not params.get(name, "").strip():
            raise InvalidInput(name, "is required")
    query = UpdateQuery(
        vendor=params["vendor"],
        model=params["model"],
        current_version=params["current_version"],
        hardware_revision=params.get("hardware_revision") or None,
        channel=params.get("channel") or "stable",
    )
    record = await run_in_threadpool(find_update, request.app.state.services.catalog, query)
    return reply(UpdateOffer, {"update": firmware_json(record) if record else None})


ROUTES = [Route("/api/v1/updates", updates, methods=["GET"])]
