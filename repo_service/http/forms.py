"""A multipart/form-data body read as it arrives: small fields kept, the file's bytes passed on.

Starlette's own form parser spools files to a temporary file first; for
firmware images of a gigabyte that would write every byte twice. Here the
file part goes straight to storage through a bounded channel, so memory stays
constant and a slow storage backend slows the client down (backpressure).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import anyio.from_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from repo_service.errors import InvalidInput

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024 + 1024
MAX_FIELDS_TOTAL = 1024 * 1024
MAX_PARTS = 1000
MAX_BOUNDARY = 70
# The file's bytes cross from the event loop to the storage thread in blocks
# of this size; the channel holds a few, so at most a few MiB are in flight.
BLOCK = 1024 * 1024
BLOCKS_IN_FLIGHT = 4


class UploadInterrupted(InvalidInput):
    """The body ended before the form did: the client went away or sent a broken form."""


@dataclass(frozen=True)
class RateFloor:
    """The slowest a body may arrive: ``min_rate`` bytes a second over each ``window`` seconds spent waiting for it.

    Only time spent waiting for the client counts, not time the upload waits
    for storage (backpressure). A window that brought enough starts the next
    one at once, without credit: a burst then a stall is abandoned one window later.
    """

    min_rate: int
    window: float

    @property
    def quota(self) -> int:
        return int(self.min_rate * self.window)


class StreamingForm:
    def __init__(self, request: Request, floor: RateFloor) -> None:
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or not params.get(b"boundary"):
            raise InvalidInput("Content-Type", "must be multipart/form-data with a boundary (as curl -F sends)")
        if len(params[b"boundary"]) > MAX_BOUNDARY:
            raise InvalidInput("Content-Type",
                               f"the boundary must be at most {MAX_BOUNDARY} characters (RFC 2046 §5.1.1)")
        self.request = request
        self.floor = floor
        self.fields: dict[str, list[str]] = {}
        self.filename: str | None = None
        self.file_seen = False
        self._parts = 0
        self._fields_bytes = 0
        self._part_name: str | None = None
        self._part_is_file = False
        self._part_value = bytearray()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._pending = bytearray()
        self._ended = False
        self._parser = MultipartParser(
            params[b"boundary"],
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )
        self._send, self._receive = anyio.create_memory_object_stream[bytes | BaseException](BLOCKS_IN_FLIGHT)
        self._first_item = anyio.Event()
        self.on_file_start = lambda: None

    async def feed(self) -> None:
        """Read the whole body on the event loop; hand file bytes to the channel, and errors too."""
        async with self._send:
            try:
                await self._read_body()
            except anyio.BrokenResourceError:
                return  # the storage side stopped listening: it has failed already and says why
            except FormParserError as error:
                await self._fail(InvalidInput("body", f"malformed multipart/form-data: {error}"))
            except ClientDisconnect:
                await self._fail(UploadInterrupted("body", "the client disconnected before the upload ended"))
            except Exception as error:  # handed to the storage thread so that it aborts the write
                await self._fail(error)
            finally:
                self._first_item.set()

    async def data_ready(self) -> None:
        """Wait until there are file bytes for the storage side, or the body has ended or failed.

        An upload takes one of the few upload threads only then: a client that
        trickles its first block holds an event-loop task, not a thread.
        """
        await self._first_item.wait()

    async def _read_body(self) -> None:
        body = self.request.stream().__aiter__()
        waited, received = 0.0, 0
        while True:
            began = time.monotonic()
            try:
                # A client that sends too little for this long has gone or is holding the upload
                # open on purpose, whether or not its connection says so: abandon it.
                with anyio.fail_after(self.floor.window - waited):
                    chunk = await body.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UploadInterrupted("body", f"{received} bytes in {self.floor.window:g} s, under the "
                                        f"{self.floor.min_rate} bytes/s an upload must keep: abandoned") from None
            waited += time.monotonic() - began
            received += len(chunk)
            if received >= self.floor.quota:
                waited, received = 0.0, 0
            if chunk:
                self._parser.write(chunk)
            while len(self._pending) >= BLOCK:
                with memoryview(self._pending) as pending:
                    block = bytes(pending[:BLOCK])  # one copy, not a slice and then a copy
                del self._pending[:BLOCK]
                await self._send_item(block)
        if not self._ended:
            raise UploadInterrupted("body", "the multipart body ended before its closing boundary")
        if self._pending:
            await self._send_item(bytes(self._pending))
            self._pending.clear()

    async def _send_item(self, item: bytes | BaseException) -> None:
        await self._send.send(item)
        self._first_item.set()

    async def _fail(self, error: Exception) -> None:
        try:
            await self._send_item(error)
        except anyio.BrokenResourceError:
            pass

    def stop(self) -> None:
        """Stop taking file bytes: the storage side is done, successfully or not."""
        self._receive.close()

    def file_blocks(self) -> Iterator[bytes]:
        """The file's bytes, for a worker thread; raises whatever stopped the body from completing."""
        while True:
            try:
                item = anyio.from_thread.run(self._receive.receive)
            except anyio.EndOfStream:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidInput("body", f"more than {MAX_PARTS} form parts")
        self._part_name = None
        self._part_is_file = False
        self._part_value.clear()
        self._disposition = b""

    def _on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidInput("body", "a form part has no name in its Content-Disposition")
        self._part_name = options[b"name"].decode("utf-8", "replace")
        if self._part_name == FILE_FIELD:
            if self.file_seen:
                raise InvalidInput(FILE_FIELD, "was given more than once; upload one image per request")
            self.file_seen = True
            self._part_is_file = True
            raw_filename = options.get(b"filename")
            self.filename = raw_filename.decode("utf-8", "replace") if raw_filename else None
            self.on_file_start()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_is_file:
            self._pending += memoryview(data)[start:end]
            return
        self._fields_bytes += end - start
        if len(self._part_value) + end - start > MAX_FIELD_BYTES:
            raise InvalidInput(self._part_name or "body", f"is larger than {MAX_FIELD_BYTES} bytes")
        if self._fields_bytes > MAX_FIELDS_TOTAL:
            raise InvalidInput(self._part_name or "body", f"form fields exceed {MAX_FIELDS_TOTAL} bytes in all")
        self._part_value.extend(data[start:end])

    def _on_part_end(self) -> None:
        if self._part_is_file or self._part_name is None:
            return
        try:
            value = self._part_value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(self._part_name, "is not valid UTF-8") from None
        if "\x00" in value:
            raise InvalidInput(self._part_name, "must not contain NUL characters: PostgreSQL cannot store them")
        self.fields.setdefault(self._part_name, []).append(value)

    def _on_end(self) -> None:
        self._ended = True
