"""Downloads through grant URLs, the way chargers do them: curl, resume, ranges, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from repo_service.domain.tokens import TokenSigner
from tests.support.builds import image
from tests.support.faultproxy import FaultProxy
from tests.support.fwrepo import Fwrepo, curl, s3_environment, start_fwrepo
from tests.support.grants import grant_for
from tests.support.openssl_pki import make_pki
from tests.support.s3servers import S3Server
from tests.support.signatures import openssl_verifies

MiB = 1024 * 1024


def status_of(fwrepo: Fwrepo, url: str, **headers: str) -> int:
    with fwrepo.client(None) as anonymous:
        return anonymous.get(url, headers=headers).status_code


def head_status(fwrepo: Fwrepo, url: str) -> int:
    with fwrepo.client(None) as anonymous:
        return anonymous.head(url).status_code


def grant_detail(fwrepo: Fwrepo, grant_id: int) -> dict:
    with fwrepo.client("csms") as csms:
        return csms.get(f"/api/v1/grants/{grant_id}").json()


def test_curl_downloads_the_image_whole_and_its_signature_verifies(fwrepo: Fwrepo, tmp_path: Path) -> None:
    content = image(3 * MiB + 17)
    firmware, grant = grant_for(fwrepo, content)
    target = tmp_path / "fw.bin"
    result = curl(fwrepo, "-f", "-o", str(target), grant["location"])
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == firmware["sha256"]
    assert openssl_verifies(tmp_path, firmware["signing_certificate"], firmware["signature"], target.read_bytes())


def test_an_interrupted_download_resumes_with_curl_continue_at(fwrepo: Fwrepo, tmp_path: Path) -> None:
    content = image(4 * MiB)
    firmware, grant = grant_for(fwrepo, content)
    target = tmp_path / "fw.bin"
    cut = curl(fwrepo, "--limit-rate", "1M", "-m", "1", "-o", str(target), grant["location"])
    assert cut.returncode == 28  # curl's "operation timed out": the link dropped mid-download
    assert 0 < target.stat().st_size < len(content)
    resumed = curl(fwrepo, "-f", "-C", "-", "-o", str(target), grant["location"])
    assert resumed.returncode == 0, resumed.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == firmware["sha256"]


def test_head_and_get_carry_the_headers_chargers_need(fwrepo: Fwrepo) -> None:
    content = image(100_000)
    firmware, grant = grant_for(fwrepo, content)
    with fwrepo.client(None) as charger:
        head = charger.head(grant["location"])
        whole = charger.get(grant["location"])
    digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
    for reply in (head, whole):
        assert reply.status_code == 200
        assert reply.headers["content-length"] == str(len(content))
        assert reply.headers["etag"] == f'"{firmware["sha256"]}"'
        assert reply.headers["content-digest"] == f"sha-256=:{digest}:"
        assert reply.headers["accept-ranges"] == "bytes"
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["last-modified"].endswith("GMT")
        assert reply.headers["content-disposition"] == f'attachment; filename="{firmware["filename"]}"'
    assert head.content == b"" and whole.content == content


def test_ranges_resume_and_refuse_like_http_says(fwrepo: Fwrepo) -> None:
    content = image(1_000_000)
    firmware, grant = grant_for(fwrepo, content)
    url = grant["location"]
    with fwrepo.client(None) as charger:
        tail = charger.get(url, headers={"Range": "bytes=-1000"})
        assert tail.status_code == 206 and tail.content == content[-1000:]
        assert "content-digest" not in tail.headers  # the digest of a part is not the image's
        opened = charger.get(url, headers={"Range": "bytes=999000-"})
        assert opened.headers["content-range"] == "bytes 999000-999999/1000000" and opened.content == content[999000:]
        piece = charger.get(url, headers={"Range": "bytes=131072-262143"})
        assert piece.content == content[131072:262144]
        assert charger.get(url, headers={"Range": "bytes=0-9", "If-Range": f'"{firmware["sha256"]}"'}).status_code == 206
        assert charger.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'}).content == content
        several = charger.get(url, headers={"Range": "bytes=0-9,20-29"})
        assert several.status_code == 200 and several.content == content
        outside = charger.get(url, headers={"Range": "bytes=1000000-"})
        assert outside.status_code == 416 and outside.headers["content-range"] == "bytes */1000000"


def test_access_logs_never_show_a_download_token(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    token = grant["location"].rsplit("/", 2)[1]
    assert status_of(fwrepo, grant["location"]) == 200
    forged = token[:-1] + ("x" if token[-1] != "x" else "y")
    assert status_of(fwrepo, grant["location"].replace(token, forged)) == 404
    log = (fwrepo.data_dir / "serve.log").read_text()
    assert token not in log and token[:-1] not in log
    assert "/d/[token]/" in log


def test_a_forged_or_malformed_token_is_404(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    prefix, token, filename = grant["location"].rsplit("/", 2)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with fwrepo.client(None) as charger:
        for url in (f"{prefix}/{forged}/{filename}", f"{prefix}/nonsense/{filename}", f"{prefix}/{token[:10]}/{filename}",
                    f"{prefix}/{'x' * 5000}/{filename}"):
            reply = charger.get(url)
            assert reply.status_code == 404, url
            assert reply.json()["detail"] == "no download here"
        assert charger.get(f"{prefix}/..%2F..%2Fetc%2Fpasswd/{filename}").status_code == 404


def test_guessing_tokens_cannot_flood_the_database_with_records(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    prefix, token, filename = grant["location"].rsplit("/", 2)
    log = fwrepo.data_dir / "serve.log"
    notice = "forged download tokens were refused and not recorded one by one"
    already = log.read_text().count(notice)

    def guess(start: int) -> list[int]:
        with fwrepo.client(None) as guesser:
            return [guesser.get(f"{prefix}/{n:034d}/{filename}").status_code for n in range(start, start + 250)]

    # At most 100 forged refusals a second are recorded one by one; the rest are counted in the log.
    # Guessing goes on (a slow machine may need more than one burst to beat 100 a second) until it says so.
    with ThreadPoolExecutor(4) as pool:
        for burst in range(20):
            starts = range(burst * 1000, burst * 1000 + 1000, 250)
            assert {status for statuses in pool.map(guess, starts) for status in statuses} == {404}
            time.sleep(1.2)  # one flush
            if log.read_text().count(notice) > already:
                return
    raise AssertionError("no word of the refusals that were not recorded")


def test_an_expired_token_is_410(fwrepo: Fwrepo) -> None:
    firmware, grant = grant_for(fwrepo, image(1000))
    # A genuine token whose time has passed, signed with the server's own secret.
    signer = TokenSigner((fwrepo.data_dir / "token-secret").read_bytes().strip())
    expired = signer.issue(grant["id"], datetime.now(UTC) - timedelta(seconds=1))
    url = grant["location"].rsplit("/", 2)[0] + f"/{expired}/{firmware['filename']}"
    assert status_of(fwrepo, url) == 410


def test_a_revoked_grant_is_410_and_says_no_more_than_an_expired_one(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(1000))
    assert status_of(fwrepo, grant["location"]) == 200
    with fwrepo.client("csms") as csms:
        assert csms.delete(f"/api/v1/grants/{grant['id']}").json()["revoked_at"]
    with fwrepo.client(None) as charger:
        reply = charger.get(grant["location"])
    assert reply.status_code == 410
    assert reply.json()["detail"] == "this download link is no longer valid; ask for a new one"


def test_a_revocation_made_elsewhere_bites_within_5_seconds(fwrepo: Fwrepo) -> None:
    """Another node revoking writes only the database; this node's cache must give way quickly."""
    import sqlalchemy

    _, grant = grant_for(fwrepo, image(1000))
    assert status_of(fwrepo, grant["location"]) == 200  # now cached on this node
    database = fwrepo.env.get("FWREPO_DATABASE_URL", f"sqlite:///{fwrepo.data_dir / 'fwrepo.sqlite3'}")
    engine = sqlalchemy.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # past row-level security, as another node's session is
            connection.execute(sqlalchemy.text("SELECT set_config('fwrepo.tenant', 'default', true)"))
        connection.execute(sqlalchemy.text('UPDATE "grant" SET revoked_at = :now WHERE id = :id'),
                           {"now": datetime.now(UTC), "id": grant["id"]})
    engine.dispose()
    revoked = time.monotonic()
    while status_of(fwrepo, grant["location"]) != 410:
        assert time.monotonic() - revoked < 5, "the revocation did not bite within 5 s"
        time.sleep(0.2)


