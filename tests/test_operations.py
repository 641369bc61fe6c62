"""What operators watch: health, readiness, metrics, logs with request ids, and a clean shutdown."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.support.builds import image
from tests.support.fwrepo import Fwrepo, start_fwrepo
from tests.support.grants import grant_for


def test_readyz_checks_database_storage_and_signing_key(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path)
    try:
        with server.client(None) as anyone:
            reply = anyone.get("/readyz")
            assert reply.status_code == 200
            assert reply.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok",
                                                                  "signing_key": "ok"}}
            (tmp_path / "storage").rename(tmp_path / "storage-away")  # a volume that came unmounted
            try:
                broken = anyone.get("/readyz")
            finally:
                (tmp_path / "storage-away").rename(tmp_path / "storage")
            assert broken.status_code == 503 and broken.json()["checks"]["storage"].startswith("StorageUnavailable")
            assert anyone.get("/healthz").status_code == 200  # alive all the same
    finally:
        server.stop()


def test_metrics_count_requests_by_route_bytes_and_refusals_never_tokens(fwrepo: Fwrepo) -> None:
    _, grant = grant_for(fwrepo, image(123_456))
    token = grant["location"].rsplit("/", 2)[1]
    with fwrepo.client(None) as charger:
        assert charger.get(grant["location"]).status_code == 200
        assert charger.get(grant["location"].replace(token, "x" * 34)).status_code == 404
        text = charger.get("/metrics").text
    assert 'fwrepo_http_requests_total{method="GET",route="/d/{token}/{filename}",status="200"}' in text
    assert 'fwrepo_refusals_total{protocol="https",reason="forged"}' in text
    assert 'fwrepo_grants_issued_total{protocol="https"}' in text
    assert "fwrepo_bytes_served_total" in text and "fwrepo_download_duration_seconds_bucket" in text
    assert "fwrepo_upload_duration_seconds_count" in text and "fwrepo_active_downloads" in text
    assert token not in text


def test_json_logs_carry_a_request_id_on_every_line_and_no_secrets(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path, FWREPO_LOG_FORMAT="json")
    try:
        _, grant = grant_for(server, image(1000))
        with server.client(None) as charger:
            reply = charger.get(grant["location"], headers={"X-Request-Id": "csms-42"})
            assert reply.headers["x-request-id"] == "csms-42"
            assert charger.get("/healthz").headers["x-request-id"]
    finally:
        server.stop()
    lines = [line for line in (tmp_path / "serve.log").read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    assert entries and all({"time", "level", "logger", "request_id", "message"} <= entry.keys() for entry in entries)
    access = [entry for entry in entries if entry["logger"] == "uvicorn.access"]
    assert any(entry["request_id"] == "csms-42" and "/d/[token]/" in entry["message"] for entry in access)
    log = (tmp_path / "serve.log").read_text()
    token = grant["location"].rsplit("/", 2)[1]
    assert token not in log and server.key("release") not in log and server.key("csms") not in log


def test_sigterm_stops_readiness_lets_a_running_download_finish_and_exits_cleanly(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path, FWREPO_SHUTDOWN_GRACE="20")
    content = image(6 * 1024 * 1024)
    _, grant = grant_for(server, content)
    received = bytearray()
    started = threading.Event()

    def slow_download() -> None:
        with httpx.Client(verify=server.tls(), timeout=60) as charger, charger.stream("GET", grant["location"]) as reply:
            for chunk in reply.iter_bytes(64 * 1024):
                received.extend(chunk)
                started.set()
                time.sleep(0.05)  # about 1.3 MB/s: the transfer outlasts the SIGTERM

    downloader = threading.Thread(target=slow_download)
    downloader.start()
    assert started.wait(10)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with httpx.Client(verify=server.tls(), timeout=5) as anyone:
        try:
            ready = anyone.get(server.url + "/readyz").status_code
        except httpx.TransportError:
            ready = None  # the listener is closed already: just as good for a load balancer
    assert ready in (503, None)
    downloader.join(60)
    assert bytes(received) == content
    assert server.process.wait(30) == 0
