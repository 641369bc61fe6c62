"""The fields that JSON requests of the domain share, each checked by one function with one set of limits.

Grants and campaigns take the same charger ids, retry plans, protocols and moments: one parser each here
keeps their limits and messages from drifting apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from repo_service.domain.charger_certificates import BINDINGS
from repo_service.domain.clock import parse_moment
from repo_service.domain.ftp_logins import MODES as FTPS_MODES
from repo_service.errors import InvalidInput

PROTOCOLS = ("https", "ftps")
# OCPP's retries and retryInterval: a hundred attempts a week apart is already more than any charger needs.
RETRIES = (0, 100)
RETRY_INTERVAL = (0, 7 * 86400)
DEFAULT_RETRIES = 3
DEFAULT_RETRY_INTERVAL = 600
MAX_CHARGER_ID = 64  # OCPP 1.6 chargeBoxIdentity: CiString of 20, OCPP 2.0.1 identifiers: 36; room for prefixes


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


def whole_number(document: Mapping[str, Any], name: str, default: int | None, bounds: tuple[int, int]) -> int | None:
    """An optional integer field within bounds; null is refused like any other wrong type."""
    if name not in document:
        return default
    value = document[name]
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(name, f"must be a whole number between {low} and {high}, got {_shown(value)}")
    if not low <= value <= high:
        raise InvalidInput(name, f"must be between {low} and {high}, got {value}")
    return value


def retry_plan(document: Mapping[str, Any]) -> tuple[int, int]:
    """OCPP's retries and retryInterval (seconds), with fwrepo's defaults."""
    retries = whole_number(document, "retries", DEFAULT_RETRIES, RETRIES)
    interval = whole_number(document, "retry_interval", DEFAULT_RETRY_INTERVAL, RETRY_INTERVAL)
    assert retries is not None and interval is not None
    return retries, interval


def moment(document: Mapping[str, Any], name: str) -> datetime | None:
    """An optional date-time field; absent is None, null is refused."""
    if name not in document:
        return None
    return parse_moment(document[name], name)


def charger_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string")
    if len(value) > MAX_CHARGER_ID or not (value.isascii() and value.isprintable()) or value != value.strip():
        raise InvalidInput(field, f"{value[:80]!r} must be 1-{MAX_CHARGER_ID} printable ASCII characters "
                                  "without surrounding spaces")
    return value


def binding(document: Mapping[str, Any], serial_field: str | None = None) -> str | None:
    """What a download must show besides its location: nothing, or the charger's client certificate.

    ``serial_field`` names the request's first certificate serial, if it gave one: a serial says what a
    certificate carries, so it is refused without a binding that asks for the certificate."""
    if "bind" not in document:
        if serial_field is not None:
            raise InvalidInput(serial_field,
                               'names what a client certificate carries: it needs "bind": "client_certificate"')
        return None
    value = document["bind"]
    if value not in BINDINGS:
        raise InvalidInput("bind", f"must be one of {', '.join(BINDINGS)}, got {_shown(value)}")
    return value


def protocol_and_mode(document: Mapping[str, Any]) -> tuple[str, str | None]:
    """The download protocol ("https" by default) and, for FTPS only, its mode."""
    protocol = document.get("protocol", "https")
    if protocol not in PROTOCOLS:
        raise InvalidInput("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {_shown(protocol)}")
    if "ftps_mode" not in document:
        return protocol, None
    mode = document["ftps_mode"]
    if protocol != "ftps":
        raise InvalidInput("ftps_mode", 'applies only to protocol "ftps"')
    if mode not in FTPS_MODES:
        raise InvalidInput("ftps_mode", f"must be one of {', '.join(FTPS_MODES)}, got {_shown(mode)}")
    return protocol, mode


def _shown(value: object) -> str:
    return "null" if value is None else repr(value)[:60]
