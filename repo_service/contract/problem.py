"""RFC 9457 problem details: the body of every error reply (application/problem+json)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from repo_service.contract.base import Reply

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Reply):
    """What went wrong; ``type`` is a stable URN a client may branch on, ``detail`` is for people."""

    # RFC 9457 §3.2: problem types may add members; fwrepo adds field and may add more.
    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="urn:fwrepo:problem:SLUG, e.g. urn:fwrepo:problem:invalid-input")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    field: str | None = Field(None, description="On invalid-input and too-large: the field, parameter or header "
                                                "that is wrong, with its path, e.g. chargers[3].time_zone")
    quota: str | None = Field(None, description="On quota-exceeded (507) and rate-limited (429): the tenant's "
                                                "quota that refused it, stored_bytes, builds or grants_per_minute")
    used: int | None = Field(None, description="With quota: what the tenant uses of it (bytes stored, builds, "
                                               "grants in the last 60 s), not counting what was refused")
    limit: int | None = Field(None, description="With quota: the tenant's limit")
