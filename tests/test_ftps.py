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

import httpx
import pytest
from sqlalchemy import update

from repo_service.db.models import Grant
from repo_service.db.session import Database
from repo_service.domain.ftp_logins import FtpsEndpoint
from repo_service.domain.grants import MAX_LOCATION
from repo_service.settings import load_settings
from tests.support.builds import image, published_build, unique_vendor
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
    except (ftplib.error_perm, ftplib.error_temp) as error:
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
        _, grant = ftps_grant(server, image(1000))
        for _ in range(16):
            held.append(session(server, grant["location"]))
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


# -- one-time logins: one complete download, resumes included ---------------------------------


def grant_detail(fwrepo: Fwrepo, grant_id: int) -> dict:
    with fwrepo.client("csms") as csms:
        return csms.get(f"/api/v1/grants/{grant_id}").json()


def read_part(ftp: ftplib.FTP, name: str, start: int, count: int) -> bytes:
    """count bytes of the file from start, then the data connection dropped as a failing cellular link drops it."""
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd(f"RETR {name}", rest=start)
    received = b""
    while len(received) < count:
        block = data.recv(min(65536, count - len(received)))
        assert block
        received += block
    data.close()
    with pytest.raises(ftplib.error_temp, match="^426"):
        ftp.voidresp()
    return received


def test_a_login_downloads_the_image_once_and_resumes_until_it_has(fwrepo: Fwrepo) -> None:
    # Larger than what loopback socket buffers hold: a data connection dropped early cannot have had it all.
    content = image(24 * MiB)
    firmware, grant = ftps_grant(fwrepo, content)
    assert grant["max_downloads"] == 1
    name = firmware["filename"]
    first = session(fwrepo, grant["location"])
    received = read_part(first, name, 0, MiB)
    # The link drops again; the charger resumes with REST in the same session, then in a new one.
    received += read_part(first, name, len(received), MiB)
    first.quit()
    waiting = session(fwrepo, grant["location"])  # logged in before the image was delivered whole
    resumed = session(fwrepo, grant["location"])
    rest = io.BytesIO()
    resumed.retrbinary(f"RETR {name}", rest.write, rest=len(received))
    resumed.quit()
    assert received + rest.getvalue() == content
    assert eventually(lambda: grant_detail(fwrepo, grant["id"])["downloads_completed"] == 1)
    # Delivered whole once: the same login, even hours later, gets no second copy.
    assert login_reply(fwrepo, grant["location"]) == "530 Login incorrect."
    try:
        with pytest.raises(ftplib.error_perm, match="^550 this download is no longer available"):
            waiting.retrbinary(f"RETR {name}", lambda _: None)
    finally:
        waiting.quit()
    assert grant_detail(fwrepo, grant["id"])["downloads_completed"] == 1


def test_a_grant_that_says_so_allows_more_complete_downloads(fwrepo: Fwrepo, tmp_path: Path) -> None:
    _, grant = ftps_grant(fwrepo, image(50_000), max_downloads=3)
    assert grant["max_downloads"] == 3
    for count in (1, 2, 3):
        assert curl(fwrepo, "--ssl-reqd", "-o", str(tmp_path / "fw.bin"), grant["location"]).returncode == 0
        assert eventually(lambda: grant_detail(fwrepo, grant["id"])["downloads_completed"] == count)  # noqa: B023
    assert login_reply(fwrepo, grant["location"]) == "530 Login incorrect."


def test_a_campaigns_ftps_logins_are_one_time_too(fwrepo: Fwrepo, tmp_path: Path) -> None:
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        firmware = published_build(release, unique_vendor(), "1.4.0", image(30_000), models="AC22")
        reply = csms.post("/api/v1/campaigns", json={
            "firmware_id": firmware["id"], "protocol": "ftps",
            "chargers": [{"charger_id": "CP-1", "current_version": "1.3.0", "model": "AC22"}],
        })
        assert reply.status_code == 201, reply.text
        grants = csms.get(f"/api/v1/campaigns/{reply.json()['id']}/grants", params={"due": "now"}).json()["grants"]
    assert len(grants) == 1 and grants[0]["max_downloads"] == 1
    location = grants[0]["location"]
    assert curl(fwrepo, "--ssl-reqd", "-o", str(tmp_path / "fw.bin"), location).returncode == 0
    assert eventually(lambda: login_reply(fwrepo, location) == "530 Login incorrect.")


