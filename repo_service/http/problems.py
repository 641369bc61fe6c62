"""The one place where domain errors become HTTP replies: RFC 9457 problem details."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route

from repo_service.errors import (
    Conflict,
    Forbidden,
    FwrepoError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    RateLimited,
    StorageUnavailable,
    TooLarge,
    TryLater,
    Unauthenticated,
)
from repo_service.http.observability import REQUEST_ID_KEY, route_template

log = logging.getLogger(__name__)

PROBLEM_BASE = "urn:fwrepo:problem:"
# A route whose path carries a download token: a charger's download.
_TOKEN_IN_ROUTE = "{token}"

# Most specific first: TooLarge is an InvalidInput, RateLimited a QuotaExceeded.
_MAPPING: list[tuple[type[FwrepoError], int, str, str]] = [
    (RateLimited, 429, "rate-limited", "Too many requests for this tenant's quota"),
    (TryLater, 429, "try-later", "Too many attempts"),
    (QuotaExceeded, 507, "quota-exceeded", "Quota exceeded"),
    (TooLarge, 413, "too-large", "Content too large"),
    (InvalidInput, 422, "invalid-input", "Invalid input"),
    (Unauthenticated, 401, "unauthenticated", "Authentication required"),
    (Forbidden, 403, "forbidden", "Not allowed for this role"),
    (NotFound, 404, "not-found", "Not found"),
    (Conflict, 409, "conflict", "Conflict"),
    (StorageUnavailable, 503, "storage-unavailable", "Storage unavailable"),
]


def status_of(error: FwrepoError) -> int:
    """The HTTP status a domain error is answered with (the console's pages use the same)."""
    return next((status for kind, status, _, _ in _MAPPING if isinstance(error, kind)), 500)


def problem(
    status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, **extra}
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="fwrepo"'}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def no_download() -> JSONResponse:
    """The one reply to a download URL that opens nothing: a forged or malformed token, or an image gone from
    storage. Whoever holds the URL learns nothing more from one than from the other."""
    return problem(404, "not-found", "Not found", "no download here")


async def domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FwrepoError)
    if isinstance(error, NotFound) and _TOKEN_IN_ROUTE in _route(request):
        # What is missing (a stored object) is the operator's to know, not the charger's.
        log.warning("%s %s: %s", request.method, _route(request), error, extra=_request_id(request))
        return no_download()
    for kind, status, slug, title in _MAPPING:
        if isinstance(error, kind):
            if isinstance(error, InvalidInput):
                return problem(status, slug, title, str(error), field=error.field)
            if isinstance(error, QuotaExceeded):
                # The tenant's own figures, so that a client can say what to ask its operator for.
                headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else None
                return problem(status, slug, title, str(error), headers, quota=error.quota, used=error.used,
                               limit=error.limit)
            if isinstance(error, TryLater):
                return problem(status, slug, title, str(error), {"Retry-After": str(error.retry_after)})
            if status >= 500:
                log.error("%s %s: %s", request.method, _route(request), error, extra=_request_id(request))
                return problem(status, slug, title, "the storage backend failed; nothing was stored, try again")
            return problem(status, slug, title, str(error))
    return await unexpected_error(request, error)


async def http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem(error.status_code, slug, str(error.detail), f"{request.method} {request.url.path}: {error.detail}",
                   headers=headers)


def _allowed_methods(request: Request) -> str:
    # RFC 9110 §15.5.6: Allow lists every method of the resource. Starlette names
    # only the first route on the path, and GET and POST on one path are two routes here.
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # The trace goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, _route(request), exc_info=error,
                  extra=_request_id(request))
    return problem(500, "internal-error", "Internal server error", "an unexpected error occurred; it was logged")


def _route(request: Request) -> str:
    # The route's template, never the path: a download path holds its token. The request id leads to
    # the access line, which has the rest.
    return route_template(request.scope.get("route"))


def _request_id(request: Request) -> dict[str, str]:
    # Unexpected errors are handled outside the middleware that sets the id for the request's log lines.
    return {"request_id": request.scope.get(REQUEST_ID_KEY, "-")}


EXCEPTION_HANDLERS = {
    FwrepoError: domain_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
