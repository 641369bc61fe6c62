"""A plain-HTTP server on a free port that answers each request with the next reply of a script.

For what a real fwrepo will not do on demand: a 503 then a good answer, a connection dropped mid-body, a
reply never sent. It counts what reached it, so a test can tell a retried call from one sent once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

# One reply: writes to the handler's socket (or drops it); the handler's path, headers and body are read.
Reply = Callable[[BaseHTTPRequestHandler], None]


def answer(status: int, body: bytes = b"", content_type: str = "application/json",
           headers: dict[str, str] | None = None) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def hang_up(handler: BaseHTTPRequestHandler) -> None:
    """The request arrived, and the connection closes with no reply: a node that died while acting on it."""
    handler.close_connection = True


class ScriptedServer:
    def __init__(self, *replies: Reply, port: int = 0) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                script.requests.append((self.command, self.path, dict(self.headers)))
                script.replies.pop(0)(self)

            do_GET = do_POST = do_HEAD = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test reads `requests`, not a log

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        # A client's kept-alive connection must not hold the test's end.
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
