"""The repository's signing keys (read-only over HTTP) and the release engineers' trusted signer keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from repo_service.contract.base import Body, Moment, Reply
from repo_service.domain.keys import KeyStatus


class SigningKey(Reply):
    id: str
    algorithm: str
    status: Literal[tuple(KeyStatus)]  # type: ignore[valid-type]
    origin: str
    fingerprint: str
    not_before: Moment
    not_after: Moment
    created_at: Moment
    revoked_at: Moment | None
    certificate_pem: str
    chain_pem: str
    signed: int = Field(description="builds this key has signed")


class SigningKeyList(Reply):
    items: list[SigningKey]


class SignerRequest(Body):
    name: str = Field(description="who signs with this key, e.g. a release engineer's or a build system's name")
    public_key: str = Field(min_length=1, description="a PEM public key or certificate (ECDSA P-256 or RSA)")


class Signer(Reply):
    id: str
    name: str
    algorithm: str
    fingerprint: str
    public_key_pem: str
    created_at: Moment


class SignerList(Reply):
    items: list[Signer]
