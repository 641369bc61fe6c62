"""Every request gets an id (echoed as X-Request-Id, on each of its log lines) and is counted and timed."""

from __future__ import annotations

import re
import secrets
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from repo_service.logs import REQUEST_ID
from repo_service.metrics import Metrics

_CONVERTOR = re.compile(r"{([^}:]+):[^}]+}")


def route_template(route: object, unrouted: str = "(no route)") -> str:
    """A route's path template as clients see it: /api/v1/grants/{grant_id}, without Starlette's convertor names."""
    path = getattr(route, "path", None)
    return unrouted if path is None else _CONVERTOR.sub(r"{\1}", path)

# A caller's own id (a load balancer's, a CSMS's) is kept when it is safe to log.
_CALLER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The id in the request's scope too, for the error handler that runs outside this middleware.
REQUEST_ID_KEY = "fwrepo.request_id"


class Observe:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _CALLER_ID.fullmatch(offered) else secrets.token_hex(8)
        scope[REQUEST_ID_KEY] = request_id
        token = REQUEST_ID.set(request_id)
        began, status = time.monotonic(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The route's template, never the path: a download path holds its token.
            route = route_template(scope.get("route"), "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.monotonic() - began)
            REQUEST_ID.reset(token)
