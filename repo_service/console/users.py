"""Console users and API clients, for a tenant's admin: who may sign in here, and which programs hold keys.

An admin acts within its tenant: it sees, makes, disables and resets only its tenant's users and keys (another
tenant's are as unknown as names never made), and makes no platform user, which would act across tenants.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.console.rendering import page, see_other
from repo_service.console.sessions import console_page
from repo_service.domain.clients import Action, Actor, Role, parse_role
from repo_service.errors import InvalidInput

# What an admin may give: the roles of its tenant, never the platform's.
TENANT_ROLES = (Role.RELEASE, Role.CSMS, Role.ADMIN)


def _tenant_role(text: object) -> Role:
    role = parse_role(text if isinstance(text, str) else "")
    if role not in TENANT_ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(TENANT_ROLES)}")
    return role


async def _users_page(request: Request, actor: Actor, status: int = 200, message: str | None = None,
                      values: dict[str, str] | None = None, notice: str | None = None) -> Response:
    users = await run_in_threadpool(request.app.state.services.users.list)
    return page(request, "users.html", status, section="users", users=users, roles=TENANT_ROLES, message=message,
                values=values or {}, notice=notice)


@console_page(Action.MANAGE_USERS)
async def users(request: Request, actor: Actor) -> Response:
    return await _users_page(request, actor)


def _text(form: object, name: str) -> str:
    value = form.get(name)  # type: ignore[attr-defined]
    return value if isinstance(value, str) else ""


@console_page(Action.MANAGE_USERS)
async def create_user(request: Request, actor: Actor) -> Response:
    form = await request.form()
    values = {"name": _text(form, "name"), "role": _text(form, "role")}
    try:
        if _text(form, "password") != _text(form, "password_again"):
            raise InvalidInput("password", "the two passwords differ")
        record = await run_in_threadpool(request.app.state.services.users.create, values["name"],
                                         _tenant_role(values["role"]), _text(form, "password"), actor.performer,
                                         actor.tenant)
    except InvalidInput as error:
        return await _users_page(request, actor, 422, str(error), values)
    return await _users_page(request, actor, 201, notice=f"{record.name} may sign in now, as {record.role.value}.")


@console_page(Action.MANAGE_USERS)
async def disable_user(request: Request, actor: Actor) -> Response:
    await run_in_threadpool(request.app.state.services.users.disable, request.path_params["name"], actor.performer,
                            actor.role)
    return see_other("/users")


@console_page(Action.MANAGE_USERS)
async def reset_password(request: Request, actor: Actor) -> Response:
    form = await request.form()
    name = request.path_params["name"]
    try:
        record = await run_in_threadpool(request.app.state.services.users.reset_password, name,
                                         _text(form, "password"), actor.performer, actor.role)
    except InvalidInput as error:
        return await _users_page(request, actor, 422, f"{name}: {error}")
    return await _users_page(request, actor, notice=f"New password set for {record.name}: unlocked, and signed "
                             "out everywhere.")


async def _clients_page(request: Request, actor: Actor, status: int = 200, message: str | None = None,
                        key: str | None = None) -> Response:
    clients = await run_in_threadpool(request.app.state.services.clients.list, actor.tenant)
    return page(request, "clients.html", status, section="clients", clients=clients, roles=TENANT_ROLES,
                message=message, key=key)


@console_page(Action.MANAGE_USERS)
async def clients(request: Request, actor: Actor) -> Response:
    return await _clients_page(request, actor)


@console_page(Action.MANAGE_USERS)
async def create_client(request: Request, actor: Actor) -> Response:
    form = await request.form()
    vendors = [vendor.strip() for vendor in _text(form, "vendors").split(",") if vendor.strip()]
    try:
        _, key = await run_in_threadpool(request.app.state.services.clients.create, _text(form, "name"),
                                         _tenant_role(_text(form, "role")), actor.performer, actor.tenant, vendors)
    except InvalidInput as error:
        return await _clients_page(request, actor, 422, str(error))
    # Shown once, on this page alone: only its hash is stored.
    return await _clients_page(request, actor, 201, key=key)


@console_page(Action.MANAGE_USERS)
async def revoke_client(request: Request, actor: Actor) -> Response:
    await run_in_threadpool(request.app.state.services.clients.revoke, request.path_params["client_id"],
                            actor.performer, actor.scope)
    return see_other("/clients")


ROUTES = [
    Route("/users", users, methods=["GET"]),
    Route("/users", create_user, methods=["POST"]),
    Route("/users/{name}/disable", disable_user, methods=["POST"]),
    Route("/users/{name}/reset-password", reset_password, methods=["POST"]),
    Route("/clients", clients, methods=["GET"]),
    Route("/clients", create_client, methods=["POST"]),
    Route("/clients/{client_id}/revoke", revoke_client, methods=["POST"]),
]
