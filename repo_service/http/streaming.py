"""Sending firmware bytes: whole or one range, streamed from storage with backpressure."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import format_datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from repo_service.domain.catalog import FirmwareRecord
from repo_service.domain.downloads import Transfer
from repo_service.http.problems import problem
from repo_service.http.ranges import UnsatisfiableRange, parse_range
from repo_service.storage import ReadsWithoutBlocking, Storage


def representation_headers(record: FirmwareRecord) -> dict[str, str]:
    digest = base64.b64encode(bytes.fromhex(record.sha256)).decode()
    return {
        "Accept-Ranges": "bytes",
        "ETag": f'"{record.sha256}"',
        "Last-Modified": format_datetime(record.created_at, usegmt=True),
        "Content-Disposition": f'attachment; filename="{record.filename}"',
        # RFC 9530: the digest of the whole image, whatever part this response carries.
        "Repr-Digest": f"sha-256=:{digest}:",
    }


async def firmware_response(
    request: Request,
    record: FirmwareRecord,
    storage: Storage,
    headers: dict[str, str],
    begin: Callable[[], Transfer] | None = None,
) -> Response:
    """The image, or the range asked for; begin() opens the transfer that a charger's download reports to."""
    headers = {**representation_headers(record), **headers}
    try:
        byte_range = parse_range(request.headers.get("range"), record.size)
    except UnsatisfiableRange:
        return problem(416, "range-not-satisfiable", "Range not satisfiable", f"the image has {record.size} bytes",
                       headers={"Content-Range": f"bytes */{record.size}"})
    if request.headers.get("if-range") not in (None, headers["ETag"]):
        byte_range = None  # the client holds another version: send this one whole
    start, length, status = 0, record.size, 200
    if byte_range is not None:
        start, length, status = byte_range.start, byte_range.length, 206
        headers["Content-Range"] = byte_range.content_range(record.size)
    else:
        headers["Content-Digest"] = headers["Repr-Digest"]
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    blocks = await run_in_threadpool(storage.read, record.storage_key, start, length)
    return StreamingResponse(
        _counted(blocks, start, begin),
        status_code=status, headers=headers, media_type="application/octet-stream",
    )


async def _counted(
    blocks: Iterator[bytes], start: int, begin: Callable[[], Transfer] | None,
) -> AsyncIterator[bytes | memoryview]:
    # Each block is sent before the next is read: a slow client holds one block, not the image.
    # The transfer begins here, not before the response: only a body that starts also ends (and finishes it).
    transfer = begin() if begin is not None else None
    try:
        async for block in _pulled(blocks):
            yield block
            if transfer is not None:
                transfer.progress(len(block))
    finally:
        _close(blocks)
        if transfer is not None:
            transfer.finish(start)


async def _pulled(blocks: Iterator[bytes]) -> AsyncIterator[bytes | memoryview]:
    """Blocks read in the event loop when that cannot block (page cache), else in a worker thread."""
    read_nowait = blocks.read_nowait if isinstance(blocks, ReadsWithoutBlocking) else None
    while True:
        block = read_nowait() if read_nowait is not None else None
        if block is None:
            block = await run_in_threadpool(next, blocks, b"")
        if not block:
            return
        yield block


def _close(blocks: Iterator[bytes]) -> None:
    close = getattr(blocks, "close", None)
    if close is None:
        return
    try:
        close()
    except ValueError:
        pass  # a generator still running in its worker thread (client gone mid-read) is closed when collected
