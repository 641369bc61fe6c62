"""Tenants in the console, for the platform role: the parties this installation keeps apart."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.console.rendering import page, see_other
from repo_service.console.sessions import console_page
from repo_service.domain.clients import Action, Actor
from repo_service.errors import InvalidInput


async def _tenants_page(request: Request, status: int = 200, message: str | None = None,
                        notice: str | None = None) -> Response:
    tenants = await run_in_threadpool(request.app.state.services.tenants.list)
    return page(request, "tenants.html", status, section="tenants", tenants=tenants, message=message, notice=notice)


@console_page(Action.MANAGE_TENANTS)
async def tenants(request: Request, actor: Actor) -> Response:
    return await _tenants_page(request)


@console_page(Action.MANAGE_TENANTS)
async def create_tenant(request: Request, actor: Actor) -> Response:
    name = (await request.form()).get("name")
    try:
        record = await run_in_threadpool(request.app.state.services.tenants.create,
                                         name.strip() if isinstance(name, str) else "", actor.performer)
    except InvalidInput as error:
        return await _tenants_page(request, 422, str(error))
    return await _tenants_page(request, 201, notice=f"Tenant {record.name} made. Its signing keys, admin and keys "
                               f"are made at the machine: fwrepo keys init --tenant {record.name}, fwrepo users "
                               f"create --tenant {record.name} ...")


@console_page(Action.MANAGE_TENANTS)
async def disable_tenant(request: Request, actor: Actor) -> Response:
    await run_in_threadpool(request.app.state.services.tenants.disable, request.path_params["tenant"],
                            actor.performer)
    return see_other("/tenants")


ROUTES = [
    Route("/tenants", tenants, methods=["GET"]),
    Route("/tenants", create_tenant, methods=["POST"]),
    Route("/tenants/{tenant}/disable", disable_tenant, methods=["POST"]),
]
