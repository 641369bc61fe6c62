"""Running the app under uvicorn: per-connection buffers and access logs fit for download tokens."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from repo_service.settings import Settings

# asyncio's TLS transport buffers up to 512 KiB per connection before it asks
# the app to wait; with thousands of chargers reading slowly that buffer, not
# the file, is what fills memory (bench/download.py, slow clients).
WRITE_HIGH_WATER = 64 * 1024
_TOKEN_IN_PATH = re.compile(r"^/d/[^/?]*")


class _BoundedWriteBuffers(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)


class _RedactDownloadTokens(logging.Filter):
    """A download URL's token is a credential: access logs show the request without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            arguments = list(record.args)
            arguments[2] = _TOKEN_IN_PATH.sub("/d/[token]", arguments[2])
            record.args = tuple(arguments)
        return True


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app at the first SIGTERM that it is stopping (so /readyz says 503)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises SIGTERM once it has stopped, killing the process before fwrepo's
            # own shutdown (FTPS sessions' grace, last records) runs; fwrepo exits 0 instead.
            self._captured_signals.clear()


def serve(app: Starlette, settings: Settings, tls: dict[str, Any], on_exit: Callable[[], None]) -> None:
    """Serve until SIGTERM/SIGINT; running downloads then get FWREPO_SHUTDOWN_GRACE seconds to finish."""
    logging.getLogger("uvicorn.access").addFilter(_RedactDownloadTokens())

    def stopping() -> None:
        app.state.stopping.set()
        on_exit()

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # its lines go through fwrepo's own handler: the same format and request ids
        server_header=False,
        http=_BoundedWriteBuffers,
        timeout_graceful_shutdown=settings.shutdown_grace,
        **tls,
    )
    _Server(config, stopping).run()
