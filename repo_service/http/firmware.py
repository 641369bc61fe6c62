"""The catalog over HTTP: upload, list, show, publish, yank, download content."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import Firmware, FirmwarePage, Manifest, UploadForm, YankRequest
from repo_service.domain.audit import MAX_OFFSET
from repo_service.domain.catalog import MAX_PAGE, CatalogFilter, FirmwareRecord, Status, parse_status
from repo_service.domain.clients import Action, Actor
from repo_service.domain.uploads import REQUIRED_FIELDS, UploadOutcome, UploadRequest, parse_upload_fields
from repo_service.errors import InvalidInput, TooLarge
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object, record_json
from repo_service.http.forms import RateFloor, StreamingForm
from repo_service.http.operations import Content, Parameter, conforming, operation, reply
from repo_service.http.streaming import firmware_response

# Room for the form's boundaries, headers and metadata fields around the image.
FORM_OVERHEAD = 2 * 1024 * 1024
# More uploads than this wait (their clients slowed by backpressure) until one ends. An upload
# takes a thread only once its first block has arrived, and gives it up when its client falls
# under FWREPO_UPLOAD_MIN_RATE: clients that trickle cannot hold every thread.
UPLOADS_AT_ONCE = 8
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")
_MAX_DIGITS = 19


def firmware_json(record: FirmwareRecord) -> dict[str, Any]:
    body = record_json(record)
    del body["storage_key"]  # where bytes live is the repository's business
    return body


def page_parameters(default_limit: int, max_limit: int, max_offset: int) -> tuple[Parameter, Parameter]:
    """limit and offset, as every listing takes them."""
    return (Parameter("limit", "query", "items per page", {"type": "integer", "minimum": 1, "maximum": max_limit,
                                                           "default": default_limit}),
            Parameter("offset", "query", "items to skip", {"type": "integer", "minimum": 0, "maximum": max_offset,
                                                           "default": 0}))


def query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() also takes "١٢", "1_0" and " 7 ".
    if not _WHOLE_NUMBER.fullmatch(raw):
        raise InvalidInput(name, f"must be a whole number, got {raw[:40]!r}")
    # More digits than a 64-bit integer has: no database column holds it, and past 4300 int() refuses it.
    if len(raw.lstrip("-")) > _MAX_DIGITS:
        raise InvalidInput(name, f"is out of range: more than {_MAX_DIGITS} digits")
    return int(raw)


def _upload_threads(request: Request) -> anyio.CapacityLimiter:
    # Each upload holds a worker thread for its whole transfer: uploads get threads
    # of their own, so a burst of them cannot starve downloads and API calls of the shared pool.
    state = request.app.state
    if not hasattr(state, "upload_threads"):
        state.upload_threads = anyio.CapacityLimiter(UPLOADS_AT_ONCE)
    return state.upload_threads


async def receive_upload(request: Request, actor: Actor,
                         before_file: Callable[[dict[str, str]], None] | None = None) -> UploadOutcome:
    """Stream a multipart upload into the catalog for actor; before_file, if given, sees the fields that came
    before the file and may refuse the upload before any byte of it is stored (the console's CSRF token)."""
    services = request.app.state.services
    limit = services.settings.max_upload_bytes
    declared_length = request.headers.get("content-length")
    if declared_length and declared_length.isdigit() and int(declared_length) > limit + FORM_OVERHEAD:
        raise TooLarge("file", f"is larger than the {limit} bytes this repository accepts")
    form = StreamingForm(request, RateFloor(services.settings.upload_min_rate, services.settings.upload_rate_window))

    def validate_early() -> None:
        if before_file is not None:
            before_file(form.fields)
        # When the fields come before the file (the CLI sends them so), a bad
        # field stops the upload before any byte is stored.
        if REQUIRED_FIELDS <= form.fields.keys():
            parse_upload_fields(form.fields)

    def described_early() -> UploadRequest | None:
        # Once the file's bytes flow, the fields before it are all in: the domain checks quotas with them.
        return parse_upload_fields(form.fields) if form.file_seen and REQUIRED_FIELDS <= form.fields.keys() else None

    # What the image has at least, if the request's length is true: the length less the room a form takes.
    size_at_least = max(0, int(declared_length) - FORM_OVERHEAD) if declared_length and declared_length.isdigit() else 0

    def describe() -> tuple[UploadRequest, str | None]:
        if not form.file_seen:
            raise InvalidInput("file", "is required: send the image as a form part named file")
        return parse_upload_fields(form.fields), form.filename

    form.on_file_start = validate_early
    outcome = failure = None
    began = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(form.feed)
        try:
            await form.data_ready()
            outcome = await anyio.to_thread.run_sync(
                lambda: services.uploads.upload(form.file_blocks(), describe, actor.performer, size_at_least,
                                                described_early()),
                limiter=_upload_threads(request),
            )
        except Exception as error:
            failure = error
        finally:
            form.stop()
    services.metrics.upload_seconds.observe(time.monotonic() - began)
    if failure is not None:
        raise failure
    return outcome


@operation(operation_id="uploadFirmware", summary="Upload a build", tag="firmware", action=Action.UPLOAD,
           request=UploadForm, request_media_type="multipart/form-data",
           replies={201: Firmware, 200: Firmware}, errors={409: "this version is stored with other bytes",
                                                           413: "the image is larger than FWREPO_MAX_UPLOAD_BYTES",
                                                           503: "storage failed; nothing was stored",
                                                           507: "the build would pass the tenant's stored bytes or "
                                                                "builds quota; nothing was stored"},
           description="200: the same version with the same bytes was stored before (an idempotent retry).")
async def upload(request: Request) -> Response:
    actor = await authorize(request, Action.UPLOAD)
    outcome = await receive_upload(request, actor)
    status = 201 if outcome.created else 200
    headers = {"Location": f"/api/v1/firmware/{outcome.firmware.id}"}
    return reply(Firmware, firmware_json(outcome.firmware), status, headers)


@operation(operation_id="listFirmware", summary="List builds, newest first", tag="firmware",
           action=Action.READ_CATALOG, replies={200: FirmwarePage}, parameters=(
               Parameter("vendor", "query", "only this vendor's builds"),
               Parameter("model", "query", "only builds for this model"),
               Parameter("status", "query", "only builds in this state", {"type": "string", "enum": list(Status)}),
               Parameter("channel", "query", "only builds of this channel"),
               *page_parameters(50, MAX_PAGE, MAX_OFFSET)))
async def list_firmware(request: Request) -> Response:
    await authorize(request, Action.READ_CATALOG)
    params = request.query_params
    status = params.get("status")
    where = CatalogFilter(
        vendor=params.get("vendor"),
        model=params.get("model"),
        status=parse_status(status) if status is not None else None,
        channel=params.get("channel"),
    )
    limit, offset = query_int(request, "limit", 50), query_int(request, "offset", 0)
    page = await run_in_threadpool(request.app.state.services.catalog.list, where, limit, offset)
    following = None
    if page.offset + len(page.items) < page.total:
        # From FWREPO_PUBLIC_URL, never the request's Host header: a client must not choose where the link points.
        public = URL(request.app.state.services.settings.public_url.rstrip("/") + request.url.path)
        following = str(public.replace(query=request.url.query).include_query_params(
            offset=page.offset + page.limit, limit=page.limit))
    return reply(FirmwarePage, {
        "items": [firmware_json(record) for record in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
        "next": following,
    })


@operation(operation_id="getFirmware", summary="One build", tag="firmware", action=Action.READ_CATALOG,
           replies={200: Firmware}, errors={404: "no such build"})
async def show(request: Request) -> Response:
    await authorize(request, Action.READ_CATALOG)
    record = await run_in_threadpool(request.app.state.services.catalog.get, request.path_params["firmware_id"])
    return reply(Firmware, firmware_json(record))


@operation(operation_id="publishFirmware", summary="Publish a build: chargers may get it", tag="firmware",
           action=Action.PUBLISH, replies={200: Firmware},
           errors={404: "no such build", 409: "yanked, or no signing key to sign it with"},
           description="Idempotent: publishing a published build answers it unchanged. A body is ignored.")
async def publish(request: Request) -> Response:
    actor = await authorize(request, Action.PUBLISH)
    record = await run_in_threadpool(request.app.state.services.catalog.publish, request.path_params["firmware_id"],
                                     actor.performer)
    return reply(Firmware, firmware_json(record))


@operation(operation_id="yankFirmware", summary="Yank a build: its grants stop working", tag="firmware",
           action=Action.YANK, request=YankRequest, replies={200: Firmware}, errors={404: "no such build"})
async def yank(request: Request) -> Response:
    actor = await authorize(request, Action.YANK)
    document = await json_object(request)
    reason = document.get("reason")
    if not isinstance(reason, str):
        raise InvalidInput("reason", "is required: say why this build must not be installed")
    # The model holds the body to the description; the domain then trims the reason and refuses a blank one.
    record = await run_in_threadpool(
        request.app.state.services.catalog.yank, request.path_params["firmware_id"],
        conforming(YankRequest, document).reason, actor.performer
    )
    return reply(Firmware, firmware_json(record))


# What the content route and a charger's download send (repo_service.http.streaming).
IMAGE = {
    200: Content("the image", "application/octet-stream",
                 headers={"ETag": "the image's SHA-256, quoted", "Accept-Ranges": "bytes",
                          "Repr-Digest": "sha-256 of the whole image (RFC 9530)"}),
    206: Content("the range asked for (RFC 9110 §14)", "application/octet-stream",
                 headers={"Content-Range": "bytes START-END/SIZE"}),
}
IMAGE_PARAMETERS = (Parameter("Range", "header", "bytes=START-[END]: resume an interrupted download"),)


@operation(operation_id="getFirmwareContent", summary="The build's bytes, with Range", tag="firmware",
           action=Action.DOWNLOAD_CONTENT, replies=IMAGE, parameters=IMAGE_PARAMETERS,
           errors={404: "no such build", 416: "the range starts past the image", 503: "storage failed"})
async def content(request: Request) -> Response:
    actor = await authorize(request, Action.DOWNLOAD_CONTENT)
    catalog = request.app.state.services.catalog
    record = await run_in_threadpool(catalog.downloadable, request.path_params["firmware_id"], actor.performer)
    return await firmware_response(request, record, catalog.storage, {})


@operation(operation_id="getFirmwareManifest", summary="The build's signed release manifest", tag="firmware",
           action=Action.READ_CATALOG, replies={200: Manifest},
           errors={404: "no such build", 409: "not published, or not signed by a valid key"})
async def manifest(request: Request) -> Response:
    await authorize(request, Action.READ_CATALOG)
    document = await run_in_threadpool(request.app.state.services.catalog.manifest, request.path_params["firmware_id"])
    return reply(Manifest, document)


ROUTES = [
    Route("/api/v1/firmware", upload, methods=["POST"]),
    Route("/api/v1/firmware", list_firmware, methods=["GET"]),
    Route("/api/v1/firmware/{firmware_id}", show, methods=["GET"]),
    Route("/api/v1/firmware/{firmware_id}/publish", publish, methods=["POST"]),
    Route("/api/v1/firmware/{firmware_id}/yank", yank, methods=["POST"]),
    Route("/api/v1/firmware/{firmware_id}/content", content, methods=["GET", "HEAD"]),
    Route("/api/v1/firmware/{firmware_id}/manifest", manifest, methods=["GET"]),
]
