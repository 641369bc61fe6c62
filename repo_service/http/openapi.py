"""The OpenAPI 3.1 description of fwrepo's HTTP API, built from the routes' Operations and the contract's models.

Nothing here is written by hand per endpoint: every route of the app carries
its Operation (repo_service.http.operations), every body and reply is a model
of repo_service.contract. Served at GET /api/v1/openapi.json (no key: outside
tools fetch it) and rendered for people at GET /api/docs; docs/openapi.json
and docs/api.md are this module's output, committed so that every API change
shows in review:

    python -m repo_service.http.openapi > docs/openapi.json
    python -m repo_service.http.openapi --markdown > docs/api.md
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from repo_service import __version__
from repo_service.contract import PROBLEM_MEDIA_TYPE, WEBHOOK_EVENTS, Problem
from repo_service.http.observability import route_template
from repo_service.http.operations import Content, Operation, Parameter, operation, operation_of

OPENAPI_PATH = "/api/v1/openapi.json"
DOCS_PATH = "/api/docs"
SECURITY_SCHEME = "bearer"
_PARAMETER = re.compile(r"{([^}]+)}")
_STANDARD_ERRORS = {
    401: "no API key, or one that is not valid",
    403: "the key's role may not do this",
    422: "a field, parameter or header is wrong: the problem's field names it",
}


def describe(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes (an app's routes: every one must carry an Operation)."""
    paths: dict[str, dict[str, Any]] = {}
    models: set[type[BaseModel]] = {Problem, *WEBHOOK_EVENTS.values()}
    for route, methods, described in _operations(routes):
        models |= _models_of(described)
        for method in methods:
            path = route_template(route)
            paths.setdefault(path, {})[method.lower()] = _operation(path, method, described)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fwrepo",
            "version": __version__,
            "summary": "Secure firmware artifact repository for EV charging networks (OCPP 1.6 / 2.0.1)",
            "description": "Every /api/v1 call takes `Authorization: Bearer KEY`, except the description itself; "
                           "the roles an operation needs are in its description and in `x-fwrepo-roles`. Errors "
                           "are RFC 9457 problem documents (`application/problem+json`). What v1 promises: "
                           "docs/http-api.md, \"What v1 promises\".",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": dict(sorted(paths.items())),
        "webhooks": {name: {"post": {
            "summary": f"fwrepo pushes {name}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model)}}},
            "responses": {"2XX": {"description": "received; any other answer is retried"}},
        }} for name, model in sorted(WEBHOOK_EVENTS.items())},
        "components": {
            "schemas": _schemas(models),
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer",
                "description": "an API key (fwr_...) made with `fwrepo clients create NAME --role ROLE`",
            }},
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def _operations(routes: Iterable[BaseRoute]) -> Iterator[tuple[Route, list[str], Operation]]:
    for route in routes:
        described = operation_of(getattr(route, "endpoint", None))
        if not isinstance(route, Route) or described is None:
            raise LookupError(f"route {getattr(route, 'path', route)!r} has no Operation: declare one with @operation")
        yield route, sorted(route.methods or ()), described


def _models_of(described: Operation) -> set[type[BaseModel]]:
    models: set[type[BaseModel]] = {model for model in described.replies.values() if isinstance(model, type)}
    return models | ({described.request} if described.request else set())


def _operation(path: str, method: str, described: Operation) -> dict[str, Any]:
    head = method == "HEAD"
    declared = {parameter.name: parameter for parameter in described.parameters}
    parameters = [declared.get(name) or Parameter(name, "path", name.replace("_", " "), required=True)
                  for name in _PARAMETER.findall(path)]
    parameters += [parameter for parameter in described.parameters if parameter.where != "path"]
    roles = [role.value for role in described.roles]
    description = described.description
    if described.action is not None:
        description = f"Roles: {', '.join(roles)} ({described.action}). {description}".strip()
    result: dict[str, Any] = {
        "operationId": described.operation_id + ("Head" if head else ""),
        "summary": described.summary,
        "description": description,
        "tags": [described.tag],
        "parameters": [_parameter(parameter) for parameter in parameters],
        "responses": _responses(described, head),
    }
    if not result["parameters"]:
        del result["parameters"]
    if described.action is None:
        result["security"] = []
    else:
        result["x-fwrepo-roles"] = roles
    if described.request is not None:
        result["requestBody"] = {"required": True,
                                 "content": {described.request_media_type: {"schema": _ref(described.request)}}}
    return result


def _parameter(parameter: Parameter) -> dict[str, Any]:
    return {"name": parameter.name, "in": parameter.where, "description": parameter.description,
            "required": parameter.required or parameter.where == "path", "schema": dict(parameter.schema)}


