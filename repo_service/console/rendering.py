"""How a console page is answered: a Jinja2 template with autoescaping, the headers every page carries, and
domain errors shown as pages with the status the API would give them.

Every asset is in the package (``static/``): chargers' networks and operators' offices are often closed, and
the Content-Security-Policy allows nothing but this origin: no inline script or style, no frames, forms that
post only here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from repo_service import __version__
from repo_service.domain.clients import PERMISSIONS, Action, Actor, Role
from repo_service.errors import FwrepoError, RateLimited, TooLarge, TryLater
from repo_service.http.problems import status_of
from repo_service.wording import duration, moment, percent, size

HERE = Path(__file__).parent
PREFIX = "/console"
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                           "object-src 'none'")
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

# Autoescaping on, undefined names an error: a page never shows a value unescaped, nor a typo as blank.
templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                                            undefined=StrictUndefined))


templates.env.filters.update(moment=moment, size=size, percent=percent, duration=duration)
templates.env.globals.update(version=__version__, prefix=PREFIX, Action=Action)


def may(actor: Actor | None, action: Action) -> bool:
    return actor is not None and action in PERMISSIONS[actor.role]


templates.env.globals.update(may=may, Role=Role)


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """The page, rendered for the signed-in actor (request.state.actor) with its CSRF token for the forms."""
    state = request.state
    context.setdefault("actor", getattr(state, "actor", None))
    context.setdefault("csrf", getattr(state, "csrf", ""))
    context.setdefault("message", None)
    response = templates.TemplateResponse(request, template, context, status_code=status)
    # Pages show what the signed-in user may see: never kept by a shared cache, nor by the browser's.
    response.headers["cache-control"] = "no-store"
    return response


def error_page(request: Request, error: FwrepoError) -> Response:
    response = page(request, "error.html", status_of(error), message=str(error))
    if isinstance(error, TryLater | RateLimited):
        response.headers["retry-after"] = str(error.retry_after)
    return response


def see_other(path: str) -> Response:
    """After a form's POST, the page to show: a GET, so that reloading it does not post again."""
    return RedirectResponse(PREFIX + path, status_code=303)


def markup(svg: str) -> Markup:
    """SVG made by repo_service.console.plots, which escapes every value it writes."""
    return Markup(svg)


# The most a console form may send: a CSV of 100,000 chargers for a campaign, little for any other form. An
# upload's body is bounded by FWREPO_MAX_UPLOAD_BYTES where it is streamed (http/firmware.receive_upload).
MAX_FORM = 256 * 1024
MAX_CAMPAIGN_FORM = 17 * 1024 * 1024
UNBOUNDED = ("/firmware/upload",)


def body_limit(path: str) -> int | None:
    if path.endswith(UNBOUNDED):
        return None
    return MAX_CAMPAIGN_FORM if path.endswith("/campaigns/new") else MAX_FORM


class ConsoleGuard:
    """What every request under /console goes through, answered by a page, a static file, a redirect or an
    error alike (so it wraps the whole application): the security headers on the response, and a bound on the
    body a form may send, refused (413) at once when its declared length is over it and otherwise as it
    arrives, before the form parser has spooled it to memory or disk."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if limit is not None and declared.isdigit() and int(declared) > limit:
            response = PlainTextResponse(f"the form is larger than the {limit // 1024} KiB it may be", 413,
                                         headers={"connection": "close"})
            await response(scope, receive, self._headed(send))
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge("form", f"is larger than the {limit // 1024} KiB this form takes")
            return message

        await self.app(scope, bounded, self._headed(send))

    @staticmethod
    def _headed(send: Send) -> Send:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        return with_headers


View = Callable[[Request], Awaitable[Response]]
