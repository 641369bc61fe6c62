"""A directory as storage: the embedded default."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from collections.abc import Iterable, Iterator
from pathlib import Path

from repo_service.errors import NotFound, StorageUnavailable
from repo_service.storage.base import READ_BLOCK, Check, Digest, StoredObject, check_key

_PARTIAL_SUFFIX = ".partial"
WRITE_SLICE = 256 * 1024


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def write(self, key: str, chunks: Iterable[bytes], check: Check | None = None) -> StoredObject:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # The bytes land in a hidden sibling and are renamed into place only
        # after they are on disk and checked, so a reader never sees half a file.
        partial = final.with_name(f".{final.name}.{secrets.token_hex(6)}{_PARTIAL_SUFFIX}")
        digest = Digest()
        try:
            with _disk_errors():
                file = open(partial, "xb")
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
            file = open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"no stored object {key}") from None
        file.seek(start)
        return _read_blocks(file, length)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        final = self._path(key)
        final.unlink(missing_ok=True)
        if final.parent.is_dir():
            for partial in final.parent.glob(f".{final.name}.*{_PARTIAL_SUFFIX}"):
                partial.unlink(missing_ok=True)


def _read_blocks(file, length: int | None) -> Iterator[bytes]:
    with file:
        remaining = length
        while remaining is None or remaining > 0:
            block = file.read(READ_BLOCK if remaining is None else min(READ_BLOCK, remaining))
            if not block:
                if remaining:
                    # The file shrank under us: end the stream with an error so a
                    # download never looks complete when it is not.
                    raise StorageUnavailable("stored object is shorter than expected")
                return
            if remaining is not None:
                remaining -= len(block)
            yield block


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