def _responses(described: Operation, head: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in sorted(described.replies.items()):
        if isinstance(answer, Content):
            response: dict[str, Any] = {"description": answer.description}
            if answer.media_type and not head:
                response["content"] = {answer.media_type: {"schema": dict(answer.schema)}}
            if answer.headers:
                response["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                                       for name, text in answer.headers.items()}
        else:
            response = {"description": answer.__doc__.strip().splitlines()[0] if answer.__doc__ else answer.__name__}
            if not head:
                response["content"] = {"application/json": {"schema": _ref(answer)}}
        responses[str(status)] = response
    errors = dict(described.errors)
    if described.action is not None:
        errors |= {status: _STANDARD_ERRORS[status] for status in (401, 403)}
    if described.request is not None or described.parameters:
        errors[422] = _STANDARD_ERRORS[422]
    for status, text in sorted(errors.items()):
        responses[str(status)] = {"description": text}
        if status == 429:
            responses[str(status)]["headers"] = {"Retry-After": {
                "description": "seconds until the refused request would fit its quota", "schema": {"type": "integer"}}}
        if not head:
            responses[str(status)]["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _ref(Problem)}}
    return responses


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _schemas(models: set[type[BaseModel]]) -> dict[str, Any]:
    _, schemas = models_json_schema([(model, "validation") for model in sorted(models, key=lambda model: model.__name__)],
                                    ref_template="#/components/schemas/{model}")
    return dict(sorted(_without_null_defaults(schemas.get("$defs", {})).items()))


def _without_null_defaults(schema: Any) -> Any:
    # A field defaulting to None is one to leave out, not one that takes null (the models refuse null there):
    # "default": null next to "type": "string" would tell client generators otherwise.
    if isinstance(schema, dict):
        return {key: _without_null_defaults(value) for key, value in schema.items()
                if not (key == "default" and value is None)}
    if isinstance(schema, list):
        return [_without_null_defaults(value) for value in schema]
    return schema


# -- for people: Markdown (docs/api.md) and the HTML page at /api/docs -----------------------------------------------

def markdown(document: Mapping[str, Any]) -> str:
    """The description as Markdown, one section per operation, readable offline."""
    lines = [f"# fwrepo HTTP API {document['info']['version']}", "",
             "Generated from the OpenAPI description (`python -m repo_service.http.openapi --markdown > docs/api.md`); "
             f"do not edit by hand. The same description is served at `GET {OPENAPI_PATH}` and rendered at "
             f"`GET {DOCS_PATH}`; it is committed as [openapi.json](openapi.json).", "",
             document["info"]["description"], ""]
    for tag, operations in _by_tag(document):
        lines += [f"## {tag}", ""]
        for path, method, described in operations:
            lines += [f"### `{method} {path}`", "", f"**{described['summary']}** (`{described['operationId']}`)", ""]
            if described["description"]:
                lines += [described["description"], ""]
            if described.get("parameters"):
                lines += ["| parameter | in | required | schema | description |", "| --- | --- | --- | --- | --- |"]
                lines += [f"| `{parameter['name']}` | {parameter['in']} | {'yes' if parameter['required'] else 'no'} | "
                          f"`{_schema_text(parameter['schema'])}` | {parameter['description']} |"
                          for parameter in described["parameters"]]
                lines.append("")
            if "requestBody" in described:
                for media_type, content in described["requestBody"]["content"].items():
                    lines += [f"Request body ({media_type}): {_schema_text(content['schema'])}", ""]
            lines += ["| status | content | description |", "| --- | --- | --- |"]
            for status, response in described["responses"].items():
                contents = ", ".join(f"{media_type} {_schema_text(content['schema'])}"
                                     for media_type, content in response.get("content", {}).items())
                lines.append(f"| {status} | {contents or '-'} | {response['description']} |")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [" ".join(schema["description"].split()), ""]
        required = set(schema.get("required", ()))
        lines += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
        lines += [f"| `{field}` | `{_schema_text(field_schema)}` | {'yes' if field in required else 'no'} | "
                  f"{field_schema.get('description', '')} |" for field, field_schema in schema.get("properties", {}).items()]
        lines.append("")
    return "\n".join(lines)


def _by_tag(document: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str, dict[str, Any]]]]]:
    """Operations by tag, each as (path, methods, operation); a HEAD is shown with its GET (same answer, no body)."""
    tags: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in document["paths"].items():
        for method, described in methods.items():
            if method == "head" and "get" in methods:
                continue
            label = "GET/HEAD" if method == "get" and "head" in methods else method.upper()
            tags.setdefault(described["tags"][0], []).append((path, label, described))
    return list(tags.items())


