"""One-time FTPS logins: the user and password a grant puts into an ftp:// or ftps:// location."""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

MODES = ("explicit", "implicit")
# Letters and digits only: nothing a charger's URL parser could need to percent-encode.
_USER_ALPHABET = string.ascii_lowercase + string.digits
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
USER_LENGTH = 12  # 62 bits: a lookup key, not the secret
PASSWORD_LENGTH = 24  # 143 bits: far beyond guessing, so one fast hash is enough to store it
STANDARD_PORTS = {"explicit": 21, "implicit": 990}


@dataclass(frozen=True)
class FtpsEndpoint:
    """Where chargers reach the FTPS server, as it goes into locations."""

    host: str
    explicit_port: int
    implicit_port: int
    default_mode: str = "explicit"

    def prefix(self, mode: str, user: str, password: str) -> str:
        scheme = "ftp" if mode == "explicit" else "ftps"
        port = self.explicit_port if mode == "explicit" else self.implicit_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        address = host if port == STANDARD_PORTS[mode] else f"{host}:{port}"
        return f"{scheme}://{user}:{password}@{address}/"

    @property
    def longest_prefix(self) -> int:
        """The longest location prefix either mode gives, so a file has one FTP name in both."""
        user, password = "u" * USER_LENGTH, "p" * PASSWORD_LENGTH
        return max(len(self.prefix(mode, user, password)) for mode in MODES)


@dataclass(frozen=True)
class FtpLogin:
    user: str
    password: str

    @classmethod
    def new(cls) -> FtpLogin:
        return cls(
            user="".join(secrets.choice(_USER_ALPHABET) for _ in range(USER_LENGTH)),
            password="".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH)),
        )

    @property
    def user_hash(self) -> str:
        return digest(self.user)

    @property
    def password_hash(self) -> str:
        return digest(self.password)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
