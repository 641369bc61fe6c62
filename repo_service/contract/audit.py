"""The audit trail: append-only, hash-chained events of every security-relevant act."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from repo_service.contract.base import Moment, Reply


class AuditEvent(Reply):
    tenant: str = Field(description="whose trail it is on: each tenant's trail is a chain of its own, seq from 1")
    seq: int
    at: Moment
    actor: str
    action: str = Field(examples=["firmware_publish", "grant_issue", "download_refused"])
    subject: str
    detail: dict[str, Any]
    hash: str = Field(description="SHA-256 over the previous event's hash and this event: the chain")


class AuditPage(Reply):
    total: int
    items: list[AuditEvent]
