"""The attacks of issue 13 finding 2 on the HTTPS port: huge or endless request heads, slowloris, trickled uploads.

Each test talks raw HTTP over TLS sockets to a real `fwrepo serve` whose
deadlines are shortened through its settings. Each attack comes from a source
address of its own on the loopback network (127.0.0.N), so the per-address
connection cap of one test never meets another's connections.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from repo_service.http.limits import client_key
from tests.support.builds import image, unique_vendor, upload
from tests.support.fwrepo import Fwrepo, start_fwrepo

HEADER_TIMEOUT = 2
KEEP_ALIVE_TIMEOUT = 1
UPLOAD_MIN_RATE = 1000
UPLOAD_RATE_WINDOW = 3
CONNECTIONS_PER_ADDRESS = 20
LIMITS = {
    "FWREPO_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "FWREPO_HTTP_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT),
    "FWREPO_UPLOAD_MIN_RATE": str(UPLOAD_MIN_RATE),
    "FWREPO_UPLOAD_RATE_WINDOW": str(UPLOAD_RATE_WINDOW),
    "FWREPO_HTTP_MAX_CONNECTIONS_PER_ADDRESS": str(CONNECTIONS_PER_ADDRESS),
}
MiB = 1024 * 1024
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fwrepo]:
    server = start_fwrepo(tmp_path_factory.mktemp("limited"), **LIMITS)
    yield server
    server.stop()


def connect(fwrepo: Fwrepo, source: str) -> ssl.SSLSocket:
    """A TLS connection from ``source`` (a loopback address), handshake done."""
    raw = socket.create_connection(("127.0.0.1", fwrepo.port), timeout=30, source_address=(source, 0))
    return fwrepo.tls().wrap_socket(raw, server_hostname="127.0.0.1")


def read_until_closed(connection: ssl.SSLSocket, timeout: float) -> tuple[bytes, float | None]:
    """What the server sent, and after how many seconds it closed (None: still open after ``timeout``)."""
    began = time.monotonic()
    received = b""
    connection.settimeout(timeout)
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except TimeoutError:
        return received, None
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        pass  # a reset after the reply: the server closed with our bytes unread
    return received, time.monotonic() - began


def status(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
    assert match, reply[:200]
    return int(match.group(1))


def read_response(connection: ssl.SSLSocket) -> bytes:
    """One whole response (it has a Content-Length), leaving the connection open."""
    connection.settimeout(5)
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def send_quietly(connection: ssl.SSLSocket, data: bytes) -> None:
    """Send what an attacker sends; the server cutting it short is the point, not an error."""
    try:
        connection.sendall(data)
    except OSError:
        pass


def answered(connection: ssl.SSLSocket) -> bytes | None:
    """What the server has sent so far without waiting (b"": it closed), or None while it says nothing.

    Not select() alone: TLS 1.3 session tickets make a socket readable with nothing to read.
    """
    connection.settimeout(0)
    try:
        return connection.recv(65536)
    except ssl.SSLWantReadError:
        return None
    except (ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        connection.settimeout(30)


def trickle(connection: ssl.SSLSocket, opening: bytes, drop: bytes, interval: float,
            timeout: float) -> tuple[bytes, float | None]:
    """Send ``opening``, then ``drop`` every ``interval`` seconds until the server answers or closes.

    What it sent, and after how many seconds (from the opening) the server closed. One thread
    reads and writes: an SSL socket must not be used by two at once.
    """
    began = time.monotonic()
    send_quietly(connection, opening)
    first = None
    while first is None and time.monotonic() - began < timeout:
        select.select([connection], [], [], interval)
        first = answered(connection)
        if first is None:
            send_quietly(connection, drop)
    rest, closed_after = read_until_closed(connection, max(0.1, timeout - (time.monotonic() - began)))
    return (first or b"") + rest, None if closed_after is None else time.monotonic() - began


def flood(connection: ssl.SSLSocket, data: bytes, timeout: float) -> tuple[bytes, float | None]:
    """Send ``data`` in pieces until the server answers (or cuts us off), then read what it says."""
    first = None
    for offset in range(0, len(data), 64 * 1024):
        first = answered(connection)
        if first is not None:
            break
        try:
            connection.sendall(data[offset:offset + 64 * 1024])
        except OSError:
            break
    rest, closed_after = read_until_closed(connection, timeout)
    return (first or b"") + rest, closed_after


def vm_rss(fwrepo: Fwrepo) -> int:
    """Resident memory of the `fwrepo serve` process, bytes."""
    assert fwrepo.process is not None
    status_text = Path(f"/proc/{fwrepo.process.pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status_text, re.M).group(1)) * 1024


def test_a_head_over_16_kib_is_refused_431_and_one_under_it_is_served(limited: Fwrepo) -> None:
    with connect(limited, "127.0.0.2") as connection:
        send_quietly(connection, HEALTH + b"Connection: close\r\nX-Padding: " + b"a" * (15 * 1024) + b"\r\n\r\n")
        assert status(read_until_closed(connection, 5)[0]) == 200
    with connect(limited, "127.0.0.2") as connection:
        reply, closed_after = flood(connection, HEALTH + b"X-Padding: " + b"a" * (8 * MiB) + b"\r\n\r\n", 5)
    assert status(reply) == 431 and closed_after is not None
    assert b"application/problem+json" in reply and b"16384 bytes" in reply


def test_an_unfinished_head_is_cut_at_the_limit_not_when_it_ends(limited: Fwrepo) -> None:
    with connect(limited, "127.0.0.3") as connection:
        reply, closed_after = flood(connection, HEALTH + b"X-Big: " + b"a" * (32 * MiB), 10)
    assert status(reply) == 431 and closed_after is not None


def fields(count: int) -> bytes:
    return b"".join(b"X-%d: 1\r\n" % number for number in range(count))


def test_more_than_100_header_fields_are_refused_431(limited: Fwrepo) -> None:
    with connect(limited, "127.0.0.4") as connection:  # Host, 98 more and Connection: 100 fields
        send_quietly(connection, HEALTH + fields(98) + b"Connection: close\r\n\r\n")
        assert status(read_until_closed(connection, 5)[0]) == 200
    with connect(limited, "127.0.0.4") as connection:
        reply, _ = flood(connection, HEALTH + fields(20_000) + b"\r\n", 5)
    assert status(reply) == 431 and b"100 header fields" in reply


def test_a_head_trickled_line_by_line_is_closed_408_at_the_deadline(limited: Fwrepo) -> None:
    with connect(limited, "127.0.0.5") as connection:
        reply, closed_after = trickle(connection, HEALTH, b"X-Slow: 1\r\n", 0.3, HEADER_TIMEOUT + 5)
    assert status(reply) == 408
    assert closed_after is not None and HEADER_TIMEOUT - 0.5 < closed_after < HEADER_TIMEOUT + 1.5


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(limited: Fwrepo) -> None:
    with connect(limited, "127.0.0.6") as connection:
        reply, closed_after = read_until_closed(connection, HEADER_TIMEOUT + 5)
    assert reply == b"" and closed_after is not None and closed_after < HEADER_TIMEOUT + 1.5


def test_a_kept_alive_connection_is_closed_when_idle_and_its_next_head_has_the_deadline_too(limited: Fwrepo) -> None:
    with connect(limited, "127.0.0.7") as connection:
        connection.sendall(HEALTH + b"\r\n")
        reply, closed_after = read_until_closed(connection, KEEP_ALIVE_TIMEOUT + 3)
    assert status(reply) == 200
    assert closed_after is not None and closed_after < KEEP_ALIVE_TIMEOUT + 1.5
    # Past the keep-alive timeout's reach: a next request begun in time, then trickled.
    with connect(limited, "127.0.0.7") as connection:
        connection.sendall(HEALTH + b"\r\n")
        assert status(read_response(connection)) == 200
        reply, closed_after = trickle(connection, HEALTH, b"X-Slow: 1\r\n", 0.3, HEADER_TIMEOUT + 5)
    assert status(reply) == 408 and closed_after is not None and closed_after < HEADER_TIMEOUT + 1.5


def upload_opening(fwrepo: Fwrepo, vendor: str, version: str) -> bytes:
    """An upload's head and form fields up to the first bytes of the image: what a trickler sends at once."""
    body = (
        f"--b\r\nContent-Disposition: form-data; name=\"vendor\"\r\n\r\n{vendor}"
        "\r\n--b\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\nAC22"
        f"\r\n--b\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n{version}"
        "\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n\r\nFW"
    ).encode()
    head = (
        "POST /api/v1/firmware HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {fwrepo.key('release')}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body) + MiB}\r\n\r\n"
    ).encode()
    return head + body


