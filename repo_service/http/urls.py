"""URLs refused before routing when no database could answer them, and ids read from paths."""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from repo_service.errors import InvalidInput
from repo_service.http.problems import domain_error

API_PREFIX = "/api/"
CONSOLE_PREFIX = "/console"


class RefuseNul:
    """A NUL in an API or console path or query is refused with 422: PostgreSQL fails on text that holds one.

    No identifier, version or filter of the API contains NUL, so one place
    keeps it from every query, the routes of tomorrow included. Download URLs
    are left alone: a bad token there is a 404 that is audited, whatever it holds.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith((API_PREFIX, CONSOLE_PREFIX)):
            field = _field_with_nul(scope)
            if field is not None:
                response = await domain_error(Request(scope), InvalidInput(field, "must not contain NUL characters"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _field_with_nul(scope: Scope) -> str | None:
    if "\x00" in scope["path"]:
        return "path"
    # A raw NUL byte never gets past the HTTP parser; only its percent-encoding can.
    if b"%00" in scope["query_string"]:
        for name, value in QueryParams(scope["query_string"]).multi_items():
            if "\x00" in name or "\x00" in value:
                return name[:40]
    return None


def path_id(request: Request, name: str, what: str) -> str:
    """The 16 hex digits of a campaign's or webhook's id in the path; 422 naming it otherwise."""
    value = request.path_params[name]
    if len(value) != 16 or not all(character in "0123456789abcdef" for character in value):
        raise InvalidInput(name, f"{value[:40]!r} is not a {what} id")
    return value
