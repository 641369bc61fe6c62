"""Two fwrepo nodes on one PostgreSQL database and one Ceph RGW bucket behave as one service."""

from __future__ import annotations

import ftplib
import hashlib
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.builds import image, published_build
from tests.support.campaigns import csv_agrees_with_report
from tests.support.fwrepo import Fwrepo
from tests.support.grants import grant_for


def on(node: Fwrepo, location: str) -> str:
    """The same download location, sent to another node (as a load balancer would)."""
    return node.url + urlsplit(location).path


def test_a_grant_from_one_node_downloads_from_the_other_and_a_revocation_bites_everywhere(
    nodes: tuple[Fwrepo, Fwrepo],
) -> None:
    a, b = nodes
    content = image(300_000)
    record, grant = grant_for(a, content)
    with httpx.Client(verify=b.tls(), timeout=30) as charger:
        reply = charger.get(on(b, grant["location"]))
    assert reply.status_code == 200 and hashlib.sha256(reply.content).hexdigest() == record["sha256"]
    with httpx.Client(verify=a.tls(), timeout=30) as charger:
        assert charger.get(on(a, grant["location"])).status_code == 200  # A has it cached now
        with b.client("csms") as csms:
            assert csms.delete(f"/api/v1/grants/{grant['id']}").status_code == 200
        revoked_at = time.monotonic()
        while charger.get(on(a, grant["location"])).status_code != 410:
            assert time.monotonic() - revoked_at < 5, "a revocation on B did not bite on A within 5 s"
            time.sleep(0.2)


def test_an_ftps_login_issued_on_one_node_works_on_the_other(nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    content = image(100_000)
    _, grant = grant_for(a, content, protocol="ftps")
    parts = urlsplit(grant["location"])
    ftp = ftplib.FTP_TLS(context=b.tls(), timeout=30)
    ftp.connect("127.0.0.1", b.ftps_port)
    ftp.login(parts.username, parts.password)
    ftp.prot_p()
    received = bytearray()
    ftp.retrbinary(f"RETR {parts.path}", received.extend)
    ftp.quit()
    assert bytes(received) == content


def test_a_campaign_advances_once_whichever_node_hears_the_deciding_events(nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    with a.client("release") as release:
        record = published_build(release, "Vrepcamp", "2.0.0", image(20_000))
    with a.client("csms") as csms_a, b.client("csms") as csms_b:
        campaign = csms_a.post("/api/v1/campaigns", json={
            "firmware_id": record["id"], "waves": [4, "100%"],
            "chargers": [{"charger_id": f"CP-{n}", "current_version": "1.0.0"} for n in range(12)],
        }).json()
        first = csms_a.get(f"/api/v1/campaigns/{campaign['id']}/grants", params={"due": "now"}).json()["grants"]
        assert len(first) == 4
        now = datetime.now(UTC).isoformat()
        for index, grant in enumerate(first):  # the chargers' reports reach either node
            node = csms_a if index % 2 else csms_b
            reply = node.post("/api/v1/events", json={"events": [
                {"request_id": grant["id"], "status": "Booted", "timestamp": now, "firmware_version": "2.0.0"}]})
            assert reply.status_code == 200
        handed_out = [grant["id"] for grant in first]
        for node in (csms_b, csms_a, csms_b):
            handed_out += [grant["id"] for grant in
                           node.get(f"/api/v1/campaigns/{campaign['id']}/grants", params={"due": "now"}).json()["grants"]]
        assert len(handed_out) == len(set(handed_out)) == 12  # the second wave started once, each grant went once
        report = csms_a.get(f"/api/v1/campaigns/{campaign['id']}").json()
        assert report["current_wave"] == 2 and [wave["chargers"] for wave in report["waves"]] == [4, 8]
    csv_agrees_with_report(a)
    csv_agrees_with_report(b)


def test_a_charger_cut_off_by_a_node_stopping_resumes_on_the_other(nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    content = image(32 * 1024 * 1024)  # more than socket buffers hold, read slowly: the grace cannot cover it
    _, grant = grant_for(a, content)
    received, stopped = bytearray(), False
    with httpx.Client(verify=a.tls(), timeout=30) as charger:
        try:
            with charger.stream("GET", on(a, grant["location"])) as reply:
                for chunk in reply.iter_bytes(64 * 1024):
                    received.extend(chunk)
                    if len(received) >= 1024 * 1024 and not stopped and a.process:
                        a.process.send_signal(signal.SIGTERM)  # 1 s of grace, then the node goes
                        stopped = True
                    time.sleep(0.05)
        except httpx.TransportError:
            pass
    assert 0 < len(received) < len(content)
    assert a.process is not None and a.process.wait(30) == 0
    with httpx.Client(verify=b.tls(), timeout=30) as charger:
        rest = charger.get(on(b, grant["location"]), headers={"Range": f"bytes={len(received)}-"})
    assert rest.status_code == 206
    assert bytes(received) + rest.content == content


def test_an_address_banned_on_one_node_is_banned_on_the_other(nodes: tuple[Fwrepo, Fwrepo]) -> None:
    a, b = nodes
    _, grant = grant_for(a, image(1000), protocol="ftps")
    user = urlsplit(grant["location"]).username
    for _ in range(5):
        ftp = ftplib.FTP_TLS(context=a.tls(), timeout=30)
        ftp.connect("127.0.0.1", a.ftps_port)
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.login(user, "w" * 24)
        ftp.close()
    deadline = time.monotonic() + 5  # A writes its records within a second; B counts them
    while True:
        try:
            ftplib.FTP(timeout=30).connect("127.0.0.1", b.ftps_port)
        except ftplib.error_temp as refusal:
            assert str(refusal).startswith("421 Too many failed logins")
            return
        assert time.monotonic() < deadline, "B did not ban an address A had seen guessing"
        time.sleep(0.3)


def test_parallel_downloads_on_two_nodes_give_a_one_download_grant_one_copy(nodes: tuple[Fwrepo, Fwrepo]) -> None:
    """max_downloads is a budget in the shared database, taken before the first byte: no node can overspend it."""
    a, b = nodes
    content = image(3 * 1024 * 1024)
    _, grant = grant_for(a, content, max_downloads=1)

    def download(node: Fwrepo) -> tuple[int, bytes]:
        with httpx.Client(verify=node.tls(), timeout=60) as charger:
            reply = charger.get(on(node, grant["location"]))
            return reply.status_code, reply.content

    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(download, [a, b] * 5))
    assert sum(1 for status, body in replies if status == 200 and body == content) == 1
    assert sorted(status for status, _ in replies) == [200] + [410] * 9
