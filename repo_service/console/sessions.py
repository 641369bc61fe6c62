"""Who is looking at a page: the user whose session cookie the browser sends, checked against the role's
permissions page by page and action by action, and the CSRF token every form must carry.

The cookie holds a random token signed with the installation's token secret (the same on every node), so a
tampered cookie is refused before the database is asked; only the token's SHA-256 is stored
(``repo_service.domain.users``). It is HttpOnly (no script reads it), Secure, SameSite=Strict (no other site's
page sends it) and lives as long as the session. The CSRF token is an HMAC of the session's token: every
form posts it, and a POST without the right one changes nothing. Before there is a session, the sign-in form
carries a random token that must match a cookie set with the form (double submit), so that another site
cannot sign a browser in to an account of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from urllib.parse import quote, unquote, urlsplit

from itsdangerous import BadSignature, Signer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from repo_service.console.rendering import PREFIX, error_page, page, see_other
from repo_service.db import tenancy
from repo_service.domain.clients import Action, Actor
from repo_service.errors import Forbidden, FwrepoError, InvalidInput, TryLater, Unauthenticated
from repo_service.services import token_secret

SESSION_COOKIE = "fwrepo_session"
SIGN_IN_COOKIE = "fwrepo_sign_in"
CSRF_FIELD = "csrf"
# The sign-in form's fields are small; anything larger is not a sign-in.
MAX_SIGN_IN_FIELD = 1024

Handler = Callable[[Request, Actor], Awaitable[Response]]


def _secret(request: Request) -> bytes:
    state = request.app.state
    if not hasattr(state, "console_secret"):
        state.console_secret = token_secret(state.services.settings)
    return state.console_secret


def _signer(request: Request) -> Signer:
    return Signer(_secret(request), salt="fwrepo-console-session")


def csrf_token(request: Request, session_token: str) -> str:
    return hmac.new(_secret(request), b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


def _session_token(request: Request) -> str | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or len(cookie) > 200:
        return None
    try:
        return _signer(request).unsign(cookie).decode()
    except BadSignature:
        return None


async def _actor(request: Request) -> tuple[Actor, str]:
    token = _session_token(request)
    if token is None:
        raise Unauthenticated("not signed in")
    actor = await run_in_threadpool(request.app.state.services.users.authenticate, token)
    return actor, token


def _check_csrf(request: Request, sent: object, where: str = "") -> None:
    """The CSRF token a form sent, which must be the session's."""
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), request.state.csrf.encode()):
        raise Forbidden(f"the form's CSRF token is missing or wrong{where}: reload the page and submit it again")


