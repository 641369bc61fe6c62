"""The audit trail over HTTP, for administrators."""

from __future__ import annotations

import json
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from repo_service.domain.clients import Action
from repo_service.domain.clock import parse_moment, rfc3339
from repo_service.http.auth import authorize
from repo_service.http.firmware import query_int


async def list_events(request: Request) -> Response:
    await authorize(request, Action.READ_AUDIT)
    params = request.query_params
    since = parse_moment(params["since"], "since") if "since" in params else None
    events, total = await run_in_threadpool(
        request.app.state.services.audit.list, action=params.get("action"), actor=params.get("actor"),
        subject=params.get("subject"), since=since, limit=query_int(request, "limit", 100),
        offset=query_int(request, "offset", 0),
    )
    return JSONResponse({"total": total, "items": [
        {"seq": event.seq, "at": rfc3339(event.at), "actor": event.actor, "action": event.action,
         "subject": event.subject, "detail": json.loads(event.detail), "hash": event.hash}
        for event in events
    ]})


ROUTES = [Route("/api/v1/audit", list_events, methods=["GET"])]
