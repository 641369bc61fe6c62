"""Grants over HTTP: what a CSMS calls to get a location for OCPP UpdateFirmware."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from repo_service.domain.clients import Action
from repo_service.domain.grants import MAX_GRANT_ID, GrantRecord
from repo_service.domain.ocpp import grant_json
from repo_service.errors import InvalidInput, NotFound
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object, record_json

# A batch of 10,000 charger ids is about 400 KB of JSON.
MAX_GRANT_BODY = 2 * 1024 * 1024


async def issue(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    grants = request.app.state.services.grants
    grant_request = grants.parse(await json_object(request), batch=False)
    firmware, issued = await run_in_threadpool(grants.issue, grant_request, actor.performer)
    return JSONResponse(grant_json(issued[0], firmware), status_code=201,
                        headers={"Location": f"/api/v1/grants/{issued[0].id}"})


async def issue_batch(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    grants = request.app.state.services.grants
    grant_request = grants.parse(await json_object(request, MAX_GRANT_BODY), batch=True)
    firmware, issued = await run_in_threadpool(grants.issue, grant_request, actor.performer)
    return JSONResponse({"firmware_id": firmware.id, "count": len(issued),
                         "grants": [grant_json(grant, firmware) for grant in issued]}, status_code=201)


def grant_id_from(request: Request) -> int:
    raw = request.path_params["grant_id"]
    # ASCII only: str.isdigit() also takes "²", which int() then refuses.
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput("grant_id", f"must be a grant number, got {raw[:40]!r}")
    # Checked before querying: PostgreSQL answers an id past its integer column with an error, not "no row".
    digits = raw.lstrip("0")
    if not digits or len(digits) > len(str(MAX_GRANT_ID)) or int(digits) > MAX_GRANT_ID:
        raise NotFound(f"no grant with id {raw[:40]}")
    return int(digits)


async def _grant_body(request: Request, grant: GrantRecord) -> dict[str, Any]:
    services = request.app.state.services
    downloads = await run_in_threadpool(services.downloads.attempts, grant.id)
    firmware = await run_in_threadpool(services.catalog.get, grant.firmware_id)
    body = grant_json(grant, firmware)
    body["downloads"] = [
        # unused is bookkeeping of the grant's byte budget, not part of what happened
        {key: value for key, value in record_json(download).items() if key not in ("grant_id", "unused")}
        for download in downloads
    ]
    return body


async def show(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    grant = await run_in_threadpool(request.app.state.services.grants.get, grant_id_from(request))
    return JSONResponse(await _grant_body(request, grant))


async def revoke(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    grant = await run_in_threadpool(request.app.state.services.grants.revoke, grant_id_from(request),
                                    actor.performer)
    return JSONResponse(await _grant_body(request, grant))


ROUTES = [
    Route("/api/v1/grants", issue, methods=["POST"]),
    Route("/api/v1/grants/batch", issue_batch, methods=["POST"]),
    Route("/api/v1/grants/{grant_id}", show, methods=["GET"]),
    Route("/api/v1/grants/{grant_id}", revoke, methods=["DELETE"]),
]
