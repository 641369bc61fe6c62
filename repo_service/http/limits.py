"""What one connection, one request head and one client address may hold: the limits an attacker meets first.

uvicorn's httptools protocol parses a request's head with no bound on its
size, its number of fields or the time it takes to arrive, and holds a
connection that never sends a byte for ever. Ten unfinished 32 MiB headers
took the server from 106 to 516 MB; a header line every 5 s kept a
connection open indefinitely (slowloris). ``LimitedProtocol`` is that
protocol with the head bounded in bytes, fields and time, and the
connections of one client address counted: what it refuses never reaches
the application. It also hands each request the client certificate its
TLS connection presented (ASGI's "tls" extension), for downloads bound to
the charger's certificate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from repo_service.http.delivery import EXTENSION, DeliveryProbe
from repo_service.http.problems import problem
from repo_service.settings import Settings

# A charger's IPv6 network is a /64 (one per cellular device or site), and
# whoever holds one holds all 2^64 addresses in it: they count as one client.
IPV6_CLIENT_PREFIX = 64
# Seconds a client refused for holding too many connections is asked to wait.
RETRY_AFTER = 5


def _refusal(status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole problem-details reply that closes the connection, written before any application sees the request."""
    response = problem(status, slug, title, detail, headers)
    lines = [STATUS_LINE[status], *(name + b": " + value + b"\r\n" for name, value in response.raw_headers),
             b"connection: close\r\n\r\n", response.body]
    return b"".join(lines)


@dataclass(frozen=True)
class ConnectionLimits:
    """The head limits and per-address cap of one server, and the replies that refuse past them (rendered once)."""

    max_head_bytes: int
    max_head_fields: int
    head_timeout: float
    connections_per_address: int
    write_high_water: int  # bytes a connection's transport buffers before the response must wait

    @classmethod
    def from_settings(cls, settings: Settings, write_high_water: int) -> ConnectionLimits:
        return cls(settings.http_max_header_bytes, settings.http_max_header_fields, settings.http_header_timeout,
                   settings.http_max_connections_per_address, write_high_water)

    @cached_property
    def head_too_large(self) -> bytes:
        return _refusal(431, "header-fields-too-large", "Request header fields too large",
                        f"the request line and headers must fit in {self.max_head_bytes} bytes "
                        f"and {self.max_head_fields} header fields")

    @cached_property
    def head_too_slow(self) -> bytes:
        return _refusal(408, "request-timeout", "Request timeout",
                        f"the request line and headers must arrive within {self.head_timeout:g} s")

    @cached_property
    def too_many_connections(self) -> bytes:
        return _refusal(503, "too-many-connections", "Too many connections",
                        f"this address already holds {self.connections_per_address} connections; "
                        "finish or close one first", {"Retry-After": str(RETRY_AFTER)})


def client_key(host: str) -> str:
    """The client a connection counts against: its IPv4 address, or its IPv6 /64."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounding each request head and the connections of each client address.

    The head's deadline runs from the TLS handshake for a connection's first
    request and from the first byte of each later one (the idle time between
    requests is uvicorn's keep-alive timeout). Its size is counted as bytes
    arrive, so an unfinished head is cut at the limit, not when it ends.
    Build the class for a server with ``limited_protocol``.
    """

    limits: ClassVar[ConnectionLimits]
    open_connections: ClassVar[Counter[str]]

    def __init__(self, *arguments: Any, **options: Any) -> None:
        super().__init__(*arguments, **options)
        self._client_key: str | None = None
        self._head_deadline: asyncio.TimerHandle | None = None
        self._reading_head = False
        self._bytes_fed = 0
        self._head_began_at = 0  # bytes fed before the chunk in which this head began
        self._head_bytes = 0  # of the request line and the header fields completed so far
        self._head_fields = 0
        self._refused = False
        self._probe: DeliveryProbe | None = None
        self._tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        self._tls = _tls_extension(transport)
        if self.client is not None:
            key = client_key(self.client[0])
            if self.open_connections[key] >= self.limits.connections_per_address:
                self._refuse(self.limits.too_many_connections)
                return
            self.open_connections[key] += 1
            self._client_key = key
        self._reading_head = True
        self._arm_head_deadline()

    def eof_received(self) -> None:
        # The client closed: whether everything had left for it is known now (http/delivery.py).
        if self._probe is not None:
            self._probe.ended(None)
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._probe is not None:
            self._probe.ended(exc)
        self._disarm_head_deadline()
        if self._client_key is not None:
            self.open_connections[self._client_key] -= 1
            if not self.open_connections[self._client_key]:
                del self.open_connections[self._client_key]
            self._client_key = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the refusal is on its way and the connection closing: nothing more is parsed
        super().data_received(data)
        self._bytes_fed += len(data)
        # The chunk that began this head may hold the previous body's tail too: the count is
        # over by at most one chunk, never under, so an unfinished head is cut near the limit.
        if self._reading_head and self._bytes_fed - self._head_began_at > self.limits.max_head_bytes:
            self._head_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_began_at = self._bytes_fed
        self._head_bytes = self._head_fields = 0
        if self._head_deadline is None:
            self._arm_head_deadline()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_head_bytes:
            self._head_too_large()
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        self._head_fields += 1
        if self._head_bytes > self.limits.max_head_bytes or self._head_fields > self.limits.max_head_fields:
            self._head_too_large()
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._disarm_head_deadline()
        if not self._refused:
            # Before the request's cycle starts: a download's body asks it whether its last byte left.
            extensions = self.scope.setdefault("extensions", {})
            self._probe = extensions[EXTENSION] = DeliveryProbe(self.transport)
            if self._tls is not None:
                extensions["tls"] = self._tls
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _head_too_large(self) -> None:
        if not self._refused:
            self._refuse(self.limits.head_too_large)

    def _refuse(self, reply: bytes) -> None:
        """Answer ``reply`` and close; the parser may still be mid-chunk, so its callbacks see ``_refused``."""
        self._refused = True
        self._disarm_head_deadline()
        if self.transport.is_closing():
            return
        # A head pipelined behind a response still being sent gets no reply: it would land inside that one.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(reply)
        self.transport.close()

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.limits.head_timeout, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        if not self._reading_head or self._refused:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A head pipelined behind a response still being sent is not read until that ends.
            self._arm_head_deadline()
        elif self._bytes_fed > self._head_began_at:
            self._refuse(self.limits.head_too_slow)
        else:
            self._refused = True
            self.transport.close()  # nothing was asked: nothing to answer


def _tls_extension(transport: asyncio.Transport) -> dict[str, Any] | None:
    """ASGI's TLS extension for a connection (None without TLS); its handshake is done when the protocol starts."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    leaf = ssl_object.getpeercert(binary_form=True)
    # Only the leaf: Python 3.11 does not give the chain the client sent (the handshake checked it).
    return {"server_cert": None, "client_cert_chain": [ssl.DER_cert_to_PEM_cert(leaf)] if leaf else [],
            "client_cert_name": None, "client_cert_error": None, "tls_version": None, "cipher_suite": None}


def client_certificate(request: Request) -> bytes | None:
    """The DER certificate the request's TLS connection presented, if any."""
    chain = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_chain")
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


def limited_protocol(limits: ConnectionLimits) -> type[LimitedProtocol]:
    """The protocol class for one server: these limits, and one count of connections per client address."""

    class Limited(LimitedProtocol):
        pass

    Limited.limits = limits
    Limited.open_connections = Counter()
    return Limited
