"""The unauthenticated probes: liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from typing import Literal

from repo_service.contract.base import Reply


class Health(Reply):
    status: Literal["ok"]
    version: str


class Readiness(Reply):
    status: Literal["ready", "not ready", "stopping"]
    checks: dict[str, str] | None = None