def test_yanking_the_firmware_revokes_its_grants(fwrepo: Fwrepo) -> None:
    firmware, grant = grant_for(fwrepo, image(1000))
    with fwrepo.client("release") as release:
        release.post(f"/api/v1/firmware/{firmware['id']}/yank", json={"reason": "bricks chargers"})
    assert status_of(fwrepo, grant["location"]) == 410
    assert "firmware yanked" in grant_detail(fwrepo, grant["id"])["revoke_reason"]


def test_only_completed_downloads_count_against_max_downloads(fwrepo: Fwrepo) -> None:
    content = image(512 * 1024)
    _, grant = grant_for(fwrepo, content, max_downloads=1)
    url = grant["location"]
    # a charger fetching in 128 KiB ranges, one of them twice (its link dropped in it): parts of one
    # download, never refused as abuse (fetching them again and again is: test_download_limits.py)
    with fwrepo.client(None) as charger:
        for start in [*range(0, len(content) - 128 * 1024, 128 * 1024), 128 * 1024]:
            assert charger.get(url, headers={"Range": f"bytes={start}-{start + 128 * 1024 - 1}"}).status_code == 206
        last = charger.get(url, headers={"Range": f"bytes={len(content) - 128 * 1024}-"})
        assert last.status_code == 206
    # that last piece completed the one allowed download: the grant is used up within the bound
    # (polled with HEAD, which sends no bytes and so is no download of its own)
    completed = time.monotonic()
    while head_status(fwrepo, url) != 410:
        assert time.monotonic() - completed < 5
        time.sleep(0.2)
    assert grant_detail(fwrepo, grant["id"])["downloads_completed"] == 1


