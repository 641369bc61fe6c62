"""fwrepo calling out: one signed POST to a webhook receiver, to an address checked first, within a hard deadline.

The receiver's URL is the CSMS's to choose, so the request is the server-side request forgery every webhook
feature invites: a name that resolves to 127.0.0.1, 169.254.169.254 (a cloud's metadata service) or the
operator's own network would let a CSMS key probe what only fwrepo can reach. The name is resolved when the
request is sent (not only when the webhook is registered: DNS can change after), every address it resolves
to is checked, and the connection goes to the checked address itself, so that a second lookup cannot
answer differently (DNS rebinding).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_AGENT = "fwrepo-webhooks/1"
LOOPBACK_NAMES = frozenset({"localhost"})


class DestinationRefused(Exception):
    """The URL's host is somewhere fwrepo does not send requests to; the message says why."""


@dataclass(frozen=True)
class Answer:
    """What one attempt came to: the receiver's status code, or why there was none."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def is_loopback_host(host: str) -> bool:
    """Whether the URL's host names this machine itself (checked on its text, before any lookup)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal_of_literal(host: str) -> str | None:
    """Why a host written as an address may not be sent to (loopback, private, ...), or None."""
    try:
        return _refusal(ipaddress.ip_address(host))
    except ValueError:
        return None  # a name: judged when it is resolved


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    # An IPv4 address written as IPv6 (::ffff:127.0.0.1) reaches the IPv4 host: judge that one.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, refused in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                          ("private", address.is_private), ("multicast", address.is_multicast),
                          ("reserved", address.is_reserved), ("unspecified", address.is_unspecified)):
        if refused:
            return kind
    return None


def resolve(url: str, *, allow_http: bool, allow_private: bool) -> tuple[str, int, str]:
    """The address to connect to for this URL (host, port, checked address); DestinationRefused if none may be."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise DestinationRefused(f"{host} does not resolve: {error.strerror}") from None
    addresses = [ipaddress.ip_address(entry[4][0].split("%", 1)[0]) for entry in found]
    if parts.scheme == "http" and not allow_http and not all(address.is_loopback for address in addresses):
        raise DestinationRefused(f"{host} is not a loopback address: plain http is refused (FWREPO_WEBHOOK_ALLOW_HTTP)")
    if not allow_private:
        # Every address is checked, not only the first: a name may resolve to a public and a private one.
        for address in addresses:
            kind = _refusal(address)
            if kind is not None:
                raise DestinationRefused(f"{host} resolves to {address}, a {kind} address "
                                         "(FWREPO_WEBHOOK_ALLOW_PRIVATE)")
    return host, port, str(addresses[0])


def post(url: str, body: bytes, headers: Mapping[str, str], *, deadline: float, allow_http: bool,
         allow_private: bool, tls: ssl.SSLContext) -> Answer:
    """POST body to url and wait for the status line at most `deadline` seconds, whatever the receiver does;
    an https:// receiver's certificate is checked with tls."""
    started = time.monotonic()
    try:
        status = _post(url, body, headers, deadline, allow_http, allow_private, tls)
        return Answer(status, None, _since(started))
    except DestinationRefused as refusal:
        return Answer(None, f"refused: {refusal}", _since(started))
    except (OSError, http.client.HTTPException) as error:
        if time.monotonic() - started >= deadline:
            return Answer(None, f"no answer within {deadline:g} s", _since(started))
        return Answer(None, f"{type(error).__name__}: {error}"[:300], _since(started))


def _post(url: str, body: bytes, headers: Mapping[str, str], deadline: float, allow_http: bool,
          allow_private: bool, tls: ssl.SSLContext) -> int:
    parts = urlsplit(url)
    started = time.monotonic()
    host, port, address = resolve(url, allow_http=allow_http, allow_private=allow_private)
    # The system resolver keeps its own time, which nothing here can cut short; but once it has taken the
    # whole deadline nothing is sent, so that no byte leaves after the deadline (nor after the node's claim).
    remaining = deadline - (time.monotonic() - started)
    if remaining <= 0:
        raise TimeoutError(f"resolving {host} took the whole deadline")
    connection = socket.create_connection((address, port), timeout=remaining)
    # Socket timeouts bound each read, not the whole answer: a receiver sending a byte a second would
    # hold the attempt forever. At the deadline the socket is shut, which ends any read in progress.
    # Late-bound: after the TLS wrap, the TLS socket is the one to shut.
    cut = threading.Timer(remaining, lambda: _shut(connection))
    cut.start()
    try:
        if parts.scheme == "https":
            connection = tls.wrap_socket(connection, server_hostname=host)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc.rsplit('@', 1)[-1]}", f"User-Agent: {USER_AGENT}",
                "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close",
                *(f"{name}: {value}" for name, value in headers.items())]
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
        answer = http.client.HTTPResponse(connection)  # type: ignore[arg-type]
        answer.begin()
        return answer.status
    finally:
        cut.cancel()
        connection.close()


def _shut(connection: socket.socket) -> None:
    try:
        # socket.socket's own shutdown, also for a TLS socket: it ends a read blocked in another thread.
        socket.socket.shutdown(connection, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