def _schema_text(schema: Mapping[str, Any]) -> str:
    """A schema in a few words: SomeModel, list[Grant], string (date-time), integer 1..100."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_text(option) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_schema_text(schema.get('items', {}))}]"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"map[string, {_schema_text(schema['additionalProperties'])}]"
    if "enum" in schema or "const" in schema:
        return " | ".join(json.dumps(value) for value in schema.get("enum", [schema.get("const")]))
    words = [kind]
    if "format" in schema:
        words.append(f"({schema['format']})")
    if "minimum" in schema or "maximum" in schema:
        words.append(f"{schema.get('minimum', '')}..{schema.get('maximum', '')}")
    if "maxLength" in schema:
        words.append(f"≤ {schema['maxLength']} chars")
    return " ".join(words)


_STYLE = ("body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "code,pre{font-family:ui-monospace,monospace;background:#f4f4f4;padding:0 .2rem}"
          "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
          "h3{margin-top:2rem;border-top:1px solid #ddd;padding-top:1rem}")
# The page has no script at all and one stylesheet, allowed by its hash: nothing else may load or run.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'sha256-"
                           + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
                           + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def page(document: Mapping[str, Any]) -> str:
    """The description as one self-contained HTML page: no script, nothing fetched from elsewhere."""
    escape = html.escape
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>fwrepo API {escape(__version__)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>fwrepo HTTP API {escape(document['info']['version'])}</h1>"
             f"<p>{escape(document['info']['description'])}</p>"
             f"<p>Machine-readable: <a href=\"{OPENAPI_PATH}\"><code>{OPENAPI_PATH}</code></a> (OpenAPI 3.1).</p>"]
    for tag, operations in _by_tag(document):
        parts.append(f"<h2>{escape(tag)}</h2>")
        for path, method, described in operations:
            parts.append(f"<h3 id=\"{escape(described['operationId'])}\"><code>{escape(method)} {escape(path)}"
                         f"</code></h3><p><b>{escape(described['summary'])}</b> "
                         f"(<code>{escape(described['operationId'])}</code>)</p>")
            if described["description"]:
                parts.append(f"<p>{escape(described['description'])}</p>")
            rows = [(parameter["name"], parameter["in"], _schema_text(parameter["schema"]), parameter["description"])
                    for parameter in described.get("parameters", ())]
            rows += [("body", media_type, _schema_text(content["schema"]), "")
                     for media_type, content in described.get("requestBody", {}).get("content", {}).items()]
            if rows:
                parts.append(_table(("parameter", "in", "schema", "description"), rows))
            parts.append(_table(("status", "content", "description"), [
                (status, ", ".join(f"{media_type} {_schema_text(content['schema'])}"
                                   for media_type, content in response.get("content", {}).items()) or "-",
                 response["description"]) for status, response in described["responses"].items()]))
    parts.append("<h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(f"<h3 id=\"schema-{escape(name)}\">{escape(name)}</h3>")
        if schema.get("description"):
            parts.append(f"<p>{escape(schema['description'])}</p>")
        required = set(schema.get("required", ()))
        parts.append(_table(("field", "type", "required", "description"), [
            (field, _schema_text(field_schema), "yes" if field in required else "no", field_schema.get("description", ""))
            for field, field_schema in schema.get("properties", {}).items()]))
    parts.append("</body></html>")
    return "".join(parts)


def _table(heading: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in heading)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


# -- served ----------------------------------------------------------------------------------------------------------

def _document(request: Request) -> dict[str, Any]:
    # The routes do not change while the app runs: described once, on first use.
    state = request.app.state
    if not hasattr(state, "openapi"):
        state.openapi = describe(state.api_routes)
    return state.openapi


@operation(operation_id="getOpenApi", summary="This description (OpenAPI 3.1)", tag="service", action=None,
           replies={200: Content("the OpenAPI 3.1 document", "application/json", {"type": "object"})})
async def openapi_json(request: Request) -> Response:
    return JSONResponse(_document(request))


@operation(operation_id="getApiDocs", summary="This description for people, as one HTML page", tag="service",
           action=None, replies={200: Content("the reference, server-rendered, with no script", "text/html",
                                              {"type": "string"})})
async def docs(request: Request) -> Response:
    return HTMLResponse(page(_document(request)), headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                                           "X-Content-Type-Options": "nosniff"})


ROUTES = [Route(OPENAPI_PATH, openapi_json, methods=["GET"]), Route(DOCS_PATH, docs, methods=["GET"])]


def main(arguments: list[str]) -> int:
    """Print the description of the app's routes (JSON), or with --markdown the reference in Markdown."""
    from repo_service.http.app import ROUTES as APP_ROUTES

    document = describe(APP_ROUTES)
    if arguments == ["--markdown"]:
        sys.stdout.write(markdown(document))
    elif not arguments:
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stderr.write("usage: python -m repo_service.http.openapi [--markdown]\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
