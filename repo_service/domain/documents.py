"""Checks shared by the JSON requests of the domain: unknown fields and required strings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from repo_service.errors import InvalidInput


def refuse_unknown(document: Mapping[str, Any], known: Iterable[str], prefix: str = "") -> None:
    """A misspelt optional field would otherwise be silently ignored: name the first one not known."""
    expected = sorted(known)
    unknown = sorted(set(document) - set(expected))
    if unknown:
        raise InvalidInput(prefix + unknown[0], f"unknown field; expected some of {', '.join(expected)}")


def required_string(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(name, "is required")
    return value
