"""Tenants, as the platform role manages them over HTTP (docs/tenants.md)."""

from __future__ import annotations

from pydantic import Field

from repo_service.contract.base import Body, Moment, Reply
from repo_service.domain.tenants import TENANT_NAME


class TenantRequest(Body):
    name: str = Field(min_length=1, max_length=63, pattern=TENANT_NAME,
                      description="1-63 lowercase letters, digits and inner hyphens (a DNS label), e.g. acme-cpo")


class Tenant(Reply):
    name: str
    created_at: Moment
    disabled_at: Moment | None = Field(description="when its keys, download URLs and FTPS logins stopped working")


class TenantList(Reply):
    items: list[Tenant]
