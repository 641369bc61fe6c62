"""Tenants over HTTP: what a platform key does that `fwrepo tenants` does at the machine."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import Tenant, TenantList, TenantRequest
from repo_service.domain.clients import Action
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object, record_json
from repo_service.http.operations import Parameter, conforming, operation, reply

TENANT = Parameter("tenant", "path", "the tenant's name", required=True)


@operation(operation_id="listTenants", summary="Every tenant, and whether it is disabled", tag="tenants",
           action=Action.MANAGE_TENANTS, replies={200: TenantList})
async def list_tenants(request: Request) -> Response:
    await authorize(request, Action.MANAGE_TENANTS)
    tenants = await run_in_threadpool(request.app.state.services.tenants.list)
    return reply(TenantList, {"items": [record_json(tenant) for tenant in tenants]})


@operation(operation_id="createTenant", summary="Add a tenant", tag="tenants", action=Action.MANAGE_TENANTS,
           request=TenantRequest, replies={201: Tenant}, errors={409: "a tenant of this name exists"})
async def create_tenant(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_TENANTS)
    document = await json_object(request)
    name = conforming(TenantRequest, document).name
    tenant = await run_in_threadpool(request.app.state.services.tenants.create, name, actor.performer)
    return reply(Tenant, record_json(tenant), 201, {"Location": f"/api/v1/tenants/{tenant.name}"})


@operation(operation_id="disableTenant", summary="Stop a tenant's keys, download URLs and FTPS logins at once",
           tag="tenants", action=Action.MANAGE_TENANTS, parameters=(TENANT,), replies={200: Tenant},
           errors={404: "no such tenant"},
           description="Nothing of the tenant is deleted. Idempotent: disabling a disabled tenant answers it unchanged.")
async def disable_tenant(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_TENANTS)
    tenant = await run_in_threadpool(request.app.state.services.tenants.disable, request.path_params["tenant"],
                                     actor.performer)
    return reply(Tenant, record_json(tenant))


ROUTES = [
    Route("/api/v1/tenants", list_tenants, methods=["GET"]),
    Route("/api/v1/tenants", create_tenant, methods=["POST"]),
    Route("/api/v1/tenants/{tenant}/disable", disable_tenant, methods=["POST"]),
]