def console_page(action: Action | None = None, *,
                 streamed: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A page or action for a signed-in user whose role may do action; a POST must carry the CSRF token, checked
    here before the handler runs, whatever the form's encoding. streamed: the handler streams the body (an
    upload) and checks the token itself with require_csrf, before the file.

    Not signed in: to the sign-in page, and back here after it. A domain error: a page saying it, with the
    status the API would answer.
    """

    def decorate(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(handler)
        async def view(request: Request) -> Response:
            try:
                actor, token = await _actor(request)
            except Unauthenticated:
                if request.method != "GET":
                    return error_page(request, Unauthenticated("your session has ended: sign in again"))
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return see_other(f"/login?next={quote(back)}")
            request.state.actor, request.state.csrf = actor, csrf_token(request, token)
            try:
                if action is not None:
                    actor.require(action)
                # The pages act in the user's tenant, as an API key of the same tenant does.
                tenancy.enter(actor.scope)
                if request.method == "POST" and not streamed:
                    _check_csrf(request, (await request.form()).get(CSRF_FIELD))
                return await handler(request, actor)
            except FwrepoError as error:
                return error_page(request, error)
            except HTTPException as error:
                # The form parser's refusals (too many fields, a field too large, a malformed body).
                return page(request, "error.html", error.status_code, message=f"the form was refused: {error.detail}")

        return view

    return decorate


def require_csrf(request: Request, fields: dict[str, list[str]]) -> None:
    """For a streamed form: its CSRF field, which must come before the file, checked and taken out of the
    fields (the upload's own fields are checked after)."""
    sent = fields.pop(CSRF_FIELD, [])
    _check_csrf(request, sent[0] if len(sent) == 1 else None, " (it must come before the file)")


def _next_path(raw: object) -> str:
    """Where to go after signing in: a console page only, never another site nor, through dot segments or
    their percent-encodings, another part of this one (the API)."""
    if not isinstance(raw, str) or len(raw) > 2000 or not raw.startswith(PREFIX + "/"):
        return "/"
    parts = urlsplit(raw)
    path = unquote(parts.path)
    if parts.scheme or parts.netloc or "\\" in path or any(segment in (".", "..") for segment in path.split("/")):
        return "/"
    return raw[len(PREFIX):]


def _sign_in_form(request: Request, status: int = 200, message: str | None = None, name: str = "",
                  retry_after: int | None = None, next_page: str | None = None) -> Response:
    """The form, with where to go after it: the query's next on the first showing, the posted one after a
    refusal."""
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", status, actor=None, csrf=token, message=message, name=name,
                    next=request.query_params.get("next", "") if next_page is None else next_page)
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=600, path=PREFIX, secure=True, httponly=True,
                        samesite="strict")
    if retry_after is not None:
        response.headers["retry-after"] = str(retry_after)
    return response


async def sign_in_page(request: Request) -> Response:
    try:
        await _actor(request)
        return see_other("/")
    except Unauthenticated:
        return _sign_in_form(request)


async def sign_in(request: Request) -> Response:
    try:
        form = await request.form(max_files=0, max_fields=10, max_part_size=MAX_SIGN_IN_FIELD)
    except (FwrepoError, HTTPException):
        return _sign_in_form(request, 413, "That is not a sign-in: the form is too large or malformed.")
    name, password, sent = form.get("name"), form.get("password"), form.get(CSRF_FIELD)
    posted_next = form.get("next")
    back = posted_next if isinstance(posted_next, str) and len(posted_next) <= 2000 else ""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _sign_in_form(request, 403, "The form's CSRF token is missing or wrong: sign in again from this page.",
                             next_page=back)
    if not isinstance(name, str) or not isinstance(password, str) or not name.strip() or not password:
        return _sign_in_form(request, 422, "Give your name and your password.", name if isinstance(name, str) else "",
                             next_page=back)
    if len(name) > MAX_SIGN_IN_FIELD or len(password) > MAX_SIGN_IN_FIELD:
        return _sign_in_form(request, 422, "Wrong name or password.", next_page=back)
    address = request.client.host if request.client else None
    try:
        signed = await run_in_threadpool(request.app.state.services.users.sign_in, name.strip(), password, address)
    except TryLater as error:
        return _sign_in_form(request, 429, f"Too many failed sign-ins: try again in {error.retry_after} s.",
                             name, error.retry_after, back)
    except Unauthenticated:
        return _sign_in_form(request, 401, "Wrong name or password.", name, next_page=back)
    except InvalidInput as error:
        return _sign_in_form(request, 422, error.message, name, next_page=back)
    response = see_other(_next_path(back))
    lifetime = int((signed.expires_at - request.app.state.services.users.clock()).total_seconds())
    response.set_cookie(SESSION_COOKIE, _signer(request).sign(signed.token).decode(), max_age=lifetime, path=PREFIX,
                        secure=True, httponly=True, samesite="strict")
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
    return response


@console_page()
async def sign_out(request: Request, actor: Actor) -> Response:
    token = _session_token(request)
    assert token is not None  # console_page found the session
    await run_in_threadpool(request.app.state.services.users.sign_out, token)
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX, secure=True, httponly=True, samesite="strict")
    return response
