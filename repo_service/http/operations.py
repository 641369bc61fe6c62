"""What each HTTP operation is, declared next to its handler: the source of the OpenAPI description.

A handler carries its ``Operation`` (set by the ``operation`` decorator):
its operationId, who may call it (the domain's Action, hence the roles), the
request model, the reply model per status, its parameters and the errors it
answers with. ``repo_service.http.openapi`` reads these from the app's routes,
so the description cannot leave out a route or describe a reply the handler
does not build: replies go through ``reply``, which checks the body against
its model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from repo_service.contract.base import Body, Reply
from repo_service.domain.clients import PERMISSIONS, Action, Role
from repo_service.errors import InvalidInput

Handler = Callable[[Request], Awaitable[Response]]
# Lists in a reply longer than this are checked by their first and last items (see reply).
SAMPLED_LIST = 100
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Parameter:
    """A query, path or header parameter; ``schema`` is its JSON Schema."""

    name: str
    where: Literal["query", "path", "header"]
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Content:
    """A reply that is not one of the JSON models: bytes, CSV, a redirect."""

    description: str
    media_type: str | None = None
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string", "format": "binary"})
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    summary: str
    tag: str
    # None: no API key (probes, the description itself, a charger's download, whose token is its credential).
    action: Action | None
    replies: Mapping[int, type[Reply] | Content]
    request: type[Body] | None = None
    request_media_type: str = "application/json"
    parameters: tuple[Parameter, ...] = ()
    # Problem replies besides those every keyed operation has (401, 403) and every body or parameter has (422).
    errors: Mapping[int, str] = field(default_factory=dict)
    description: str = ""

    @property
    def roles(self) -> tuple[Role, ...]:
        if self.action is None:
            return ()
        return tuple(role for role in Role if self.action in PERMISSIONS[role])


def operation(**declared: Any) -> Callable[[Handler], Handler]:
    """Attach an Operation to a handler; the keywords are Operation's fields."""
    described = Operation(**declared)

    def attach(handler: Handler) -> Handler:
        handler.operation = described  # type: ignore[attr-defined]
        return handler

    return attach


def operation_of(handler: object) -> Operation | None:
    return getattr(handler, "operation", None)


def conforming(model: type[Model], document: Mapping[str, Any]) -> Model:
    """document checked against its request model; InvalidInput names the first field that does not fit."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        if first["type"] == "extra_forbidden":
            expected = ", ".join(sorted(_model_at(model, first["loc"][:-1]).model_fields))
            raise InvalidInput(_field(model, first["loc"], unknown=True),
                               f"unknown field; expected some of {expected}") from None
        raise InvalidInput(_field(model, first["loc"]), first["msg"][:1].lower() + first["msg"][1:]) from None


def _field(model: type[BaseModel], location: tuple[int | str, ...], unknown: bool = False) -> str:
    """A pydantic error location as the API names fields: chargers[3].time_zone.

    A plain value inside a list is named by the list (charger_ids), as the domain names it; pydantic's
    names for the members of a union ("str", "list[float]") and a mapping's keys are not fields and end the path.
    """
    names = _field_names(model)
    path, index = "", None
    for position, part in enumerate(location):
        if isinstance(part, int):
            index = part
            continue
        if part not in names and not (unknown and position == len(location) - 1):
            break
        path += (f"[{index}]" if index is not None else "") + ("." if path else "") + part
        index = None
    return path or "body"


def _model_at(model: type[BaseModel], location: tuple[int | str, ...]) -> type[BaseModel]:
    """The model that the object at location is an instance of (the body's model for the body itself)."""
    for part in location:
        if isinstance(part, str) and part in model.model_fields:
            model = next(iter(_models_in(model.model_fields[part].annotation)), model)
    return model


@cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for nested in _models_in(info.annotation):
            names |= _field_names(nested)
    return frozenset(names)


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in get_args(annotation) for model in _models_in(argument)]


def reply(model: type[Reply], body: dict[str, Any], status_code: int = 200,
          headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON reply whose body is checked against the model the description gives for it.

    A field the model lacks, or one it needs and the body misses, is a defect of this service: it fails
    here (a 500, logged, and a failing test) instead of reaching clients that trust the description.
    """
    unknown = body.keys() - model.model_fields.keys()
    if unknown:
        raise AssertionError(f"{model.__name__} does not describe {sorted(unknown)}")
    # A long list (a batch's 10,000 grants) is made by one function per item: its first and last items stand
    # for the rest. Checking all 10,000 took a quarter of the batch's time.
    model.__pydantic_validator__.validate_python({
        name: [value[0], value[-1]] if isinstance(value, list) and len(value) > SAMPLED_LIST else value
        for name, value in body.items()})
    return JSONResponse(body, status_code=status_code, headers=dict(headers) if headers else None)
