"""Running the app under uvicorn: connections limited (``limits``) and access logs fit for download tokens."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from repo_service.errors import SettingsError
from repo_service.http.limits import ConnectionLimits, limited_protocol
from repo_service.settings import Settings
from repo_service.tls import NO_CHECK_TIME

# asyncio's TLS transport buffers up to 512 KiB per connection before it asks
# the app to wait; with thousands of chargers reading slowly that buffer, not
# the file, is what fills memory (bench/download.py, slow clients).
WRITE_HIGH_WATER = 64 * 1024
# uvicorn's own default: connections waiting to be accepted while the node is busy.
BACKLOG = 2048
_TOKEN_IN_PATH = re.compile(r"^/d/[^/?]*")


class _RedactDownloadTokens(logging.Filter):
    """A download URL's token is a credential: access logs show the request without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            arguments = list(record.args)
            arguments[2] = _TOKEN_IN_PATH.sub("/d/[token]", arguments[2])
            record.args = tuple(arguments)
        return True


class _Config(uvicorn.Config):
    def load(self) -> None:
        super().load()
        if self.ssl is not None and self.ssl_ca_certs:  # charger certificates asked for (repo_service/tls.py)
            self.ssl.verify_flags |= NO_CHECK_TIME


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it accepts connections, and telling the app at the first SIGTERM that it is
    stopping (so /readyz says 503)."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None], on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_listening = on_listening
        self.on_exit = on_exit

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_listening()

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


def listen(settings: Settings) -> socket.socket:
    """The API port, bound now: a taken one stops start-up with one line naming FWREPO_PORT, not uvicorn's error."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((settings.host, settings.port))
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        raise SettingsError("FWREPO_PORT", f"cannot listen on {settings.host}:{settings.port}: "
                            f"{error.strerror or error} (another fwrepo? set another port)") from None
    return listener


def serve(app: Starlette, settings: Settings, tls: dict[str, Any], listener: socket.socket,
          on_listening: Callable[[], None], on_exit: Callable[[], None]) -> None:
    """Serve on ``listener`` until SIGTERM/SIGINT; running downloads then get FWREPO_SHUTDOWN_GRACE seconds to finish.

    ``on_listening`` is called once connections are accepted.
    """
    logging.getLogger("uvicorn.access").addFilter(_RedactDownloadTokens())

    def stopping() -> None:
        app.state.stopping.set()
        on_exit()

    config = _Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # its lines go through fwrepo's own handler: the same format and request ids
        server_header=False,
        http=limited_protocol(ConnectionLimits.from_settings(settings, WRITE_HIGH_WATER)),
        timeout_keep_alive=settings.http_keep_alive_timeout,
        timeout_graceful_shutdown=settings.shutdown_grace,
        backlog=BACKLOG,
        **tls,
    )
    _Server(config, on_listening, stopping).run(sockets=[listener])
