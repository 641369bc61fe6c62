"""The Starlette application: routes per capability, errors mapped in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from repo_service import __version__
from repo_service.http import campaigns, downloads, firmware, grants, jobs, keys, updates
from repo_service.http.problems import EXCEPTION_HANDLERS
from repo_service.http.urls import RefuseNul
from repo_service.services import Services


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


def create_app(services: Services) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with services.grants.recording():
            yield

    app = Starlette(
        routes=[Route("/healthz", healthz), *firmware.ROUTES, *keys.ROUTES, *updates.ROUTES, *grants.ROUTES,
                *jobs.ROUTES, *campaigns.ROUTES, *downloads.ROUTES],
        middleware=[Middleware(RefuseNul)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services
    return app
