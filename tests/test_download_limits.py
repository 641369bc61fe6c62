"""max_downloads holds as an attacker would try it: parallel, in a loop, by ranges, over FTPS, across a crash.

And an honest charger that resumes after its link dropped is never refused for it (issue 13, finding 1).
"""

from __future__ import annotations

import ftplib
import hashlib
import socket
import ssl
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.builds import image
from tests.support.fwrepo import Fwrepo, curl, start_fwrepo
from tests.support.grants import grant_for

MiB = 1024 * 1024


def fetch(fwrepo: Fwrepo, location: str, *headers: str) -> tuple[int, bytes]:
    """One GET as a charger's libcurl makes it: the status and the body."""
    arguments = [item for header in headers for item in ("-H", header)]
    result = subprocess.run(["curl", "-sS", "--cacert", fwrepo.ca, "-o", "-", "-w", "\n%{http_code}", *arguments,
                             location], capture_output=True, timeout=60)
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), body


def records(fwrepo: Fwrepo, grant_id: int) -> list[dict]:
    with fwrepo.client("csms") as csms:
        return csms.get(f"/api/v1/grants/{grant_id}").json()["downloads"]


def whole_copies(replies: list[tuple[int, bytes]], content: bytes) -> int:
    return sum(1 for status, body in replies if status == 200 and body == content)


def test_ten_parallel_gets_of_a_one_download_grant_give_one_copy(fwrepo: Fwrepo) -> None:
    content = image(2 * MiB)
    _, grant = grant_for(fwrepo, content, max_downloads=1)
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: fetch(fwrepo, grant["location"]), range(10)))
    assert whole_copies(replies, content) == 1
    assert sorted(status for status, _ in replies) == [200] + [410] * 9


def test_a_tight_loop_gets_as_many_copies_as_the_grant_allows(fwrepo: Fwrepo) -> None:
    content = image(1 * MiB)
    _, grant = grant_for(fwrepo, content, max_downloads=2)
    replies = [fetch(fwrepo, grant["location"]) for _ in range(30)]
    assert whole_copies(replies, content) == 2 and {status for status, _ in replies[2:]} == {410}


def test_ranges_that_never_include_the_last_byte_cannot_copy_the_image_again_and_again(fwrepo: Fwrepo) -> None:
    size = 1 * MiB
    content = image(size)
    _, grant = grant_for(fwrepo, content, max_downloads=1)
    served = 0
    for headers in [f"Range: bytes=0-{size - 2}"] * 5 + ["Range: bytes=0-0", f"Range: bytes=1-{size - 2}"] * 5:
        status, body = fetch(fwrepo, grant["location"], headers)
        served += len(body) if status == 206 else 0
    # at most one image plus the half image kept for honest resumes: never a second whole copy
    assert size - 1 <= served <= size + size // 2


def test_a_charger_whose_link_drops_resumes_and_finishes_on_a_one_download_grant(fwrepo: Fwrepo,
                                                                               tmp_path: Path) -> None:
    """Found: cut off after 6.7 of 16.8 MB, it was recorded complete, and its `curl -C -` got 410 used_up."""
    size = 16 * MiB
    content = image(size)
    _, grant = grant_for(fwrepo, content, max_downloads=1)
    received = read_then_drop(fwrepo, grant["location"], 6 * MiB)
    deadline = time.monotonic() + 10
    while not records(fwrepo, grant["id"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    [dropped] = records(fwrepo, grant["id"])
    assert dropped["completed"] is False and dropped["bytes_sent"] < size, dropped
    target = tmp_path / "fw.bin"
    target.write_bytes(received)
    result = curl(fwrepo, "-C", "-", "-o", str(target), grant["location"])
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()
    # ... and an overlapping resume (from a block boundary before where it stopped) is served too
    status, body = fetch(fwrepo, grant["location"], f"Range: bytes={5 * MiB}-{6 * MiB - 1}")
    assert status in (206, 410)  # the whole copy is delivered now: more is refused, but the resume above was not


def test_a_resume_with_if_range_and_overlap_is_never_refused(fwrepo: Fwrepo) -> None:
    size = 2 * MiB
    content = image(size)
    _, grant = grant_for(fwrepo, content, max_downloads=1)
    etag = '"' + hashlib.sha256(content).hexdigest() + '"'
    parts = [fetch(fwrepo, grant["location"], f"Range: bytes={start}-{end}", f"If-Range: {etag}")
             for start, end in ((0, MiB + 99_999), (MiB, size - 1))]  # 100 kB fetched twice
    assert [status for status, _ in parts] == [206, 206]
    assert parts[0][1] + parts[1][1][100_000:] == content


def test_five_whole_retrs_in_one_ftps_session_give_one_copy(fwrepo: Fwrepo) -> None:
    content = image(1 * MiB)
    _, grant = grant_for(fwrepo, content, protocol="ftps", max_downloads=1)
    location = urlsplit(grant["location"])
    with ftplib.FTP_TLS(context=ssl.create_default_context(cafile=fwrepo.ca), timeout=30) as ftp:
        ftp.connect("127.0.0.1", location.port)
        ftp.login(location.username, location.password)
        ftp.prot_p()
        copies = 0
        for _ in range(5):
            chunks: list[bytes] = []
            try:
                ftp.retrbinary(f"RETR {location.path.lstrip('/')}", chunks.append)
            except ftplib.error_perm as refusal:
                assert str(refusal).startswith("550"), refusal
                continue
            copies += b"".join(chunks) == content
    assert copies == 1


def test_the_budget_holds_after_a_kill_9(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path)
    try:
        content = image(1 * MiB)
        _, grant = grant_for(server, content, max_downloads=1)
        assert fetch(server, grant["location"]) == (200, content)
        server.stop(sig=9)  # the download's record may not have been written: its reservation was
        server.start()
        assert fetch(server, grant["location"])[0] == 410
    finally:
        server.stop()


def read_then_drop(fwrepo: Fwrepo, location: str, keep: int) -> bytes:
    """GET with a raw TLS socket, read `keep` body bytes, then reset the connection (a cellular link dying)."""
    url = urlsplit(location)
    raw = socket.create_connection((url.hostname, url.port))
    connection = ssl.create_default_context(cafile=fwrepo.ca).wrap_socket(raw, server_hostname=url.hostname)
    connection.sendall(f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    body = data.split(b"\r\n\r\n", 1)[1]
    while len(body) < keep:
        body += connection.recv(65536)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()
    return body[:keep]
