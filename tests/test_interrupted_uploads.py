"""Storage that dies mid-upload, and a server killed mid-upload, leave no half-stored firmware."""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.builds import image
from tests.support.faultproxy import FaultProxy
from tests.support.fwrepo import Fwrepo, s3_environment, start_fwrepo
from tests.support.s3servers import S3Server

MiB = 1024 * 1024


def form_body(vendor: str, total: int, when_sent: int, act) -> Iterator[bytes]:
    """A chunked multipart upload that calls act() after when_sent bytes of the image."""
    yield (
        f"--b\r\nContent-Disposition: form-data; name=\"vendor\"\r\n\r\n{vendor}"
        "\r\n--b\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\nAC22"
        "\r\n--b\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0"
        "\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n\r\n"
    ).encode()
    block, sent = image(MiB), 0
    while sent < total:
        yield block
        sent += len(block)
        if sent == when_sent:
            act()
    yield b"\r\n--b--\r\n"


def post_form(server: Fwrepo, body: Iterator[bytes]) -> int | None:
    """The status of the reply, or None when the server cut the connection instead."""
    try:
        with server.client("release") as client:
            return client.post(
                "/api/v1/firmware", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
            ).status_code
    except httpx.TransportError:
        return None


def bucket_leftovers(s3: S3Server, bucket: str) -> list[str]:
    client = s3.client()
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [item["Key"] for item in objects] + [f"unfinished:{item['Key']}" for item in uploads]


def test_s3_cut_off_mid_upload_leaves_no_object_and_the_sweep_clears_the_rest(
    ceph: S3Server, tmp_path: Path
) -> None:
    endpoint = urlsplit(ceph.endpoint_url)
    bucket = f"cut-{secrets.token_hex(4)}"
    with FaultProxy(endpoint.hostname, endpoint.port) as proxy:
        environment = {**s3_environment(ceph, bucket), "FWREPO_S3_ENDPOINT_URL": proxy.url}
        server = start_fwrepo(tmp_path, **environment)
        try:
            vendor = f"V{secrets.token_hex(4)}"
            status = post_form(server, form_body(vendor, 40 * MiB, 16 * MiB, proxy.cut))
            assert status is None or status == 503
            proxy.restore()
            with server.client("release") as client:
                assert client.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 0
            # The abort could not reach S3 while it was cut off; the sweep finishes the job.
            assert "removed" in server.cli("storage", "sweep", "--older-than", "0").stdout
            assert bucket_leftovers(ceph, bucket) == []
        finally:
            server.stop()


def test_server_killed_mid_upload_leaves_a_partial_file_that_the_sweep_removes(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path)
    storage = tmp_path / "storage"
    try:
        key = server.key("release")  # made before the kill, while the server runs
        killed = threading.Event()

        def kill() -> None:
            # The bytes sent may still sit in socket buffers: kill once the server is storing them.
            deadline = time.monotonic() + 15
            while not any(path.name.endswith(".partial") for path in stored_files(storage)):
                assert time.monotonic() < deadline, "the server never started storing the upload"
                time.sleep(0.02)
            server.process.send_signal(signal.SIGKILL)
            killed.set()

        status = post_form(server, form_body("Vkilled", 30 * MiB, 10 * MiB, kill))
        assert killed.is_set() and status is None
        server.process.wait(timeout=10)
        partials = [path.name for path in stored_files(storage)]
        assert partials and all(name.endswith(".partial") for name in partials)
        assert server.cli("storage", "sweep", "--older-than", "0").stdout.strip() == "removed 1 interrupted uploads"
        assert stored_files(storage) == []
        server.keys["release"] = key
        server.start()
        with server.client("release") as client:
            assert client.get("/api/v1/firmware", params={"vendor": "Vkilled"}).json()["total"] == 0
    finally:
        server.stop()


def stored_files(storage: Path) -> list[Path]:
    return sorted(path for path in storage.rglob("*") if path.is_file())


@pytest.mark.parametrize("when_sent", [2 * MiB, 12 * MiB])
def test_client_that_disconnects_mid_upload_leaves_nothing(fwrepo: Fwrepo, when_sent: int) -> None:
    storage = fwrepo.data_dir / "storage"

    class Disconnect(Exception):
        pass

    def disconnect() -> None:
        raise Disconnect()

    log = fwrepo.data_dir / "serve.log"
    abandoned_before = log.read_text().count("abandoned, nothing stored")
    with pytest.raises(Disconnect):
        post_form(fwrepo, form_body("Vgone", 20 * MiB, when_sent, disconnect))
    # The server sees the disconnect on its own time, at the latest after its 10 s idle limit;
    # until it has, a .partial may not even exist yet, so wait for its word rather than the files.
    for _ in range(300):
        if log.read_text().count("abandoned, nothing stored") > abandoned_before:
            break
        threading.Event().wait(0.05)
    else:
        raise AssertionError("the server did not abandon the upload within 15 s")
    assert [path for path in stored_files(storage) if path.name.endswith(".partial")] == []
    with fwrepo.client("release") as client:
        assert client.get("/api/v1/firmware", params={"vendor": "Vgone"}).json()["total"] == 0
