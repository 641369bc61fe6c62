"""Secrets made once for the embedded default and kept in 0600 files beside the data."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Create path readable by its owner only; O_EXCL and the mode at creation leave no window."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def read_or_create_secret(path: Path) -> bytes:
    """The random secret in path, generated on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            write_private(path, secrets.token_urlsafe(32).encode())
        except FileExistsError:
            pass  # another process made it first: use theirs
    return path.read_bytes().strip()