def partial_files(fwrepo: Fwrepo) -> list[Path]:
    return [path for path in (fwrepo.data_dir / "storage").rglob("*.partial")]


def stored_builds(fwrepo: Fwrepo, vendor: str) -> int:
    with fwrepo.client("release") as client:
        return client.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"]


def test_an_upload_trickled_byte_by_byte_is_abandoned_and_nothing_stored(limited: Fwrepo) -> None:
    vendor = unique_vendor()
    opening = upload_opening(limited, vendor, "1.0.0")
    with connect(limited, "127.0.0.8") as connection:
        reply, closed_after = trickle(connection, opening, b"x", 0.5, UPLOAD_RATE_WINDOW + 10)
    assert status(reply) == 422 and b"abandoned" in reply, reply
    assert closed_after is not None and closed_after < UPLOAD_RATE_WINDOW + 2
    assert partial_files(limited) == []
    assert stored_builds(limited, vendor) == 0


def test_a_ninth_upload_is_served_while_eight_trickle_and_the_eight_are_then_abandoned(limited: Fwrepo) -> None:
    vendor = unique_vendor()
    answers: list[tuple[bytes, float]] = []
    openings = [upload_opening(limited, vendor, f"1.0.{number}") for number in range(8)]
    began = time.monotonic()

    def trickler(number: int) -> None:
        with connect(limited, "127.0.0.9") as connection:
            reply, _ = trickle(connection, openings[number], b"x", 0.5, UPLOAD_RATE_WINDOW + 10)
            answers.append((reply, time.monotonic() - began))

    tricklers = [threading.Thread(target=trickler, args=(number,)) for number in range(8)]
    for thread in tricklers:
        thread.start()
    time.sleep(0.5)  # every trickler is past its head and waiting on its image
    with limited.client("release") as client:
        client.timeout = UPLOAD_RATE_WINDOW + 10
        ninth = upload(client, vendor, "9.0.0", image(2 * MiB))
    ninth_served_after = time.monotonic() - began
    for thread in tricklers:
        thread.join()
    assert ninth.status_code == 201, ninth.text
    assert sorted(status(reply) for reply, _ in answers) == [422] * 8
    assert ninth_served_after < min(answered for _, answered in answers)
    assert partial_files(limited) == []
    assert stored_builds(limited, vendor) == 1


