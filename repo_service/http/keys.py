"""Keys over HTTP: the repository's signing certificates, and release engineers' signer keys."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import Signer, SignerList, SignerRequest, SigningKeyList
from repo_service.domain.clients import Action
from repo_service.errors import InvalidInput
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object, record_json
from repo_service.http.operations import Content, conforming, operation, reply


@operation(operation_id="listSigningKeys", summary="The caller's tenant's firmware-signing keys and certificates",
           tag="keys", action=Action.READ_CATALOG, replies={200: SigningKeyList})
async def list_signing_keys(request: Request) -> Response:
    await authorize(request, Action.READ_CATALOG)
    keys = await run_in_threadpool(request.app.state.services.signing_keys.list)
    return reply(SigningKeyList, {"items": [record_json(key) for key in keys]})


@operation(operation_id="addSigner", summary="Trust a release engineer's public key for uploads", tag="keys",
           action=Action.MANAGE_SIGNERS, request=SignerRequest, replies={201: Signer},
           errors={409: "a signer of this name exists already"})
async def add_signer(request: Request) -> Response:
    actor = await authorize(request, Action.MANAGE_SIGNERS)
    document = await json_object(request)
    name, public_key = document.get("name"), document.get("public_key")
    if not isinstance(name, str):
        raise InvalidInput("name", "is required")
    if not isinstance(public_key, str) or not public_key.strip():
        raise InvalidInput("public_key", "is required: a PEM public key or certificate")
    conforming(SignerRequest, document)
    signer = await run_in_threadpool(request.app.state.services.signers.add, name, public_key.encode(), actor.performer,
                                     "public_key")
    return reply(Signer, record_json(signer), 201)


@operation(operation_id="listSigners", summary="The trusted uploader keys", tag="keys",
           action=Action.MANAGE_SIGNERS, replies={200: SignerList})
async def list_signers(request: Request) -> Response:
    await authorize(request, Action.MANAGE_SIGNERS)
    signers = await run_in_threadpool(request.app.state.services.signers.list)
    return reply(SignerList, {"items": [record_json(signer) for signer in signers]})


@operation(operation_id="removeSigner", summary="Stop trusting an uploader key", tag="keys",
           action=Action.MANAGE_SIGNERS, replies={204: Content("removed", None)}, errors={404: "no such signer"})
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
