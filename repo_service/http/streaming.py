"""Sending firmware bytes: whole or one range, streamed from storage with backpressure."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import format_datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from repo_service.domain.catalog import FirmwareRecord
from repo_service.domain.downloads import Transfer
from repo_service.http.delivery import DeliveryProbe, probe_of
from repo_service.http.problems import problem
from repo_service.http.ranges import UnsatisfiableRange, parse_range
from repo_service.storage import ReadsWithoutBlocking, Storage

# Blocks read from the page cache in a row before the event loop gets a turn (16 x 64 KiB = 1 MiB).
YIELD_EVERY = 16


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
    begin: Callable[[int, int], Transfer] | None = None,
) -> Response:
    """The image, or the range asked for. A charger's download passes begin(start, length), which opens the
    transfer it reports to before the first byte (and may refuse it: DownloadRefused propagates)."""
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
    transfer = await run_in_threadpool(begin, start, length) if begin is not None else None
    try:
        blocks = await run_in_threadpool(storage.read, record.storage_key, start, length)
    except BaseException:
        if transfer is not None:
            transfer.finish(confirmed=False)
        raise
    return _TransferResponse(
        transfer, _counted(blocks, transfer, probe_of(request.scope)),
        status_code=status, headers=headers, media_type="application/octet-stream",
    )


class _TransferResponse(StreamingResponse):
    """A response whose transfer ends with it, also when its body never started (the client left first)."""

    def __init__(self, transfer: Transfer | None, *arguments: Any, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.transfer = transfer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # The body ends first (it knows what it sent); then the transfer, if the body never started.
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            if self.transfer is not None:
                self.transfer.finish(confirmed=False)  # nothing when the body finished it already


async def _counted(
    blocks: Iterator[bytes], transfer: Transfer | None, probe: DeliveryProbe | None,
) -> AsyncIterator[bytes | memoryview]:
    # Each block is sent before the next is read: a slow client holds one block, not the image.
    confirmed = False
    try:
        async for block in _pulled(blocks):
            if probe is not None and probe.gone:
                break
            yield block
            if probe is not None and probe.gone and not probe.delivered_at_end:
                break  # written into a connection the client had left: it reached no one
            if transfer is not None:
                transfer.progress(len(block))
        else:
            # The last byte is written; the download is complete once the client has it.
            confirmed = transfer is None or probe is None or await probe.confirmed()
    finally:
        _close(blocks)
        if transfer is not None:
            if not confirmed and probe is not None and transfer.bytes_sent == transfer.length:
                # Stopped because the client left once it had read the last byte: whether it had them all
                # was taken when it closed.
                confirmed = bool(probe.delivered_at_end)
            transfer.finish(confirmed)


async def _pulled(blocks: Iterator[bytes]) -> AsyncIterator[bytes | memoryview]:
    """Blocks read in the event loop when that cannot block (page cache), else in a worker thread."""
    read_nowait = blocks.read_nowait if isinstance(blocks, ReadsWithoutBlocking) else None
    in_a_row = 0
    while True:
        block = read_nowait() if read_nowait is not None else None
        if block is None:
            block, in_a_row = await run_in_threadpool(next, blocks, b""), 0
        elif (in_a_row := in_a_row + 1) % YIELD_EVERY == 0:
            # Reads from the page cache never wait: let the loop run now and then, or a client that
            # dropped its connection is noticed only at the end of the image.
            await asyncio.sleep(0)
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