def test_every_attempt_and_refusal_is_recorded_with_the_client_address(fwrepo: Fwrepo) -> None:
    content = image(300_000)
    _, grant = grant_for(fwrepo, content)
    with fwrepo.client(None) as charger:
        charger.get(grant["location"], headers={"Range": "bytes=0-99999"})
        charger.get(grant["location"], headers={"Range": "bytes=100000-"})
    with fwrepo.client("csms") as csms:
        csms.delete(f"/api/v1/grants/{grant['id']}")
    status_of(fwrepo, grant["location"])
    downloads = grant_detail(fwrepo, grant["id"])["downloads"]
    assert [(item["range_start"], item["range_end"], item["bytes_sent"], item["completed"], item["refusal"])
            for item in downloads] == [(0, 99999, 100000, False, None), (100000, 299999, 200000, True, None),
                                       (None, None, 0, False, "revoked")]
    assert all(item["client_address"] == "127.0.0.1" and item["charger_id"] == "CP-7" for item in downloads)


@pytest.mark.parametrize("client", ["wget", "busybox-wget"])
def test_chargers_tls_clients_download_with_certificate_verification_on(fwrepo: Fwrepo, tmp_path: Path, client: str) -> None:
    _, grant = grant_for(fwrepo, image(10_000))
    target = tmp_path / "fw.bin"
    stranger_ca = make_pki(tmp_path / "stranger").root

    def fetch(ca: str) -> subprocess.CompletedProcess[str]:
        if client == "wget":
            return subprocess.run(["wget", "-q", f"--ca-certificate={ca}", "-O", str(target), grant["location"]],
                                  capture_output=True, text=True, timeout=60)
        # busybox wget verifies through `openssl s_client -verify_return_error`, trusting SSL_CERT_FILE;
        # it passes the port with -verify_ip, so an IP address never verifies: use the host name.
        return subprocess.run(["busybox", "wget", "-q", "-O", str(target), grant["location"].replace("127.0.0.1", "localhost")],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "SSL_CERT_FILE": ca})

    if client == "busybox-wget" and shutil.which("busybox") is None:
        pytest.skip("busybox not installed (make test installs it when run as root)")
    trusted = fetch(fwrepo.ca)
    assert trusted.returncode == 0, trusted.stderr
    assert target.stat().st_size == 10_000
    assert fetch(str(stranger_ca)).returncode != 0  # verification is really on


