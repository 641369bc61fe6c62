"""FTPS grants, the ways chargers fetch them: curl (explicit, opportunistic, implicit, resumed) and ftplib."""

from __future__ import annotations

import ftplib
import hashlib
import io
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import update

from repo_service.db.models import Grant
from repo_service.db.session import Database
from repo_service.domain.ftp_logins import FtpsEndpoint
from repo_service.domain.grants import MAX_LOCATION
from repo_service.settings import load_settings
from tests.support.builds import image
from tests.support.fwrepo import FWREPO, Fwrepo, curl, start_fwrepo
from tests.support.grants import grant_for

MiB = 1024 * 1024


def ftps_grant(fwrepo: Fwrepo, content: bytes, **grant: object) -> tuple[dict, dict]:
    """Upload, publish and grant content over FTPS; the firmware record and the grant."""
    return grant_for(fwrepo, content, protocol="ftps", **grant)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(fwrepo: Fwrepo, location: str, *, secure: bool = True) -> ftplib.FTP:
    """A logged-in ftplib session for the location's user and password (AUTH TLS and PROT P when secure)."""
    parts = urlsplit(location)
    if secure:
        ftp: ftplib.FTP = ftplib.FTP_TLS(context=fwrepo.tls(), timeout=30)
    else:
        ftp = ftplib.FTP(timeout=30)
    ftp.connect(parts.hostname, parts.port)
    ftp.login(parts.username, parts.password)
    if isinstance(ftp, ftplib.FTP_TLS):
        ftp.prot_p()
    return ftp


def login_reply(fwrepo: Fwrepo, location: str) -> str:
    try:
        session(fwrepo, location).quit()
    except ftplib.error_perm as error:
        return str(error)
    return "230 logged in"


def set_grant(fwrepo: Fwrepo, grant_id: int, **values: object) -> None:
    """Change a grant as time or another node would (expiry passing) in the database itself."""
    database = Database(load_settings(fwrepo.env).database_url)
    try:
        with database.session() as db:
            db.execute(update(Grant).where(Grant.id == grant_id).values(**values))
    finally:
        database.dispose()


