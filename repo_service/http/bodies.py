"""JSON in and out: small request bodies read with a limit, domain records written as JSON."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from typing import Any

from starlette.requests import Request

from repo_service.domain.clock import rfc3339
from repo_service.errors import InvalidInput

MAX_JSON_BODY = 64 * 1024
# Text that can be neither stored nor sent back: PostgreSQL refuses NUL, and a
# lone surrogate (JSON spells one "\ud800") has no UTF-8 encoding.
_UNSTORABLE_TEXT = re.compile(r"[\x00\ud800-\udfff]")


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
        document = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidInput("body", "malformed JSON: nested too deeply") from None
    except ValueError as error:
        raise InvalidInput("body", f"malformed JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("body", "must be a JSON object")
    _refuse_unstorable_text(document)
    return document


def _refuse_constant(name: str) -> None:
    raise InvalidInput("body", f"{name} is not a JSON number (RFC 8259 §6)")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise InvalidInput("body", f"the number {text[:40]} is out of range")
    return number


def _refuse_unstorable_text(document: dict[str, Any]) -> None:
    # Iterative: the document may be nested as deeply as json.loads allows.
    pending: list[tuple[str, Any]] = [(key, key) for key in document] + list(document.items())
    while pending:
        field, value = pending.pop()
        if isinstance(value, str):
            if _UNSTORABLE_TEXT.search(value):
                raise InvalidInput(field, "must not contain NUL characters or unpaired surrogates")
        elif isinstance(value, dict):
            pending.extend((field, key) for key in value)
            pending.extend((field, item) for item in value.values())
        elif isinstance(value, list):
            pending.extend((field, item) for item in value)


def record_json(record: Any) -> dict[str, Any]:
    """A domain record (a dataclass) as JSON values: times in RFC 3339 UTC, tuples become lists."""
    return {name: _json_value(value) for name, value in asdict(record).items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value
