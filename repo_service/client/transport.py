"""One fwrepo server over HTTPS: the API key as bearer, TLS options, problem documents raised, and retries.

Only calls that may be repeated are retried: GET, HEAD, PUT and DELETE, and the POSTs the API makes
idempotent (status events, which fwrepo keeps once). A POST that may have reached the server is never
sent again: a second campaign or grant would be a second act. A POST whose connection was never
established did not reach it, so that one is retried too.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from repo_service.client.errors import Unreachable, error_from

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# A Retry-After longer than this is a server asking to be left alone; the caller decides what to do then.
MAX_RETRY_AFTER = 60.0


def tls_context(ca_file: str | Path | None, client_certificate: str | Path | tuple[str | Path, str | Path] | None,
                ) -> ssl.SSLContext:
    """The server's certificate checked against ca_file (default: the system's trust store), and ours if given."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if client_certificate is not None:
        certificate, key = (client_certificate if isinstance(client_certificate, tuple)
                            else (client_certificate, None))
        context.load_cert_chain(str(certificate), str(key) if key else None)
    return context


def retry_after(reply: httpx.Response) -> float | None:
    """RFC 9110 §10.2.3: seconds, or an HTTP date; None when absent or unreadable."""
    value = reply.headers.get("retry-after", "").strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max((moment - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER)


class Transport:
    """httpx with fwrepo's conventions; `retries` more attempts after the first, waits doubling from `backoff`."""

    def __init__(self, url: str, api_key: str | None, *, ca_file: str | Path | None = None,
                 client_certificate: str | Path | tuple[str | Path, str | Path] | None = None,
                 timeout: float = 60, retries: int = 4, backoff: float = 0.5, max_backoff: float = 30,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        verify: ssl.SSLContext | bool = (tls_context(ca_file, client_certificate)
                                         if self.url.startswith("https:") else True)
        # Uploads of large images write for long on slow links; reads get the common timeout.
        self.http = httpx.Client(base_url=self.url, headers=headers, verify=verify,
                                 timeout=httpx.Timeout(timeout, write=max(timeout, 300)))
        self.retries, self.backoff, self.max_backoff, self.sleep = retries, backoff, max_backoff, sleep

    def close(self) -> None:
        self.http.close()

    def wait(self, attempt: int, reply: httpx.Response | None = None) -> None:
        """Before attempt `attempt` + 1: the server's Retry-After, else exponential backoff with jitter."""
        delay = retry_after(reply) if reply is not None else None
        if delay is None:
            # Jitter spreads the retries of many clients that failed together (a node restarting).
            delay = min(self.backoff * 2 ** attempt, self.max_backoff) * random.uniform(0.5, 1.0)
        self.sleep(delay)

    def _send(self, method: str, path: str, repeatable: bool, accept: tuple[int, ...],
              prepare: Callable[[], dict[str, Any]] | None, kwargs: dict[str, Any], read: bool,
              follow_redirects: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = self.http.build_request(method, path, **{**kwargs, **(prepare() if prepare else {})})
            try:
                reply = self.http.send(request, stream=True, follow_redirects=follow_redirects)
            except httpx.TransportError as error:
                # Refused or failed before a byte was sent: the server saw nothing, any call may go again.
                never_sent = isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))
                if (repeatable or never_sent) and attempt < self.retries:
                    self.wait(attempt)
                    attempt += 1
                    continue
                raise Unreachable(self.url, error) from error
            try:
                if reply.status_code == 503 and repeatable and attempt < self.retries:
                    reply.close()
                    self.wait(attempt, reply)
                    attempt += 1
                    continue
                if read or (reply.status_code >= 400 and reply.status_code not in accept):
                    reply.read()
            except httpx.TransportError as error:
                reply.close()
                # The reply broke off: the server did act, so only a repeatable call goes again.
                if repeatable and attempt < self.retries:
                    self.wait(attempt)
                    attempt += 1
                    continue
                raise Unreachable(self.url, error) from error
            if reply.status_code >= 400 and reply.status_code not in accept:
                raise error_from(reply)
            return reply

    def request(self, method: str, path: str, *, idempotent: bool | None = None, accept: tuple[int, ...] = (),
                prepare: Callable[[], dict[str, Any]] | None = None, **kwargs: Any) -> httpx.Response:
        """The whole reply, read, after retries; an error status (unless in `accept`) is raised as its exception.

        `idempotent` overrides what the method says (a POST the API makes idempotent, a GET that claims);
        `prepare` gives keyword arguments afresh for each attempt (a file rewound).
        """
        repeatable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        return self._send(method, path, repeatable, accept, prepare, kwargs, read=True)

    @contextmanager
    def stream(self, method: str, path: str, *, follow_redirects: bool = False,
               **kwargs: Any) -> Iterator[httpx.Response]:
        """A reply whose body the caller reads (a download); an error status is raised. Not retried once open:
        the caller knows how much it has and asks for the rest."""
        reply = self._send(method, path, method in IDEMPOTENT_METHODS, (), None, kwargs, read=False,
                           follow_redirects=follow_redirects)
        try:
            yield reply
        finally:
            reply.close()
