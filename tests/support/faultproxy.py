"""A TCP proxy that can drop the network on command, for fault-injection tests.

Put it between the code under test and an S3 server, then ``cut()`` to make
the storage backend vanish mid-test the way a crashed server or a pulled
cable does (connections reset, new ones refused), and ``restore()`` to bring
it back. It works at the TCP level so the HTTP client's real error paths
(connection pools, retries, timeouts) are exercised, not a mock of them.

It runs an asyncio loop in its own daemon thread so it serves while the test
thread is blocked inside a synchronous client call.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

__all__ = ["FaultProxy"]

_CHUNK = 64 * 1024
# l_onoff=1, l_linger=0: close() then discards unsent data and sends RST
# instead of FIN, so the peer sees "connection reset" rather than a clean EOF
# that an HTTP client could mistake for the end of a response.
_LINGER_RST = struct.pack("ii", 1, 0)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass  # already closed by the peer; nothing left to reset
    writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        # Only touched from the loop thread, so no locking is needed.
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ control

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0)
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:  # surfaced to start()'s caller
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(
            target=run, name=f"FaultProxy->{self.target_port}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if error:
            self._thread.join()
            self._loop = self._thread = None
            raise error[0]
        return self

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until restore().

        Returns only once every connection has been reset, so the test's next
        call is guaranteed to see the outage.
        """
        self._call(self._do_cut())

    def restore(self) -> None:
        self._call(self._set_cut(False))

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            self._call(self._shutdown())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ loop side

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FaultProxy not started")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _set_cut(self, value: bool) -> None:
        self._cut = value

    async def _do_cut(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._do_cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(
        self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._cut:
                # Accept-then-reset rather than closing the listener: a closed
                # port could be re-bound by something else, and "reset" is what
                # a client of a dead server behind a load balancer sees.
                _abort(c_writer)
                return
            try:
                u_reader, u_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                _abort(c_writer)
                return
            if self._cut:  # cut() ran while we were connecting upstream
                _abort(c_writer)
                _abort(u_writer)
                return
            self._writers.update((c_writer, u_writer))
            try:
                await asyncio.gather(
                    self._pump(c_reader, u_writer, c_writer),
                    self._pump(u_reader, c_writer, u_writer),
                )
            finally:
                for w in (c_writer, u_writer):
                    if w in self._writers:
                        self._writers.discard(w)
                        w.close()
        except asyncio.CancelledError:
            # Only stop() cancels handlers; ending quietly keeps asyncio's
            # stream callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.discard(task)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reader_side: asyncio.StreamWriter,
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
            # Pass a half-close on, so a client that shuts down its sending
            # side still receives the rest of the response.
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except OSError:
            # One side reset: pass the reset on to the other, as a real
            # network path would, instead of leaving it waiting forever.
            _abort(writer)
            _abort(reader_side)