def test_tls_older_than_1_2_is_refused(fwrepo: Fwrepo) -> None:
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{fwrepo.port}", "-tls1_1"],
                            input="", capture_output=True, text=True, timeout=20)
    assert result.returncode != 0


def test_curl_refuses_the_server_without_its_ca_and_accepts_it_with(fwrepo: Fwrepo) -> None:
    strict = subprocess.run(["curl", "-sS", "-o", "/dev/null", f"{fwrepo.url}/healthz"], capture_output=True, text=True)
    assert strict.returncode == 60  # certificate problem: curl never falls back to unverified
    assert curl(fwrepo, "-f", "-o", "/dev/null", f"{fwrepo.url}/healthz").returncode == 0


def test_redirect_mode_sends_the_charger_to_a_short_lived_presigned_url(s3: S3Server, tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path, **s3_environment(s3, f"redirect-{secrets.token_hex(4)}"), FWREPO_DOWNLOAD_MODE="redirect")
    try:
        content = image(200_000)
        firmware, grant = grant_for(server, content)
        with server.client(None) as charger:
            reply = charger.get(grant["location"])
        assert reply.status_code == 302
        presigned = reply.headers["location"]
        assert presigned.startswith(s3.endpoint_url) and ("Expires=" in presigned or "X-Amz-Expires=300" in presigned)
        assert httpx.get(presigned).content == content
    finally:
        server.stop()


def test_a_download_cut_off_by_storage_never_looks_complete(ceph: S3Server, tmp_path: Path) -> None:
    endpoint = urlsplit(ceph.endpoint_url)
    with FaultProxy(endpoint.hostname, endpoint.port) as proxy:
        environment = {**s3_environment(ceph, f"cut-{secrets.token_hex(4)}"), "FWREPO_S3_ENDPOINT_URL": proxy.url}
        server = start_fwrepo(tmp_path, **environment)
        try:
            content = image(24 * MiB)
            _, grant = grant_for(server, content)
            target = tmp_path / "fw.bin"
            charger = subprocess.Popen(["curl", "-sS", "--cacert", server.ca, "--limit-rate", "4M", "-o", str(target),
                                        grant["location"]], stderr=subprocess.PIPE, text=True)
            while not target.exists() or target.stat().st_size < 4 * MiB:
                time.sleep(0.05)
            proxy.cut()
            charger.wait(timeout=60)
            # curl's 18 is "transfer closed with outstanding read data remaining": short of Content-Length
            assert charger.returncode == 18, charger.stderr.read()
            assert target.stat().st_size < len(content)
        finally:
            server.stop()


def test_the_grant_status_cache_holds_only_seconds_of_lookups() -> None:
    from repo_service.domain.recent import Recent

    recent: Recent[int, str] = Recent(0.05, limit=1000)
    for key in range(500):
        recent.put(key, "state")
    time.sleep(0.06)
    recent.put(999, "fresh")
    assert recent.get(999) == "fresh" and recent.get(1) is None and len(recent._items) == 1
    for key in range(2000):
        recent.put(key, "state")
    assert len(recent._items) == 1000