def test_one_address_holds_at_most_its_connections_and_others_are_still_served(tmp_path: Path) -> None:
    # Its own server, with a head deadline long enough that held connections stay until the test closes them.
    crowded = start_fwrepo(tmp_path, **{**LIMITS, "FWREPO_HTTP_HEADER_TIMEOUT": "60",
                                        "FWREPO_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "5"})
    try:
        held = [connect(crowded, "127.0.0.10") for _ in range(5)]
        with connect(crowded, "127.0.0.10") as refused:
            reply, closed_after = read_until_closed(refused, 5)
        assert status(reply) == 503 and b"retry-after: 5" in reply.lower() and closed_after is not None
        with connect(crowded, "127.0.0.11") as other:
            other.sendall(HEALTH + b"Connection: close\r\n\r\n")
            assert status(read_until_closed(other, 5)[0]) == 200
        held.pop().close()
        for _attempt in range(50):  # the server sees the close on its own time
            with connect(crowded, "127.0.0.10") as again:
                send_quietly(again, HEALTH + b"Connection: close\r\n\r\n")
                reply, _ = read_until_closed(again, 5)
            if status(reply) == 200:
                break
            time.sleep(0.1)
        assert status(reply) == 200
        for connection in held:
            connection.close()
    finally:
        crowded.stop()


def test_an_ipv6_client_is_its_64_and_an_ipv4_mapped_one_its_ipv4_address() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"


def test_memory_stays_flat_while_heads_are_huge_unfinished_or_trickled(limited: Fwrepo) -> None:
    with connect(limited, "127.0.0.12") as warm:  # the first requests' allocations are not the attack's
        warm.sendall(HEALTH + b"Connection: close\r\n\r\n")
        read_until_closed(warm, 5)
    baseline = vm_rss(limited)
    huge = [connect(limited, "127.0.0.13") for _ in range(10)]
    trickled = [connect(limited, "127.0.0.14") for _ in range(CONNECTIONS_PER_ADDRESS)]
    silent = [connect(limited, "127.0.0.15") for _ in range(CONNECTIONS_PER_ADDRESS)]
    attackers = [threading.Thread(target=flood, args=(connection, HEALTH + b"X-Big: " + b"a" * (32 * MiB), 5))
                 for connection in huge]
    attackers += [threading.Thread(target=trickle, args=(connection, HEALTH, b"X-Slow: 1\r\n", 0.2, HEADER_TIMEOUT + 3))
                  for connection in trickled]
    for thread in attackers:
        thread.start()
    peak = baseline
    deadline = time.monotonic() + HEADER_TIMEOUT + 1
    while time.monotonic() < deadline:
        peak = max(peak, vm_rss(limited))
        time.sleep(0.02)
    for thread in attackers:
        thread.join()
    for connection in [*huge, *trickled, *silent]:
        connection.close()
    growth = peak - baseline
    # Before the limits, each unfinished 32 MiB head was held whole: ten of them added about 400 MB.
    assert growth < 25 * MiB, f"RSS grew {growth / MiB:.1f} MiB over {baseline / MiB:.1f} MiB"
