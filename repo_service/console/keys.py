"""Keys in the console: the tenant's firmware-signing keys (what chargers verify), and the release engineers'
keys that uploads may be signed with (signers), which an admin adds and removes."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.console.rendering import page, see_other
from repo_service.console.sessions import console_page
from repo_service.domain.clients import PERMISSIONS, Action, Actor
from repo_service.errors import InvalidInput

MAX_KEY_PEM = 16 * 1024


async def _keys_page(request: Request, actor: Actor, status: int = 200, message: str | None = None,
                     values: dict[str, str] | None = None) -> Response:
    services = request.app.state.services
    keys = await run_in_threadpool(services.signing_keys.list)
    signers = (await run_in_threadpool(services.signers.list)
               if Action.MANAGE_SIGNERS in PERMISSIONS[actor.role] else None)
    return page(request, "keys.html", status, section="keys", keys=keys, signers=signers, message=message,
                values=values or {})


@console_page(Action.READ_CATALOG)
async def keys(request: Request, actor: Actor) -> Response:
    return await _keys_page(request, actor)


@console_page(Action.MANAGE_SIGNERS)
async def add_signer(request: Request, actor: Actor) -> Response:
    form = await request.form()
    name, pem = form.get("name"), form.get("public_key")
    values = {"name": name if isinstance(name, str) else "", "public_key": pem if isinstance(pem, str) else ""}
    try:
        if len(values["public_key"]) > MAX_KEY_PEM:
            raise InvalidInput("public_key", f"must be at most {MAX_KEY_PEM} bytes of PEM")
        await run_in_threadpool(request.app.state.services.signers.add, values["name"],
                                values["public_key"].encode(), actor.performer, "public_key")
    except InvalidInput as error:
        return await _keys_page(request, actor, 422, str(error), values)
    return see_other("/keys")


@console_page(Action.MANAGE_SIGNERS)
async def remove_signer(request: Request, actor: Actor) -> Response:
    await run_in_threadpool(request.app.state.services.signers.remove, request.path_params["signer_id"],
                            actor.performer)
    return see_other("/keys")


ROUTES = [
    Route("/keys", keys, methods=["GET"]),
    Route("/signers", add_signer, methods=["POST"]),
    Route("/signers/{signer_id}/remove", remove_signer, methods=["POST"]),
]
