"""Uploading firmware: what is kept, what is refused, and that a refusal keeps nothing."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.builds import image, published_build, upload
from tests.support.fwrepo import TEST_MAX_UPLOAD, Fwrepo, start_fwrepo


def stored_files(fwrepo: Fwrepo) -> list[Path]:
    storage = fwrepo.data_dir / "storage"
    return sorted(path for path in storage.rglob("*") if path.is_file()) if storage.exists() else []


def test_curl_upload_is_stored_with_its_digest_and_answered_201(fwrepo: Fwrepo, vendor: str, tmp_path: Path) -> None:
    content = image(300_000)
    path = tmp_path / "charger-fw 1.2.3.bin"
    path.write_bytes(content)
    reply = subprocess.run(
        ["curl", "-sS", "--cacert", fwrepo.ca, "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {fwrepo.key('release')}",
         "-F", f"file=@{path}", "-F", f"vendor={vendor}", "-F", "models=AC22", "-F", "models=AC11,DC50",
         "-F", "version=V1.2.3", "-F", "hardware_revisions=B", "-F", "release_notes=Fixes meter drift",
         "-F", f"sha256={hashlib.sha256(content).hexdigest()}", f"{fwrepo.url}/api/v1/firmware"],
        capture_output=True, text=True, check=True,
    ).stdout
    body, status = reply.rsplit("\n", 1)
    assert status == "201"
    record = httpx.Response(200, content=body).json()
    assert record["vendor"] == vendor
    assert record["models"] == ["AC11", "AC22", "DC50"]
    assert record["version"] == "V1.2.3"
    assert record["size"] == len(content)
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    assert record["md5"] == hashlib.md5(content).hexdigest()  # OCPP 2.0.1 PublishFirmware's checksum
    assert record["status"] == "uploaded"
    assert record["channel"] == "stable"
    assert record["hardware_revisions"] == ["B"]
    assert record["filename"] == "charger-fw_1.2.3.bin"
    assert record["created_at"].endswith("Z")
    with fwrepo.client("release") as client:
        assert client.get(f"/api/v1/firmware/{record['id']}/content").content == content


def test_fields_after_the_file_are_read_too(fwrepo: Fwrepo, vendor: str) -> None:
    content = image()
    boundary = "fwrepo-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"vendor\"\r\n\r\n{vendor}"
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\nAC22"
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n2.0.0"
        f"\r\n--{boundary}--\r\n".encode()
    )
    with fwrepo.client("release") as client:
        reply = client.post(
            "/api/v1/firmware", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    assert reply.status_code == 201, reply.text
    assert reply.json()["version"] == "2.0.0"


def test_more_uploads_at_once_than_upload_threads_all_land_while_the_api_answers(fwrepo: Fwrepo, vendor: str) -> None:
    def one(n: int) -> int:
        with fwrepo.client("release") as client:
            return upload(client, vendor, f"2.0.{n}", image(2 * 1024 * 1024)).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = pool.map(one, range(12))
        with fwrepo.client("release") as client:
            assert client.get("/api/v1/firmware", params={"vendor": vendor}).status_code == 200
        assert list(statuses) == [201] * 12


def test_same_bytes_again_answer_200_with_the_existing_record(release: httpx.Client, vendor: str) -> None:
    content = image()
    first = upload(release, vendor, "1.0.0", content)
    again = upload(release, vendor, "1.0.0", content)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_same_bytes_with_other_models_are_refused_409_naming_the_difference(
    fwrepo: Fwrepo, release: httpx.Client, vendor: str
) -> None:
    content = image()
    first = upload(release, vendor, "1.4.0", content, models="AC22").json()
    before = stored_files(fwrepo)
    reply = upload(release, vendor, "1.4.0", content, models="AC22,AC11")
    assert reply.status_code == 409
    assert reply.json()["detail"].startswith(
        f"already stored as {vendor} 1.4.0 ({first['id']}) with models AC22; this upload differs in models: AC22, AC11.")
    assert release.get(f"/api/v1/firmware/{first['id']}").json()["models"] == ["AC22"]
    assert stored_files(fwrepo) == before


def test_same_bytes_described_otherwise_name_every_field_that_differs(release: httpx.Client, vendor: str) -> None:
    content = image()
    assert upload(release, vendor, "1.4.0", content, channel="beta").status_code == 201
    detail = upload(release, vendor, "1.4.0", content, release_notes="fixes", hardware_revisions="B").json()["detail"]
    assert "with hardware revisions any, channel beta, release notes none;" in detail
    assert "differs in hardware revisions: B; channel: stable; release notes: 'fixes'." in detail


def test_same_bytes_and_the_same_description_in_another_order_are_the_same_upload(
    release: httpx.Client, vendor: str
) -> None:
    content = image()
    first = upload(release, vendor, "1.4.0", content, models="AC22,AC11")
    again = upload(release, vendor, "1.4.0", content, models="AC11,AC22")
    assert (first.status_code, again.status_code) == (201, 200)


def test_cli_upload_says_whether_it_stored_a_new_build_or_found_it_stored(
    fwrepo: Fwrepo, vendor: str, tmp_path: Path
) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(image())
    command = ("upload", str(path), "--url", fwrepo.url, "--key", fwrepo.key("release"), "--vendor", vendor,
               "--model", "AC22", "--version", "1.4.0")
    first = fwrepo.cli(*command).stdout
    again = fwrepo.cli(*command).stdout
    assert first.startswith("stored new build ")
    firmware_id = first.split()[3].rstrip(":")
    assert again.startswith(f"already stored as {firmware_id} (same bytes and metadata; nothing changed)")


def test_cli_upload_of_stored_bytes_with_other_models_is_refused_naming_them(
    fwrepo: Fwrepo, vendor: str, tmp_path: Path
) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(image())
    command = ("upload", str(path), "--url", fwrepo.url, "--key", fwrepo.key("release"), "--vendor", vendor,
               "--version", "1.4.0", "--model", "AC22")
    fwrepo.cli(*command)
    refused = fwrepo.cli(*command, "--model", "AC11", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"fwrepo: 409 Conflict: already stored as {vendor} 1.4.0 (")
    assert "with models AC22; this upload differs in models: AC22, AC11." in refused.stderr


def test_same_version_with_other_bytes_is_refused_409(fwrepo: Fwrepo, release: httpx.Client, vendor: str) -> None:
    assert upload(release, vendor, "1.0.0").status_code == 201
    before = stored_files(fwrepo)
    reply = upload(release, vendor, "1.0.0")
    assert reply.status_code == 409
    assert "never change" in reply.json()["detail"]
    assert stored_files(fwrepo) == before


def test_an_equal_version_spelt_differently_is_the_same_version(release: httpx.Client, vendor: str) -> None:
    assert upload(release, vendor, "1.2").status_code == 201
    assert upload(release, vendor, "v1.2.0").status_code == 409


def test_declared_digest_mismatch_is_refused_422_and_nothing_is_stored(fwrepo: Fwrepo, release: httpx.Client, vendor: str) -> None:
    before = stored_files(fwrepo)
    reply = upload(release, vendor, "1.0.0", sha256="0" * 64)
    assert reply.status_code == 422
    assert reply.json()["field"] == "sha256"
    assert stored_files(fwrepo) == before
    assert release.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"vendor": ""}, "vendor"),
        ({"models": ""}, "models"),
        ({"version": ""}, "version"),
        ({"version": "one point two"}, "version"),
        ({"version": "1..2"}, "version"),
        ({"min_version": "x.y"}, "min_version"),
        ({"min_version": "9.0"}, "min_version"),
        ({"channel": "Stable Channel"}, "channel"),
        ({"sha256": "abc"}, "sha256"),
        ({"vendor": "A" * 51}, "vendor"),
        ({"release_notes": "x" * (64 * 1024 + 1)}, "release_notes"),
        ({"hardware_revisions": ",".join(f"r{n}" for n in range(101))}, "hardware_revisions"),
        ({"model": "AC22"}, "model"),
    ],
)
def test_bad_fields_are_refused_422_naming_the_field(
    fwrepo: Fwrepo, release: httpx.Client, vendor: str, fields: dict[str, str], field: str
) -> None:
    before = stored_files(fwrepo)
    data = {"vendor": vendor, "models": "AC22", "version": "1.0.0", **fields}
    reply = release.post("/api/v1/firmware", data=data, files={"file": ("fw.bin", image())})
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["field"] == field
    assert problem["status"] == 422 and problem["type"].startswith("urn:fwrepo:problem:")
    assert reply.headers["content-type"] == "application/problem+json"
    assert stored_files(fwrepo) == before


def test_empty_file_is_refused_422(release: httpx.Client, vendor: str) -> None:
    reply = upload(release, vendor, "1.0.0", b"")
    assert reply.status_code == 422
    assert reply.json()["field"] == "file"


def test_missing_file_is_refused_422(release: httpx.Client, vendor: str) -> None:
    reply = release.post("/api/v1/firmware", data={"vendor": vendor, "models": "AC22", "version": "1.0.0"},
                         files={"other": ("x", b"")})
    assert reply.status_code == 422


def test_not_a_form_is_refused_422(release: httpx.Client) -> None:
    reply = release.post("/api/v1/firmware", json={"vendor": "x"})
    assert reply.status_code == 422
    assert reply.json()["field"] == "Content-Type"


def test_truncated_form_is_refused_and_nothing_is_stored(fwrepo: Fwrepo, release: httpx.Client, vendor: str) -> None:
    before = stored_files(fwrepo)
    body = (
        b"--b\r\nContent-Disposition: form-data; name=\"vendor\"\r\n\r\n" + vendor.encode()
        + b"\r\n--b\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\nAC22"
        + b"\r\n--b\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0"
        + b"\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" + image()
    )
    reply = release.post("/api/v1/firmware", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert reply.status_code == 422
    assert "closing boundary" in reply.json()["detail"]
    assert stored_files(fwrepo) == before


def test_image_over_the_limit_is_refused_413_even_without_content_length(
    fwrepo: Fwrepo, release: httpx.Client, vendor: str
) -> None:
    before = stored_files(fwrepo)

    def body():  # a generator makes httpx send chunked, so the server must count
        yield b"--b\r\nContent-Disposition: form-data; name=\"vendor\"\r\n\r\n" + vendor.encode()
        yield b"\r\n--b\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\nAC22"
        yield b"\r\n--b\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0"
        yield b"\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
        block = image(1024 * 1024)
        for _ in range(TEST_MAX_UPLOAD // len(block) + 2):
            yield block
        yield b"\r\n--b--\r\n"

    try:
        reply = release.post("/api/v1/firmware", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert reply.status_code == 413
        assert reply.json()["field"] == "file"
    except httpx.WriteError:
        pass  # the server may answer and close before the client has sent everything
    assert stored_files(fwrepo) == before


def test_declared_content_length_over_the_limit_is_refused_before_reading(fwrepo: Fwrepo) -> None:
    # A raw TLS socket: HTTP clients refuse to send fewer bytes than they declare.
    context = ssl.create_default_context(cafile=fwrepo.ca)
    with socket.create_connection(("127.0.0.1", fwrepo.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as connection:
        connection.sendall(
            f"POST /api/v1/firmware HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fwrepo.key('release')}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {10 * TEST_MAX_UPLOAD}\r\n\r\n--b".encode()
        )
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"


def test_cli_upload_prints_the_record_line(fwrepo: Fwrepo, vendor: str, tmp_path: Path) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(image(2_000_000))
    result = fwrepo.cli("upload", str(path), "--url", fwrepo.url, "--key", fwrepo.key("release"),
                        "--vendor", vendor, "--model", "AC22", "--model", "AC11", "--version", "3.1.0-rc2",
                        "--channel", "beta", "--release-notes", "candidate")
    assert f"{vendor} 3.1.0-rc2" in result.stdout
    assert hashlib.sha256(path.read_bytes()).hexdigest() in result.stdout


def test_cli_upload_reports_the_server_refusal(fwrepo: Fwrepo, vendor: str, tmp_path: Path) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(image())
    result = fwrepo.cli("upload", str(path), "--url", fwrepo.url, "--key", fwrepo.key("release"),
                        "--vendor", vendor, "--model", "AC22", "--version", "not a version", check=False)
    assert result.returncode == 1
    assert "422" in result.stderr and "version" in result.stderr


def test_a_large_upload_streams_with_constant_server_memory(tmp_path: Path) -> None:
    # 384 MiB through a fresh server: were the body buffered or spooled in memory,
    # its peak RSS would grow by the image size; streaming keeps it near idle.
    size = 384 * 1024 * 1024
    path = tmp_path / "large.bin"
    with open(path, "wb") as file:
        block = image(4 * 1024 * 1024)
        for _ in range(size // len(block)):
            file.write(block)
    (tmp_path / "server").mkdir()
    server = start_fwrepo(tmp_path / "server", FWREPO_MAX_UPLOAD_BYTES=str(size))
    try:
        reply = subprocess.run(
            ["curl", "-sS", "--cacert", server.ca, "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {server.key('release')}",
             "-F", f"file=@{path}", "-F", "vendor=Vlarge", "-F", "models=AC22", "-F", "version=1.0.0",
             f"{server.url}/api/v1/firmware"],
            capture_output=True, text=True, check=True,
        )
        assert reply.stdout == "201"
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
        assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"
        assert (tmp_path / "server" / "storage").stat()  # stored on disk, not in memory
    finally:
        server.stop()


def test_storage_check_finds_missing_corrupted_and_extra_objects(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path)
    try:
        with server.client("release") as release:
            ids = [upload(release, "Vscrub", f"1.0.{n}", image(50_000)).json()["id"] for n in range(3)]
        assert server.cli("storage", "check").stdout.strip() == "storage and catalog agree"
        stored = tmp_path / "storage" / "firmware"
        (stored / ids[0]).unlink()
        corrupted = bytearray((stored / ids[1]).read_bytes())
        corrupted[1000] ^= 0xFF
        (stored / ids[1]).write_bytes(bytes(corrupted))
        (stored / "0000000000000000").write_bytes(b"stray")
        result = server.cli("storage", "check", check=False)
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        assert any(line.startswith(f"missing: firmware/{ids[0]}") for line in lines)
        assert any(line.startswith(f"corrupted: firmware/{ids[1]}") for line in lines)
        assert any(line.startswith("extra: firmware/0000000000000000") for line in lines)
        assert lines[-1] == "3 problems"
    finally:
        server.stop()


def test_builds_stored_before_md5s_get_them_from_storage_checksum_and_only_then_publish_firmware(
    tmp_path: Path,
) -> None:
    import sqlalchemy

    server = start_fwrepo(tmp_path)
    try:
        contents = [image(50_000) for _ in range(3)]
        with server.client("release") as release:
            ids = [published_build(release, "Vold", f"1.0.{n}", content)["id"] for n, content in enumerate(contents)]
        # As migration 0015 leaves builds stored before it: no MD5.
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'fwrepo.sqlite3'}")
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("UPDATE firmware SET md5 = NULL"))
        engine.dispose()
        corrupted = tmp_path / "storage" / "firmware" / ids[2]
        stored = corrupted.read_bytes()
        corrupted.write_bytes(bytes([stored[0] ^ 0xFF]) + stored[1:])
        with server.client("csms") as csms:
            old = csms.post("/api/v1/grants", json={"firmware_id": ids[0], "charger_id": "LC-1"}).json()
            assert "publish_firmware_v201" not in old["ocpp"] and "update_firmware_v201" in old["ocpp"]
            assert csms.get(f"/api/v1/firmware/{ids[0]}").json()["md5"] is None
            # reading a grant never computes one: reads never write
            assert "publish_firmware_v201" not in csms.get(f"/api/v1/grants/{old['id']}").json()["ocpp"]

            result = server.cli("storage", "checksum", check=False)
            assert result.returncode == 1
            lines = result.stdout.splitlines()
            assert f"firmware {ids[0]}: MD5 {hashlib.md5(contents[0]).hexdigest()}" in lines
            assert any(line.startswith(f"corrupted: firmware/{ids[2]}") for line in lines)
            assert lines[-1] == "2 builds given an MD5, 1 problems"
            assert csms.get(f"/api/v1/firmware/{ids[1]}").json()["md5"] == hashlib.md5(contents[1]).hexdigest()
            assert csms.get(f"/api/v1/firmware/{ids[2]}").json()["md5"] is None  # no checksum vouches for bad bytes
            publish = csms.get(f"/api/v1/grants/{old['id']}").json()["ocpp"]["publish_firmware_v201"]
            assert publish["checksum"] == hashlib.md5(contents[0]).hexdigest()
        again = server.cli("storage", "checksum", check=False).stdout.splitlines()
        assert again == [line for line in lines if line.startswith("corrupted")] + ["0 builds given an MD5, 1 problems"]
    finally:
        server.stop()
