"""The catalog in the console: builds with filters and search, a build's page, upload, publish and yank."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.console.rendering import View, page, see_other
from repo_service.console.sessions import console_page, require_csrf
from repo_service.domain.catalog import CatalogFilter, Status, parse_status
from repo_service.domain.clients import Action, Actor
from repo_service.errors import InvalidInput
from repo_service.http.firmware import receive_upload

PAGE = 25
FILTERS = ("vendor", "model", "status", "channel", "q")


def filters_query(params: dict[str, str]) -> str:
    """The page's filters as a query string a pager's links add their offset to."""
    given = {name: value for name, value in params.items() if value}
    return urlencode(given) + "&" if given else ""


def offset_of(request: Request) -> int:
    raw = request.query_params.get("offset", "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidInput("offset", f"must be a whole number of at most 9 digits, got {raw[:20]!r}")
    return int(raw)


@console_page(Action.READ_CATALOG)
async def builds(request: Request, actor: Actor) -> Response:
    params = {name: request.query_params.get(name, "").strip() for name in FILTERS}
    where = CatalogFilter(vendor=params["vendor"] or None, model=params["model"] or None,
                          status=parse_status(params["status"]) if params["status"] else None,
                          channel=params["channel"] or None, search=params["q"] or None)
    found = await run_in_threadpool(request.app.state.services.catalog.list, where, PAGE, offset_of(request))
    return page(request, "catalog.html", found=found, params=params, statuses=list(Status), page_size=PAGE,
                query=filters_query(params))


def verify_lines(algorithm: str | None, filename: str) -> list[str]:
    """The openssl commands that check this build's signature as a charger does (docs/signing.md)."""
    pss = "-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -sigopt rsa_mgf1_md:sha256 " \
        if algorithm and algorithm.startswith("rsa-pss") else ""
    return ["openssl base64 -d -A -in signature.b64 -out sig.der",
            "openssl x509 -in signing.pem -pubkey -noout -out pub.pem",
            "openssl verify -CAfile root-ca.pem signing.pem            # signing.pem: OK",
            f"openssl dgst -sha256 {pss}-verify pub.pem -signature sig.der {filename}   # Verified OK"]


@console_page(Action.READ_CATALOG)
async def build(request: Request, actor: Actor) -> Response:
    services = request.app.state.services
    firmware_id = request.path_params["firmware_id"]
    record = await run_in_threadpool(services.catalog.get, firmware_id)
    history, _ = await run_in_threadpool(lambda: services.audit.list(subject=f"firmware {record.id}", limit=50))
    stats, campaigns = await run_in_threadpool(services.campaigns.firmware_stats, record.id)
    grants, grant_count = await run_in_threadpool(services.grants.of_firmware, record.id)
    return page(request, "build.html", build=record, history=history, stats=stats, campaigns=campaigns,
                grants=grants, grant_count=grant_count,
                verify=verify_lines(record.signing_algorithm, record.filename),
                detail=lambda event: json.loads(event.detail) if event.detail else {})


@console_page(Action.READ_CATALOG)
async def manifest(request: Request, actor: Actor) -> Response:
    document = await run_in_threadpool(request.app.state.services.catalog.manifest, request.path_params["firmware_id"])
    filename = f"manifest-{document.get('vendor', 'build')}-{document.get('version', '')}.json"
    safe = "".join(char if char.isalnum() or char in ".-_" else "_" for char in filename)
    return Response(json.dumps(document, indent=2), media_type="application/json",
                    headers={"content-disposition": f'attachment; filename="{safe}"', "cache-control": "no-store"})


@console_page(Action.UPLOAD)
async def upload_form(request: Request, actor: Actor) -> Response:
    return page(request, "upload.html")


@console_page(Action.UPLOAD, streamed=True)
async def upload(request: Request, actor: Actor) -> Response:
    try:
        outcome = await receive_upload(request, actor, lambda fields: require_csrf(request, fields))
    except InvalidInput as error:
        # The script shows the message beside the form; without it, the page says it.
        return page(request, "upload.html", 413 if error.field == "file" and "larger" in error.message else 422,
                    message=str(error))
    path = f"/firmware/{outcome.firmware.id}"
    if request.headers.get("x-requested-with") == "fwrepo-console":
        # The upload script follows this itself (it cannot see a redirect's target).
        return Response(json.dumps({"location": "/console" + path, "created": outcome.created}),
                        media_type="application/json", status_code=201 if outcome.created else 200)
    return see_other(path)


def confirm(act: str, action: Action) -> View:
    """Publishing and yanking are asked twice: this page says what will happen, its form does it."""

    @console_page(action)
    async def asking(request: Request, actor: Actor) -> Response:
        record = await run_in_threadpool(request.app.state.services.catalog.get, request.path_params["firmware_id"])
        return page(request, "confirm.html", build=record, act=act)

    return asking


@console_page(Action.PUBLISH)
async def publish(request: Request, actor: Actor) -> Response:
    record = await run_in_threadpool(request.app.state.services.catalog.publish, request.path_params["firmware_id"],
                                     actor.performer)
    return see_other(f"/firmware/{record.id}")


@console_page(Action.YANK)
async def yank(request: Request, actor: Actor) -> Response:
    form = await request.form()
    reason = form.get("reason")
    services = request.app.state.services
    try:
        record = await run_in_threadpool(services.catalog.yank, request.path_params["firmware_id"],
                                         reason if isinstance(reason, str) else "", actor.performer)
    except InvalidInput as error:
        record = await run_in_threadpool(services.catalog.get, request.path_params["firmware_id"])
        return page(request, "confirm.html", 422, build=record, act="yank", message=error.message)
    return see_other(f"/firmware/{record.id}")


ROUTES = [
    Route("/", builds, methods=["GET"]),
    Route("/firmware", builds, methods=["GET"]),
    Route("/firmware/upload", upload_form, methods=["GET"]),
    Route("/firmware/upload", upload, methods=["POST"]),
    Route("/firmware/{firmware_id}", build, methods=["GET"]),
    Route("/firmware/{firmware_id}/manifest", manifest, methods=["GET"]),
    Route("/firmware/{firmware_id}/publish", confirm("publish", Action.PUBLISH), methods=["GET"]),
    Route("/firmware/{firmware_id}/yank", confirm("yank", Action.YANK), methods=["GET"]),
    Route("/firmware/{firmware_id}/publish", publish, methods=["POST"]),
    Route("/firmware/{firmware_id}/yank", yank, methods=["POST"]),
]
