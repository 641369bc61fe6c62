"""A directory as storage: the embedded default."""

from __future__ import annotations

import errno
import logging
import os
import secrets
from contextlib import contextmanager
from collections.abc import Iterable, Iterator
from pathlib import Path

from repo_service.domain.owner_files import PRIVATE_FILE, make_private_directory, withhold_from_others
from repo_service.errors import NotFound, StorageUnavailable
from repo_service.storage.base import Check, Digest, StoredObject, check_key

log = logging.getLogger(__name__)
_PARTIAL_SUFFIX = ".partial"
WRITE_SLICE = 256 * 1024
_CAN_READ_NOWAIT = hasattr(os, "RWF_NOWAIT")
# Reads hand out blocks of this size: a charger reading at 64 KB/s holds
# one block and the TLS buffer per connection, so thousands of them stay cheap;
# local reads come from the page cache in the event loop, so small blocks cost
# no thread hand-off (bench/download.py measured 1 MiB blocks at 3 MB per slow client).
READ_BLOCK = 64 * 1024


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Images are the operator's to hand out, through grants: no other user of the machine reads them.
        # A root an older fwrepo left open is closed, which closes every image below it.
        make_private_directory(self.root)
        if withhold_from_others(self.root):
            log.warning("local storage %s was open to other users: now only to its owner", self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def write(self, key: str, chunks: Iterable[bytes], check: Check | None = None) -> StoredObject:
        final = self._path(key)
        make_private_directory(final.parent)
        # The bytes land in a hidden sibling and are renamed into place only
        # after they are on disk and checked, so a reader never sees half a file.
        partial = final.with_name(f".{final.name}.{secrets.token_hex(6)}{_PARTIAL_SUFFIX}")
        digest = Digest()
        try:
            with _disk_errors():
                file = os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb")
            with file:
                for chunk in digest.observe(chunks):
                    view = memoryview(chunk)
                    with _disk_errors():
                        # Writes of at most 256 KiB cost the kernel a fraction of
                        # what 1 MiB writes do on virtio disks (measured: 0.3 vs 0.7-2.3 s/GiB).
                        for offset in range(0, len(view), WRITE_SLICE):
                            file.write(view[offset : offset + WRITE_SLICE])
                with _disk_errors():
                    file.flush()
                    os.fsync(file.fileno())
            stored = digest.result(key)
            if check is not None:
                check(stored)
            with _disk_errors():
                os.replace(partial, final)
                _fsync_directory(final.parent)
            return stored
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def read(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            descriptor = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"no stored object {key}") from None
        if length is None:
            length = max(os.fstat(descriptor).st_size - start, 0)
        return _FileBlocks(descriptor, start, length)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"local storage {self.root} is not a writable directory")

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix.rstrip("/")
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):  # .NAME.xxx.partial: a write in flight
                yield path.relative_to(self.root).as_posix()

    def delete(self, key: str) -> None:
        final = self._path(key)
        final.unlink(missing_ok=True)
        if final.parent.is_dir():
            for partial in final.parent.glob(f".{final.name}.*{_PARTIAL_SUFFIX}"):
                partial.unlink(missing_ok=True)


class _FileBlocks:
    """length bytes of an open file from start, in blocks; closes the file when done."""

    def __init__(self, descriptor: int, start: int, length: int) -> None:
        self._descriptor: int | None = descriptor
        self._offset = start
        self._remaining = length
        self._nowait = _CAN_READ_NOWAIT

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with _disk_errors():
            block = self._read(0)
        if not block:
            raise StopIteration
        return block

    def read_nowait(self) -> bytes | memoryview | None:
        if not self._nowait:
            return None
        try:
            return self._read(os.RWF_NOWAIT)
        except BlockingIOError:
            return None  # not in the page cache: the caller reads it in a thread
        except OSError as error:
            if error.errno != errno.EOPNOTSUPP:
                raise StorageUnavailable(f"local storage failed: {error.strerror or error}") from error
            self._nowait = False  # a file system without RWF_NOWAIT: always read in a thread
            return None

    def _read(self, flags: int) -> bytes | memoryview:
        if self._remaining <= 0 or self._descriptor is None:
            self.close()
            return b""
        wanted = min(READ_BLOCK, self._remaining)
        block: bytes | memoryview
        if flags:
            # preadv is the only read that takes RWF_NOWAIT, and it fills a buffer: hand
            # out a view of it rather than copy each block into bytes (bench/ftps.py).
            buffer = bytearray(wanted)
            count = os.preadv(self._descriptor, [buffer], self._offset, flags)
            block = memoryview(buffer)[:count]
        else:
            block = os.pread(self._descriptor, wanted, self._offset)
        if not block:
            self.close()
            # The file shrank under us: end the stream with an error so a
            # download never looks complete when it is not.
            raise StorageUnavailable("stored object is shorter than expected")
        self._offset += len(block)
        self._remaining -= len(block)
        return block

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


@contextmanager
def _disk_errors() -> Iterator[None]:
    # Only errors of our own disk are storage failures; an OSError from the
    # incoming stream (a client that went away) must keep its own meaning.
    try:
        yield
    except OSError as error:
        raise StorageUnavailable(f"local storage failed: {error.strerror or error}") from error


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
