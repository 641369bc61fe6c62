"""What is never logged: download tokens, FTPS passwords and API keys, on the error paths too (issue 13, finding 4).

The attack as found: a storage fault during a download logged ``unhandled error on GET /d/<live token>/...``,
and whoever reads the log could fetch the image with it until the grant expired.
"""

from __future__ import annotations

import ftplib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.builds import image, published_build, unique_vendor
from tests.support.fwrepo import Fwrepo, start_fwrepo


TOKEN_SECRET = "log-test-" + "s3cr3t" * 8


@pytest.fixture(params=["text", "json"])
def debug_fwrepo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fwrepo]:
    # Debug: every logger speaks, pyftpdlib's command log and uvicorn's included.
    server = start_fwrepo(tmp_path, FWREPO_LOG_LEVEL="debug", FWREPO_LOG_FORMAT=request.param,
                          FWREPO_TOKEN_SECRET=TOKEN_SECRET)
    yield server
    server.stop()


def _break_stored_object(fwrepo: Fwrepo, firmware_id: str, fault: str) -> None:
    stored = fwrepo.data_dir / "storage" / "firmware" / firmware_id
    if stored.is_dir():
        shutil.rmtree(stored)
    else:
        stored.unlink(missing_ok=True)
    # The tests run as root, for whom a mode of 000 is no fault: a directory and a link loop are.
    if fault == "directory":
        stored.mkdir()
    elif fault == "link loop":
        os.symlink(stored.name, stored)


def _ftps_attempt(fwrepo: Fwrepo, location: str, password: str) -> None:
    parts = urlsplit(location)
    ftp = ftplib.FTP_TLS(context=fwrepo.tls(), timeout=20)
    try:
        ftp.connect("127.0.0.1", fwrepo.ftps_port)
        ftp.auth()
        ftp.login(parts.username or "", password)
        ftp.prot_p()
        ftp.retrbinary(f"RETR {parts.path.lstrip('/')}", lambda block: None)
    except ftplib.all_errors:
        pass  # refused or broken: what the log says about it is the point
    finally:
        ftp.close()


def _broken(client: httpx.Client, method: str, url: str, **options: object) -> bool:
    """Whether the request failed: an error reply, or a body cut short once the headers were out."""
    try:
        return client.request(method, url, **options).status_code >= 400  # type: ignore[arg-type]
    except httpx.RemoteProtocolError:
        return True


def test_storage_faults_and_failed_logins_leave_no_token_ftps_password_or_api_key_in_the_log(
    debug_fwrepo: Fwrepo,
) -> None:
    fwrepo = debug_fwrepo
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        firmware = published_build(release, unique_vendor(), "1.0.0", image(300_000))
        https = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1"}).json()
        ftps = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-2",
                                                 "protocol": "ftps"}).json()
    token = https["location"].split("/")[-2]
    password = urlsplit(ftps["location"]).password
    assert password
    secrets = {"token": token, "token's signature": token.rsplit(".", 1)[1], "FTPS password": password,
               **{f"{role} API key": fwrepo.key(role) for role in ("release", "csms")}}
    secrets["token secret"] = TOKEN_SECRET
    wrong_key = "fwr_" + "x" * 43
    secrets["unknown API key"] = wrong_key

    with httpx.Client(base_url=fwrepo.url, verify=fwrepo.tls(), timeout=30) as anyone:
        for fault in ("missing", "directory", "link loop"):
            _break_stored_object(fwrepo, firmware["id"], fault)
            for headers in ({}, {"Range": "bytes=100-"}):
                assert _broken(anyone, "GET", https["location"], headers=headers), fault
            _broken(anyone, "HEAD", https["location"])
            assert _broken(anyone, "GET", f"/api/v1/firmware/{firmware['id']}/content",
                           headers={"Authorization": f"Bearer {fwrepo.key('release')}"}), fault
            _ftps_attempt(fwrepo, ftps["location"], password)
        # Failed logins, with a password and keys that someone may have mistyped from real ones.
        _ftps_attempt(fwrepo, ftps["location"], password[:-1] + "Z")
        for header in (f"Bearer {wrong_key}", f"Basic {fwrepo.key('csms')}", f"Bearer {fwrepo.key('csms')}"):
            anyone.post("/api/v1/grants/batch", content=b"{", headers={"Authorization": header})
        # A token in a URL that no route takes, and one in a query.
        anyone.get(f"/d/{token}")
        anyone.get(f"/d/{token}/x/y")
        anyone.get(f"/api/v1/firmware?vendor={token}")
    fwrepo.stop()

    log = (fwrepo.data_dir / "serve.log").read_text(errors="replace")
    assert "unhandled error" in log or "storage" in log.lower(), "the faults were not logged at all"
    leaked = {name: next(line for line in log.splitlines() if secret in line)
              for name, secret in secrets.items() if secret in log}
    assert not leaked, leaked
