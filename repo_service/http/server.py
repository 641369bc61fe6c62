"""Running the app under uvicorn: per-connection buffers and access logs fit for download tokens."""

from __future__ import annotations

import logging
import re
from typing import Any

import uvicorn
from starlette.types import ASGIApp
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


def serve(app: ASGIApp, settings: Settings, tls: dict[str, Any]) -> None:
    logging.getLogger("uvicorn.access").addFilter(_RedactDownloadTokens())
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
        http=_BoundedWriteBuffers,
        **tls,
    )
