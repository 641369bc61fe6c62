"""Who is calling: the bearer key of an API client, checked against its role; the rest of the request acts in
the key's tenant (``repo_service.db.tenancy``), so another tenant's ids are as unknown to it as ids never made."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from repo_service.db import tenancy
from repo_service.domain.clients import Action, Actor
from repo_service.errors import Unauthenticated


async def authorize(request: Request, action: Action) -> Actor:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if header and scheme.lower() != "bearer":
        raise Unauthenticated("use Authorization: Bearer KEY")
    actor = await run_in_threadpool(request.app.state.services.clients.authenticate, key.strip() or None)
    actor.require(action)
    tenancy.enter(actor.scope)
    return actor