def eventually(check, seconds: float = 6.0):  # type: ignore[no-untyped-def]
    """The value of check() once truthy; the grant cache lets a change take up to 2 s to bite."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


# -- locations -----------------------------------------------------------------------


def test_a_location_carries_a_fresh_login_and_needs_no_percent_encoding(fwrepo: Fwrepo) -> None:
    firmware, grant = ftps_grant(fwrepo, image(1000))
    parts = urlsplit(grant["location"])
    assert parts.scheme == "ftp" and parts.port == fwrepo.ftps_port
    assert parts.path == f"/{firmware['filename']}"
    assert parts.username.isalnum() and parts.password.isalnum() and len(parts.password) >= 24
    assert grant["ocpp"]["update_firmware"]["location"] == grant["location"]
    _, other = ftps_grant(fwrepo, image(1000))
    assert urlsplit(other["location"]).username != parts.username
    # Only hashes are kept: reading the grant back shows where, never the login.
    with fwrepo.client("csms") as csms:
        again = csms.get(f"/api/v1/grants/{grant['id']}").json()
    assert parts.password not in again["location"] and parts.username not in again["location"]


def test_implicit_locations_on_request(fwrepo: Fwrepo) -> None:
    _, grant = ftps_grant(fwrepo, image(1000), ftps_mode="implicit")
    parts = urlsplit(grant["location"])
    assert parts.scheme == "ftps" and parts.port == fwrepo.ftps_implicit_port


def test_locations_fit_255_characters_with_a_40_character_host() -> None:
    endpoint = FtpsEndpoint("f" * 36 + ".net", 65021, 65990)
    # Filenames are at most 100 characters (uploads cut them); both forms leave room for that.
    assert endpoint.longest_prefix + 100 <= MAX_LOCATION


def test_batch_grants_each_get_their_own_login(fwrepo: Fwrepo) -> None:
    firmware, _ = ftps_grant(fwrepo, image(1000))
    with fwrepo.client("csms") as csms:
        reply = csms.post("/api/v1/grants/batch", json={
            "firmware_id": firmware["id"], "charger_ids": [f"CP-{n}" for n in range(50)], "protocol": "ftps",
        })
    assert reply.status_code == 201, reply.text
    users = {urlsplit(grant["location"]).username for grant in reply.json()["grants"]}
    assert len(users) == 50


# -- downloads the ways chargers do them -----------------------------------------------------


@pytest.mark.parametrize("how", ["--ssl", "--ssl-reqd", "implicit"])
def test_curl_downloads_the_image(fwrepo: Fwrepo, tmp_path: Path, how: str) -> None:
    content = image(3 * MiB + 5)
    if how == "implicit":
        _, grant = ftps_grant(fwrepo, content, ftps_mode="implicit")
        arguments = [grant["location"]]
    else:
        _, grant = ftps_grant(fwrepo, content)
        arguments = [how, grant["location"]]
    result = curl(fwrepo, "-o", str(tmp_path / "fw.bin"), *arguments)
    assert result.returncode == 0, result.stderr
    assert sha256_of(tmp_path / "fw.bin") == hashlib.sha256(content).hexdigest()


def test_an_interrupted_transfer_resumes_with_curl_continue_at(fwrepo: Fwrepo, tmp_path: Path) -> None:
    # Larger than what loopback socket buffers hold, so the cut-off client cannot have been sent it all.
    content = image(24 * MiB)
    firmware, grant = ftps_grant(fwrepo, content)
    target = tmp_path / "fw.bin"
    cut = curl(fwrepo, "--ssl-reqd", "--limit-rate", "1M", "--max-time", "1", "-o", str(target), grant["location"])
    assert cut.returncode == 28 and 0 < target.stat().st_size < len(content)
    resumed = curl(fwrepo, "--ssl-reqd", "-C", "-", "-o", str(target), grant["location"])
    assert resumed.returncode == 0, resumed.stderr
    assert sha256_of(target) == firmware["sha256"]
    with fwrepo.client("csms") as csms:
        downloads = eventually(lambda: [d for d in csms.get(f"/api/v1/grants/{grant['id']}").json()["downloads"]
                                        if d["protocol"] == "ftps"][-2:])
    assert [d["completed"] for d in downloads] == [False, True]
    # The server counts what it handed to the network; the client kept less (the rest died in socket buffers).
    assert downloads[0]["bytes_sent"] >= downloads[1]["range_start"] == target.stat().st_size - downloads[1]["bytes_sent"]
    assert downloads[1]["client_address"] == "127.0.0.1"


def test_ftplib_sees_one_file_and_reads_it_from_an_offset(fwrepo: Fwrepo) -> None:
    content = image(MiB + 17)
    firmware, grant = ftps_grant(fwrepo, content)
    name = firmware["filename"]
    ftp = session(fwrepo, grant["location"])
    try:
        assert ftp.pwd() == "/"
        assert ftp.nlst() == [name]
        listing: list[str] = []
        ftp.retrlines("LIST", listing.append)
        assert len(listing) == 1 and listing[0].startswith("-r--r--r--") and listing[0].endswith(name)
        facts = dict(ftp.mlsd())
        assert list(facts) == [name] and facts[name]["type"] == "file" and facts[name]["size"] == str(len(content))
        ftp.voidcmd("TYPE I")  # SIZE is refused in ASCII mode (RFC 3659), as curl knows
        assert ftp.size(name) == len(content) == ftp.size(f"/{name}")
        assert ftp.sendcmd(f"MDTM {name}").startswith("213 ")
        received = io.BytesIO()
        ftp.retrbinary(f"RETR {name}", received.write, rest=1000)
        assert received.getvalue() == content[1000:]
    finally:
        ftp.quit()


# -- what is refused -------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    "STOR new.bin", "APPE {name}", "DELE {name}", "RNFR {name}", "MKD sub", "RMD /", "SITE CHMOD 777 {name}",
    "SITE HELP", "RNTO other.bin",
])
def test_commands_that_would_change_anything_are_refused(fwrepo: Fwrepo, command: str) -> None:
    firmware, grant = ftps_grant(fwrepo, image(1000))
    ftp = session(fwrepo, grant["location"])
    try:
        with pytest.raises(ftplib.error_perm, match=r"^5\d\d"):
            if command.startswith(("STOR", "APPE")):
                ftp.storbinary(command.format(name=firmware["filename"]), io.BytesIO(b"evil"))
            else:
                ftp.sendcmd(command.format(name=firmware["filename"]))
        assert ftp.nlst() == [firmware["filename"]]
    finally:
        ftp.quit()


@pytest.mark.parametrize("path", [
    "../{name}", "/../../etc/passwd", "/etc/passwd", "..", "%2e%2e/%2e%2e/etc/passwd", "./../{name}/..",
    "//etc/passwd", "\\..\\..\\etc\\passwd", "/{name}/../../etc/hostname", "{name}/x", "/proc/self/environ",
])
def test_no_path_reaches_anything_but_the_one_file(fwrepo: Fwrepo, path: str) -> None:
    content = image(1000)
    firmware, grant = ftps_grant(fwrepo, content)
    path = path.format(name=firmware["filename"])
    ftp = session(fwrepo, grant["location"])
    try:
        # Like a chroot, "/.." is "/": a path may lead to the one file, and to nothing else.
        received = io.BytesIO()
        try:
            ftp.retrbinary(f"RETR {path}", received.write)
        except ftplib.error_perm as error:
            assert str(error).startswith("550")
        else:
            assert received.getvalue() == content
        ftp.voidcmd("TYPE I")
        try:
            assert ftp.size(path) == len(content)
        except ftplib.error_perm as error:
            assert str(error).startswith("550")
        try:
            ftp.cwd(path)
        except ftplib.error_perm:
            pass
        assert ftp.pwd() == "/" and ftp.nlst() == [firmware["filename"]]
        for listing in ("LIST", "NLST"):
            lines: list[str] = []
            try:
                ftp.retrlines(f"{listing} {path}", lines.append)
            except ftplib.error_perm:
                continue
            assert len(lines) <= 1 and all(line.endswith(firmware["filename"]) for line in lines)
    finally:
        ftp.quit()


def test_plain_ftp_is_refused_and_a_wrong_password_learns_nothing(fwrepo: Fwrepo) -> None:
    _, grant = ftps_grant(fwrepo, image(1000))
    with pytest.raises(ftplib.error_perm, match="^550 SSL/TLS required"):
        session(fwrepo, grant["location"], secure=False)
    parts = urlsplit(grant["location"])
    wrong = grant["location"].replace(parts.password, parts.password[:-1] + ("A" if parts.password[-1] != "A" else "B"))
    assert login_reply(fwrepo, wrong).startswith("530 Login incorrect")
    # PROT P is required before any data connection
    ftp = ftplib.FTP_TLS(context=fwrepo.tls(), timeout=30)
    ftp.connect(parts.hostname, parts.port)
    ftp.login(parts.username, parts.password)
    try:
        with pytest.raises(ftplib.error_perm, match="^550 SSL/TLS required on the data channel"):
            ftp.nlst()
    finally:
        ftp.quit()


def test_clear_data_is_refused_even_after_pasv(fwrepo: Fwrepo) -> None:
    firmware, grant = ftps_grant(fwrepo, image(1000))
    ftp = session(fwrepo, grant["location"])
    try:
        ftp.sendcmd("PASV")
        with pytest.raises(ftplib.error_perm, match="^534"):
            ftp.sendcmd("PROT C")
    finally:
        ftp.close()


def test_one_address_cannot_take_every_session(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path)
    held = []
    try:
        for _ in range(16):
            ftp = ftplib.FTP(timeout=30)
            ftp.connect("127.0.0.1", server.ftps_port)
            held.append(ftp)
        with pytest.raises(ftplib.error_temp, match="^421 Too many connections from the same IP"):
            ftplib.FTP(timeout=30).connect("127.0.0.1", server.ftps_port)
    finally:
        for ftp in held:
            ftp.close()
        server.stop()


def test_tls_older_than_1_2_is_refused(fwrepo: Fwrepo) -> None:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{fwrepo.ftps_implicit_port}", "-tls1_1", "-CAfile", fwrepo.ca],
        input="", capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0


# -- grant states: every dead grant says the same -----------------------------------------------


def test_expired_revoked_yanked_and_used_up_grants_cannot_log_in(fwrepo: Fwrepo, tmp_path: Path) -> None:
    refusal = "530 Login incorrect."
    _, expired = ftps_grant(fwrepo, image(1000))
    set_grant(fwrepo, expired["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    _, revoked = ftps_grant(fwrepo, image(1000))
    firmware, yanked = ftps_grant(fwrepo, image(1000))
    _, used_up = ftps_grant(fwrepo, image(1000), max_downloads=1)
    with fwrepo.client("csms") as csms, fwrepo.client("release") as release:
        assert csms.delete(f"/api/v1/grants/{revoked['id']}").status_code == 200
        assert release.post(f"/api/v1/firmware/{firmware['id']}/yank", json={"reason": "bad"}).status_code == 200
    assert curl(fwrepo, "--ssl-reqd", "-o", str(tmp_path / "once.bin"), used_up["location"]).returncode == 0
    for grant in (expired, revoked, yanked, used_up):
        assert eventually(lambda: login_reply(fwrepo, grant["location"]) == refusal), grant["id"]
    with fwrepo.client("csms") as csms:
        reasons = {
            name: {d["refusal"] for d in csms.get(f"/api/v1/grants/{grant['id']}").json()["downloads"]} - {None}
            for name, grant in (("expired", expired), ("revoked", revoked), ("yanked", yanked), ("used_up", used_up))
        }
    # The audit knows why (a yank revokes its grants); the charger was told nothing.
    assert reasons == {"expired": {"expired"}, "revoked": {"revoked"}, "yanked": {"revoked"}, "used_up": {"used_up"}}


def test_a_revocation_stops_a_logged_in_session_from_fetching(fwrepo: Fwrepo) -> None:
    firmware, grant = ftps_grant(fwrepo, image(1000))
    ftp = session(fwrepo, grant["location"])
    try:
        with fwrepo.client("csms") as csms:
            assert csms.delete(f"/api/v1/grants/{grant['id']}").status_code == 200

        def refused() -> bool:
            try:
                ftp.retrbinary(f"RETR {firmware['filename']}", lambda _: None)
            except ftplib.error_perm as error:
                return str(error).startswith("550")
            return False

        assert eventually(refused)
    finally:
        ftp.quit()


# -- servers of their own: bans, plain FTP allowed -------------------------------------------------


def test_repeated_failed_logins_ban_the_address(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path)
    try:
        _, grant = ftps_grant(server, image(1000))
        parts = urlsplit(grant["location"])
        # Chargers retrying a grant that died (behind one NAT, as OCPP has them) are refused, not banned.
        _, dead = ftps_grant(server, image(1000))
        with server.client("csms") as csms:
            csms.delete(f"/api/v1/grants/{dead['id']}")
        for _ in range(7):
            assert eventually(lambda: login_reply(server, dead["location"]).startswith("530"))
        assert login_reply(server, grant["location"]) == "230 logged in"
        wrong = grant["location"].replace(parts.password, "x" * 24)
        for _ in range(5):
            assert login_reply(server, wrong).startswith("530")
        # Banned now: even the right login is turned away at the door.
        ftp = ftplib.FTP(timeout=30)
        with pytest.raises(ftplib.error_temp, match="^421 Too many failed logins"):
            ftp.connect(parts.hostname, parts.port)
        assert "banned 127.0.0.1" in (tmp_path / "serve.log").read_text()
    finally:
        server.stop()


def test_plain_ftp_for_legacy_chargers_only_when_the_operator_allows_it(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path, FWREPO_FTP_ALLOW_PLAIN="true")
    try:
        content = image(100_000)
        _, grant = ftps_grant(server, content)
        ftp = session(server, grant["location"], secure=False)
        received = io.BytesIO()
        ftp.retrbinary(f"RETR {urlsplit(grant['location']).path}", received.write)
        ftp.quit()
        assert received.getvalue() == content
        log = (tmp_path / "serve.log").read_text()
        assert "FWREPO_FTP_ALLOW_PLAIN=true" in log and "WITHOUT TLS" in log
    finally:
        server.stop()


def test_ftps_runs_on_its_own_as_fwrepo_ftps(fwrepo: Fwrepo, tmp_path: Path) -> None:
    _, grant = ftps_grant(fwrepo, image(2000))
    # A second process on the same data directory and database, FTPS only, on ports of its own.
    alone = Fwrepo(data_dir=fwrepo.data_dir, environment=fwrepo.environment)
    log = open(tmp_path / "ftps.log", "wb")
    process = subprocess.Popen([FWREPO, "ftps"], env=alone.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        location = grant["location"].replace(f":{fwrepo.ftps_port}/", f":{alone.ftps_port}/")
        assert eventually(lambda: curl(fwrepo, "--ssl-reqd", "-o", str(tmp_path / "fw.bin"), location).returncode == 0,
                          15)
        assert (tmp_path / "fw.bin").stat().st_size == 2000
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


def test_ftps_streams_from_s3_ranged_from_the_rest_offset(fwrepo_on_s3: Fwrepo) -> None:
    content = image(7 * MiB + 3)
    firmware, grant = ftps_grant(fwrepo_on_s3, content)
    ftp = session(fwrepo_on_s3, grant["location"])
    try:
        received = io.BytesIO()
        ftp.retrbinary(f"RETR {firmware['filename']}", received.write, rest=5 * MiB + 1)
        assert received.getvalue() == content[5 * MiB + 1 :]
    finally:
        ftp.quit()


def test_operator_settings_shape_locations_and_passive_replies(tmp_path: Path) -> None:
    low = free_port_range(20)
    server = start_fwrepo(tmp_path, FWREPO_FTPS_LOCATION="implicit", FWREPO_FTPS_PUBLIC_HOST="localhost",
                          FWREPO_FTPS_PASSIVE_PORTS=f"{low}-{low + 19}", FWREPO_FTPS_MASQUERADE_ADDRESS="127.0.0.2")
    try:
        content = image(50_000)
        _, grant = ftps_grant(server, content)
        parts = urlsplit(grant["location"])
        assert (parts.scheme, parts.hostname, parts.port) == ("ftps", "localhost", server.ftps_implicit_port)
        result = curl(server, "-o", str(tmp_path / "fw.bin"), grant["location"].replace("localhost", "127.0.0.1"))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "fw.bin").read_bytes() == content
        ftp = ftplib.FTP_TLS(context=server.tls(), timeout=30)
        ftp.connect("127.0.0.1", server.ftps_port)
        ftp.login(parts.username, parts.password)
        ftp.prot_p()
        reply = ftp.sendcmd("PASV")
        numbers = [int(n) for n in reply[reply.index("(") + 1 : reply.index(")")].split(",")]
        assert numbers[:4] == [127, 0, 0, 2] and low <= numbers[4] * 256 + numbers[5] < low + 20
        ftp.close()
    finally:
        server.stop()


def free_port_range(count: int) -> int:
    """The first of count consecutive ports that are free now."""
    for first in range(41000, 60000, count):
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port range")


def test_a_taken_ftps_port_stops_serve_with_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = Fwrepo(data_dir=tmp_path, environment={"FWREPO_FTPS_PORT": str(taken.getsockname()[1])})
        result = subprocess.run([FWREPO, "serve"], env=server.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("fwrepo: bad setting FWREPO_FTPS_PORT: cannot listen on 127.0.0.1:")
