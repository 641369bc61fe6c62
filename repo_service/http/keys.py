"""Keys over HTTP: the repository's signing certificates, and release engineers' signer keys."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from repo_service.domain.clients import Action
from repo_service.errors import InvalidInput
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object, record_json


async def list_signing_keys(request: Request) -> Response:
    await authorize(request, Action.READ_CATALOG)
    keys = await run_in_threadpool(request.app.state.services.signing_keys.list)
    return JSONResponse({"items": [record_json(key) for key in keys]})


async def add_signer(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_SIGNERS)
    document = await json_object(request)
    name, public_key = document.get("name"), document.get("public_key")
    if not isinstance(name, str):
        raise InvalidInput("name", "is required")
    if not isinstance(public_key, str) or not public_key.strip():
        raise InvalidInput("public_key", "is required: a PEM public key or certificate")
    signer = await run_in_threadpool(request.app.state.services.signers.add, name, public_key.encode(), actor.performer,
                                     "public_key")
    return JSONResponse(record_json(signer), status_code=201)


async def list_signers(request: Request) -> Response:
    await authorize(request, Action.MANAGE_SIGNERS)
    signers = await run_in_threadpool(request.app.state.services.signers.list)
    return JSONResponse({"items": [record_json(signer) for signer in signers]})


async def remove_signer(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_SIGNERS)
    await run_in_threadpool(request.app.state.services.signers.remove, request.path_params["signer_id"],
                            actor.performer)
    return Response(status_code=204)


ROUTES = [
    Route("/api/v1/signing-keys", list_signing_keys, methods=["GET"]),
    Route("/api/v1/signers", add_signer, methods=["POST"]),
    Route("/api/v1/signers", list_signers, methods=["GET"]),
    Route("/api/v1/signers/{signer_id}", remove_signer, methods=["DELETE"]),
]
