"""Time: injected so that tests move it instead of sleeping, and written and read in one format."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from repo_service.errors import InvalidInput

Clock = Callable[[], datetime]
EXAMPLE = "2026-12-01T02:00:00Z"


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Every time fwrepo writes (JSON, OCPP payloads, CSV): RFC 3339 in UTC, whole seconds, with Z.

    OCPP's dateTime is this format, and one format everywhere lets a CSMS compare times as strings.
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_moment(value: object, field: str) -> datetime:
    """A date-time with a zone as a client sends it (ISO 8601 / RFC 3339), in UTC; InvalidInput names the field."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be an ISO 8601 date-time such as {EXAMPLE}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(field, f"{value[:60]!r} is not an ISO 8601 date-time such as {EXAMPLE}") from None
    if moment.tzinfo is None:
        raise InvalidInput(field, f"needs a time zone (end it with Z for UTC, as in {EXAMPLE})")
    try:
        # OCPP payloads are written in UTC with a Z: convert, never relabel.
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, f"{value[:60]!r} is out of range") from None
