"""Files only fwrepo's own user may read: secrets, the SQLite database, stored images (docs/operations.md,
"File permissions").

Everything fwrepo creates is 0600 (files) or 0700 (directories), whatever the umask it was started with:
no group is meant to read any of it (backups and `fwrepo` commands run as the service's own user).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700


def write_private(path: Path, data: bytes) -> None:
    """Create path readable by its owner only; O_EXCL and the mode at creation leave no window."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def make_private_directory(path: Path) -> None:
    """path, and each missing directory above it, made 0700; a directory that exists keeps its mode."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIRECTORY)
        except FileExistsError:
            pass  # another process made it first


def withhold_from_others(path: Path) -> bool:
    """Take group's and others' access away from path if fwrepo's user owns it (a file or directory an older
    version made world-readable); whether it had to."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return False
    if status.st_uid != os.geteuid() or not status.st_mode & 0o077:
        return False
    os.chmod(path, stat.S_IMODE(status.st_mode) & 0o700)
    return True


def read_or_create_secret(path: Path) -> bytes:
    """The random secret in path, generated on first use."""
    if not path.exists():
        make_private_directory(path.parent)
        try:
            write_private(path, secrets.token_urlsafe(32).encode())
        except FileExistsError:
            pass  # another process made it first: use theirs
    return path.read_bytes().strip()
