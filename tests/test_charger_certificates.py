"""Downloads bound to the charger's TLS client certificate, tried with curl, openssl s_client and ftplib.

The charger CA is made by the openssl commands docs/charger-certificates.md gives operators; each way a
client can come without the right certificate is refused like a dead grant and recorded with its reason.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from repo_service import client
from tests.support.builds import image, published_build, unique_vendor
from tests.support.charger_pki import ChargerCa, OcspResponder, make_charger_ca
from tests.support.fwrepo import Fwrepo, curl, start_fwrepo

CONTENT = image(300_000)


@pytest.fixture(scope="module")
def charger_ca(tmp_path_factory: pytest.TempPathFactory) -> ChargerCa:
    return make_charger_ca(tmp_path_factory.mktemp("charger-pki"))


@pytest.fixture(scope="module")
def bound(charger_ca: ChargerCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fwrepo]:
    """fwrepo that knows the charger CA and its CRL."""
    server = start_fwrepo(tmp_path_factory.mktemp("fwrepo-bound"), FWREPO_CHARGER_CA=str(charger_ca.certificate),
                          FWREPO_CHARGER_CRL=str(charger_ca.crl))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def firmware_id(bound: Fwrepo) -> str:
    with bound.client("release") as release:
        return published_build(release, unique_vendor(), "1.0.0", CONTENT)["id"]


def bound_grant(fwrepo: Fwrepo, firmware_id: str, charger: str, **fields: object) -> dict:
    with fwrepo.client("csms") as csms:
        reply = csms.post("/api/v1/grants", json={"firmware_id": firmware_id, "charger_id": charger,
                                                  "bind": "client_certificate", **fields})
    assert reply.status_code == 201, reply.text
    return reply.json()


def refusals(fwrepo: Fwrepo, grant_id: int) -> list[str | None]:
    with fwrepo.client("csms") as csms:
        return [download["refusal"] for download in csms.get(f"/api/v1/grants/{grant_id}").json()["downloads"]]


def fetch(fwrepo: Fwrepo, location: str, tmp_path: Path, certificate: tuple[Path, Path] | None) -> tuple[str, bytes]:
    """curl's HTTP status (or its error) and the bytes it got."""
    target = tmp_path / "download.bin"
    target.unlink(missing_ok=True)
    with_certificate = ["--cert", str(certificate[0]), "--key", str(certificate[1])] if certificate else []
    result = curl(fwrepo, *with_certificate, "-o", str(target), "-w", "%{http_code}", location)
    if result.returncode != 0:
        return f"curl {result.returncode}: {result.stderr.strip()}", b""
    return result.stdout, target.read_bytes() if target.exists() else b""


def test_the_documented_commands_make_a_certificate_that_downloads_a_bound_grant(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, tmp_path: Path
) -> None:
    grant = bound_grant(bound, firmware_id, "CP-0001")
    assert (grant["bind"], grant["charger_serial"]) == ("client_certificate", None)
    # CP-0001.pem and .key are what the docs' commands made.
    status, body = fetch(bound, grant["location"], tmp_path,
                         (charger_ca.directory / "CP-0001.pem", charger_ca.directory / "CP-0001.key"))
    assert status == "200"
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(CONTENT).hexdigest()
    assert refusals(bound, grant["id"]) == [None]


def test_the_typed_client_presents_the_client_certificate_it_is_given(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, tmp_path: Path
) -> None:
    grant = bound_grant(bound, firmware_id, "CP-0001")
    certificate = (charger_ca.directory / "CP-0001.pem", charger_ca.directory / "CP-0001.key")
    with client.Fwrepo(bound.url, ca_file=bound.ca, client_certificate=certificate) as charger:
        assert charger.download(grant["location"], tmp_path / "fw.bin").read_bytes() == CONTENT
    with client.Fwrepo(bound.url, ca_file=bound.ca) as anyone, pytest.raises(client.Gone):
        anyone.download(grant["location"], tmp_path / "refused.bin")
    assert refusals(bound, grant["id"]) == [None, "no_certificate"]


