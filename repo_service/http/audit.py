"""The audit trail over HTTP, for administrators."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import AuditPage
from repo_service.domain.audit import MAX_OFFSET, MAX_PAGE, as_document
from repo_service.domain.clients import Action
from repo_service.domain.clock import parse_moment
from repo_service.http.auth import authorize
from repo_service.http.firmware import page_parameters, query_int
from repo_service.http.operations import Parameter, operation, reply


@operation(operation_id="listAuditEvents", summary="The audit trail, newest first", tag="audit",
           action=Action.READ_AUDIT, replies={200: AuditPage}, parameters=(
               Parameter("action", "query", "only events of this action, e.g. firmware_publish"),
               Parameter("actor", "query", "only events by this actor"),
               Parameter("subject", "query", "only events about this subject, e.g. firmware 0123456789abcdef"),
               Parameter("since", "query", "only events at or after this moment",
                         {"type": "string", "format": "date-time"}),
               *page_parameters(100, MAX_PAGE, MAX_OFFSET)))
async def list_events(request: Request) -> Response:
    await authorize(request, Action.READ_AUDIT)
    params = request.query_params
    since = parse_moment(params["since"], "since") if "since" in params else None
    events, total = await run_in_threadpool(
        request.app.state.services.audit.list, action=params.get("action"), actor=params.get("actor"),
        subject=params.get("subject"), since=since, limit=query_int(request, "limit", 100),
        offset=query_int(request, "offset", 0),
    )
    return reply(AuditPage, {"total": total, "items": [as_document(event) for event in events]})


ROUTES = [Route("/api/v1/audit", list_events, methods=["GET"])]
