"""The storage interface, the same behaviour on a directory, Ceph RGW and moto."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repo_service.errors import InvalidInput, NotFound, StorageUnavailable
from repo_service.storage import ReadsWithoutBlocking, Storage
from repo_service.storage.local import LocalStorage
from repo_service.storage.s3 import S3Storage
from tests.support.builds import image
from tests.support.s3servers import S3Server

PART = 5 * 1024 * 1024
Leftovers = Callable[[], list[str]]


def s3_storage(server: S3Server) -> tuple[S3Storage, Leftovers]:
    bucket = f"storage-{secrets.token_hex(4)}"
    storage = S3Storage(
        bucket=bucket, endpoint_url=server.endpoint_url, region=server.region,
        access_key_id=server.access_key_id, secret_access_key=server.secret_access_key, part_size=PART,
    )
    storage.ensure_bucket()

    def leftovers() -> list[str]:
        objects = storage.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        uploads = storage.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [item["Key"] for item in objects] + [f"unfinished:{item['Key']}" for item in uploads]

    return storage, leftovers


@pytest.fixture(params=["local", "ceph", "moto"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, Leftovers]]:
    if request.param == "local":
        root = tmp_path / "storage"
        storage = LocalStorage(root)
        yield storage, lambda: sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
    else:
        yield s3_storage(request.getfixturevalue(request.param))


def blocks(content: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


@pytest.mark.parametrize("size", [1, 100_000, 2 * PART + 12_345], ids=["one-byte", "one-put", "multipart"])
def test_write_returns_size_and_digest_and_reads_back(backend: tuple[Storage, Leftovers], size: int) -> None:
    storage, leftovers = backend
    content = image(size)
    stored = storage.write("firmware/roundtrip", blocks(content))
    assert (stored.key, stored.size, stored.sha256) == ("firmware/roundtrip", size, hashlib.sha256(content).hexdigest())
    assert storage.size("firmware/roundtrip") == size
    assert b"".join(storage.read("firmware/roundtrip")) == content
    assert leftovers() == ["firmware/roundtrip"]


def test_byte_ranges_read_exactly_those_bytes(backend: tuple[Storage, Leftovers]) -> None:
    storage, _ = backend
    content = image(3 * 1024 * 1024 + 7)
    storage.write("firmware/ranges", blocks(content))
    assert b"".join(storage.read("firmware/ranges", 5, 10)) == content[5:15]
    assert b"".join(storage.read("firmware/ranges", len(content) - 7)) == content[-7:]
    assert b"".join(storage.read("firmware/ranges", 0, 0)) == b""
    assert b"".join(storage.read("firmware/ranges", 1024 * 1024 - 1, 2 * 1024 * 1024)) == content[
        1024 * 1024 - 1 : 3 * 1024 * 1024 - 1
    ]


def test_a_local_file_that_shrinks_mid_read_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("firmware/shrinks", blocks(image(1024 * 1024)))
    stream = storage.read("firmware/shrinks")
    first = next(stream)
    os.truncate(tmp_path / "firmware" / "shrinks", len(first) + 10)
    with pytest.raises(StorageUnavailable, match="shorter than expected"):
        b"".join(stream)


def test_local_reads_from_the_page_cache_never_block_the_event_loop(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    content = image(300 * 1024)
    storage.write("firmware/cached", blocks(content))
    stream = storage.read("firmware/cached", 10)
    assert isinstance(stream, ReadsWithoutBlocking)
    pieces = []
    # Just written, so in the page cache: every block comes without a thread.
    while (block := stream.read_nowait()) not in (None, b""):
        pieces.append(block)
    assert block == b"" and b"".join(pieces) == content[10:]


def test_missing_objects_have_no_size_and_cannot_be_read(backend: tuple[Storage, Leftovers]) -> None:
    storage, _ = backend
    assert storage.size("firmware/absent") is None
    with pytest.raises(NotFound):
        storage.read("firmware/absent")
    storage.delete("firmware/absent")


@pytest.mark.parametrize("size", [100_000, 3 * PART], ids=["one-put", "multipart"])
def test_a_failed_check_leaves_nothing_behind(backend: tuple[Storage, Leftovers], size: int) -> None:
    storage, leftovers = backend

    def refuse(stored) -> None:
        raise InvalidInput("sha256", "does not match")

    with pytest.raises(InvalidInput):
        storage.write("firmware/refused", blocks(image(size)), check=refuse)
    assert storage.size("firmware/refused") is None
    assert leftovers() == []


@pytest.mark.parametrize("size", [100_000, 3 * PART], ids=["one-put", "multipart"])
def test_a_stream_that_breaks_midway_leaves_nothing_behind(backend: tuple[Storage, Leftovers], size: int) -> None:
    storage, leftovers = backend

    def breaking() -> Iterator[bytes]:
        yield from blocks(image(size))
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        storage.write("firmware/broken", breaking())
    assert leftovers() == []


def test_the_check_sees_the_whole_stream_before_anything_is_visible(backend: tuple[Storage, Leftovers]) -> None:
    storage, _ = backend
    content = image(2 * PART)
    seen = []

    def check(stored) -> None:
        seen.append((stored.size, storage.size("firmware/checked")))

    storage.write("firmware/checked", blocks(content), check=check)
    assert seen == [(len(content), None)]


def test_keys_list_stored_objects_and_not_unfinished_writes(backend: tuple[Storage, Leftovers]) -> None:
    storage, _ = backend
    for name in ("b", "a", "c"):
        storage.write(f"firmware/{name}", blocks(image(1000)))
    storage.write("other/x", blocks(image(10)))

    during: list[str] = []
    # The check runs when all bytes are written but before the object is visible: d is not listed yet.
    storage.write("firmware/d", blocks(image(1000)), check=lambda _: during.extend(storage.keys("firmware/")))
    assert sorted(during) == ["firmware/a", "firmware/b", "firmware/c"]
    assert sorted(storage.keys("firmware/")) == ["firmware/a", "firmware/b", "firmware/c", "firmware/d"]


def test_delete_removes_the_object(backend: tuple[Storage, Leftovers]) -> None:
    storage, leftovers = backend
    storage.write("firmware/gone", blocks(image(1000)))
    storage.delete("firmware/gone")
    assert storage.size("firmware/gone") is None
    assert leftovers() == []


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "firmware/../../x", "firmware/a b", "Firmware/X", ""])
def test_keys_that_could_escape_are_refused(backend: tuple[Storage, Leftovers], key: str) -> None:
    storage, _ = backend
    with pytest.raises(ValueError):
        storage.write(key, iter([b"x"]))
    with pytest.raises(ValueError):
        storage.read(key)


def test_s3_delete_also_aborts_an_unfinished_multipart_upload(ceph: S3Server) -> None:
    storage, leftovers = s3_storage(ceph)
    storage.client.create_multipart_upload(Bucket=storage.bucket, Key="firmware/stale")
    assert leftovers() == ["unfinished:firmware/stale"]
    storage.delete("firmware/stale")
    assert leftovers() == []
