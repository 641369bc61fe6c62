"""Every console page, mounted by the HTTP application at /console; the application wraps every response under
/console in rendering.ConsoleGuard."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from repo_service.console import audit, campaigns, catalog, chargers, keys, sessions, tenants, users
from repo_service.console.rendering import HERE, PREFIX


async def without_slash(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", status_code=308)


ROUTES = [
    Route(PREFIX, without_slash, methods=["GET"]),
    Mount(PREFIX, routes=[
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        Route("/login", sessions.sign_in_page, methods=["GET"]),
        Route("/login", sessions.sign_in, methods=["POST"]),
        Route("/logout", sessions.sign_out, methods=["POST"]),
        *catalog.ROUTES,
        *campaigns.ROUTES,
        *chargers.ROUTES,
        *audit.ROUTES,
        *keys.ROUTES,
        *users.ROUTES,
        *tenants.ROUTES,
    ]),
]
