"""Values fwrepo must use later but must not leave readable in the database: sealed with AES-GCM.

The key is derived from FWREPO_TOKEN_SECRET (the same on every node, kept outside the database), so a
copy of the database alone reveals neither a webhook's secret nor the grants a delivery carries. Changing
the token secret makes what was sealed with the old one unreadable: such webhooks must be registered again.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class Unsealable(Exception):
    """Sealed with another key (the token secret changed) or altered."""

    def __init__(self) -> None:
        super().__init__("sealed with another FWREPO_TOKEN_SECRET, or altered")


class Sealer:
    def __init__(self, secret: bytes, purpose: str) -> None:
        # One key per purpose: a value sealed for one use cannot be passed off as another's.
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"fwrepo {purpose}".encode()).derive(secret)
        self._aead = AESGCM(key)

    def seal(self, value: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, value, None)).decode("ascii")

    def open(self, sealed: str) -> bytes:
        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None)
        except InvalidTag:
            raise Unsealable() from None