# -- bans, active mode, connections that never log in -----------------------------------------------


def test_a_ban_also_stops_password_checks_in_sessions_opened_before_it(fwrepo: Fwrepo) -> None:
    _, grant = ftps_grant(fwrepo, image(1000))
    parts = urlsplit(grant["location"])
    # An address of its own (loopback answers all of 127/8), so the ban spares the other tests' sessions.
    scanner = ("127.0.0.9", 0)
    # The attack opened ten; eight are as many as one address may hold before logging in.
    sessions = []
    for _ in range(8):
        ftp = ftplib.FTP_TLS(context=fwrepo.tls(), timeout=30)
        ftp.connect(parts.hostname, parts.port, source_address=scanner)
        ftp.auth()
        sessions.append(ftp)
    replies = []
    for ftp in sessions:
        # Three wrong passwords each (then pyftpdlib disconnects), and the right one in the last session.
        for password in ["x" * 24] * 3 if ftp is not sessions[-1] else [parts.password]:
            try:
                ftp.sendcmd(f"USER {parts.username}")
                replies.append(ftp.sendcmd(f"PASS {password}")[:3])
            except ftplib.error_perm as error:
                replies.append(str(error)[:3])
            except ftplib.error_temp as error:
                replies.append(str(error)[:3])
                break
            except (EOFError, OSError):
                replies.append("closed")
                break
        ftp.close()
    # Five wrong passwords were checked; after them every open session was turned away, the right password too.
    assert replies == ["530"] * 5 + ["421"] * 7, replies
    assert login_reply(fwrepo, grant["location"]) == "230 logged in"  # other addresses are not banned


def test_active_mode_is_refused_so_a_client_cannot_make_the_server_scan_ports(fwrepo: Fwrepo) -> None:
    firmware, grant = ftps_grant(fwrepo, image(1000))
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        ftp = session(fwrepo, grant["location"])
        try:
            for command in (f"PORT 127,0,0,1,{port // 256},{port % 256}", f"EPRT |1|127.0.0.1|{port}|"):
                with pytest.raises(ftplib.error_perm, match="^502 Active mode .* is off here: use PASV or EPSV"):
                    ftp.sendcmd(command)
            listening.settimeout(1)
            with pytest.raises(TimeoutError):
                listening.accept()  # nobody was sent to connect
            assert ftp.nlst() == [firmware["filename"]]  # passive mode works as before
        finally:
            ftp.quit()


def test_active_mode_when_the_operator_enables_it(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path, FWREPO_FTPS_ACTIVE_MODE="true")
    try:
        content = image(200_000)
        firmware, grant = ftps_grant(server, content)
        ftp = session(server, grant["location"])
        ftp.set_pasv(False)
        received = io.BytesIO()
        ftp.retrbinary(f"RETR {firmware['filename']}", received.write)
        ftp.quit()
        assert received.getvalue() == content
    finally:
        server.stop()


def waiting_connection(server: Fwrepo, address: str) -> tuple[socket.socket, bytes]:
    """A connection that never logs in, and the first thing the server said on it."""
    sock = socket.create_connection(("127.0.0.1", server.ftps_port), timeout=10, source_address=(address, 0))
    return sock, sock.recv(200)


