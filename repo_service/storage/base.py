"""The storage interface: the four things fwrepo asks of any place that keeps bytes.

Like warehouse's ``IFileStorage``, nothing outside ``repo_service.storage``
knows which backend it talks to.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, runtime_checkable

# Keys are made by fwrepo itself, but a backend still refuses anything that
# could climb out of its root or need escaping in an S3 URL.
_KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_.-]*)*$")


# Keys under tenants/NAME/ are tenant NAME's: a backend may keep them apart (S3: a bucket per tenant).
TENANTS_PREFIX = "tenants/"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    # OCPP 2.0.1 PublishFirmwareRequest.checksum is the image's MD5: computed in the same pass, never by a second read.
    md5: str


Check = Callable[[StoredObject], None]


class Storage(Protocol):
    def write(self, key: str, chunks: Iterable[bytes], check: Check | None = None) -> StoredObject:
        """Store the stream under key; it becomes visible only after check passed, and on any failure nothing is left."""

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Open key and return its bytes from start (length of them, or to the end) as a stream; NotFound if missing."""

    def size(self, key: str) -> int | None:
        """The size of the object under key, or None when there is none."""

    def delete(self, key: str) -> None:
        """Remove the object under key and any unfinished write to it; no error when there is none."""

    def check(self) -> None:
        """Raise StorageUnavailable unless the backend can be written to now (readiness)."""

    def keys(self, prefix: str) -> Iterator[str]:
        """The key of every stored object under prefix; unfinished writes are not objects."""


@runtime_checkable
class ReadsWithoutBlocking(Protocol):
    """A stream from Storage.read whose next block can be tried without blocking (a file in the page cache)."""

    def read_nowait(self) -> bytes | memoryview | None:
        """The next block (b"" at the end), or None when getting it would block: then call next() in a thread."""


@runtime_checkable
class Presigning(Protocol):
    def presigned_url(self, key: str, expires_in: timedelta, filename: str) -> str:
        """A URL anyone may GET the object from until expires_in has passed."""


def check_key(key: str) -> str:
    if not _KEY_PATTERN.fullmatch(key) or ".." in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


# Chunks the MD5 thread may trail by: 4 upload blocks of 1 MiB (repo_service.http.forms.BLOCK).
MD5_LAG = 4


class Digest:
    """SHA-256, MD5 and size of a stream, computed while it passes through."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        # Not a security check (SHA-256 and the signature are): the checksum OCPP 2.0.1 PublishFirmware carries.
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def observe(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        # MD5 runs at under half SHA-256's speed (680 vs 1,600 MiB/s measured here): on the caller's thread it
        # is most of an upload's hashing. hashlib lets go of the GIL for large buffers, so a thread of its own
        # hashes the chunks (bytes, which nobody can change under it) while this one computes SHA-256 and the
        # consumer writes them; it may fall MD5_LAG chunks behind, so that it holds little memory.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="md5") as md5:
            pending: deque[Future[None]] = deque()
            for chunk in chunks:
                if chunk:
                    pending.append(md5.submit(self._md5.update, chunk))
                    if len(pending) > MD5_LAG:
                        pending.popleft().result()
                    self._hash.update(chunk)
                    self.size += len(chunk)
                    yield chunk
            for hashed in pending:
                hashed.result()

    def result(self, key: str) -> StoredObject:
        return StoredObject(key=key, size=self.size, sha256=self._hash.hexdigest(), md5=self._md5.hexdigest())
