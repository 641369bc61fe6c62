"""The Starlette application: routes per capability, errors mapped in one place."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route

from repo_service import __version__
from repo_service.console.app import ROUTES as CONSOLE_ROUTES
from repo_service.console.rendering import ConsoleGuard
from repo_service.contract import Health, Readiness
from repo_service.http import (
    audit, campaigns, downloads, firmware, grants, jobs, keys, openapi, tenants, updates, webhooks,
)
from repo_service.http.observability import Observe
from repo_service.http.operations import Content, operation, reply
from repo_service.http.problems import EXCEPTION_HANDLERS
from repo_service.http.urls import RefuseNul
from repo_service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from repo_service.services import Services, readiness


@operation(operation_id="getHealth", summary="Alive: the process answers", tag="service", action=None,
           replies={200: Health})
async def healthz(request: Request) -> Response:
    return reply(Health, {"status": "ok", "version": __version__})


@operation(operation_id="getReadiness", summary="Ready to take traffic", tag="service", action=None,
           replies={200: Readiness, 503: Readiness},
           description="Database, storage and signing key usable, and not shutting down; 503 with the failing checks.")
async def readyz(request: Request) -> Response:
    """Ready to take traffic: database, storage and signing key usable, and not shutting down."""
    if request.app.state.stopping.is_set():
        return reply(Readiness, {"status": "stopping"}, 503)
    checks = await run_in_threadpool(readiness, request.app.state.services)
    ready = all(result == "ok" for result in checks.values())
    return reply(Readiness, {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)


@operation(operation_id="getMetrics", summary="Prometheus metrics", tag="service", action=None,
           replies={200: Content("the Prometheus text format: counts, never ids, tokens or charger names",
                                 METRICS_CONTENT_TYPE.split(";")[0], {"type": "string"})})
async def metrics(request: Request) -> Response:
    # Unauthenticated like /healthz, for the scraper; it holds counts, never ids, tokens or names of chargers.
    return Response(request.app.state.services.metrics.render(), media_type=METRICS_CONTENT_TYPE)


ROUTES = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics), *firmware.ROUTES,
          *keys.ROUTES, *updates.ROUTES, *grants.ROUTES, *jobs.ROUTES, *campaigns.ROUTES, *webhooks.ROUTES,
          *audit.ROUTES, *tenants.ROUTES, *downloads.ROUTES, *openapi.ROUTES]


def create_app(services: Services) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with services.running():
            yield

    app = Starlette(
        # The console's pages are for people and are no part of the API's description (openapi.py).
        routes=[*ROUTES, *CONSOLE_ROUTES],
        middleware=[Middleware(Observe, metrics=services.metrics), Middleware(ConsoleGuard), Middleware(RefuseNul)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.api_routes = ROUTES
    # Set on SIGTERM, before the grace period: the load balancer stops sending new chargers here.
    app.state.stopping = threading.Event()
    return app
