"""The two kinds of wire model: what a client sends, and what fwrepo answers.

Requests refuse unknown fields and are strict about types, as the API has
always been: a misspelt optional field or "retries": "3" is a 422, not a
silent default. Replies ignore fields they do not know, so a client built on
these models keeps working when v1 adds a field (see docs/http-api.md, "What v1 promises").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Every time on the wire is RFC 3339 in UTC with a "Z" (repo_service.domain.clock.rfc3339).
Moment = Annotated[datetime, Field(description="RFC 3339 date-time in UTC, e.g. 2026-01-31T02:00:00Z")]
# A moment a client sends: the domain parses it (zone required) and names the field when it cannot.
MomentText = Annotated[str, Field(json_schema_extra={"format": "date-time"},
                                  description="ISO 8601 / RFC 3339 date-time with a zone")]


class Body(BaseModel):
    """A JSON request body."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Reply(BaseModel):
    """A JSON reply body."""

    model_config = ConfigDict(extra="ignore", frozen=True)
