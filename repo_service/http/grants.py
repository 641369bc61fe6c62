"""Grants over HTTP: what a CSMS calls to get a location for OCPP UpdateFirmware."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import Grant, GrantBatch, GrantBatchRequest, GrantRequest, GrantWithDownloads
from repo_service.domain.clients import Action
from repo_service.domain.grants import MAX_GRANT_ID, GrantRecord
from repo_service.domain.ocpp import grant_json
from repo_service.errors import InvalidInput, NotFound
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object, record_json
from repo_service.http.operations import Parameter, conforming, operation, reply

# A batch of 10,000 charger ids is about 400 KB of JSON.
MAX_GRANT_BODY = 2 * 1024 * 1024


# What refuses a grant for its build, for one charger, a batch or a campaign.
ISSUE_ERRORS = {409: "the build is not published (or yanked), or has no valid signature"}
# A campaign is not refused by the tenant's grants-per-minute quota: its waves wait for room instead.
RATE_ERRORS = {**ISSUE_ERRORS, 429: "the grants would pass the tenant's grants per minute; Retry-After says when "
                                    "they fit (a batch larger than the quota is a 422)"}
GRANT_ID = Parameter("grant_id", "path", "the grant's number (its OCPP requestId)",
                     {"type": "integer", "minimum": 1, "maximum": MAX_GRANT_ID}, required=True)


@operation(operation_id="issueGrant", summary="Let one charger download one build: the location for UpdateFirmware",
           tag="grants", action=Action.GRANT, request=GrantRequest, replies={201: Grant}, errors=RATE_ERRORS)
async def issue(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    grants = request.app.state.services.grants
    document = await json_object(request)
    # The domain checks first and names what is wrong in its words; the model then holds the body to the description.
    grant_request = grants.parse(document, batch=False)
    conforming(GrantRequest, document)
    firmware, issued = await run_in_threadpool(grants.issue, grant_request, actor.performer)
    return reply(Grant, grant_json(issued[0], firmware), 201, {"Location": f"/api/v1/grants/{issued[0].id}"})


@operation(operation_id="issueGrants", summary="Grants for many chargers at once, all or none", tag="grants",
           action=Action.GRANT, request=GrantBatchRequest, replies={201: GrantBatch}, errors=RATE_ERRORS)
async def issue_batch(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    grants = request.app.state.services.grants
    document = await json_object(request, MAX_GRANT_BODY)
    grant_request = grants.parse(document, batch=True)
    conforming(GrantBatchRequest, document)
    firmware, issued = await run_in_threadpool(grants.issue, grant_request, actor.performer)
    return reply(GrantBatch, {"firmware_id": firmware.id, "count": len(issued),
                              "grants": [grant_json(grant, firmware) for grant in issued]}, 201)


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
    firmware = await run_in_threadpool(services.catalog.granted, grant.firmware_id)
    body = grant_json(grant, firmware)
    body["downloads"] = [
        # unused is bookkeeping of the grant's byte budget, not part of what happened
        {key: value for key, value in record_json(download).items() if key not in ("grant_id", "unused")}
        for download in downloads
    ]
    return body


@operation(operation_id="getGrant", summary="A grant with its download records", tag="grants", action=Action.GRANT,
           parameters=(GRANT_ID,), replies={200: GrantWithDownloads}, errors={404: "no such grant"})
async def show(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    grant = await run_in_threadpool(request.app.state.services.grants.get, grant_id_from(request))
    return reply(GrantWithDownloads, await _grant_body(request, grant))


@operation(operation_id="revokeGrant", summary="Revoke a grant: its location stops working", tag="grants",
           action=Action.GRANT, parameters=(GRANT_ID,), replies={200: GrantWithDownloads},
           errors={404: "no such grant"}, description="Idempotent: revoking a revoked grant answers it unchanged.")
async def revoke(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    grant = await run_in_threadpool(request.app.state.services.grants.revoke, grant_id_from(request),
                                    actor.performer)
    return reply(GrantWithDownloads, await _grant_body(request, grant))


class GrantIdConvertor(StringConvertor):
    """Any path segment but "batch": GET /api/v1/grants/batch is the batch's 405, not a grant id's 422 (found by
    schemathesis). Other segments that are not numbers still reach grant_id_from, which names the parameter."""

    regex = "(?!batch$)[^/]+"


register_url_convertor("grant_id", GrantIdConvertor())

ROUTES = [
    Route("/api/v1/grants", issue, methods=["POST"]),
    Route("/api/v1/grants/batch", issue_batch, methods=["POST"]),
    Route("/api/v1/grants/{grant_id:grant_id}", show, methods=["GET"]),
    Route("/api/v1/grants/{grant_id:grant_id}", revoke, methods=["DELETE"]),
]