@pytest.mark.parametrize(("who", "reason"), [
    ("nobody", "no_certificate"), ("another charger", "wrong_charger"), ("an expired one", "cert_expired"),
    ("a revoked one", "cert_revoked"),
])
def test_a_bound_grant_refuses_like_a_dead_grant_and_records_why(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, tmp_path: Path, who: str, reason: str
) -> None:
    charger = f"CP-{reason}"
    certificate: tuple[Path, Path] | None = None
    if who == "another charger":
        certificate = charger_ca.issue(f"{charger}-other")
    elif who == "an expired one":
        certificate = charger_ca.issue(charger, start="20200101000000Z", end="20210101000000Z")
    elif who == "a revoked one":
        certificate = charger_ca.issue(charger)
        charger_ca.revoke(certificate[0])  # fwrepo reads the replaced CRL file again: no restart
    grant = bound_grant(bound, firmware_id, charger)
    status, body = fetch(bound, grant["location"], tmp_path, certificate)
    assert (status, body[:1]) == ("410", b"{")
    assert b"no longer valid" in body  # the body a dead grant gets: nothing about which check failed
    assert refusals(bound, grant["id"]) == [reason]


def test_a_certificate_revoked_after_a_download_stops_the_next(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, tmp_path: Path
) -> None:
    certificate = charger_ca.issue("CP-revoked-later")
    grant = bound_grant(bound, firmware_id, "CP-revoked-later")
    assert fetch(bound, grant["location"], tmp_path, certificate)[0] == "200"
    charger_ca.revoke(certificate[0])
    assert fetch(bound, grant["location"], tmp_path, certificate)[0] == "410"
    assert refusals(bound, grant["id"]) == [None, "cert_revoked"]


def test_the_serial_the_csms_gave_is_the_name_the_certificate_must_carry(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, tmp_path: Path
) -> None:
    by_serial = charger_ca.issue("SN-20391")
    by_id = charger_ca.issue("CP-serial")
    grant = bound_grant(bound, firmware_id, "CP-serial", charger_serial="SN-20391")
    assert grant["charger_serial"] == "SN-20391"
    assert fetch(bound, grant["location"], tmp_path, by_id)[0] == "410"
    assert fetch(bound, grant["location"], tmp_path, by_serial)[0] == "200"
    assert refusals(bound, grant["id"]) == ["wrong_charger", None]


@pytest.mark.parametrize("whose", ["another CA's", "the charger CA's server certificate"])
def test_a_certificate_not_for_this_charger_ca_is_refused_in_the_handshake(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, tmp_path: Path, whose: str
) -> None:
    if whose == "another CA's":
        stranger = make_charger_ca(tmp_path / "stranger")
        certificate = (stranger.directory / "CP-0001.pem", stranger.directory / "CP-0001.key")
    else:
        certificate = charger_ca.issue("CP-0001", extensions="server")
    grant = bound_grant(bound, firmware_id, "CP-0001")
    status, body = fetch(bound, grant["location"], tmp_path, certificate)
    # TLS 1.3: the client finishes its side first and hears the server's alert on its first read.
    assert status.startswith(("curl 52", "curl 56", "curl 35")), status
    assert body == b""
    assert refusals(bound, grant["id"]) == []


def test_unbound_grants_and_the_api_need_no_certificate(bound: Fwrepo, firmware_id: str, tmp_path: Path) -> None:
    with bound.client("csms") as csms:
        grant = csms.post("/api/v1/grants", json={"firmware_id": firmware_id, "charger_id": "CP-plain"}).json()
    assert grant["bind"] is None
    status, body = fetch(bound, grant["location"], tmp_path, None)
    assert (status, body) == ("200", CONTENT)


def test_openssl_s_client_with_the_certificate_gets_the_image(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str
) -> None:
    certificate, key = charger_ca.issue("CP-s-client")
    grant = bound_grant(bound, firmware_id, "CP-s-client")
    path = urlsplit(grant["location"]).path
    request = f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    for with_certificate, expected in ((True, "HTTP/1.1 200"), (False, "HTTP/1.1 410")):
        options = ["-cert", str(certificate), "-key", str(key)] if with_certificate else []
        result = subprocess.run(
            ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{bound.port}", "-CAfile", bound.ca,
             "-verify_return_error", *options], input=request, capture_output=True, text=True, timeout=30)
        assert result.stdout.startswith(expected), (result.stdout[:200], result.stderr[-500:])


