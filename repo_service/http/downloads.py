"""The charger's download: GET/HEAD /d/TOKEN/FILENAME, refused with no oracle.

A forged or malformed token is 404, a token that was good and no longer is
(expired, revoked, yanked, used up) is 410; the body says nothing about which,
the download record does (with the client's address).
"""

from __future__ import annotations

import time
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from repo_service.domain.grants import DownloadAttempt, DownloadRefused, Refusal
from repo_service.http.problems import problem
from repo_service.http.streaming import Delivery, firmware_response
from repo_service.storage.base import Presigning

# Long enough for the charger to follow the redirect, short enough that a leaked URL soon dies.
PRESIGNED_SECONDS = 300


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def download(request: Request) -> Response:
    services = request.app.state.services
    grants = services.grants
    began, now = time.monotonic(), grants.clock()
    try:
        permit = await run_in_threadpool(grants.authorize, request.path_params["token"])
    except DownloadRefused as refusal:
        grants.record(DownloadAttempt(
            grant_id=refusal.grant_id, charger_id=refusal.charger_id, client_address=_client(request),
            protocol="https", range_start=None, range_end=None, bytes_sent=0, completed=False,
            refusal=refusal.reason, started_at=now, duration_ms=int((time.monotonic() - began) * 1000),
        ))
        if refusal.reason == Refusal.FORGED:
            return problem(404, "not-found", "Not found", "no download here")
        return problem(410, "gone", "Gone", "this download link is no longer valid; ask for a new one")
    firmware = permit.firmware
    storage = services.catalog.storage
    if services.settings.download_mode == "redirect" and isinstance(storage, Presigning):
        url = await run_in_threadpool(
            storage.presigned_url, firmware.storage_key, timedelta(seconds=PRESIGNED_SECONDS), firmware.filename
        )
        _record(grants, permit.grant_id, permit.charger_id, request, now, None)
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})

    active = services.metrics.active_downloads.labels("https")

    def on_end(delivery: Delivery) -> None:
        active.dec()
        _record(grants, permit.grant_id, permit.charger_id, request, now, delivery)

    if request.method == "HEAD":
        return await firmware_response(request, firmware, storage, {"Cache-Control": "no-store"})
    return await firmware_response(request, firmware, storage, {"Cache-Control": "no-store"}, on_end, active.inc)


def _record(grants, grant_id: int, charger_id: str, request: Request, started, delivery: Delivery | None) -> None:
    grants.record(DownloadAttempt(
        grant_id=grant_id, charger_id=charger_id, client_address=_client(request), protocol="https",
        range_start=delivery.start if delivery else None,
        range_end=delivery.start + delivery.length - 1 if delivery else None,
        bytes_sent=delivery.bytes_sent if delivery else 0,
        # Ranges and resumes are parts of one download: it counts once, when its last byte went out.
        completed=delivery.reached_end if delivery else False,
        refusal=None, started_at=started, duration_ms=int(delivery.seconds * 1000) if delivery else 0,
    ))


ROUTES = [Route("/d/{token}/{filename}", download, methods=["GET", "HEAD"])]
