"""JSON in and out: small request bodies read with a limit, domain records written as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from typing import Any

from starlette.requests import Request

from repo_service.errors import InvalidInput

MAX_JSON_BODY = 64 * 1024


async def json_object(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidInput("body", f"must be at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InvalidInput("body", f"must be at most {limit} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidInput("body", "must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidInput("body", "must be a JSON object")
    return document


def record_json(record: Any) -> dict[str, Any]:
    """A domain record (a dataclass) as JSON values: UTC times end in Z, tuples become lists."""
    return {name: _json_value(value) for name, value in asdict(record).items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value