def test_connections_that_never_log_in_are_bounded_per_address_and_in_total(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path, FWREPO_FTPS_UNAUTHENTICATED_PER_ADDRESS="3", FWREPO_FTPS_UNAUTHENTICATED="5",
                          FWREPO_FTPS_LOGIN_TIMEOUT="3")
    held: list[socket.socket] = []
    try:
        _, grant = ftps_grant(server, image(1000))
        charger = session(server, grant["location"])  # logged in: it does not count
        for address in ("127.0.0.2", "127.0.0.3"):
            for _ in range(3 if address == "127.0.0.2" else 2):
                sock, greeting = waiting_connection(server, address)
                held.append(sock)
                assert greeting.startswith(b"220 "), greeting
        sock, greeting = waiting_connection(server, "127.0.0.2")
        held.append(sock)
        assert greeting.startswith(b"421 Too many connections from your address waiting to log in"), greeting
        sock, greeting = waiting_connection(server, "127.0.0.4")
        held.append(sock)
        assert greeting.startswith(b"421 Too many connections waiting to log in"), greeting
        assert charger.nlst()  # the logged-in session was never in the way
        charger.quit()
        # Saying nothing at all does not keep a connection: each is closed at the login deadline.
        started = time.monotonic()
        for sock in held[:5]:
            assert sock.recv(200).startswith(b"421 Log in within 3 seconds")
        assert time.monotonic() - started < 6
        assert eventually(lambda: login_reply(server, grant["location"]) == "230 logged in")
    finally:
        for sock in held:
            sock.close()
        server.stop()


# -- the active downloads gauge ---------------------------------------------------------------


def active_ftps_downloads(fwrepo: Fwrepo) -> float:
    text = httpx.get(fwrepo.url + "/metrics", verify=fwrepo.tls(), timeout=10).text
    line = next(line for line in text.splitlines() if line.startswith('fwrepo_active_downloads{protocol="ftps"}'))
    return float(line.split()[-1])


def test_transfers_that_never_finish_leave_the_active_downloads_gauge(fwrepo: Fwrepo) -> None:
    content = image(8 * MiB)
    firmware, grant = ftps_grant(fwrepo, content, max_downloads=1000)
    name = firmware["filename"]
    # RETR and no data connection ever, twice in one session, then the session ends.
    ftp = session(fwrepo, grant["location"])
    for _ in range(2):
        assert ftp.sendcmd(f"RETR {name}").startswith("150")
    ftp.close()
    # RETR, then the data connection is dropped unread and the transfer aborted.
    ftp = session(fwrepo, grant["location"])
    ftp.voidcmd("TYPE I")
    ftp.transfercmd(f"RETR {name}").close()
    ftp.abort()
    ftp.quit()
    # The session dies while its data connection is mid-transfer.
    ftp = session(fwrepo, grant["location"])
    data = ftp.transfercmd(f"RETR {name}")
    data.recv(65536)
    ftp.sock.close()
    data.close()
    # REST past the end: refused, and the session stays open, idle.
    idle = session(fwrepo, grant["location"])
    idle.voidcmd("TYPE I")
    idle.sendcmd(f"REST {len(content) + 1}")
    with pytest.raises(ftplib.error_perm, match="^554"):
        idle.sendcmd(f"RETR {name}")
    try:
        assert eventually(lambda: active_ftps_downloads(fwrepo) == 0, 10), active_ftps_downloads(fwrepo)
    finally:
        idle.quit()


def test_a_link_dropped_with_the_tail_in_flight_is_not_a_download(fwrepo: Fwrepo) -> None:
    # The tail in socket buffers when the link drops: the server handed it on, the charger never got it.
    # What a dropped link loses is at most the server's send queue (tcp_wmem's 4 MiB at most here) and
    # the client's window, and the budget keeps half an image for it (docs/http-api.md): a 12 MiB image
    # resumes on a one-download grant however much a loaded machine lets the server queue first.
    content = image(12 * 1024 * 1024)
    firmware, grant = ftps_grant(fwrepo, content)
    first = session(fwrepo, grant["location"])
    first.voidcmd("TYPE I")
    data = first.transfercmd(f"RETR {firmware['filename']}")
    received = b""
    while len(received) < 20_000:
        received += data.recv(20_000 - len(received))
    data.close()  # with the rest unread: a reset, as a charger losing power sends
    first.close()
    resumed = session(fwrepo, grant["location"])
    rest = io.BytesIO()
    resumed.retrbinary(f"RETR {firmware['filename']}", rest.write, rest=len(received))
    resumed.quit()
    assert received + rest.getvalue() == content
    assert eventually(lambda: grant_detail(fwrepo, grant["id"])["downloads_completed"] == 1)
    downloads = [d for d in grant_detail(fwrepo, grant["id"])["downloads"] if d["refusal"] is None]
    assert [d["completed"] for d in downloads] == [False, True]
    assert login_reply(fwrepo, grant["location"]) == "530 Login incorrect."
