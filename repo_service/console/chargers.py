"""A charger in the console: every update it was granted, newest first, each with its job's timeline."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.console.rendering import page
from repo_service.console.sessions import console_page
from repo_service.domain.clients import Action, Actor
from repo_service.errors import InvalidInput


@console_page(Action.GRANT)
async def charger(request: Request, actor: Actor) -> Response:
    charger_id = request.query_params.get("id", "")
    if not charger_id:
        return page(request, "chargers.html", section="chargers", charger_id="", updates=None)
    try:
        updates = await run_in_threadpool(request.app.state.services.jobs.history, charger_id)
    except InvalidInput as error:
        return page(request, "chargers.html", 422, section="chargers", charger_id=charger_id, updates=None,
                    message=error.message)
    return page(request, "chargers.html", section="chargers", charger_id=charger_id, updates=updates)


ROUTES = [Route("/chargers", charger, methods=["GET"])]