def test_campaign_grants_are_bound_to_each_chargers_serial(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, tmp_path: Path
) -> None:
    certificate = charger_ca.issue("SN-campaign-1")
    with bound.client("csms") as csms:
        created = csms.post("/api/v1/campaigns", json={
            "firmware_id": firmware_id, "bind": "client_certificate",
            "chargers": [{"charger_id": "CP-campaign-1", "current_version": "0.9.0", "serial": "SN-campaign-1"}]})
        assert created.status_code == 201, created.text
        due = csms.get(f"/api/v1/campaigns/{created.json()['id']}/grants", params={"due": "now"})
        assert due.status_code == 200, due.text
    [grant] = due.json()["grants"]
    assert (grant["bind"], grant["charger_serial"]) == ("client_certificate", "SN-campaign-1")
    assert fetch(bound, grant["location"], tmp_path, None)[0] == "410"
    assert fetch(bound, grant["location"], tmp_path, certificate)[0] == "200"


# -- FTPS -------------------------------------------------------------------------------------------


def ftps_session(fwrepo: Fwrepo, location: str, certificate: tuple[Path, Path] | None,
                 data_certificate: tuple[Path, Path] | None | str = "same") -> ftplib.FTP_TLS:
    """ftplib logged in with a certificate on the control connection, and the same (or another) on the data one."""
    control = fwrepo.tls()
    if certificate:
        control.load_cert_chain(*certificate)
    data = control
    if data_certificate != "same":
        data = fwrepo.tls()
        if data_certificate:
            data.load_cert_chain(*data_certificate)  # type: ignore[misc]

    class Session(ftplib.FTP_TLS):
        def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[ssl.SSLSocket, int | None]:
            self.context = data
            try:
                return super().ntransfercmd(cmd, rest)
            finally:
                self.context = control

    parts = urlsplit(location)
    ftp = Session(context=control, timeout=30)
    ftp.connect(parts.hostname, parts.port)
    ftp.login(parts.username, parts.password)
    ftp.prot_p()
    return ftp


def ftps_bound_grant(fwrepo: Fwrepo, firmware_id: str, charger: str) -> dict:
    return bound_grant(fwrepo, firmware_id, charger, protocol="ftps")


def test_ftplib_with_the_certificate_downloads_a_bound_ftps_grant(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str
) -> None:
    certificate = charger_ca.issue("CP-ftps")
    grant = ftps_bound_grant(bound, firmware_id, "CP-ftps")
    ftp = ftps_session(bound, grant["location"], certificate)
    received = io.BytesIO()
    ftp.retrbinary(f"RETR {urlsplit(grant['location']).path.lstrip('/')}", received.write)
    ftp.quit()
    assert received.getvalue() == CONTENT
    assert refusals(bound, grant["id"]) == [None]


@pytest.mark.parametrize(("who", "reason"), [("nobody", "no_certificate"), ("another charger", "wrong_charger")])
def test_a_bound_ftps_login_without_the_certificate_is_refused(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, who: str, reason: str
) -> None:
    charger = f"CP-ftps-{reason}"
    certificate = charger_ca.issue(f"{charger}-other") if who == "another charger" else None
    grant = ftps_bound_grant(bound, firmware_id, charger)
    with pytest.raises(ftplib.error_perm, match="^530 Login incorrect"):
        ftps_session(bound, grant["location"], certificate)
    assert refusals(bound, grant["id"]) == [reason]


@pytest.mark.parametrize("data_side", ["none", "another charger's"])
def test_the_data_connection_must_show_the_control_connections_certificate(
    bound: Fwrepo, charger_ca: ChargerCa, firmware_id: str, data_side: str
) -> None:
    charger = f"CP-ftps-data-{data_side.split()[0]}"
    certificate = charger_ca.issue(charger)
    other = charger_ca.issue(f"{charger}-other") if data_side != "none" else None
    grant = ftps_bound_grant(bound, firmware_id, charger)
    ftp = ftps_session(bound, grant["location"], certificate, data_certificate=other)
    received = io.BytesIO()
    with pytest.raises((ftplib.error_temp, ftplib.error_perm, OSError)) as refused:
        ftp.retrbinary(f"RETR {urlsplit(grant['location']).path.lstrip('/')}", received.write)
    assert received.getvalue() == b""
    if isinstance(refused.value, ftplib.Error):
        assert str(refused.value).startswith("425")
    ftp.close()
    with bound.client("csms") as csms:
        downloads = csms.get(f"/api/v1/grants/{grant['id']}").json()["downloads"]
    assert ("no_certificate" if data_side == "none" else "wrong_charger") in [row["refusal"] for row in downloads]
    # The RETR's transfer ended having sent nothing: no byte of the file went out, nothing completed.
    assert [(row["bytes_sent"], row["completed"]) for row in downloads if row["refusal"] is None] == [(0, False)]


