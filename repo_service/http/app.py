"""The Starlette application: routes per capability, errors mapped in one place."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from repo_service import __version__
from repo_service.http import audit, campaigns, downloads, firmware, grants, jobs, keys, updates, webhooks
from repo_service.http.observability import Observe
from repo_service.http.problems import EXCEPTION_HANDLERS
from repo_service.http.urls import RefuseNul
from repo_service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from repo_service.services import Services, readiness


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> JSONResponse:
    """Ready to take traffic: database, storage and signing key usable, and not shutting down."""
    if request.app.state.stopping.is_set():
        return JSONResponse({"status": "stopping"}, status_code=503)
    checks = await run_in_threadpool(readiness, request.app.state.services)
    ready = all(result == "ok" for result in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    # Unauthenticated like /healthz, for the scraper; it holds counts, never ids, tokens or names of chargers.
    return Response(request.app.state.services.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def create_app(services: Services) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with services.running():
            yield

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics), *firmware.ROUTES, *keys.ROUTES, *updates.ROUTES, *grants.ROUTES,
                *jobs.ROUTES, *campaigns.ROUTES, *webhooks.ROUTES, *audit.ROUTES, *downloads.ROUTES],
        middleware=[Middleware(Observe, metrics=services.metrics), Middleware(RefuseNul)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services
    # Set on SIGTERM, before the grace period: the load balancer stops sending new chargers here.
    app.state.stopping = threading.Event()
    return app
