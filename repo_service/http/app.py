"""The Starlette application: routes per capability, errors mapped in one place."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from repo_service import __version__
from repo_service.http import firmware, keys, updates
from repo_service.http.problems import EXCEPTION_HANDLERS
from repo_service.services import Services


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


def create_app(services: Services) -> Starlette:
    app = Starlette(
        routes=[Route("/healthz", healthz), *firmware.ROUTES, *keys.ROUTES, *updates.ROUTES],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.services = services
    return app
