"""A webhook receiver as a CSMS runs one: a local HTTP server that keeps what it got and answers as told."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from repo_service.contract import WEBHOOK_EVENTS
from tests.support.openssl_pki import make_pki

# What the receivers in docs/webhooks.md refuse: a delivery signed longer ago than this is a replay.
REPLAY_WINDOW = 300
SERVER_EXTENSIONS = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                     "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """The receiver's check, written from docs/webhooks.md: signature over timestamp.body, within the window."""
    timestamp = headers.get("fwrepo-timestamp", "")
    if not timestamp.isdigit() or abs((now if now is not None else time.time()) - int(timestamp)) > REPLAY_WINDOW:
        return False
    expected = "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("fwrepo-signature", ""))


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived, to tell sent in parallel from in turn

    @property
    def document(self) -> dict[str, Any]:
        """The delivery's body, held to the model the OpenAPI description's webhooks section gives its event."""
        document = json.loads(self.body)
        model = WEBHOOK_EVENTS[document["event"]]
        data = model.model_fields["data"].annotation
        assert document.keys() == model.model_fields.keys() and document["data"].keys() <= data.model_fields.keys(), \
            (document, model)
        model.model_validate(document)
        return document


@dataclass
class Receiver:
    """Answers each delivery with the next of `answers` (a status code, or "hang": never answer), then 200."""

    answers: list[int | str] = field(default_factory=list)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    scheme: str = "http"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _hung: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/hooks/fwrepo"

    def answer(self) -> int | str:
        with self._lock:
            return self.answers.pop(0) if self.answers else 200

    def events(self, name: str) -> list[Received]:
        with self._lock:
            return [delivery for delivery in self.received if delivery.headers.get("fwrepo-event") == name]

    def wait_for(self, condition: Callable[[], Any], seconds: float = 15) -> Any:
        deadline = time.monotonic() + seconds
        while not (result := condition()):
            assert time.monotonic() < deadline, f"not received within {seconds} s: {self.received}"
            time.sleep(0.05)
        return result


@contextmanager
def running_receiver(answers: list[int | str] | None = None, delay: float = 0.0,
                     tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A receiver on a free loopback port; HTTPS with the certificate tls holds."""
    receiver = Receiver(answers=list(answers or []), delay=delay, scheme="https" if tls else "http")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = receiver.answer()
            with receiver._lock:
                receiver.received.append(Received({name.lower(): value for name, value in self.headers.items()}, body))
            if answer == "hang":
                receiver._hung.wait(60)  # until the test ends: fwrepo must cut the attempt itself
                return
            time.sleep(receiver.delay)
            self.send_response(int(answer))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    server.block_on_close = False
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._hung.set()
        server.shutdown()
        server.server_close()


def receiver_tls(directory: Path) -> tuple[Path, ssl.SSLContext, ssl.SSLContext]:
    """A CA (the file fwrepo is told to trust), and TLS for a receiver on 127.0.0.1 that it issued and for one
    whose certificate comes from a CA nobody trusts."""
    trusted, untrusted = make_pki(directory / "trusted"), make_pki(directory / "untrusted")
    contexts = []
    for pki in (trusted, untrusted):
        certificate, key = pki.issue("receiver", SERVER_EXTENSIONS)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.chain(certificate, with_root=False), key)
        contexts.append(context)
    return trusted.root, contexts[0], contexts[1]
