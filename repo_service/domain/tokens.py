"""Download tokens: short, signed, checked without the database.

A charger keeps ``location`` in a small buffer (our bar: 255 characters with
scheme and host), so the token carries only the grant number and its expiry,
in base 36, and an HMAC-SHA256 truncated to 120 bits (far beyond guessing;
NIST SP 800-107 allows truncation to 64). 120 bits are exactly 20 base64
characters: with 128, the last character would carry unused bits, and several
spellings of one token would all verify. itsdangerous does the signing and the
constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, Signer
from itsdangerous.signer import HMACAlgorithm

SALT = "fwrepo-download-token"
_TOKEN_SHAPE = re.compile(r"[0-9a-z]{1,14}\.[0-9a-z]{1,14}\.[A-Za-z0-9_-]{20}")
MAC_BYTES = 15


class _TruncatedHMAC(HMACAlgorithm):
    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return super().get_signature(key, value)[:MAC_BYTES]

    def verify_signature(self, key: bytes, value: bytes, sig: bytes) -> bool:
        return hmac.compare_digest(sig, self.get_signature(key, value))


class InvalidToken(Exception):
    """Forged, malformed or cut short: the caller learns nothing more than 'not found'."""


@dataclass(frozen=True)
class TokenClaims:
    grant_id: int
    expires_at: datetime


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        self._signer = Signer(
            secret, salt=SALT, sep=".", key_derivation="hmac", digest_method=hashlib.sha256,
            algorithm=_TruncatedHMAC(hashlib.sha256),
        )

    def issue(self, grant_id: int, expires_at: datetime) -> str:
        payload = f"{_base36(grant_id)}.{_base36(int(expires_at.timestamp()))}"
        return self._signer.sign(payload).decode()

    def verify(self, token: str) -> TokenClaims:
        # itsdangerous' base64 decoding skips stray characters; insist on the one spelling we issue.
        if not _TOKEN_SHAPE.fullmatch(token):
            raise InvalidToken()
        try:
            payload = self._signer.unsign(token).decode()
            grant, expires = payload.split(".")
            return TokenClaims(int(grant, 36), datetime.fromtimestamp(int(expires, 36), UTC))
        except (BadSignature, ValueError, OverflowError):
            raise InvalidToken() from None


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if number <= 0:
        return "0"
    text = ""
    while number:
        number, remainder = divmod(number, 36)
        text = digits[remainder] + text
    return text