# -- OCSP, and a server without a charger CA ---------------------------------------------------------


@pytest.fixture(scope="module")
def with_ocsp(charger_ca: ChargerCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fwrepo, OcspResponder]]:
    responder = OcspResponder(charger_ca)
    server = start_fwrepo(tmp_path_factory.mktemp("fwrepo-ocsp"), FWREPO_CHARGER_CA=str(charger_ca.certificate),
                          FWREPO_CHARGER_OCSP=responder.url)
    yield server, responder
    server.stop()
    responder.stop()


def test_ocsp_answers_good_and_revoked_and_no_answer_refuses(
    with_ocsp: tuple[Fwrepo, OcspResponder], charger_ca: ChargerCa, tmp_path: Path
) -> None:
    server, responder = with_ocsp
    with server.client("release") as release:
        firmware = published_build(release, unique_vendor(), "1.0.0", CONTENT)["id"]
    certificates = {"CP-ocsp-good": charger_ca.issue("CP-ocsp-good"),
                    "CP-ocsp-revoked": charger_ca.issue("CP-ocsp-revoked"),
                    "CP-ocsp-down": charger_ca.issue("CP-ocsp-down")}
    charger_ca.revoke(certificates["CP-ocsp-revoked"][0])
    responder.restart()  # openssl ocsp reads index.txt when it starts
    grants = {name: bound_grant(server, firmware, name) for name in certificates}
    assert fetch(server, grants["CP-ocsp-good"]["location"], tmp_path, certificates["CP-ocsp-good"])[0] == "200"
    assert fetch(server, grants["CP-ocsp-revoked"]["location"], tmp_path, certificates["CP-ocsp-revoked"])[0] == "410"
    responder.stop()
    try:
        # Fails closed: a responder that cannot be asked lets nothing through.
        assert fetch(server, grants["CP-ocsp-down"]["location"], tmp_path, certificates["CP-ocsp-down"])[0] == "410"
    finally:
        responder.restart()
    assert fetch(server, grants["CP-ocsp-down"]["location"], tmp_path, certificates["CP-ocsp-down"])[0] == "200"
    assert [refusals(server, grants[name]["id"]) for name in certificates] == [
        [None], ["cert_revoked"], ["cert_unverified", None]]


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"bind": "client_certificate"}, "bind", "FWREPO_CHARGER_CA"),
    ({"bind": "password"}, "bind", "must be one of client_certificate"),
    ({"bind": None}, "bind", "got null"),
    ({"charger_serial": "SN-1"}, "charger_serial", 'needs "bind"'),
])
def test_bad_or_unavailable_binding_is_refused_naming_the_field(
    fwrepo: Fwrepo, fields: dict, field: str, words: str
) -> None:
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        firmware = published_build(release, unique_vendor(), "1.0.0", image(1000))
        reply = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1", **fields})
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field and words in reply.json()["detail"]


@pytest.mark.parametrize(("url", "fields", "field"), [
    ("/api/v1/grants/batch", {"charger_ids": ["CP-1", "CP-2"], "charger_serials": {"CP-2": "SN-2"}},
     "charger_serials"),
    ("/api/v1/campaigns", {"chargers": [{"charger_id": "CP-1", "current_version": "0.9.0"},
                                        {"charger_id": "CP-2", "current_version": "0.9.0", "serial": "SN-2"}]},
     "chargers[1].serial"),
])
def test_a_serial_without_bind_is_refused_in_batches_and_campaigns_naming_it(
    fwrepo: Fwrepo, url: str, fields: dict, field: str
) -> None:
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        firmware = published_build(release, unique_vendor(), "1.0.0", image(1000))
        reply = csms.post(url, json={"firmware_id": firmware["id"], **fields})
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field and 'needs "bind"' in reply.json()["detail"]
