"""The repository's signing keys (read-only over HTTP) and the release engineers' trusted signer keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from repo_service.contract.base import Body, Moment, Reply
from repo_service.domain.keys import KeyStatus

# A plain string, not an enum: a client of today must still read a record signed in a scheme added later.
SIGNING_ALGORITHM = (
    "the signature scheme, which the charger must verify with: ecdsa-p256 or ecdsa-p384 (ECDSA), rsa-3072 or "
    "rsa-4096 (RSASSA-PKCS1-v1_5), rsa-pss-3072 or rsa-pss-4096 (RSASSA-PSS, MGF1-SHA-256, 32-byte salt); "
    "each over SHA-256 (docs/signing.md verifies each with openssl)"
)


class SigningKey(Reply):
    id: str
    algorithm: str = Field(description=SIGNING_ALGORITHM)
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
    public_key: str = Field(min_length=1, description="a PEM public key or certificate: ECDSA P-256 or P-384, "
                                                      "or RSA 3072 or 4096 (which may sign with PKCS#1 v1.5 or PSS)")


class Signer(Reply):
    id: str
    name: str
    algorithm: str = Field(description="the key's: ecdsa-p256, ecdsa-p384, rsa-3072 or rsa-4096; an RSA signer's "
                                       "uploads may be signed with PKCS#1 v1.5 or PSS")
    fingerprint: str
    public_key_pem: str
    created_at: Moment


class SignerList(Reply):
    items: list[Signer]
