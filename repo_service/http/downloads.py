"""The charger's download: GET/HEAD /d/TOKEN/FILENAME, refused with no oracle.

A forged or malformed token is 404, a token that was good and no longer is
(expired, revoked, yanked, used up) is 410; the body says nothing about which,
the download record does (with the client's address).
"""

from __future__ import annotations

from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from repo_service.domain.downloads import DownloadRefused, Downloads, Refusal
from repo_service.http.firmware import IMAGE, IMAGE_PARAMETERS
from repo_service.http.limits import client_certificate
from repo_service.http.operations import Content, Parameter, operation
from repo_service.http.problems import no_download, problem
from repo_service.http.streaming import firmware_response
from repo_service.storage.base import Presigning

# Long enough for the charger to follow the redirect, short enough that a leaked URL soon dies.
PRESIGNED_SECONDS = 300
HEADERS = {"Cache-Control": "no-store"}


@operation(operation_id="downloadFirmware", summary="A charger's download: the grant's location", tag="downloads",
           action=None, parameters=(
               Parameter("token", "path", "the grant's signed token", required=True),
               Parameter("filename", "path", "the build's file name, for chargers that keep it", required=True),
               *IMAGE_PARAMETERS),
           replies={**IMAGE, 302: Content("FWREPO_DOWNLOAD_MODE=redirect: fetch the image from storage", None,
                                          headers={"Location": "a presigned storage URL, valid for a few minutes"})},
           errors={404: "no download here: the token is not one fwrepo made",
                   410: "the grant expired, was revoked or used up, its build was yanked, or its tenant disabled",
                   416: "the range starts past the image", 503: "storage failed"},
           description="No API key: the token in the path is the credential (bound grants also need the charger's "
                       "TLS client certificate). Replies carry Cache-Control: no-store.")
async def download(request: Request) -> Response:
    services = request.app.state.services
    downloads = services.downloads
    client = request.client.host if request.client else "unknown"
    try:
        permit = await run_in_threadpool(downloads.authorize, request.path_params["token"],
                                         client_certificate(request))
    except DownloadRefused as refusal:
        return _refused(downloads, refusal, client)
    firmware = permit.firmware
    storage = services.catalog.storage
    # A presigned URL is a bearer credential again: a grant bound to the charger's certificate is streamed.
    if services.settings.download_mode == "redirect" and isinstance(storage, Presigning) and not permit.bound:
        url = await run_in_threadpool(
            storage.presigned_url, firmware.storage_key, timedelta(seconds=PRESIGNED_SECONDS), firmware.filename
        )
        try:
            # Storage sends the bytes: the whole image is taken from the grant's budget, and the record says
            # the charger was sent there, not what it received.
            transfer = await run_in_threadpool(downloads.begin, permit, "https", client, 0, firmware.size)
        except DownloadRefused as refusal:
            return _refused(downloads, refusal, client)
        transfer.handed_off()
        return RedirectResponse(url, status_code=302, headers=HEADERS)
    if request.method == "HEAD":
        return await firmware_response(request, firmware, storage, HEADERS)
    try:
        return await firmware_response(request, firmware, storage, HEADERS,
                                       lambda start, length: downloads.begin(permit, "https", client, start, length))
    except DownloadRefused as refusal:  # the grant's budget cannot hold this transfer
        return _refused(downloads, refusal, client)


def _refused(downloads: Downloads, refusal: DownloadRefused, client: str) -> Response:
    downloads.refuse(refusal, "https", client)
    if refusal.reason == Refusal.FORGED:
        return no_download()
    return problem(410, "gone", "Gone", "this download link is no longer valid; ask for a new one")


ROUTES = [Route("/d/{token}/{filename}", download, methods=["GET", "HEAD"])]
