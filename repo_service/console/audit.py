"""The audit trail in the console: its events with filters, and a check of the tenant's chain against the
signed checkpoints the database and this node's checkpoint log hold, as `fwrepo audit verify` checks it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import ExitStack
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.console.catalog import offset_of
from repo_service.console.rendering import page
from repo_service.console.sessions import console_page
from repo_service.db.tenancy import EVERY_TENANT
from repo_service.domain.audit_checkpoints import (
    Checkpoint, CheckpointLines, TrailReport, stored_checkpoints, trusted_keys, verify_trail,
)
from repo_service.domain.clients import Action, Actor

PAGE = 50
FILTERS = ("action", "actor", "subject")


@console_page(Action.READ_AUDIT)
async def trail(request: Request, actor: Actor) -> Response:
    params = {name: request.query_params.get(name, "").strip() for name in FILTERS}
    offset = offset_of(request)
    events, total = await run_in_threadpool(lambda: request.app.state.services.audit.list(
        action=params["action"] or None, actor=params["actor"] or None, subject=params["subject"] or None,
        limit=PAGE, offset=offset))
    given = {name: value for name, value in params.items() if value}
    return page(request, "audit.html", section="audit", events=events, total=total, offset=offset, page_size=PAGE,
                params=params, query=urlencode(given) + "&" if given else "",
                detail=lambda event: json.dumps(json.loads(event.detail), sort_keys=True) if event.detail else "")


def _check(request: Request, actor: Actor) -> list[TrailReport]:
    services = request.app.state.services
    settings = services.settings
    tenants = [record.name for record in services.tenants.list()] if actor.scope == EVERY_TENANT else [actor.tenant]
    log = settings.audit_checkpoint_log_path
    with ExitStack() as files:
        sources: dict[str, Iterable[Checkpoint]] = {"the database": stored_checkpoints(services.database)}
        if log.exists():
            sources[str(log)] = CheckpointLines(files.enter_context(open(log, encoding="utf-8", errors="replace")))
        return verify_trail(services.audit, sources, lambda: trusted_keys([], settings.audit_key_path), tenants)


@console_page(Action.READ_AUDIT)
async def verify(request: Request, actor: Actor) -> Response:
    reports = await run_in_threadpool(_check, request, actor)
    return page(request, "audit_verify.html", section="audit", reports=reports)


ROUTES = [Route("/audit", trail, methods=["GET"]), Route("/audit/verify", verify, methods=["GET"])]
