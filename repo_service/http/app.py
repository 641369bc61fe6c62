"""The Starlette application: routes per capability, errors mapped in one place."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from repo_service import __version__
from repo_service.http import downloads, firmware, grants, keys, updates
from repo_service.http.problems import EXCEPTION_HANDLERS
from repo_service.services import Services

log = logging.getLogger(__name__)
# Download records reach the database at most this late (and at shutdown).
FLUSH_SECONDS = 1.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


def _flush_downloads_until(stopped: threading.Event, services: Services) -> None:
    while not stopped.wait(FLUSH_SECONDS):
        try:
            services.grants.flush()
        except Exception:  # a database hiccup must not end the recording; the next round retries
            log.exception("could not write download records; will retry")


def create_app(services: Services) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stopped = threading.Event()
        flusher = threading.Thread(target=_flush_downloads_until, args=(stopped, services), name="download-records",
                                   daemon=True)
        flusher.start()
        try:
            yield
        finally:
            stopped.set()
            flusher.join()
            services.grants.flush()

    app = Starlette(
        routes=[Route("/healthz", healthz), *firmware.ROUTES, *keys.ROUTES, *updates.ROUTES, *grants.ROUTES,
                *downloads.ROUTES],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services
    return app
